"""GRPO's curriculum as it ran: the curve of a finished ``fidan rlhf --rlhf.algo=grpo`` run.

Reads ``<run>/<out>/metrics.jsonl`` and ``summary.json`` and prints, as markdown: the share of
groups with signal (some but not all answers right) and the success rate per block of steps,
with the curriculum stage of each; the stages as they ran; and each stage's held-out problems
answered greedily by the SFT and the GRPO model (95% Wilson intervals; the gain with Newcombe's
interval), which ``fidan.rlhf.grpo`` measured at the end of training.

    python benchmarks/grpo_curriculum.py RUN_DIR [--out rlhf-grpo] [--block 5]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", default="rlhf")
    ap.add_argument("--block", type=int, default=5, help="steps per row of the curve")
    a = ap.parse_args()
    folder = a.run / a.out
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]
    summary = json.loads((folder / "summary.json").read_text())
    print("| steps | stage | groups with signal | answers right (all groups) | right, current stage |")
    print("|---|---|---|---|---|")
    for start in range(0, len(rows), a.block):
        part = rows[start:start + a.block]
        stages = "/".join(dict.fromkeys(r["stage"] for r in part))
        mean = lambda k, part=part: sum(r[k] for r in part) / len(part)
        print(f"| {start + 1}-{start + len(part)} | {stages} | {mean('groups_with_signal'):.0%} | "
              f"{mean('reward'):.1%} | {mean('stage_reward'):.1%} |")
    print()
    print("| stage | first step | steps | success | groups with signal |")
    print("|---|---|---|---|---|")
    for s in summary.get("curriculum", []):
        print(f"| {s['stage']} | {s['first_step'] + 1} | {s['steps']} | {s['success']:.1%} | "
              f"{s['groups_with_signal']:.0%} |")
    held = summary.get("held_out")
    if held:
        print()
        print("| held-out problems (greedy) | n | SFT [95% CI] | GRPO [95% CI] | gain [95% CI] |")
        print("|---|---|---|---|---|")
        for stage, v in held.items():
            ci = lambda c: f"[{c[0]:.1%}, {c[1]:.1%}]"
            print(f"| {stage} | {v['n']} | {v['sft']:.1%} {ci(v['sft_ci'])} | {v['grpo']:.1%} {ci(v['grpo_ci'])} | "
                  f"{v['gain']:+.1%} [{v['gain_ci'][0]:+.1%}, {v['gain_ci'][1]:+.1%}] |")


if __name__ == "__main__":
    main()
