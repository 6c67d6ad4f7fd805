"""Choosing what trains: all parameters, chosen layers, or blocks thawed one by one from the top."""
from __future__ import annotations

import re

from torch import nn

from fidan.errors import FidanError


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def select(model: nn.Module, spec: str) -> list[str]:
    """Parameter names chosen by ``spec``: comma-separated block indices (negative counts from the
    top, e.g. ``-1`` is the last block) or regular expressions over parameter names (``lm_head``;
    with tied embeddings it names the one matrix the embedding shares)."""
    n_blocks = len(model.blocks)
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    chosen: list[str] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if re.fullmatch(r"-?\d+", item):
            i = int(item)
            if not -n_blocks <= i < n_blocks:
                raise FidanError(f"sft.layers.blocks: block {i} does not exist (the model has {n_blocks})")
            prefix = f"blocks.{i % n_blocks}."
            chosen += [n for n in names if n.startswith(prefix)]
        else:
            try:
                pattern = re.compile(item)
            except re.error as e:
                raise FidanError(f"sft.layers.blocks: bad pattern {item!r} ({e})") from None
            matched = [n for n in names if pattern.search(n)]
            if not matched:
                raise FidanError(f"sft.layers.blocks: pattern {item!r} matches no parameter")
            chosen += matched
    if not chosen:
        raise FidanError("sft.layers.blocks is empty; name block indices (e.g. -1,-2) or parameter patterns")
    return sorted(set(chosen))


def train_only(model: nn.Module, names: list[str]) -> None:
    freeze_all(model)
    wanted = set(names)
    for n, p in model.named_parameters(remove_duplicate=False):
        if n in wanted:
            p.requires_grad_(True)


class GradualUnfreezing:
    """Start with the output head and the top block; every ``every`` steps thaw the next block
    down (ULMFiT's gradual unfreezing). Embeddings thaw last, with the bottom block."""

    def __init__(self, model: nn.Module, every: int):
        self.model, self.every = model, max(1, every)
        n = len(model.blocks)
        self.groups = [["lm_head.", "norm."]] + [[f"blocks.{i}."] for i in reversed(range(n))]
        self.groups[-1].append("embed.")
        self.thawed = 0

    def schedule(self, step: int) -> int:
        """How many groups are trainable at ``step`` (head and top block from the start)."""
        return min(len(self.groups), 2 + step // self.every)

    def __call__(self, step: int) -> None:
        target = self.schedule(step)
        if target == self.thawed:
            return
        freeze_all(self.model)
        prefixes = tuple(p for group in self.groups[:target] for p in group)
        for n, p in self.model.named_parameters(remove_duplicate=False):
            if n.startswith(prefixes):
                p.requires_grad_(True)
        self.thawed = target
