"""Gradient-based instance reweighting (IGBI), in the style of Ren et al. 2018, "Learning to
Reweight Examples for Robust Deep Learning".

Ren et al. take one look-ahead SGD step on the batch with per-example weights ``eps``, measure a
small clean dev batch's loss after it, and set each weight from the derivative of that loss with
respect to ``eps_i`` at ``eps = 0``, which is ``-lr * <g_i, g_dev>``: an example whose gradient
points the way the clean batch's gradient points helps, one pointing against it hurts. Weights
are ``max(0, <g_i, g_dev>)``, normalised over the batch (here to mean 1, so the loss keeps its
scale); a batch with no helpful example gets weight 0 everywhere.

The dot products come out exactly and cheaply, without a gradient per example: ``<g_i, g_dev>``
is the directional derivative of example ``i``'s loss along ``g_dev``, so one forward-mode pass
(``torch.func.jvp`` of the per-example loss vector, with ``g_dev`` as the tangent) gives all of
them at about the cost of two forward passes. PyTorch's fused attention kernels have no forward-
mode derivative, so that pass runs on SDPA's math kernel. ``g_dev`` (one backward pass over the
dev batch) is recomputed every ``every`` steps; every step's batch is weighted against the
newest one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from fidan.model.gpt import GPT


def per_example_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's mean cross-entropy over its masked (assistant) tokens."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                         reduction="none").view(targets.shape) * mask
    return ce.sum(1) / mask.sum(1).clamp(min=1)


def plain(model: torch.nn.Module) -> GPT:
    """The GPT inside a compiled and/or DDP-wrapped model."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


class GradientReweighting:
    """Per-example weights for SFT batches from their gradients' agreement with a clean dev batch.

    ``dev`` is the collated clean batch ``(inputs, targets, mask)``; ``parameters`` are the ones
    that train (the agreement is measured in their space); ``corrupted`` (optional) flags the
    training examples known to be wrong, by index, so the mean weight of each group is recorded.
    """

    def __init__(self, dev: tuple[torch.Tensor, ...], parameters: list[torch.nn.Parameter], every: int,
                 corrupted: torch.Tensor | None = None):
        self.dev, self.parameters, self.every = dev, parameters, every
        self.corrupted = corrupted
        self.dev_grad: list[torch.Tensor] | None = None
        self.refreshed_at = -1
        self.sums = {"corrupted": [0.0, 0], "clean": [0.0, 0]}

    def _names(self, model: GPT) -> list[str]:
        by_id = {id(p): n for n, p in model.named_parameters()}
        return [by_id[id(p)] for p in self.parameters]

    def refresh(self, model: GPT) -> None:
        """The dev batch's gradient at the current parameters (no ``.grad`` is touched)."""
        device = next(model.parameters()).device
        x, y, m = (t.to(device) for t in self.dev)
        loss = per_example_loss(model(x), y, m).mean()
        self.dev_grad = [g.detach() for g in torch.autograd.grad(loss, self.parameters, allow_unused=True)]
        self.dev_grad = [torch.zeros_like(p) if g is None else g
                         for p, g in zip(self.parameters, self.dev_grad, strict=True)]

    def agreement(self, model: GPT, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """``<g_i, g_dev>`` for every row of the batch, by one forward-mode pass."""
        names = self._names(model)
        primals = {n: p.detach() for n, p in zip(names, self.parameters, strict=True)}
        tangents = dict(zip(names, self.dev_grad, strict=True))

        def losses(params):
            return per_example_loss(functional_call(model, params, (x,)), y, m)

        with sdpa_kernel(SDPBackend.MATH):
            _, dots = jvp(losses, (primals,), (tangents,))
        return dots.detach().float()

    def weights(self, wrapped: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor,
                indices: torch.Tensor, step: int) -> torch.Tensor:
        model = plain(wrapped)
        if self.dev_grad is None or step // self.every != self.refreshed_at // self.every:
            self.refresh(model)
            self.refreshed_at = step
        dots = self.agreement(model, x, y, m).clamp(min=0)
        total = dots.sum()
        w = dots * (len(dots) / total) if total > 0 else torch.zeros_like(dots)
        self._record(w, indices)
        return w

    def _record(self, w: torch.Tensor, indices: torch.Tensor) -> None:
        if self.corrupted is None:
            return
        bad = self.corrupted[indices.cpu()]
        for name, rows in (("corrupted", bad), ("clean", ~bad)):
            self.sums[name][0] += float(w.cpu()[rows].sum())
            self.sums[name][1] += int(rows.sum())

    def summary(self) -> dict[str, float]:
        """Mean weight given to corrupted and to clean examples over the run."""
        return {f"igbi_mean_weight_{name}": round(total / n, 4) for name, (total, n) in self.sums.items() if n}


def weighted_lm(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
                ) -> torch.Tensor:
    """The batch's loss with each example's mean token loss weighted (weights of mean 1 keep the scale)."""
    return (weights.to(logits.device) * per_example_loss(logits, targets, mask)).mean()
