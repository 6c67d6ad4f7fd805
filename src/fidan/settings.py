"""What a setting says about itself: the metadata the stage contract reads from config fields.

A setting is a dataclass field. Made with :func:`setting`, it can say

* ``exec_only``: it changes how a stage runs, never what the stage produces (worker count,
  device, logging cadence); no stage hash covers it;
* ``when``: it only matters when another setting of its section has a given value (LoRA's rank
  when ``method = "lora"``); a stage hash covers it only then;
* ``choices``: the values it accepts, checked when the config is built;
* ``check``: for a number, the :class:`Range` it must lie in (``positive``, ``at_least(1)``,
  ``fraction`` ...), checked when the config is built. Every number must also be finite.

Its one-line help is the comment written after it in the source, which ``fidan <stage> --help``
prints; there is no second copy of it. This module imports nothing of fidan, so every layer may
use it.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import math
import tokenize
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class When:
    """A condition on another setting of the same section: it equals one of ``values`` or, with
    ``contains``, its comma-separated list names one of them."""
    key: str
    values: tuple[Any, ...]
    contains: bool = False
    negate: bool = False          # holds when the setting is none of ``values``

    def holds(self, section: Any) -> bool:
        value = getattr(section, self.key)
        if self.contains:
            return any(v in [x.strip() for x in str(value).split(",")] for v in self.values)
        return (value in self.values) != self.negate

    def __str__(self) -> str:
        op = "names" if self.contains else ("is not" if self.negate else "=")
        return f"{self.key} {op} {' or '.join(str(v) for v in self.values)}"


def only_if(key: str, *values: str) -> When:
    return When(key, values)


def unless(key: str, *values: Any) -> When:
    """The setting matters only when ``key`` is none of ``values`` (a weight other than 0)."""
    return When(key, values, negate=True)


def if_step(*names: str) -> When:
    """For the data section: the setting matters only when ``steps`` names one of these steps."""
    return When("steps", names, contains=True)


@dataclass(frozen=True)
class Range:
    """The numbers a setting accepts: at least ``lo`` and at most ``hi`` (either may be absent),
    each bound excluded when ``lo_open`` / ``hi_open``. NaN and infinities never pass."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def admits(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def __str__(self) -> str:
        lo, hi = _number(self.lo), _number(self.hi)
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        return ""

    def describe(self, integer: bool) -> str:
        """``an integer >= 1``, ``a finite number in [0, 1]``: what the error message asks for."""
        return f"{'an integer' if integer else 'a finite number'} {self}".strip()


def _number(x: float | None) -> str:
    if x is None:
        return ""
    if float(x).is_integer() and x >= 2**16:
        for k in range(17, 64):
            if x in (2**k, 2**k - 1):
                return f"2**{k}" + (" - 1" if x == 2**k - 1 else "")
    return f"{int(x)}" if float(x).is_integer() else repr(x)


def at_least(lo: float) -> Range:
    return Range(lo)


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Range:
    return Range(lo, hi, lo_open, hi_open)


positive = Range(0, lo_open=True)            # > 0
non_negative = Range(0)                      # >= 0 (0 is usually "off" or "all")
fraction = Range(0, 1)                       # a share or probability, in [0, 1]
below_one = Range(0, 1, hi_open=True)        # [0, 1): Adam's betas, dropout
finite = Range()                             # any finite number
SEED = Range(0, 2**32 - 1)                   # what every random generator here takes


def setting(default: Any, *, exec_only: bool = False, when: When | None = None,
            choices: tuple[str, ...] | None = None, check: Range | None = None) -> Any:
    """A dataclass field carrying the stage contract's metadata (see the module docstring)."""
    meta = {"exec_only": exec_only, "when": when, "choices": choices, "check": check}
    return field(default=default, metadata={k: v for k, v in meta.items() if v})


def out_of_range(f: dataclasses.Field, value: Any) -> str | None:
    """Why a number does not fit its field's range (``None`` when it does, or is no number);
    a number without a declared range must still be finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    limits = f.metadata.get("check") or finite
    if limits.admits(value):
        return None
    return f"{value!r} (must be {limits.describe(isinstance(value, int))})"


def is_exec_only(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("exec_only"))


def matters(section: Any, f: dataclasses.Field) -> bool:
    """Whether a field's value can change what a stage produces, given the rest of its section."""
    if is_exec_only(f):
        return False
    when = f.metadata.get("when")
    return when is None or when.holds(section)


def unmet(section: Any, f: dataclasses.Field) -> When | None:
    """The condition a field waits for when, given the rest of its section, it has no effect."""
    when = f.metadata.get("when")
    return when if when is not None and not when.holds(section) else None


def hashed_values(section: Any) -> dict[str, Any]:
    """The settings of one section that can change a stage's output, by name (a sub-table, such
    as ``[sft.lora]``, as a nested dict, when it matters at all)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        if matters(section, f):
            value = getattr(section, f.name)
            out[f.name] = hashed_values(value) if dataclasses.is_dataclass(value) else value
    return out


@functools.cache
def comments(cls: type) -> dict[str, str]:
    """The comment written after each field of a dataclass, read from its source: the settings'
    help text. A comment-only line indented past the field continues its comment; one at the
    field's own indentation introduces the next field."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    current, column, leading = None, 0, ""
    at_line_start = True
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            at_line_start = True
            continue
        if tok.type in (tokenize.INDENT, tokenize.DEDENT):
            continue
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if not at_line_start and current:               # after the field, on its line
                out[current] = f"{out.get(current, '')} {text}".strip()
            elif current and tok.start[1] > column:         # a continuation line
                out[current] = f"{out.get(current, '')} {text}".strip()
            else:                                            # a comment above the next field
                current, leading = None, f"{leading} {text}".strip()
            at_line_start = False
            continue
        if at_line_start and tok.type == tokenize.NAME and tok.string in names:
            current, column = tok.string, tok.start[1]
            if leading:
                out[current], leading = leading, ""
        elif at_line_start:
            current = None
        at_line_start = False
    return out
