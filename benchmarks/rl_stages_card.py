"""The report card's figures that the stages after pre-training make, side by side for two runs
(``benchmarks/rl_stages.sh`` before and after a change): the reward model's rows, PPO's win rate
and KL, the red team and the held-out chat facts of every model, and each stage's seconds.

    python benchmarks/rl_stages_card.py ROOT/A ROOT/B
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def figures(run: Path) -> dict[str, object]:
    stamp = lambda s: json.loads((run / "stages" / f"{s}.json").read_text())["summary"]
    ev = lambda s: json.loads((run / "eval" / f"{s}.json").read_text())
    sft, reward, rlhf = stamp("sft"), stamp("reward"), stamp("rlhf")
    out: dict[str, object] = {
        "sft: held-out facts, base -> sft": f"{sft['base_facts_acc']:.3f} -> {sft['sft_facts_acc']:.3f}",
        "reward: held-out pairs": reward["heldout_accuracy"],
        "reward: right vs wrong fact answers":
            f"{reward.get('fact_pairs_accuracy')} of {reward.get('fact_pairs_pairs')}",
        "reward: judge pairs": reward["judge_pairs"],
        "rlhf: judge win rate sampled / greedy": f"{rlhf['judge_win_rate_sampled']} / {rlhf['judge_win_rate']}",
        "rlhf: rm score sft -> rlhf": f"{rlhf['rm_score_sft']} -> {rlhf['rm_score']}",
        "rlhf: KL to sft": rlhf["kl_to_sft"],
        "rlhf: chat facts": rlhf["chat_scores"].get("facts_acc"),
    }
    for s in ("pretrain", "sft", "rlhf"):
        e = ev(s)
        red = e.get("redteam", {})
        out[f"eval {s}: chat facts"] = e.get("world_facts/chat", {}).get("acc")
        out[f"eval {s}: red team refused / asr / over-refusal"] = " / ".join(
            f"{red.get(k, 0):.3f}" for k in ("refusal_rate_harmful", "asr", "over_refusal_benign"))
        out[f"eval {s}: zero-shot facts mc"] = e.get("world_facts/zero-shot", {}).get("acc")
    times = run.parent / f"{run.name}.times"
    if times.exists():
        for line in times.read_text().splitlines():
            parts = dict(p.split("=", 1) for p in line.split()[1:])
            out[f"seconds: {line.split()[0]}"] = (f"{float(parts['seconds']):.0f} "
                                                  f"(load {parts['load_start']}-{parts['load_end']})")
    return out


def main(a: str, b: str) -> None:
    fa, fb = figures(Path(a)), figures(Path(b))
    print(f"| figure | {Path(a).name} | {Path(b).name} |\n|---|---|---|")
    for k in fa:
        print(f"| {k} | {fa[k]} | {fb.get(k, '-')} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
