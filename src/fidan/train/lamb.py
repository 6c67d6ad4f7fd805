"""LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76
minutes"): Adam's direction, rescaled per parameter tensor ("layer-wise") by a trust ratio.

For each tensor ``w`` with Adam moments ``m``, ``v`` (bias-corrected), the update direction is
``u = m / (sqrt(v) + eps) + weight_decay * w`` and the step is ``w -= lr * (||w|| / ||u||) * u``,
so every tensor moves by ``lr`` times its own norm whatever the scale of its gradient: the
large-batch regime's big learning rates cannot blow up one layer while another barely moves.
A tensor or update of norm 0 (a zero-initialised adapter) takes the ratio 1. PyTorch has no
LAMB; this is the paper's Algorithm 2 with the identity as the scaling function.

This is fidan's large-batch method, the seed text's "ALUM" (Adaptive Large Batch Update
Momentum); the adversarial ALUM of Liu et al. 2020 is ``sft.adversarial``.
"""
from __future__ import annotations

import torch


class Lamb(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                g = p.grad.float()
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                update = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update = update.add(p.float(), alpha=group["weight_decay"])
                w_norm, u_norm = p.float().norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                state["trust_ratio"] = float(trust)
                p.add_((update * trust).to(p.dtype), alpha=-group["lr"])
        return loss
