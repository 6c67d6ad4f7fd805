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

import json
import random
from pathlib import Path

import torch

from fidan import atomic
from fidan.context import StageContext
from fidan.errors import FidanError
from fidan.infer.answers import chat_scores
from fidan.model.gpt import GPT
from fidan.model.io import load_model
from fidan.records import read_jsonl
from fidan.rlhf import judge
from fidan.rlhf.reward import load_reward_model, scores
from fidan.rlhf.rollout import answer_logprob, answer_tokens, pack, prompt_ids, sample
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.train.loop import Task, inherit, train


def training_prompts(ctx: StageContext) -> list[judge.Prompt]:
    """The embedded world's training prompts, else the prompts of the reward stage's pairs."""
    cfg = ctx.cfg
    if judge.applies(cfg):
        return judge.balanced(judge.world_prompts(cfg)["train"], cfg.reward.harmful_share)
    pairs = ctx.input("pairs")
    out = []
    for _, record in read_jsonl(pairs):
        prompt = record["prompt"]
        out.append(judge.Prompt(prompt if isinstance(prompt, str) else prompt[-1]["content"], "other", ""))
    if not out:
        raise FidanError(f"{pairs}: no prompts to train on")
    return out


@torch.no_grad()
def evaluate(ctx: StageContext, policy: GPT, ref: GPT, tok: FidanTokenizer, response_tokens: int) -> dict:
    """Held-out comparison of the aligned model with the SFT model (see the module docstring)."""
    cfg = ctx.cfg
    c = cfg.rlhf
    policy.eval()
    out: dict = {}
    world = judge.applies(cfg)
    prompts = judge.held_out(cfg, c.eval_prompts) if world else []
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
        sampled = [a for i in range(k) for a in sample(policy, tok, ids, response_tokens, 1.0, cfg.run.seed + 3 + i)]
        sampled_sft = [a for i in range(k) for a in sample(ref, tok, ids, response_tokens, 1.0, cfg.run.seed + 3 + i)]
        compared = judge_compare(prompts * k, [tok.decode(a.ids) for a in sampled],
                                 [tok.decode(b.ids) for b in sampled_sft])
        out["judge_win_rate_sampled"] = compared["judge_win_rate"]
        out["judge_outcomes_sampled"] = compared["judge_outcomes"]
        out["judge_by_kind_sampled"] = compared["judge_by_kind"]
        seqs = pack(ids * k, [a.ids for a in sampled], tok.pad)
        out["kl_to_sft"] = round(float((answer_logprob(policy, seqs) - answer_logprob(ref, seqs)).mean()), 4)
        out["eval_prompts"] = len(prompts)
        out["eval_samples"] = k
    if ctx.has_input("eval_sets"):
        eval_dir = ctx.input("eval_sets")
        out["chat_scores"] = {k: round(v, 4) for k, v in chat_scores(policy, tok, eval_dir, cfg.sft.eval_items).items()}
    return out


def judge_compare(prompts: list[judge.Prompt], mine: list[str], base: list[str]) -> dict:
    """The judge's verdicts on the aligned model's answers against the SFT model's: win rate
    (a win counts 1, a tie 1/2), outcomes, mean judge scores, overall and per prompt kind."""
    rows = [(p.kind, judge.prefer(p, a, b), judge.score(p, a), judge.score(p, b)) for p, a, b in zip(prompts, mine, base)]

    def summary(subset):
        outcome = {"win": sum(r[1] == "a" for r in subset), "tie": sum(r[1] == "tie" for r in subset),
                   "loss": sum(r[1] == "b" for r in subset)}
        n = max(len(subset), 1)
        return {"win_rate": round((outcome["win"] + 0.5 * outcome["tie"]) / n, 4), "outcomes": outcome,
                "score": round(sum(r[2] for r in subset) / n, 4), "score_sft": round(sum(r[3] for r in subset) / n, 4)}

    overall = summary(rows)
    return {"judge_win_rate": overall["win_rate"], "judge_outcomes": overall["outcomes"],
            "judge_score": overall["score"], "judge_score_sft": overall["score_sft"],
            "judge_by_kind": {kind: summary([r for r in rows if r[0] == kind]) for kind in sorted({r[0] for r in rows})}}


def rl_settings(ctx: StageContext):
    """Loop settings for PPO and GRPO: one loop step is one rollout batch."""
    c = ctx.cfg.rlhf
    return inherit(ctx, steps=c.steps, batch_size=c.prompts_per_step, lr=c.lr, warmup_steps=0, schedule="constant",
                   weight_decay=0.0, eval_every=c.steps + 1, ckpt_every=c.ckpt_every, log_every=5)


def run_ppo(ctx: StageContext, policy: GPT, ref: GPT, tok: FidanTokenizer, response_tokens: int,
            info: dict) -> dict:
    from fidan.rlhf.ppo import PPO, PolicyWithValue, describe

    cfg = ctx.cfg
    c = cfg.rlhf
    rm = load_reward_model(ctx.input("reward_model").parent, ctx.device)
    model = PolicyWithValue(policy).to(ctx.device)
    tcfg = rl_settings(ctx)
    optimizer = torch.optim.AdamW([{"params": model.policy.parameters(), "lr": c.lr},
                                   {"params": model.value_head.parameters(), "lr": c.value_lr}],
                                  betas=(tcfg.beta1, tcfg.beta2), weight_decay=0.0)
    prompts = training_prompts(ctx)
    room = policy.cfg.context - response_tokens - 1
    encoded = [prompt_ids(tok, p.text, room) for p in prompts]
    world = judge.applies(cfg)
    true_score = (lambda idx, texts: [judge.score(prompts[i], t) for i, t in zip(idx, texts)]) if world else None
    algo = PPO(model, ref, rm, tok, c, optimizer, true_score, response_tokens=response_tokens,
               grad_clip=tcfg.grad_clip)

    def step(i: int) -> dict:
        rng = random.Random(cfg.run.seed * 7919 + i)
        index = [rng.randrange(len(prompts)) for _ in range(c.prompts_per_step)]
        with ctx.autocast():
            ro = algo.rollout([encoded[j] for j in index], index, cfg.run.seed * 1000 + i)
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
    _, summary = train(model, tcfg, task, ctx)
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


def run(ctx: StageContext) -> dict:
    c = ctx.cfg.rlhf
    torch.manual_seed(ctx.cfg.run.seed)
    tok = FidanTokenizer.load(ctx.input("tokenizer"))
    sft_folder = ctx.input("sft").parent
    policy, sft_info = load_model(sft_folder, ctx.device)
    ref, _ = load_model(sft_folder, ctx.device)
    ref.eval().requires_grad_(False)
    response_tokens = answer_tokens(policy.cfg.context, c.response_tokens)
    # still the SFT model's kind of model: eval and serving read "chat" (use the chat template) and "tokenizer"
    info = {**{k: sft_info[k] for k in ("tokenizer",) if k in sft_info}, "chat": True, "stage": "rlhf", "algo": c.algo}
    if c.algo == "ppo":
        summary = run_ppo(ctx, policy, ref, tok, response_tokens, info)
    elif c.algo == "dpo":
        from fidan.rlhf.dpo import run_dpo
        summary = run_dpo(ctx, policy, ref, tok, info)
    else:
        from fidan.rlhf.grpo import run_grpo
        summary = run_grpo(ctx, policy, ref, tok, info)
    with ctx.autocast():
        result = {"algo": c.algo, **summary, **evaluate(ctx, policy, ref, tok, response_tokens)}
    atomic.write_json(ctx.out / "summary.json", result)
    ctx.say(describe(result))
    return result


def describe(r: dict) -> str:
    parts = [f"{r['algo']}"]
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
    return parts[0] + ": " + "; ".join(parts[1:])
