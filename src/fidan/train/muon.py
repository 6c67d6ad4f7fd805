"""Muon for the CPU: ``torch.optim.Muon``'s update, with the Newton-Schulz iteration in float32.

``torch.optim.Muon`` orthogonalises in bfloat16, which is fast on GPUs and about 50x slower than
float32 on CPUs without bfloat16 matmul units (measured on the project's machine: one 256 x 96
product 62 ms against 1.2 ms), enough to make a small model's step several times slower. This
class keeps torch's rule (Nesterov momentum ``buf.lerp_(g, 1 - mu)``, five quintic iterations with
coefficients (3.4445, -4.775, 2.0315), decoupled weight decay ``lr * wd``, Keller's shape factor
``sqrt(max(1, rows / cols))``) and runs the iteration in the parameter's own dtype. The training
loop uses it on the CPU and ``torch.optim.Muon`` elsewhere.
"""
from __future__ import annotations

import math

import torch

COEFFICIENTS = (3.4445, -4.775, 2.0315)


def orthogonalise(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately ``U V^T`` of ``g = U S V^T`` (singular values pushed into about 0.7-1.2)."""
    a, b, c = COEFFICIENTS
    x = g.T if g.size(0) > g.size(1) else g
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if g.size(0) > g.size(1) else x


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.02, weight_decay: float = 0.1, momentum: float = 0.95):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mu)
                update = orthogonalise(p.grad.lerp(buf, mu))
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * math.sqrt(max(1, p.shape[0] / p.shape[1])))
