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

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fidan import atomic, dist
from fidan.context import StageContext
from fidan.errors import FidanError
from fidan.model.gpt import GPT
from fidan.model.heads import ScalarHead
from fidan.records import read_jsonl
from fidan.rlhf import judge
from fidan.rlhf.reward import load_reward_model
from fidan.rlhf.rollout import Sequences, by_length, pack, prompt_ids, rl_settings, sample, token_logprobs
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.train.loop import Task, train


class PolicyWithValue(nn.Module):
    """The policy and a scalar value head reading its final hidden states.

    The value head reads detached hidden states: its loss trains only the head, so a critic that
    starts out wrong cannot push the policy's weights around (on the tiny demo, a shared trunk
    drifted several nats of KL from the SFT model with no gain in reward). The head has its own,
    larger learning rate (``rlhf.ppo.value_lr``): it starts from zero and must catch up quickly."""

    def __init__(self, policy: GPT):
        super().__init__()
        self.policy = policy
        self.value_head = ScalarHead(policy.cfg.d_model)
        self.cfg = policy.cfg

    def forward(self, seqs: Sequences):
        return by_length(self._forward, seqs)   # rows of similar length together: little padding computed

    def _forward(self, seqs: Sequences):
        logp, entropy, hidden = token_logprobs(self.policy, seqs, with_hidden=True)
        return logp, entropy, self.value_head(hidden.detach()).float()


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


def token_rewards(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, kl_coef: float,
                  final: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``[B, T]``: ``-kl_coef * (logp - ref_logp)`` on every answer token, plus
    ``final`` (the centred reward-model score) on the token at index ``last`` of each row. Returns
    the rewards and the per-token KL estimate (zero outside ``mask``)."""
    kl = (logp - ref_logp) * mask
    rewards = -kl_coef * kl
    rows = torch.arange(len(final), device=rewards.device)
    rewards[rows, last] += final
    return rewards, kl


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float,
                      clip_high: float | None = None):
    """PPO's per-token policy loss ``max(-A * r, -A * clip(r, 1 - eps, 1 + eps))`` (the negated
    clipped objective) and the ratio ``r = exp(logp - old_logp)``. Where the clipped side is the
    larger loss (a positive advantage with ``r > 1 + eps``, a negative one with ``r < 1 - eps``),
    the loss is constant in ``logp``: that token gives no gradient. ``clip_high`` sets the upper
    bound apart, ``1 + clip_high`` (DAPO's clip-higher, GRPO's ``[rlhf.grpo] clip_high``: an
    unlikely rewarded token may grow further in one update than a likely one may shrink)."""
    ratio = torch.exp(logp - old_logp)
    high = clip if clip_high is None else clip_high
    return torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + high)), ratio


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
    """One PPO learner: ``rollout`` a batch, then ``update`` on it. ``cfg`` is the ``[rlhf.ppo]``
    settings; everything lives on the policy's device."""

    def __init__(self, model: PolicyWithValue, ref: GPT, reward: Callable[[Sequences], torch.Tensor],
                 tok: FidanTokenizer, cfg, optimizer: torch.optim.Optimizer,
                 true_score: Callable[[list[int], list[str]], list[float]] | None = None,
                 response_tokens: int = 64, temperature: float = 1.0, grad_clip: float = 1.0):
        self.model, self.ref, self.reward, self.tok, self.cfg = model, ref, reward, tok, cfg
        self.optimizer, self.true_score = optimizer, true_score
        self.response_tokens, self.temperature = response_tokens, temperature
        self.grad_clip = grad_clip or float("inf")
        self.kl_coef = cfg.kl_coef
        self.moments = RunningMoments()

    @torch.no_grad()
    def rollout(self, prompts: list[list[int]], prompt_index: list[int], seed: int) -> Rollout:
        c = self.cfg
        policy = self.model.policy
        device = policy.lm_head.weight.device
        answers = sample(policy, self.tok, prompts, self.response_tokens, self.temperature, seed)
        seqs = pack(prompts, [a.ids for a in answers], self.tok.pad).to(device)
        self.model.eval()
        logp, _, values = self.model(seqs)
        ref_logp = by_length(lambda s: token_logprobs(self.ref, s), seqs)
        mask = seqs.mask.float()
        score = by_length(self.reward, seqs).float()
        self.moments.update(torch.cat([s.to(device) for s in dist.gather(score.cpu())]))  # every rank's answers
        ended = torch.tensor([a.ended for a in answers], dtype=torch.float, device=device)
        final = score - self.moments.mean - c.no_eos_penalty * (1 - ended)
        # seqs.last - 1: the target index of the last answer token
        rewards, kl = token_rewards(logp, ref_logp, mask, self.kl_coef, final, seqs.last - 1)
        values = values * mask
        adv, returns = gae(rewards, values, mask, c.gamma, c.lam)
        stats = {"reward": float(score.mean()), "kl": float(kl.sum(-1).mean()),
                 "length": float(mask.sum(-1).mean()), "ended": float(ended.mean()), "kl_coef": self.kl_coef}
        if self.true_score is not None:
            texts = [self.tok.decode(a.ids) for a in answers]
            stats["judge_score"] = sum(self.true_score(prompt_index, texts)) / len(texts)
        stats = dist.all_mean(stats)  # the step's statistics over every rank's rollouts
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
                pg, ratio = clipped_surrogate(logp, ro.logp[rows], ro.advantages[rows], c.clip)
                old_v = ro.values[rows]
                v_clipped = old_v + (values - old_v).clamp(-c.value_clip, c.value_clip)
                ret = ro.returns[rows]
                vf = 0.5 * torch.maximum((values - ret) ** 2, (v_clipped - ret) ** 2)
                loss = masked_mean(pg, mask) + c.vf_coef * masked_mean(vf, mask)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                dist.average_gradients(self.model.parameters())
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
        return dist.all_mean({k: v / max(count, 1) for k, v in totals.items()})


def describe(record: dict) -> str:
    """A progress line for one PPO step's record."""
    return (f"reward {record['reward']:+.3f}  kl {record['kl']:.3f}  entropy {record['entropy']:.2f}  "
            f"clip {record['clip_frac']:.2f}  value loss {record['value_loss']:.3f}  length {record['length']:.1f}"
            + (f"  judge {record['judge_score']:+.2f}" if "judge_score" in record else ""))


def training_prompts(ctx: StageContext) -> list[judge.Prompt]:
    """The judge's training prompts (the embedded world's, or questions made from your text),
    with the reward stage's written benign requests and made-up-entity questions
    (``reward.benign_pairs``, ``unknown_pairs``: so PPO also answers requests where refusing or
    inventing loses), else the prompts of the reward stage's pairs."""
    cfg = ctx.cfg
    conversations = ctx.input("conversations") if ctx.has_input("conversations") else None
    prompts, _ = judge.training_prompts(cfg, conversations)
    if prompts:
        r = cfg.reward
        extra = (judge.benign_prompts(cfg, r.benign_pairs) + judge.unknown_prompts(cfg, r.unknown_pairs)
                 if judge.applies(cfg) else [])
        return judge.balanced(prompts, cfg.reward.harmful_share) + extra
    pairs = ctx.input("pairs")
    out = []
    for _, record in read_jsonl(pairs):
        prompt = record["prompt"]
        out.append(judge.Prompt(prompt if isinstance(prompt, str) else prompt[-1]["content"], "other", ""))
    if not out:
        raise FidanError(f"{pairs}: no prompts to train on")
    return out


def run(ctx: StageContext, policy: GPT, ref: GPT, tok: FidanTokenizer, *, info: dict, response_tokens: int) -> dict:
    """PPO on the shared loop: one outer step = a rollout batch and ``epochs`` passes over it."""
    cfg = ctx.cfg
    c = cfg.rlhf
    rm = load_reward_model(ctx.input("reward_model").parent, ctx.device)
    model = PolicyWithValue(policy).to(ctx.device)
    tcfg = rl_settings(ctx)
    optimizer = torch.optim.AdamW([{"params": model.policy.parameters(), "lr": c.lr},
                                   {"params": model.value_head.parameters(), "lr": c.ppo.value_lr}],
                                  betas=(tcfg.beta1, tcfg.beta2), weight_decay=0.0)
    prompts = training_prompts(ctx)
    room = policy.cfg.context - response_tokens - 1
    encoded = [prompt_ids(tok, p.text, room) for p in prompts]
    judged = all(p.kind != "other" for p in prompts)   # the judge's own prompts: its score is the true objective
    true_score = (lambda idx, texts: [judge.score(prompts[i], t) for i, t in zip(idx, texts)]) if judged else None
    algo = PPO(model, ref, rm, tok, c.ppo, optimizer, true_score, response_tokens=response_tokens,
               temperature=c.temperature, grad_clip=tcfg.grad_clip)

    def step(i: int) -> dict:
        rng = random.Random(cfg.run.seed * 7919 + i)
        index = [rng.randrange(len(prompts)) for _ in range(c.prompts_per_step)]
        index = list(dist.share(index))  # under torchrun: this rank's share of the step's prompts
        with ctx.autocast():
            ro = algo.rollout([encoded[j] for j in index], index, cfg.run.seed * 1000 + i + 7 * dist.rank())
            stats = algo.update(ro, torch.Generator().manual_seed(i))
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in {**ro.stats, **stats}.items()} | \
            {"tokens": int(ro.seqs.mask.sum())}

    def state() -> dict:
        return {"kl_coef": algo.kl_coef, "moments": algo.moments.state()}

    def load_state(s: dict) -> None:
        algo.kl_coef = s["kl_coef"]
        algo.moments.n, algo.moments.mean, algo.moments.m2 = s["moments"]

    task = Task(name="ppo", step=step, optimizer=optimizer, state=state, load_state=load_state,
                export=lambda m: m.policy, describe=describe, info=info)
    dist.need_multiple(c.prompts_per_step, "rlhf.prompts_per_step")
    _, summary = train(model, tcfg, task, ctx)
    if dist.is_main():
        plot_reward_vs_kl(ctx.out / "metrics.jsonl", ctx.out / "reward_vs_kl.png")
    return {"steps": c.steps, "train_seconds": summary["train_seconds"], "final_kl_coef": algo.kl_coef}


def plot_reward_vs_kl(metrics: Path, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(5.5, 4))
    kl = [r["kl"] for r in rows]
    ax.plot(kl, [r["reward"] for r in rows], "o-", ms=3, label="reward model score")
    if "judge_score" in rows[0]:
        ax.plot(kl, [r["judge_score"] for r in rows], "s--", ms=3, label="judge score (true objective)")
    ax.set_xlabel("KL(policy || SFT) per answer, nats")
    ax.set_ylabel("mean score of the batch's answers")
    ax.set_title("PPO: reward against KL")
    ax.legend()
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
