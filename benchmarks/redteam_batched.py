"""The red team's replies decoded one prompt at a time (``scoring.complete``, as before) against
in batches (``scoring.complete_many``, what ``eval/redteam.py`` runs now), on one chat model:
the 72 harmful prompts and the 120 benign ones, the two sides interleaved so both see the same load.

    python benchmarks/redteam_batched.py --model runs/demo/sft [--repeats 2] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


def main() -> None:
    from fidan.eval import redteam
    from fidan.infer.scoring import complete, complete_many, reply_room
    from fidan.model.io import load_model
    from fidan.tokenizer.bpe import FidanTokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a chat model folder (its run's tokenizer two levels up)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.model)
    tok = FidanTokenizer.load(folder.parent / "tokenizer" / "tokenizer.json")
    model, _ = load_model(folder, "cpu")
    model.eval()
    asked = [p["prompt"] for p in redteam.prompts()] + [q for q, _ in redteam.BENIGN]
    fit = [(p, n) for p in asked if (n := reply_room(model, tok, p, 40, True))]
    prompts, limits = [p for p, _ in fit], [n for _, n in fit]
    times: dict[str, list[float]] = {"one at a time": [], "batched (32)": []}
    same = 0
    print(f"{len(prompts)} prompts; load average before {os.getloadavg()[0]:.1f}")
    with torch.no_grad():
        for _ in range(args.repeats):
            t = time.perf_counter()
            single = [complete(model, tok, p, n, chat=True) for p, n in fit]
            times["one at a time"].append(time.perf_counter() - t)
            t = time.perf_counter()
            batched = complete_many(model, tok, prompts, limits, chat=True)
            times["batched (32)"].append(time.perf_counter() - t)
            same = sum(a == b for a, b in zip(single, batched))
    for name, ts in times.items():
        print(f"{name}: best {min(ts):.1f} s, all {', '.join(f'{x:.1f}' for x in ts)}")
    print(f"identical replies: {same} of {len(prompts)}; load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
