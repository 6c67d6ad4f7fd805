"""GRPO's curriculum as it ran: the curve of a finished ``fidan rlhf --rlhf.algo=grpo`` run.

Reads ``<run>/<out>/metrics.jsonl`` and ``summary.json`` and prints, as markdown: the share of
groups with signal (some but not all answers right) and the success rate per block of steps,
with the curriculum stage of each (with ``dynamic_sampling``, also the update's share of groups
with signal and the rounds drawn); the stages as they ran; the held-out curve where the run had
``[rlhf.grpo] eval_every``; and each stage's held-out problems
answered greedily by the SFT and the GRPO model (95% Wilson intervals; the gain with Newcombe's
interval), which ``fidan.rlhf.grpo`` measured at the end of training.

    python benchmarks/grpo_curriculum.py RUN_DIR [--out rlhf-grpo] [--block 5] [--errors sft-os20 --n 90]

``--errors FOLDER`` also sorts that model's greedy replies to the first ``--n`` held-out one-step
problems: right, an equation with the question's numbers but a wrong result, an equation with
other numbers, or no equation at all (what the model gets wrong: the arithmetic or the copying).
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

EQUATION = re.compile(r"\s*(\d+) [-+*] (\d+) = (\d+)")


def errors(run: Path, folder: str, n: int) -> Counter:
    import torch

    from fidan.config import build_config
    from fidan.corpus.world import build_world
    from fidan.infer.answers import right_number
    from fidan.model.io import load_model
    from fidan.rlhf import curriculum
    from fidan.rlhf.grpo import MATH_TOKENS
    from fidan.rlhf.rollout import prompt_ids, sample
    from fidan.tokenizer.bpe import FidanTokenizer
    torch.set_num_threads(1)
    cfg = build_config(None, str(run / "config.toml"))
    c = cfg.corpus
    tok = FidanTokenizer.load(run / "tokenizer" / "tokenizer.json")
    model, _ = load_model(run / folder, "cpu")
    model.eval()
    items = curriculum.held_out(build_world(cfg.run.seed, c.n_places, c.n_people, c.n_creatures),
                                cfg.run.seed)["one_step"][:n]
    room = model.cfg.context - MATH_TOKENS - 1
    got = sample(model, tok, [prompt_ids(tok, it["question"], room) for it in items], MATH_TOKENS, 0.0, 0)
    kinds: Counter = Counter()
    for it, a in zip(items, got):
        reply, numbers = tok.decode(a.ids), {int(x) for x in re.findall(r"\d+", it["question"])}
        m = EQUATION.match(reply)
        kinds["right" if right_number(reply, it["answer"]) else "no equation" if not m else
              "the question's numbers, wrong result" if {int(m.group(1)), int(m.group(2))} <= numbers else
              "other numbers"] += 1
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", default="rlhf")
    ap.add_argument("--block", type=int, default=5, help="steps per row of the curve")
    ap.add_argument("--errors", default="", help="a model folder of the run whose one-step replies to sort")
    ap.add_argument("--n", type=int, default=90)
    a = ap.parse_args()
    if a.errors:
        print(f"{a.errors}, greedy, first {a.n} held-out one-step problems: {dict(errors(a.run, a.errors, a.n))}")
    folder = a.run / a.out
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]
    summary = json.loads((folder / "summary.json").read_text())
    dynamic = "update_signal" in rows[0]   # [rlhf.grpo] dynamic_sampling: the update's groups and rounds
    more = " update's groups with signal | rounds |" if dynamic else ""
    print("| steps | stage | groups with signal | answers right (all groups) | right, current stage |" + more)
    print("|---|---|---|---|---|" + "---|---|" * dynamic)
    for start in range(0, len(rows), a.block):
        part = rows[start:start + a.block]
        stages = "/".join(dict.fromkeys(r["stage"] for r in part))
        mean = lambda k, part=part: sum(r[k] for r in part) / len(part)
        extra = f" {mean('update_signal'):.0%} | {mean('rounds'):.2f} |" if dynamic else ""
        print(f"| {start + 1}-{start + len(part)} | {stages} | {mean('groups_with_signal'):.0%} | "
              f"{mean('reward'):.1%} | {mean('stage_reward'):.1%} |" + extra)
    print()
    print("| stage | first step | steps | success | groups with signal |")
    print("|---|---|---|---|---|")
    for s in summary.get("curriculum", []):
        print(f"| {s['stage']} | {s['first_step'] + 1} | {s['steps']} | {s['success']:.1%} | "
              f"{s['groups_with_signal']:.0%} |")
    curve = [r for r in rows if any(k.startswith("held_out_") for k in r)]
    if curve:   # [rlhf.grpo] eval_every: the GRPO model's held-out greedy accuracy along the run
        stages = [k for k in curve[0] if k.startswith("held_out_")]
        print()
        print("| step | " + " | ".join(f"held-out {k[9:]} (greedy)" for k in stages) + " | KL to SFT |")
        print("|---|" + "---|" * len(stages) + "---|")
        for r in curve:
            kl = f"{r['kl']:.2f}" if "kl" in r else "(no group with signal)"
            print(f"| {r['step']} | " + " | ".join(f"{r[k]:.1%}" for k in stages) + f" | {kl} |")
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
