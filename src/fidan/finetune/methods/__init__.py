"""Fine-tuning methods: one module each, registered by name with :func:`method`.

A method decides what trains. Its ``prepare(ctx, base)`` gets the stage context and the
pre-trained model (on the context's device) and returns a :class:`Prepared`: the model to
train, the parameters the optimizer holds, and optional hooks (``on_step`` before each step,
``teacher`` for distillation, ``finish`` after training). Its settings are its own sub-table of
``[sft]`` in ``config.py`` (``[sft.lora]``), hashed only when the method is chosen.

Adding a method is one new file here with ``@method("name")`` on its ``prepare``, and, if it has
settings, its sub-table in ``config.SFTConfig``; the SFT stage, ``fidan methods`` and the
``--sft.method`` check find it by name.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fidan.errors import FidanError
from fidan.model.gpt import GPT


@dataclass
class Prepared:
    model: GPT
    parameters: list[torch.nn.Parameter]              # what the optimizer holds
    on_step: Callable[[int], None] | None = None       # called before each step (gradual unfreezing)
    teacher: GPT | None = None                          # distillation: the frozen teacher
    finish: Callable[[GPT, Path], GPT] | None = None    # after training: the plain model to save (LoRA merges)


Prepare = Callable[..., Prepared]
_REGISTRY: dict[str, Prepare] = {}


def method(name: str) -> Callable[[Prepare], Prepare]:
    """Register ``prepare(ctx, base) -> Prepared`` as the method ``name``."""
    def register(fn: Prepare) -> Prepare:
        _REGISTRY[name] = fn
        return fn
    return register


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> Prepare:
    _discover()
    if name not in _REGISTRY:
        raise FidanError(f"bad value for 'sft.method': {name!r} (choose one of: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
