"""Weight-space ensembling of the fine-tuned and the pre-trained model (WiSE-FT, Wortsman et
al. 2022, "Robust fine-tuning of zero-shot models"): after SFT the saved weights are
``base + share x (tuned - base)`` (``sft.wise`` is ``share``; 1 = the tuned weights as trained).
A share below 1 gives back part of what fine-tuning moved (the two models, one fine-tuned from the
other, can be blended weight by weight). On the tiny demo it lowers bpb but loses chat-form facts
and refusals with it (BENCHMARKS.md, "SFT's chat-form facts"), so it is off by default. Only for
methods that keep the pre-trained model's shape (not ``prompt``, not ``distill``)."""
from __future__ import annotations

import torch

from fidan.errors import FidanError
from fidan.model.gpt import GPT


@torch.no_grad()
def interpolate(tuned: GPT, base: GPT, share: float) -> GPT:
    """``tuned`` with every weight set to ``base + share x (tuned - base)``, in place."""
    before = base.state_dict()
    state = tuned.state_dict()
    if state.keys() != before.keys() or any(state[k].shape != before[k].shape for k in state):
        raise FidanError("sft.wise blends the tuned model with the pre-trained one; they must have the same "
                         "weights (not sft.method=prompt or distill)")
    for key, value in state.items():
        value.copy_(torch.lerp(before[key].to(value), value, share))
    return tuned
