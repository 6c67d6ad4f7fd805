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

Writes ``<out>/model.safetensors`` (a plain chat model), ``metrics.jsonl``, ``summary.json``
and ``reward_vs_kl.png`` (PPO). ``<out>`` is ``rlhf/`` unless ``rlhf.out`` says otherwise.
"""
from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import torch

from fidan import atomic
from fidan.config import Config
from fidan.errors import FidanError
from fidan.finetune.evaluate import chat_scores
from fidan.model.gpt import GPT
from fidan.model.io import load_model, save_model
from fidan.rlhf import judge
from fidan.rlhf.reward import load_reward_model, scores
from fidan.rlhf.rollout import answer_logprob, answer_tokens, pack, prompt_ids, sample
from fidan.rundir import RunDir
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.train import checkpoint
from fidan.train.loop import setup_threads


def training_prompts(cfg: Config, run: RunDir) -> list[judge.Prompt]:
    """The embedded world's training prompts, else the prompts of the reward stage's pairs."""
    if judge.applies(cfg):
        return judge.balanced(judge.world_prompts(cfg)["train"], cfg.reward.harmful_share)
    pairs = run.path / "reward" / "pairs.jsonl"
    out = []
    for line in pairs.read_text(encoding="utf-8").splitlines():
        prompt = json.loads(line)["prompt"]
        out.append(judge.Prompt(prompt if isinstance(prompt, str) else prompt[-1]["content"], "other", ""))
    if not out:
        raise FidanError(f"{pairs}: no prompts to train on")
    return out


@torch.no_grad()
def evaluate(cfg: Config, run: RunDir, policy: GPT, ref: GPT, tok: FidanTokenizer) -> dict:
    """Held-out comparison of the aligned model with the SFT model (see the module docstring)."""
    c = cfg.rlhf
    policy.eval()
    out: dict = {}
    world = judge.applies(cfg)
    prompts = judge.held_out(cfg, c.eval_prompts) if world else []
    room = policy.cfg.context - c.response_tokens - 1
    ids = [prompt_ids(tok, p.text, room) for p in prompts]
    if ids:
        mine = sample(policy, tok, ids, c.response_tokens, 0.0, cfg.run.seed)
        base = sample(ref, tok, ids, c.response_tokens, 0.0, cfg.run.seed)
        reward_folder = run.path / "reward"
        if (reward_folder / "model.safetensors").exists():
            rm = load_reward_model(reward_folder)
            out["rm_score_sft"] = round(float(scores(rm, tok, ids, [a.ids for a in base]).mean()), 4)
            out["rm_score"] = round(float(scores(rm, tok, ids, [a.ids for a in mine]).mean()), 4)
        out.update(judge_compare(prompts, [tok.decode(a.ids) for a in mine], [tok.decode(b.ids) for b in base]))
        # sampled at temperature 1 (what PPO optimises), eval_samples answers per prompt from each model
        k = max(1, c.eval_samples)
        sampled = [a for i in range(k) for a in sample(policy, tok, ids, c.response_tokens, 1.0, cfg.run.seed + 3 + i)]
        sampled_sft = [a for i in range(k) for a in sample(ref, tok, ids, c.response_tokens, 1.0, cfg.run.seed + 3 + i)]
        compared = judge_compare(prompts * k, [tok.decode(a.ids) for a in sampled],
                                 [tok.decode(b.ids) for b in sampled_sft])
        out["judge_win_rate_sampled"] = compared["judge_win_rate"]
        out["judge_outcomes_sampled"] = compared["judge_outcomes"]
        out["judge_by_kind_sampled"] = compared["judge_by_kind"]
        seqs = pack(ids * k, [a.ids for a in sampled], tok.pad)
        out["kl_to_sft"] = round(float((answer_logprob(policy, seqs) - answer_logprob(ref, seqs)).mean()), 4)
        out["eval_prompts"] = len(prompts)
        out["eval_samples"] = k
    eval_dir = run.path / "data" / "eval"
    if eval_dir.exists():
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


def run_ppo(cfg: Config, run: RunDir, policy: GPT, ref: GPT, tok: FidanTokenizer, out: Path, quiet: bool) -> dict:
    from fidan.rlhf.ppo import PPO, PolicyWithValue, log_line
    from fidan.stages import stage_hash

    c = cfg.rlhf
    reward_folder = run.require("reward/model.safetensors", "reward").parent
    rm = load_reward_model(reward_folder)
    model = PolicyWithValue(policy)
    optimizer = torch.optim.AdamW([{"params": model.policy.parameters(), "lr": c.lr},
                                   {"params": model.value_head.parameters(), "lr": c.value_lr}],
                                  betas=(0.9, 0.95), weight_decay=0.0)
    prompts = training_prompts(cfg, run)
    room = policy.cfg.context - c.response_tokens - 1
    encoded = [prompt_ids(tok, p.text, room) for p in prompts]
    world = judge.applies(cfg)
    true_score = (lambda idx, texts: [judge.score(prompts[i], t) for i, t in zip(idx, texts)]) if world else None
    algo = PPO(model, ref, rm, tok, c, optimizer, true_score)
    config_hash = stage_hash(cfg, "rlhf")
    ckpt_root = out / "ckpt"
    start = 0
    resumed = checkpoint.latest(ckpt_root) if ckpt_root.exists() else None
    if resumed and resumed.state.get("config_hash") == config_hash:
        model.load_state_dict(resumed.weights)
        optimizer.load_state_dict(resumed.state["optimizer"])
        start, algo.kl_coef = resumed.state["step"], resumed.state["kl_coef"]
        algo.moments.n, algo.moments.mean, algo.moments.m2 = resumed.state["moments"]
        if not quiet:
            print(f"resuming PPO from step {start}")
    metrics = out / "metrics.jsonl"
    if start == 0:
        atomic.write_text(metrics, "")
    else:  # drop records written after the checkpoint
        kept = [ln for ln in metrics.read_text().splitlines() if ln and json.loads(ln)["step"] <= start]
        atomic.write_text(metrics, "".join(ln + "\n" for ln in kept))
    t0 = time.perf_counter()
    for step in range(start, c.steps):
        rng = random.Random(cfg.run.seed * 7919 + step)
        index = [rng.randrange(len(prompts)) for _ in range(c.prompts_per_step)]
        ro = algo.rollout([encoded[i] for i in index], index, cfg.run.seed * 1000 + step)
        stats = algo.update(ro, torch.Generator().manual_seed(step))
        record = {"step": step + 1, **ro.stats, **stats, "elapsed_s": round(time.perf_counter() - t0, 2)}
        log_line(metrics, record)
        if not quiet and ((step + 1) % 5 == 0 or step == start):
            print(f"ppo step {step + 1}/{c.steps}: reward {record['reward']:+.3f}  kl {record['kl']:.3f}  "
                  f"entropy {record['entropy']:.2f}  clip {record['clip_frac']:.2f}  "
                  f"value loss {record['value_loss']:.3f}  length {record['length']:.1f}"
                  + (f"  judge {record['judge_score']:+.2f}" if "judge_score" in record else ""), flush=True)
        if (step + 1) % 10 == 0 or step + 1 == c.steps:
            checkpoint.save(ckpt_root, model, optimizer, step + 1,
                            {"config_hash": config_hash, "kl_coef": algo.kl_coef, "moments": algo.moments.state()},
                            {"stage": "rlhf"}, 2)
    plot_reward_vs_kl(metrics, out / "reward_vs_kl.png")
    return {"steps": c.steps, "train_seconds": round(time.perf_counter() - t0, 1), "final_kl_coef": algo.kl_coef}


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


def run(cfg: Config, run: RunDir, quiet: bool = False) -> dict:
    c = cfg.rlhf
    setup_threads(cfg.train)
    torch.manual_seed(cfg.run.seed)
    tok = FidanTokenizer.load(run.require("tokenizer/tokenizer.json", "tokenizer"))
    sft_folder = run.require("sft/model.safetensors", "sft").parent
    policy, sft_info = load_model(sft_folder)
    ref, _ = load_model(sft_folder)
    ref.eval().requires_grad_(False)
    cfg = copy.deepcopy(cfg)
    cfg.rlhf.response_tokens = answer_tokens(policy.cfg.context, c.response_tokens)
    c = cfg.rlhf
    out = run.stage(c.out or "rlhf")
    if c.algo == "ppo":
        summary = run_ppo(cfg, run, policy, ref, tok, out, quiet)
    elif c.algo == "dpo":
        from fidan.rlhf.dpo import run_dpo
        summary = run_dpo(cfg, run, policy, ref, tok, out, quiet)
    else:
        from fidan.rlhf.grpo import run_grpo
        summary = run_grpo(cfg, run, policy, ref, tok, out, quiet)
    # still the SFT model's kind of model: eval and serving read "chat" (use the chat template) and "tokenizer"
    inherited = {k: sft_info[k] for k in ("tokenizer",) if k in sft_info}
    save_model(out, policy, {**inherited, "chat": True, "stage": "rlhf", "algo": c.algo})
    result = {"algo": c.algo, **summary, **evaluate(cfg, run, policy, ref, tok)}
    atomic.write_json(out / "summary.json", result)
    if not quiet:
        print(describe(result))
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
