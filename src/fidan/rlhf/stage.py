"""The rlhf stage: start from the SFT model and align it with PPO, DPO or GRPO.

``rlhf.algo`` picks the algorithm: ``ppo`` (``ppo.py``, against the reward model), ``dpo``
(``dpo.py``, directly on the reward stage's preference pairs) or ``grpo`` (``grpo.py``, with a
verifiable reward: the right final answer to arithmetic word problems). Every algorithm ends
with the same held-out evaluation, so their rows compare:

* reward-model score of greedy answers to held-out prompts (``judge.held_out``: evaluation-set
  fact questions and every red-team request), SFT vs aligned model;
* the judge's win rate of the aligned model over the SFT model on those prompts (a win counts 1,
  a tie 1/2), overall and per prompt kind, when the embedded world's rule judge applies: for
  ``eval_samples`` answers per prompt sampled at temperature 1 (the distribution PPO optimises),
  and for greedy answers;
* KL(aligned || SFT) per answer, estimated from answers the aligned model samples;
* held-out facts and word problems in chat form.

Every algorithm trains on the shared loop (``train/loop.py``): PPO and GRPO as outer steps
(collect rollouts, then optimise), DPO as ordinary batches; so all three checkpoint every
``rlhf.ckpt_every`` steps and resume exactly.

Writes ``<out>/model.safetensors`` (a plain chat model), ``metrics.jsonl``, ``summary.json``
and ``reward_vs_kl.png`` (PPO). ``<out>`` is ``rlhf.out`` (``rlhf/`` by default).
"""
from __future__ import annotations

import torch

from fidan import atomic
from fidan.context import StageContext
from fidan.infer.answers import chat_scores
from fidan.model.gpt import GPT
from fidan.model.io import load_model
from fidan.progress import Progress
from fidan.rlhf import algorithms, judge
from fidan.rlhf.reward import load_reward_model, scores
from fidan.rlhf.rollout import answer_logprobs, answer_tokens, prompt_ids, sample, sample_seeds
from fidan.tokenizer.bpe import FidanTokenizer, carry


@torch.no_grad()
def evaluate(ctx: StageContext, policy: GPT, ref: GPT, tok: FidanTokenizer, response_tokens: int) -> dict:
    """Held-out comparison of the aligned model with the SFT model (see the module docstring)."""
    cfg = ctx.cfg
    c = cfg.rlhf
    policy.eval()
    out: dict = {}
    prompts = judge.held_out(ctx.input("eval_sets"), c.eval_prompts) if ctx.has_input("eval_sets") else []
    if not any(p.kind != "harmful" for p in prompts):   # no question with a checkable answer: nothing to judge
        prompts = []
    room = policy.cfg.context - response_tokens - 1
    ids = [prompt_ids(tok, p.text, room) for p in prompts]
    if ids:
        mine = sample(policy, tok, ids, response_tokens, 0.0, cfg.run.seed)
        base = sample(ref, tok, ids, response_tokens, 0.0, cfg.run.seed)
        if ctx.has_input("reward_model"):
            rm = load_reward_model(ctx.input("reward_model").parent, ctx.device)
            out["rm_score_sft"] = round(float(scores(rm, tok, ids, [a.ids for a in base]).mean()), 4)
            out["rm_score"] = round(float(scores(rm, tok, ids, [a.ids for a in mine]).mean()), 4)
        out.update(judge_compare(prompts, [tok.decode(a.ids) for a in mine], [tok.decode(b.ids) for b in base]))
        # sampled at temperature 1 (what PPO optimises), eval_samples answers per prompt from each model
        k = max(1, c.eval_samples)
        with Progress(total=2 * k * len(ids), desc="held-out answers", unit="answers") as bar:
            seeds = [cfg.run.seed + 3 + i for i in range(k)]
            sampled = [a for answers in sample_seeds(policy, tok, ids, response_tokens, 1.0, seeds, progress=bar)
                       for a in answers]
            sampled_sft = [a for answers in sample_seeds(ref, tok, ids, response_tokens, 1.0, seeds, progress=bar)
                           for a in answers]
        compared = judge_compare(prompts * k, [tok.decode(a.ids) for a in sampled],
                                 [tok.decode(b.ids) for b in sampled_sft])
        out["judge_win_rate_sampled"] = compared["judge_win_rate"]
        out["judge_outcomes_sampled"] = compared["judge_outcomes"]
        out["judge_by_kind_sampled"] = compared["judge_by_kind"]
        answers = [a.ids for a in sampled]
        kl = answer_logprobs(policy, ids * k, answers, tok.pad) - answer_logprobs(ref, ids * k, answers, tok.pad)
        out["kl_to_sft"] = round(float(kl.mean()), 4)
        out["eval_prompts"] = len(prompts)
        out["eval_samples"] = k
    if ctx.has_input("eval_sets"):
        eval_dir = ctx.input("eval_sets")
        out["chat_scores"] = {k: round(v, 4) for k, v in chat_scores(policy, tok, eval_dir, cfg.sft.eval_items).items()}
    return out


def judge_compare(prompts: list[judge.Prompt], mine: list[str], base: list[str]) -> dict:
    """The judge's verdicts on the aligned model's answers against the SFT model's: win rate
    (a win counts 1, a tie 1/2), outcomes, mean judge scores, overall and per prompt kind."""
    rows = [(p.kind, judge.prefer(p, a, b), judge.score(p, a), judge.score(p, b))
            for p, a, b in zip(prompts, mine, base)]

    def summary(subset):
        outcome = {"win": sum(r[1] == "a" for r in subset), "tie": sum(r[1] == "tie" for r in subset),
                   "loss": sum(r[1] == "b" for r in subset)}
        n = max(len(subset), 1)
        return {"win_rate": round((outcome["win"] + 0.5 * outcome["tie"]) / n, 4), "outcomes": outcome,
                "score": round(sum(r[2] for r in subset) / n, 4), "score_sft": round(sum(r[3] for r in subset) / n, 4)}

    overall = summary(rows)
    return {"judge_win_rate": overall["win_rate"], "judge_outcomes": overall["outcomes"],
            "judge_score": overall["score"], "judge_score_sft": overall["score_sft"],
            "judge_by_kind": {kind: summary([r for r in rows if r[0] == kind])
                              for kind in sorted({r[0] for r in rows})}}


def check(cfg) -> None:
    """Validation before work: the algorithm must exist."""
    algorithms.get(cfg.rlhf.algo)


def run(ctx: StageContext) -> dict:
    c = ctx.cfg.rlhf
    torch.manual_seed(ctx.cfg.run.seed)
    tok = FidanTokenizer.load(ctx.tokenizer_of("sft"))
    carry(ctx.input("sft").parent, ctx.out)
    sft_folder = ctx.input("sft").parent
    policy, sft_info = load_model(sft_folder, ctx.device)
    ref, _ = load_model(sft_folder, ctx.device)
    ref.eval().requires_grad_(False)
    response_tokens = answer_tokens(policy.cfg.context, c.response_tokens)
    # still the SFT model's kind of model: eval and serving read "chat" (use the chat template) and "tokenizer"
    info = {**{k: sft_info[k] for k in ("tokenizer",) if k in sft_info}, "chat": True, "stage": "rlhf", "algo": c.algo}
    summary = algorithms.get(c.algo)(ctx, policy, ref, tok, info=info, response_tokens=response_tokens)
    if ctx.rank != 0:  # under torchrun rank 0 alone evaluates and writes the summary
        return summary
    with ctx.autocast():
        result = {"algo": c.algo, **summary, **evaluate(ctx, policy, ref, tok, response_tokens)}
    atomic.write_json(ctx.out / "summary.json", result)
    ctx.say(describe(result))
    return result


def describe(r: dict) -> str:
    parts = [f"{r['algo']}"]
    if "eval_prompts" not in r:
        parts.append("no held-out prompts to compare the aligned model on (no evaluation questions in data/eval)")
    if "rm_score" in r:
        parts.append(f"reward-model score on held-out prompts {r['rm_score_sft']:+.3f} (SFT) -> {r['rm_score']:+.3f}")
    if "kl_to_sft" in r:
        parts.append(f"KL to SFT {r['kl_to_sft']:.3f} nats per answer")
    if "judge_win_rate" in r:
        o, s = r["judge_outcomes"], r["judge_outcomes_sampled"]
        kinds = ", ".join(f"{kind} {v['win_rate']:.1%}" for kind, v in r["judge_by_kind_sampled"].items())
        parts.append(f"judge win rate over SFT on {r['eval_prompts']} held-out prompts: "
                     f"{r['judge_win_rate_sampled']:.1%} sampled ({s['win']} wins, {s['tie']} ties, {s['loss']} losses "
                     f"over {r['eval_samples']} answers each; {kinds}), {r['judge_win_rate']:.1%} greedy "
                     f"({o['win']} / {o['tie']} / {o['loss']})")
    if "held_out" in r:   # GRPO: each curriculum stage's held-out problems, answered greedily
        parts.append("held-out problems, greedy, SFT -> GRPO: " + ", ".join(
            f"{stage} {v['sft']:.1%} -> {v['grpo']:.1%} ({v['gain']:+.1%}, 95% CI {v['gain_ci'][0]:+.1%} to "
            f"{v['gain_ci'][1]:+.1%}; n={v['n']})" for stage, v in r["held_out"].items()))
    return parts[0] + ": " + "; ".join(parts[1:])
