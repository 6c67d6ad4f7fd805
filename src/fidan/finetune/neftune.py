"""NEFTune (Jain et al. 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning"):
while SFT trains, uniform noise is added to the token embeddings, scaled by
``alpha / sqrt(L * d)`` (``L`` the batch's sequence length, ``d`` the model width), so the model
cannot fit the exact training conversations as easily. ``sft.neftune`` is ``alpha`` (the paper
uses 5-15; 0 = off). The noise is drawn from torch's generator, which the training loop's
checkpoints carry, and only in training mode: the scoring after training sees clean embeddings.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def noisy_embeddings(model: torch.nn.Module, alpha: float) -> Iterator[None]:
    """Within the block, ``model.embed``'s output carries NEFTune's noise in training mode."""
    if alpha <= 0:
        yield
        return

    def add_noise(module, inputs, out):
        if not module.training:
            return out
        scale = alpha / (out.shape[-2] * out.shape[-1]) ** 0.5
        return out + torch.empty_like(out).uniform_(-scale, scale)

    handle = model.embed.register_forward_hook(add_noise)
    try:
        yield
    finally:
        handle.remove()
