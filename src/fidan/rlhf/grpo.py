"""GRPO (Shao et al. 2024, DeepSeekMath) with a verifiable reward: the right final answer.

For each arithmetic word problem the policy samples a group of ``group`` answers; an answer
earns 1 when its final number (after ``####``, else the last number) is the true answer, else 0.
Each answer's advantage is its reward minus the group's mean, divided by the group's standard
deviation, shared by all its tokens: no value model and no learned reward, so nothing to hack
but the checker. The loss is PPO's clipped surrogate per token plus ``grpo_kl`` times the k3
estimate of KL to the SFT model, ``exp(ref - logp) - (ref - logp) - 1``. A group whose answers
all score the same carries no signal and is left out of the update.

Training problems are generated from the world like the evaluation set, minus its problems.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from fidan import atomic
from fidan.config import Config
from fidan.corpus.generate import eval_sets
from fidan.corpus.stories import word_problem
from fidan.corpus.world import build_world
from fidan.errors import FidanError
from fidan.finetune.evaluate import final_number
from fidan.model.gpt import GPT
from fidan.rlhf import judge
from fidan.rlhf.ppo import log_line, masked_mean
from fidan.rlhf.rollout import pack, prompt_ids, sample, token_logprobs
from fidan.rundir import RunDir
from fidan.tokenizer.bpe import FidanTokenizer

MATH_TOKENS = 48   # worked solutions are longer than the chat answers PPO samples


def training_problems(cfg: Config, n: int) -> list[tuple[str, int]]:
    c = cfg.corpus
    world = build_world(cfg.run.seed, c.n_places, c.n_people, c.n_creatures)
    _, heldout = eval_sets(world, cfg.run.seed)
    rng = random.Random(f"fidan-grpo-{cfg.run.seed}")
    out, seen = [], set(heldout)
    while len(out) < n:
        p = word_problem(world, rng.choice(["en", "tr"]), rng)
        if p.key not in seen:
            seen.add(p.key)
            out.append((p.question, p.answer))
    return out


def group_advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """``[n_prompts * group]`` rewards -> advantages normalised within each group."""
    r = rewards.view(-1, group)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)


def run_grpo(cfg: Config, run: RunDir, policy: GPT, ref: GPT, tok: FidanTokenizer, out: Path, quiet: bool) -> dict:
    if not judge.applies(cfg):
        raise FidanError("GRPO's verifiable reward needs the embedded world's word problems (no --data.source)")
    c = cfg.rlhf
    per_step = max(1, c.prompts_per_step // c.group)
    problems = training_problems(cfg, 2000)
    room = policy.cfg.context - MATH_TOKENS - 1
    optimizer = torch.optim.AdamW(policy.parameters(), lr=c.lr, betas=(0.9, 0.95), weight_decay=0.0)
    metrics = out / "metrics.jsonl"
    atomic.write_text(metrics, "")
    t0 = time.perf_counter()
    for step in range(c.steps):
        rng = random.Random(cfg.run.seed * 7907 + step)
        picked = [problems[rng.randrange(len(problems))] for _ in range(per_step)]
        prompts = [prompt_ids(tok, q, room) for q, _ in picked for _ in range(c.group)]
        answers_true = [a for _, a in picked for _ in range(c.group)]
        policy.eval()
        answers = sample(policy, tok, prompts, MATH_TOKENS, c.temperature, cfg.run.seed * 1000 + step)
        rewards = torch.tensor([float(final_number(tok.decode(a.ids)) == t) for a, t in zip(answers, answers_true)])
        adv = group_advantages(rewards, c.group)
        informative = rewards.view(-1, c.group).std(1) > 0
        record = {"step": step + 1, "reward": float(rewards.mean()),
                  "groups_with_signal": float(informative.float().mean())}
        keep = informative.repeat_interleave(c.group).nonzero().squeeze(-1)
        if len(keep):
            seqs = pack([prompts[i] for i in keep], [answers[i].ids for i in keep], tok.pad)
            adv_k = adv[keep][:, None]
            with torch.no_grad():
                old = token_logprobs(policy, seqs)
                ref_lp = token_logprobs(ref, seqs)
            policy.train()
            mask = seqs.mask.float()
            for _ in range(c.epochs):
                logp = token_logprobs(policy, seqs)
                ratio = torch.exp(logp - old)
                surrogate = torch.minimum(ratio * adv_k, ratio.clamp(1 - c.clip, 1 + c.clip) * adv_k)
                k3 = torch.exp(ref_lp - logp) - (ref_lp - logp) - 1
                loss = masked_mean(-surrogate + c.grpo_kl * k3, mask)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                optimizer.step()
            record.update(loss=float(loss.detach()), kl=float(masked_mean(logp.detach() - ref_lp, mask) * mask.sum(-1).mean()),
                          length=float(mask.sum(-1).mean()))
        record["elapsed_s"] = round(time.perf_counter() - t0, 2)
        log_line(metrics, record)
        if not quiet and ((step + 1) % 5 == 0 or step == 0):
            print(f"grpo step {step + 1}/{c.steps}: correct {record['reward']:.1%}  "
                  f"groups with signal {record['groups_with_signal']:.0%}", flush=True)
    rows = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln]
    return {"steps": c.steps, "train_seconds": round(time.perf_counter() - t0, 1),
            "train_correct_first": rows[0]["reward"], "train_correct_last": rows[-1]["reward"]}
