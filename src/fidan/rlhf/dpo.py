"""DPO (Rafailov et al. 2023): learn from preference pairs directly, without a reward model.

The loss on a pair, with ``h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))``
(the difference of the implicit rewards, over ``beta``), is

* ``sigmoid`` (the paper's): ``-log sigmoid(beta * h)``: raise the chosen answer's likelihood
  relative to the frozen SFT model more than the rejected one's; ``beta`` plays the KL
  penalty's part;
* ``ipo`` (Azar et al. 2023): ``(h - 1 / (2 * beta)) ** 2``: the same difference pulled to a
  fixed target instead of pushed without end, so it does not overfit deterministic pairs.

``length_norm`` divides each answer's log-ratio by its token count (a per-token reward, as in
SimPO and R-DPO: long written compliance does not win a margin by length alone).
``sft_weight`` adds the chosen answers' per-token negative log-likelihood (RPO, Pang et al.
2024): without it DPO can lower both answers' likelihood and widen the margin by pushing
probability onto answers neither side wrote.

It trains on the reward stage's pairs (``reward/pairs.jsonl``), the very pairs the reward
model learned from, on the shared loop. The pairs are the SFT model's own samples as the
judge labelled them. In runs whose reward stage is older than ``reward.sample_texts``'s
decoding without special tokens, the sampled answers end with the end-of-turn token written out
(``...<|end|>``) and the written compliance does not: :func:`clean_answer` takes it off (the
tokenizer reads ``<|end|>`` in text as plain characters, and :func:`encode_pair` closes every
answer with the real token), so no pair is won by the characters ``<|end|>``, which the model
never writes.

Its settings are its own (``[rlhf.dpo]``: steps, lr, beta, loss, ...), beside the algorithm as
TRL keeps ``DPOConfig``; ``rlhf.steps`` and ``rlhf.lr`` are PPO's and GRPO's.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fidan.context import StageContext
from fidan.errors import FidanError
from fidan.eval import redteam
from fidan.model.gpt import GPT, flops_per_token
from fidan.rlhf import preferences
from fidan.rlhf.reward import encode_pair
from fidan.rlhf.rollout import pack, token_logprobs
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.train.loop import Task, inherit, train

END_TEXT = "<|end|>"   # the end-of-turn token as ``tok.decode`` writes it into a sampled answer


def dpo_loss(pi_w, pi_l, ref_w, ref_l, beta: float, kind: str = "sigmoid") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean DPO loss (``kind`` "sigmoid" or "ipo") and the share of pairs whose implicit reward
    already ranks them right."""
    h = (pi_w - ref_w) - (pi_l - ref_l)
    if kind == "sigmoid":
        value = -F.logsigmoid(beta * h).mean()
    elif kind == "ipo":
        value = ((h - 1.0 / (2.0 * beta)) ** 2).mean()
    else:
        raise FidanError(f"bad value for 'rlhf.dpo.loss': {kind!r} (choose one of: sigmoid, ipo)")
    return value, (h > 0).float().mean()


def clean_answer(text: str) -> str:
    """An answer without the end-of-turn token written out at its end (see the module docstring)."""
    text = text.rstrip()
    while text.endswith(END_TEXT):
        text = text[:-len(END_TEXT)].rstrip()
    return text


def refused(text: str) -> bool:
    """Whether an answer is a refusal (the judge's rule: ``redteam.REFUSAL``)."""
    return bool(redteam.REFUSAL.search(text))


def refusal_contrast(pairs: list[preferences.Pair], per_pair: float, seed: int) -> list[preferences.Pair]:
    """Pairs against over-refusal, made from the pairs themselves: for each pair whose chosen
    answer is no refusal (a question answered), ``per_pair`` pairs on average (the whole part
    always, one more with the fraction's chance) of that answer over a refusal the chosen side
    of another pair holds (the SFT model's own refusals of harmful requests). The judge's pairs
    teach refusing harmful requests and, for questions, little but which answer is right; these
    say a question is answered, not refused."""
    refusals = sorted({p.chosen for p in pairs if refused(p.chosen)})
    answered = [p for p in pairs if not refused(p.chosen)]
    if not refusals or not per_pair:
        return []
    rng = np.random.default_rng([seed, 29])
    whole, part = int(per_pair), per_pair - int(per_pair)
    counts = whole + (rng.random(len(answered)) < part) if part else [whole] * len(answered)
    return [preferences.Pair(p.prompt, p.chosen, refusals[int(i)], source="refusal-contrast")
            for p, k in zip(answered, counts) for i in rng.integers(0, len(refusals), size=int(k))]


def training_pairs(pairs: list[preferences.Pair], tok: FidanTokenizer, context: int, contrast: float = 0.0,
                   seed: int = 0) -> list[tuple]:
    """(prompt, chosen, rejected) ids of the pairs DPO learns from: no ties, answers cleaned
    (:func:`clean_answer`), none whose two answers are the same once cleaned; plus ``contrast``
    refusal-contrast pairs per answered question (:func:`refusal_contrast`)."""
    kept = []
    for p in pairs:
        if p.tie:
            continue
        chosen, rejected = clean_answer(p.chosen), clean_answer(p.rejected)
        if chosen != rejected:
            kept.append(preferences.Pair(p.prompt, chosen, rejected, source=p.source))
    return [encode_pair(tok, p, context) for p in kept + refusal_contrast(kept, contrast, seed)]


def answer_stats(model: GPT, seqs) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence's summed answer log-probability and its answer length in tokens."""
    logp = (token_logprobs(model, seqs) * seqs.mask).sum(-1)
    return logp, seqs.mask.sum(-1).clamp(min=1).to(logp.dtype)


def run(ctx: StageContext, policy: GPT, ref: GPT, tok: FidanTokenizer, *, info: dict, response_tokens: int = 0) -> dict:
    """DPO on the shared loop, on the reward stage's pairs."""
    cfg = ctx.cfg
    d = cfg.rlhf.dpo
    report = preferences.load(ctx.input("pairs"))
    encoded = training_pairs(report.pairs, tok, policy.cfg.context, d.refusal_contrast, cfg.run.seed)
    if not encoded:
        raise FidanError(f"{ctx.input('pairs')}: no preference pair DPO can learn from (all ties or empty)")

    def batch(step: int, micro: int):
        rng = np.random.default_rng([cfg.run.seed, step, micro, 17])
        picks = [encoded[i] for i in rng.integers(0, len(encoded), size=d.batch)]
        return pack([p[0] for p in picks] * 2, [p[1] for p in picks] + [p[2] for p in picks], tok.pad)

    def loss(model, seqs):
        seqs = seqs.to(next(model.parameters()).device)
        n = len(seqs.ids) // 2
        logp, length = answer_stats(model, seqs)
        with torch.no_grad():
            ref_logp, _ = answer_stats(ref, seqs)
        ratio = logp - ref_logp
        if d.length_norm:
            ratio = ratio / length
        value, _ = dpo_loss(ratio[:n], ratio[n:], 0.0, 0.0, d.beta, d.loss)
        if d.sft_weight:
            value = value + d.sft_weight * (-logp[:n] / length[:n]).mean()
        return value, int(seqs.last.sum() + len(seqs.last))

    tcfg = inherit(ctx, steps=d.steps, batch_size=d.batch, grad_accum=d.grad_accum, lr=d.lr,
                   warmup_steps=min(d.warmup_steps, d.steps), weight_decay=0.0, eval_every=d.steps + 1,
                   ckpt_every=cfg.rlhf.ckpt_every)
    # every_parameter_used: the log-probabilities reach lm_head outside the model's forward, which DDP's
    # search for unused parameters would count twice
    task = Task(name="dpo", batch=batch, loss=loss, flops_per_token=flops_per_token(policy.cfg), info=info,
                every_parameter_used=True)
    _, summary = train(policy, tcfg, task, ctx)
    return {"steps": summary["steps"], "train_seconds": summary["train_seconds"], "pairs": len(encoded)}
