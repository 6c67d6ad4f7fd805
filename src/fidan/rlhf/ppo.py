"""PPO against a learned reward, with a per-token KL penalty to the frozen SFT model.

One step: the policy answers a batch of prompts (sampled at temperature 1, so the answers come
from the policy it scores); the reward model scores each whole answer; every answer token gets
the reward ``-kl_coef * (log pi(token) - log pi_ref(token))`` and the last one also gets the
reward-model score (centred on its running mean), minus ``no_eos_penalty`` if the answer was cut off
without ending. A value head on the policy's hidden states estimates returns; advantages come
from GAE and are whitened over the batch. Then ``epochs`` passes of minibatch updates of the
clipped surrogate ``min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)`` and the clipped value
loss. With ``target_kl`` set, the KL coefficient adapts towards it (Ziegler et al. 2019).

Each step logs reward, KL, entropy, clip fraction, value loss, answer length and, when the rule
judge applies, the judge's score of the same answers: the true objective, which the learned
reward only approximates, so the two drifting apart is reward hacking made visible.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fidan.model.gpt import GPT
from fidan.rlhf.rollout import Sequences, pack, sample, token_logprobs
from fidan.tokenizer.bpe import FidanTokenizer


class PolicyWithValue(nn.Module):
    """The policy and a scalar value head reading its final hidden states.

    The value head reads detached hidden states: its loss trains only the head, so a critic that
    starts out wrong cannot push the policy's weights around (on the tiny demo, a shared trunk
    drifted several nats of KL from the SFT model with no gain in reward). The head has its own,
    larger learning rate (``rlhf.value_lr``): it starts from zero and must catch up quickly."""

    def __init__(self, policy: GPT):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.cfg.d_model, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.cfg = policy.cfg

    def forward(self, seqs: Sequences):
        logp, entropy, hidden = token_logprobs(self.policy, seqs, with_hidden=True)
        return logp, entropy, self.value_head(hidden.detach()).squeeze(-1).float()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


class RunningMoments:
    """Running mean (and second moment) of every reward seen so far. The reward is centred on the
    running mean but not divided by the standard deviation: a weak reward model's small score
    differences would otherwise be blown up to unit size and outweigh the KL penalty."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, xs: torch.Tensor) -> None:
        for x in xs.tolist():
            self.n += 1
            d = x - self.mean
            self.mean += d / self.n
            self.m2 += d * (x - self.mean)

    def state(self) -> list[float]:
        return [self.n, self.mean, self.m2]


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Advantages and returns ``[B, T]`` over the masked (answer) positions, which are contiguous."""
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        nxt_mask = mask[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(mask[:, t])
        next_value = values[:, t + 1] * nxt_mask if t + 1 < rewards.shape[1] else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last * nxt_mask) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


@dataclass
class Rollout:
    seqs: Sequences
    logp: torch.Tensor        # [B, T-1] old policy
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    stats: dict[str, float]


class PPO:
    """One PPO learner: ``rollout`` a batch, then ``update`` on it. ``cfg`` is the ``[rlhf]``
    settings; everything lives on the policy's device."""

    def __init__(self, model: PolicyWithValue, ref: GPT, reward: Callable[[Sequences], torch.Tensor],
                 tok: FidanTokenizer, cfg, optimizer: torch.optim.Optimizer,
                 true_score: Callable[[list[int], list[str]], list[float]] | None = None,
                 response_tokens: int | None = None, grad_clip: float = 1.0):
        self.model, self.ref, self.reward, self.tok, self.cfg = model, ref, reward, tok, cfg
        self.optimizer, self.true_score = optimizer, true_score
        self.response_tokens = response_tokens or cfg.response_tokens
        self.grad_clip = grad_clip or float("inf")
        self.kl_coef = cfg.kl_coef
        self.moments = RunningMoments()

    @torch.no_grad()
    def rollout(self, prompts: list[list[int]], prompt_index: list[int], seed: int) -> Rollout:
        c = self.cfg
        policy = self.model.policy
        device = policy.lm_head.weight.device
        answers = sample(policy, self.tok, prompts, self.response_tokens, c.temperature, seed)
        seqs = pack(prompts, [a.ids for a in answers], self.tok.pad).to(device)
        self.model.eval()
        logp, _, values = self.model(seqs)
        ref_logp = token_logprobs(self.ref, seqs)
        mask = seqs.mask.float()
        score = self.reward(seqs).float()
        self.moments.update(score)
        ended = torch.tensor([a.ended for a in answers], dtype=torch.float, device=device)
        final = score - self.moments.mean - c.no_eos_penalty * (1 - ended)
        kl = (logp - ref_logp) * mask
        rewards = -self.kl_coef * kl
        rows = torch.arange(len(answers), device=device)
        rewards[rows, seqs.last - 1] += final        # the target index of the last answer token
        values = values * mask
        adv, returns = gae(rewards, values, mask, c.gamma, c.lam)
        stats = {"reward": float(score.mean()), "kl": float(kl.sum(-1).mean()),
                 "length": float(mask.sum(-1).mean()), "ended": float(ended.mean()), "kl_coef": self.kl_coef}
        if self.true_score is not None:
            texts = [self.tok.decode(a.ids) for a in answers]
            stats["judge_score"] = sum(self.true_score(prompt_index, texts)) / len(texts)
        return Rollout(seqs, logp, values, whiten(adv, mask), returns, stats)

    def update(self, ro: Rollout, generator: torch.Generator) -> dict[str, float]:
        c = self.cfg
        self.model.train()
        n = len(ro.seqs.ids)
        totals = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_frac": 0.0}
        count = 0
        for _ in range(c.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, c.minibatch):
                rows = order[start:start + c.minibatch]
                mb = ro.seqs.select(rows)
                mask = mb.mask.float()
                logp, entropy, values = self.model(mb)
                ratio = torch.exp(logp - ro.logp[rows])
                adv = ro.advantages[rows]
                pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - c.clip, 1 + c.clip))
                old_v = ro.values[rows]
                v_clipped = old_v + (values - old_v).clamp(-c.value_clip, c.value_clip)
                ret = ro.returns[rows]
                vf = 0.5 * torch.maximum((values - ret) ** 2, (v_clipped - ret) ** 2)
                loss = masked_mean(pg, mask) + c.vf_coef * masked_mean(vf, mask)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                self.optimizer.step()
                with torch.no_grad():
                    totals["policy_loss"] += float(masked_mean(pg, mask))
                    totals["value_loss"] += float(masked_mean(vf, mask))
                    totals["entropy"] += float(masked_mean(entropy, mask))
                    totals["clip_frac"] += float(masked_mean(((ratio - 1).abs() > c.clip).float(), mask))
                count += 1
        if c.target_kl > 0:  # adaptive KL: proportional control towards the target
            error = max(-0.2, min(0.2, ro.stats["kl"] / c.target_kl - 1))
            self.kl_coef *= 1 + error   # at most 20% per step
        return {k: v / max(count, 1) for k, v in totals.items()}


def describe(record: dict) -> str:
    """A progress line for one PPO step's record."""
    return (f"reward {record['reward']:+.3f}  kl {record['kl']:.3f}  entropy {record['entropy']:.2f}  "
            f"clip {record['clip_frac']:.2f}  value loss {record['value_loss']:.3f}  length {record['length']:.1f}"
            + (f"  judge {record['judge_score']:+.2f}" if "judge_score" in record else ""))
