"""What a setting says about itself: the metadata the stage contract reads from config fields.

A setting is a dataclass field. Made with :func:`setting`, it can say

* ``exec_only``: it changes how a stage runs, never what the stage produces (worker count,
  device, logging cadence); no stage hash covers it;
* ``when``: it only matters when another setting of its section has a given value (LoRA's rank
  when ``method = "lora"``); a stage hash covers it only then;
* ``choices``: the values it accepts, checked when the config is built.

Its one-line help is the comment written after it in the source, which ``fidan <stage> --help``
prints; there is no second copy of it. This module imports nothing of fidan, so every layer may
use it.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import tokenize
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class When:
    """A condition on another setting of the same section: it equals one of ``values`` or, with
    ``contains``, its comma-separated list names one of them."""
    key: str
    values: tuple[str, ...]
    contains: bool = False

    def holds(self, section: Any) -> bool:
        value = getattr(section, self.key)
        if self.contains:
            return any(v in [x.strip() for x in str(value).split(",")] for v in self.values)
        return value in self.values

    def __str__(self) -> str:
        return f"{self.key} {'names' if self.contains else '='} {' or '.join(self.values)}"


def only_if(key: str, *values: str) -> When:
    return When(key, values)


def if_step(*names: str) -> When:
    """For the data section: the setting matters only when ``steps`` names one of these steps."""
    return When("steps", names, contains=True)


def setting(default: Any, *, exec_only: bool = False, when: When | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field carrying the stage contract's metadata (see the module docstring)."""
    meta = {"exec_only": exec_only, "when": when, "choices": choices}
    return field(default=default, metadata={k: v for k, v in meta.items() if v})


def is_exec_only(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("exec_only"))


def matters(section: Any, f: dataclasses.Field) -> bool:
    """Whether a field's value can change what a stage produces, given the rest of its section."""
    if is_exec_only(f):
        return False
    when = f.metadata.get("when")
    return when is None or when.holds(section)


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
