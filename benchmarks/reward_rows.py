"""The reward stage's held-out rows for any reward model folder, without training or sampling again.

Scores a reward model (``--reward``, a folder of the run: ``reward``, or a kept copy) on the
pairs the reward stage cached: right vs wrong fact answers (``reward/samples.json``'s ``facts``),
made-up entities, an abstention over an invention (``reward/behaviour.json``), and the written
benign row (each evaluation benign request's helpful answer over a refusal, ``rlhf/heldout.py``).
Each row with its 95% Wilson interval, one JSON line::

    PYTHONPATH=src python benchmarks/reward_rows.py --run runs/demo --reward reward [--pairs-from runs/demo/reward]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from fidan.rlhf.reward import benign_rows, fact_accuracy, load_reward_model
    from fidan.tokenizer.bpe import FidanTokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a run directory with sft and reward done")
    ap.add_argument("--reward", default="reward", help="the reward model's folder (in the run, or a path)")
    ap.add_argument("--pairs-from", help="the folder holding samples.json and behaviour.json (default: run/reward)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    folder = Path(args.reward) if Path(args.reward).is_absolute() else run / args.reward
    cached = Path(args.pairs_from) if args.pairs_from else run / "reward"
    tok = FidanTokenizer.load(run / "tokenizer" / "tokenizer.json")
    rm = load_reward_model(folder, "cpu")
    context = rm.cfg.context
    rows = {"facts": json.loads((cached / "samples.json").read_text(encoding="utf-8"))["facts"],
            "benign": benign_rows()}
    behaviour = cached / "behaviour.json"
    if behaviour.exists():
        rows["unknown"] = json.loads(behaviour.read_text(encoding="utf-8")).get("unknown", [])
    out = {"run": str(run), "reward": str(folder)}
    for name, records in rows.items():
        out[name] = fact_accuracy(rm, tok, records, context)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
