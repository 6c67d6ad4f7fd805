"""Fine-tuning losses, all over assistant tokens only.

* ``masked_lm``: cross-entropy on the masked tokens, averaged over them.
* instance reweighting (``reweight > 0``): each conversation's loss weighted by
  ``softmax(loss / reweight)`` over the batch, recomputed every step, so examples the model still
  gets wrong count more (a loss-based, self-paced emphasis on hard examples).
* adversarial training in embedding space (``adversarial > 0``, ALUM, Liu et al. 2020): find a
  small perturbation of the input embeddings that most changes the output distribution (one
  normalised gradient step from random noise), and add the symmetric KL between clean and
  perturbed predictions to the loss, which smooths the model around its inputs.
* distillation: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy``
  on temperature-softened logits (Hinton et al. 2015).
"""
from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F

from fidan.model.gpt import GPT


def _token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           reduction="none").view(targets.shape)


def masked_lm(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, reweight: float = 0.0
              ) -> torch.Tensor:
    ce = _token_ce(logits, targets) * mask
    if reweight <= 0:
        return ce.sum() / mask.sum().clamp(min=1)
    per_example = ce.sum(1) / mask.sum(1).clamp(min=1)
    weights = torch.softmax(per_example.detach() / reweight, dim=0) * len(per_example)
    return (weights * per_example).mean()


def example_weights(per_example_loss: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(per_example_loss.detach() / temperature, dim=0) * len(per_example_loss)


def _sym_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    p, q = F.log_softmax(p_logits.float(), -1), F.log_softmax(q_logits.float(), -1)
    kl = (p.exp() * (p - q)).sum(-1) + (q.exp() * (q - p)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def adversarial_term(model: GPT, inputs: torch.Tensor, clean_logits: torch.Tensor, mask: torch.Tensor,
                     epsilon: float, noise: float = 1e-3) -> torch.Tensor:
    embeds = model.embed(inputs)
    # The starting noise is drawn from the batch itself, not the global generator: a micro-batch
    # gets the same noise on whichever rank (and in whichever order) it runs, so N ranks retrace
    # one process's run.
    gen = torch.Generator(device=embeds.device).manual_seed(zlib.crc32(inputs.cpu().numpy().tobytes()))
    delta = (torch.randn(embeds.shape, generator=gen, device=embeds.device, dtype=embeds.dtype) * noise
             ).requires_grad_(True)
    probe = _sym_kl(clean_logits.detach(), model(embeds=embeds.detach() + delta), mask)
    (grad,) = torch.autograd.grad(probe, delta)
    direction = grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    adv_logits = model(embeds=embeds + epsilon * direction.detach())
    return _sym_kl(clean_logits, adv_logits, mask)


def distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 mask: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    t = temperature
    s = F.log_softmax(student_logits.float() / t, -1)
    q = F.log_softmax(teacher_logits.float() / t, -1)
    kl = (q.exp() * (q - s)).sum(-1)
    kl = (kl * mask).sum() / mask.sum().clamp(min=1)
    return alpha * t * t * kl + (1 - alpha) * masked_lm(student_logits, targets, mask)
