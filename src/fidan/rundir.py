"""The run directory: every stage reads its inputs from it and writes its outputs into it.

``runs/<name>/`` holds the resolved ``config.toml``, a ``fidan.json`` stamp with the layout
version, and one folder per stage. A stage that finishes writes ``stages/<stage>.json`` with the
hash of what it read, the command-line overrides it ran with, and its summary; the pipeline
skips a stage whose stamp matches.

``config.toml`` is written when the run is created and by ``fidan pipeline``; a single-stage
command's one-off overrides go into that stage's stamp, never into ``config.toml``, so they do
not change what the next plain command does. ``<root>/.latest`` names the run created or run by
``pipeline`` most recently (what ``fidan chat`` and friends use without ``--run.name``).

One process writes into a run at a time: every writing command holds ``.lock`` (an ``fcntl``
lock, released by the kernel when the process dies, so a crashed holder never blocks the next
run); the file names the holder's PID and command for the message a second writer gets. Under
torchrun rank 0 takes the lock and is the only writer; the other ranks only read.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fidan import RUN_FORMAT, __version__, atomic, dist
from fidan.config import Config, to_toml
from fidan.errors import FidanError


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def for_config(cls, cfg: Config, create: bool = True, save_config: bool | None = None) -> RunDir:
        """The run directory ``cfg`` names. ``create`` makes it if new; the config is saved when
        the run is new, or when ``save_config`` says so (``fidan pipeline``)."""
        run = cls(Path(cfg.run.root) / cfg.run.name)
        run.check_format()
        if create and dist.is_main():  # under torchrun, rank 0 alone creates and writes
            new = not (run.path / "fidan.json").exists()
            run.path.mkdir(parents=True, exist_ok=True)
            if new:
                atomic.write_json(run.path / "fidan.json", {"format": RUN_FORMAT, "fidan": __version__})
            if new or save_config:
                run.save_config(cfg)
            if new:
                run.mark_latest()
        return run

    def save_config(self, cfg: Config) -> None:
        names = list(cfg.to_dict())
        header = (f"# resolved by fidan {__version__}; config hash {cfg.section_hash(*names)} "
                  f"(per-stage hashes in stages/*.json)\n")
        atomic.write_text(self.path / "config.toml", header + to_toml(cfg))

    def mark_latest(self) -> None:
        """Record this run as the latest one (read by :func:`latest` under the same root)."""
        atomic.write_text(self.path.parent / ".latest", self.path.name + "\n")

    @contextmanager
    def lock(self, command: str | None = None) -> Iterator[None]:
        """Hold the run's writer lock; a second writer fails at once, naming the holder. Re-entrant
        within one process. Under torchrun, rank 0 holds it for all the ranks, or the ``fidan
        pipeline --nproc`` that launched them does (``FIDAN_LOCK_HOLDER`` names the run)."""
        if self in _HELD or not dist.is_main() or os.environ.get(LOCK_HOLDER_ENV) == str(self.path.resolve()):
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise FidanError(f"{self.path} is in use by {holder}; wait for it to finish, or use another "
                             f"--run.name") from None
        command = command or " ".join(["fidan", *sys.argv[1:]])
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} ({command})".encode(), 0)
        _HELD.add(self)
        try:
            yield
        finally:
            _HELD.discard(self)
            os.ftruncate(fd, 0)
            os.close(fd)  # closing releases the lock

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and self.path.resolve() == other.path.resolve()

    def check_format(self) -> None:
        stamp = self.path / "fidan.json"
        if not stamp.exists():
            if self.path.exists() and any(p.name != ".lock" for p in self.path.iterdir()):
                raise FidanError(f"{self.path}: not a fidan run directory (no fidan.json); "
                                 f"choose another --run.name")
            return
        try:
            found = json.loads(stamp.read_text()).get("format")
        except (ValueError, OSError):
            raise FidanError(f"{stamp}: unreadable run stamp; choose another --run.name") from None
        if found != RUN_FORMAT:
            raise FidanError(f"{self.path}: written by run-directory format {found}, this fidan reads format "
                             f"{RUN_FORMAT}; start a new run with --run.name=<new name>")

    def stage(self, name: str) -> Path:
        path = self.path / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stamp(self, name: str) -> Path:
        return self.path / "stages" / f"{name}.json"

    def stage_hash(self, name: str) -> str | None:
        stamp = self.stamp(name)
        if not stamp.exists():
            return None
        try:
            return json.loads(stamp.read_text()).get("config_hash")
        except ValueError:
            return None

    @staticmethod
    def stamp_record(name: str, config_hash: str, summary: dict[str, Any],
                     overrides: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
        return {"stage": name, "config_hash": config_hash, "fidan": __version__,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "overrides": list(overrides), "summary": summary}

    def mark_done(self, name: str, config_hash: str, summary: dict[str, Any],
                  overrides: tuple[str, ...] | list[str] = ()) -> None:
        atomic.write_json(self.stamp(name), self.stamp_record(name, config_hash, summary, overrides))

    def require(self, relative: str, produced_by: str) -> Path:
        path = self.path / relative
        if not path.exists():
            raise FidanError(f"{path} is missing; run `fidan {produced_by} --run.name={self.path.name}` first")
        return path


_HELD: set[RunDir] = set()
LOCK_HOLDER_ENV = "FIDAN_LOCK_HOLDER"  # set by `fidan pipeline --nproc` for the torchrun it starts


def latest(root: str | Path = "runs") -> RunDir:
    """The run ``<root>/.latest`` names, else the most recently created run under ``root``."""
    root = Path(root)
    pointer = root / ".latest"  # a dot-name, so a run called "latest" cannot clash
    if pointer.exists():
        name = pointer.read_text(encoding="utf-8").strip()
        if name and (root / name / "fidan.json").exists():
            return RunDir(root / name)
    runs = [p for p in root.glob("*") if (p / "fidan.json").exists()]
    if not runs:
        raise FidanError(f"no runs under {root}/; start one with `make demo` or `fidan pipeline --preset tiny`")
    return RunDir(max(runs, key=lambda p: (p / "fidan.json").stat().st_mtime))
