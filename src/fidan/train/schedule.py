"""Learning-rate schedule: linear warm-up, then cosine, linear or constant to ``min_lr_ratio * lr``,
or "wsd" (warm-up, stable, decay): constant until the last ``decay_fraction`` of the steps, then a
linear warm-down to ``min_lr_ratio * lr``."""
from __future__ import annotations

import math

from fidan.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    low = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        decay = max(1, round(cfg.decay_fraction * cfg.steps))
        begin = max(cfg.warmup_steps, cfg.steps - decay)
        return cfg.lr - (cfg.lr - low) * min(1.0, max(0, step - begin) / max(1, cfg.steps - begin))
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "linear":
        return cfg.lr - (cfg.lr - low) * progress
    return low + 0.5 * (cfg.lr - low) * (1 + math.cos(math.pi * progress))
