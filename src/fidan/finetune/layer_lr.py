"""Layer-wise learning-rate decay (``sft.lr_decay``; ULMFiT's discriminative fine-tuning, the
ELECTRA/BEiT recipe): the top block trains at ``sft.lr``, each block below it at ``decay`` times
the one above, the token embedding at ``decay`` times the bottom block; the final norm and an
untied head train at the full lr. Lower layers, which hold what pre-training learnt to retrieve,
move least.

The groups carry ``lr_scale`` (their peak lr over ``sft.lr``), so the training loop's one
schedule drives them all (``train/loop.set_lr``); weight decay on matrices only, as the loop's
own optimizer does.
"""
from __future__ import annotations

import re

import torch


def depth_scale(name: str, n_blocks: int, decay: float) -> float:
    """The lr multiplier of the parameter ``name`` in a model of ``n_blocks`` blocks."""
    found = re.match(r"blocks\.(\d+)\.", name)
    if found:
        return decay ** (n_blocks - 1 - int(found.group(1)))
    if name.startswith("embed."):
        return decay ** n_blocks
    return 1.0


def decayed_adamw(model: torch.nn.Module, params: list[torch.nn.Parameter], decay: float, lr: float,
                  weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over ``params`` (of ``model``), one group per (lr multiplier, decay or not)."""
    chosen = {id(p) for p in params}
    n_blocks = len(model.blocks)
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if id(p) in chosen:
            groups.setdefault((depth_scale(name, n_blocks, decay), p.dim() >= 2), []).append(p)
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr * scale, "lr_scale": scale, "weight_decay": weight_decay if matrix else 0.0}
         for (scale, matrix), ps in sorted(groups.items(), key=lambda kv: kv[0], reverse=True)],
        lr=lr, betas=betas, eps=1e-8)
