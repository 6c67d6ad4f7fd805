"""DPO settings swept on a copy of a finished tiny-demo run (issue 19, item 3): each variant is the
rlhf stage with ``--rlhf.algo=dpo`` and a few settings, written to its own folder
(``rlhf-<variant>/``), and with ``--eval`` the report card's red-team rows for it (and the SFT model),
computed as the eval stage computes them (``eval/redteam.py``, the tiny preset's eval.limit);
``--sft-row`` adds the SFT model's.

    python benchmarks/dpo_sweep.py RUN_DIR [--eval] [--sft-row] NAME="--rlhf.dpo.lr=1e-4 --rlhf.dpo.steps=100" ...

Run it on a copy of a run (it adds ``rlhf-<variant>/`` folders). Prints one markdown row per
variant (also appended to ``RUN_DIR/dpo-sweep.md``) with the load average at its start and end.

The sampled win rate's 95% interval is the normal one of the mean of per-answer outcomes (win 1,
tie 1/2, loss 0) over the eval_prompts x eval_samples answers; it treats the answers as
independent (four per prompt), so it is somewhat too narrow. The red-team rows carry the eval
stage's Wilson intervals.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable


def win_interval(outcomes: dict) -> tuple[float, float, float]:
    """(win rate, low, high) of win 1 / tie 1/2 / loss 0 outcomes, normal 95% interval."""
    w, t, n = outcomes["win"], outcomes["tie"], sum(outcomes.values())
    mean = (w + 0.5 * t) / n
    var = (w + 0.25 * t) / n - mean ** 2
    half = 1.96 * math.sqrt(max(var, 0.0) / n)
    return mean, mean - half, mean + half


def fidan(stage: str, run: Path, args: list[str]) -> float:
    cmd = [PYTHON, "-m", "fidan", stage, f"--run.root={run.parent}", f"--run.name={run.name}", "--run.threads=1", *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def redteam_rows(folder: Path, limit: int = 120) -> str:
    """The eval stage's red-team rows (``eval/redteam.py`` as the tiny preset runs it: eval.limit
    120) for one chat model, written to ``<folder>/redteam.json``."""
    import torch

    from fidan.eval import redteam
    from fidan.model.io import load_model
    from fidan.tokenizer.bpe import FidanTokenizer
    torch.set_num_threads(1)
    model, _ = load_model(folder, "cpu")
    tok = FidanTokenizer.load(folder.parent / "tokenizer" / "tokenizer.json")
    with torch.no_grad():
        e = redteam.run(model.eval(), tok, chat=True, limit=limit)
    e.pop("replies", None)
    (folder / "redteam.json").write_text(json.dumps(e, indent=1, ensure_ascii=False))
    return " | ".join(f"{e[k]:.1%} [{e[k + '_lo']:.1%}-{e[k + '_hi']:.1%}]"
                      for k in ("refusal_rate_harmful", "over_refusal_benign"))


def row(name: str, args: list[str], run: Path, with_eval: bool) -> str:
    out = f"rlhf-{name}"
    load0 = os.getloadavg()[0]
    seconds = fidan("rlhf", run, ["--rlhf.algo=dpo", f"--rlhf.out={out}", *args])
    r = json.loads((run / out / "summary.json").read_text())
    red = redteam_rows(run / out) if with_eval else "- | -"
    load1 = os.getloadavg()[0]
    win, lo, hi = win_interval(r["judge_outcomes_sampled"])
    kinds = r["judge_by_kind_sampled"]
    return (f"| {name} | `{' '.join(args)}` | {r['kl_to_sft']:.3f} | **{win:.1%}** [{lo:.1%}-{hi:.1%}] "
            f"| {kinds.get('fact', {}).get('win_rate', 0):.1%} | {kinds.get('harmful', {}).get('win_rate', 0):.1%} "
            f"| {r['judge_win_rate']:.1%} | {r['chat_scores'].get('facts_acc', 0):.1%} | {red} "
            f"| {seconds:.0f} | {load0:.1f}-{load1:.1f} |")


HEAD = ("| variant | settings | KL to SFT | judge win rate, sampled [95%] | facts | red team | greedy | chat facts "
        "| harmful refused (eval) | over-refusal, benign (eval) | seconds | load |\n|" + "---|" * 12)


def main(argv: list[str]) -> None:
    with_eval, sft_row = "--eval" in argv, "--sft-row" in argv
    argv = [a for a in argv if a not in ("--eval", "--sft-row")]
    run = Path(argv[0]).resolve()
    print(HEAD, flush=True)
    if sft_row:   # the SFT model's red-team rows, for reference
        print(f"| sft | | | | | | | | {redteam_rows(run / 'sft')} | | |", flush=True)
    for spec in argv[1:]:
        name, _, args = spec.partition("=")
        line = row(name, args.split(), run, with_eval)
        print(line, flush=True)
        with open(run / "dpo-sweep.md", "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
