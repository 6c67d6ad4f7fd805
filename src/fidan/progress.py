"""Progress on long work: a tqdm bar (rate and ETA) on a terminal, log lines elsewhere.

When the output is not a terminal (a log file, ``| tee``, a CI job) a bar would vanish or fill
the log with carriage returns, so :class:`Progress` prints one line every
``FIDAN_PROGRESS_SECONDS`` seconds (30 by default) instead, and a closing line when the work
took longer than that:

    judge sampling: 512/4,384 answers (12%), 9.8 answers/s, ETA 6m35s

It takes the part of tqdm's interface the code uses (``update``, ``set_postfix``, ``close``,
and use as a context manager), so a ``tqdm(...)`` call can become ``Progress(...)``.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO


def every_seconds() -> float:
    """The seconds between log lines (``FIDAN_PROGRESS_SECONDS``; 30 when unset or not a number)."""
    try:
        return max(0.0, float(os.environ.get("FIDAN_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


def on_terminal() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 disable: bool | None = False, stream: TextIO | None = None, every: float | None = None,
                 clock=time.monotonic, **tqdm_args: Any):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.stream = stream
        self.off = bool(disable)
        self.bar = None
        if not self.off and stream is None and on_terminal():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, **tqdm_args)
        self.every = every_seconds() if every is None else every
        self.clock = clock
        self.start = self.last = clock()
        self.start_n = initial
        self.postfix: dict[str, Any] = {}
        self.printed = False
        self.said_n = None

    def line(self) -> str:
        """``desc: n/total unit (pct), rate unit/s, ETA ...`` (plus the postfix, if any)."""
        elapsed = max(1e-9, self.clock() - self.start)
        rate = (self.n - self.start_n) / elapsed
        done = f"{self.n:,}/{self.total:,} {self.unit}" if self.total else f"{self.n:,} {self.unit}"
        parts = [done + (f" ({self.n / self.total:.0%})" if self.total else ""), f"{rate:.3g} {self.unit}/s"]
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {duration((self.total - self.n) / rate)}")
        elif self.n >= (self.total or float("inf")):
            parts.append(f"done in {duration(elapsed)}")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        return f"  {self.desc}: " + ", ".join(parts)

    def _say(self) -> None:
        print(self.line(), file=self.stream or sys.stdout, flush=True)
        self.printed, self.said_n = True, self.n
        self.last = self.clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif not self.off and self.clock() - self.last >= self.every:
            self._say()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(refresh=refresh, **values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif (not self.off and (self.printed or self.clock() - self.start >= self.every) and self.n > self.start_n
              and self.said_n != self.n):
            self._say()
        self.off = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
