"""A head on the trunk: a linear read-out of the GPT's hidden states. The reward model (one score
per answer, read at its last token), PPO's value head (one value per position) and the
classifier (class logits at the last token) are all this, with different outputs and inits."""
from __future__ import annotations

import torch
from torch import nn


class ScalarHead(nn.Linear):
    """``d_model -> outputs``; with one output the last dimension is squeezed away. ``zero``
    starts it at exactly 0 (a reward or value head must not start with an opinion)."""

    def __init__(self, d_model: int, outputs: int = 1, zero: bool = True):
        super().__init__(d_model, outputs)
        self.outputs = outputs
        if zero:
            nn.init.zeros_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = super().forward(hidden)
        return out.squeeze(-1) if self.outputs == 1 else out

    def at(self, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The head read at one position per row: ``hidden[b, index[b]]``."""
        return self(hidden[torch.arange(len(hidden), device=hidden.device), index.to(hidden.device)])
