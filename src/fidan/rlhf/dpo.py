"""DPO (Rafailov et al. 2023): learn from preference pairs directly, without a reward model.

The loss on a pair is ``-log sigmoid(beta * ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))))``:
raise the chosen answer's likelihood relative to the frozen SFT model more than the rejected
one's. ``beta`` plays the KL penalty's part. It trains on the reward stage's pairs
(``reward/pairs.jsonl``), the very pairs the reward model learned from, on the shared loop.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fidan.context import StageContext
from fidan.model.gpt import GPT, flops_per_token
from fidan.rlhf import preferences
from fidan.rlhf.reward import encode_pair
from fidan.rlhf.rollout import answer_logprob, pack
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.train.loop import Task, inherit, train


def dpo_loss(pi_w, pi_l, ref_w, ref_l, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean DPO loss and the share of pairs whose implicit reward already ranks them right."""
    margin = beta * ((pi_w - ref_w) - (pi_l - ref_l))
    return -F.logsigmoid(margin).mean(), (margin > 0).float().mean()


def run(ctx: StageContext, policy: GPT, ref: GPT, tok: FidanTokenizer, *, info: dict, response_tokens: int = 0) -> dict:
    """DPO on the shared loop, on the reward stage's pairs."""
    cfg = ctx.cfg
    c = cfg.rlhf
    report = preferences.load(ctx.input("pairs"))
    encoded = [encode_pair(tok, p, policy.cfg.context) for p in report.pairs if not p.tie]

    def batch(step: int, micro: int):
        rng = np.random.default_rng([cfg.run.seed, step, micro, 17])
        picks = [encoded[i] for i in rng.integers(0, len(encoded), size=c.dpo.batch)]
        return pack([p[0] for p in picks] * 2, [p[1] for p in picks] + [p[2] for p in picks], tok.pad)

    def loss(model, seqs):
        seqs = seqs.to(next(model.parameters()).device)
        n = len(seqs.ids) // 2
        logp = answer_logprob(model, seqs)
        with torch.no_grad():
            ref_logp = answer_logprob(ref, seqs)
        value, _ = dpo_loss(logp[:n], logp[n:], ref_logp[:n], ref_logp[n:], c.dpo.beta)
        return value, int(seqs.last.sum() + len(seqs.last))

    tcfg = inherit(ctx, steps=c.steps, batch_size=c.dpo.batch, grad_accum=c.dpo.grad_accum, lr=c.lr,
                   warmup_steps=min(5, c.steps), weight_decay=0.0, eval_every=c.steps + 1, ckpt_every=c.ckpt_every)
    # every_parameter_used: the log-probabilities reach lm_head outside the model's forward, which DDP's
    # search for unused parameters would count twice
    task = Task(name="dpo", batch=batch, loss=loss, flops_per_token=flops_per_token(policy.cfg), info=info,
                every_parameter_used=True)
    _, summary = train(policy, tcfg, task, ctx)
    return {"steps": summary["steps"], "train_seconds": summary["train_seconds"], "pairs": len(encoded)}
