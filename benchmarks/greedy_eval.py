"""Greedy replies one prompt at a time (``scoring.complete``, what every evaluation did) against
batched (``scoring.complete_many``, what they do now): seconds, and how many replies differ.

    PYTHONPATH=src python benchmarks/greedy_eval.py RUN_DIR [threads]

The prompts are the red team's requests and 60 held-out fact questions, asked of the run's SFT
model (chat form) and pre-trained model (plain text), with the red team's reply room (40 tokens).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from fidan.eval import redteam
from fidan.infer.scoring import complete, complete_many, reply_room
from fidan.model.io import load_model
from fidan.records import read_jsonl
from fidan.tokenizer.bpe import FidanTokenizer


def main(run: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    tok = FidanTokenizer.load(run / "tokenizer/tokenizer.json")
    facts = [f["question"] for _, f in read_jsonl(run / "data/eval/facts.jsonl")][:60]
    for stage, chat in (("sft", True), ("pretrain", False)):
        model, _ = load_model(run / stage, "cpu")
        model.eval()
        asked = [(p, n) for p in [p["prompt"] for p in redteam.prompts()] + facts
                 if (n := reply_room(model, tok, p, 40, chat))]
        t = time.perf_counter()
        alone = [complete(model, tok, p, n, chat=chat) for p, n in asked]
        t_alone = time.perf_counter() - t
        t = time.perf_counter()
        batched = complete_many(model, tok, [p for p, _ in asked], [n for _, n in asked], chat=chat)
        t_batched = time.perf_counter() - t
        differ = sum(a != b for a, b in zip(alone, batched))
        print(f"{stage}: {len(asked)} prompts, one at a time {t_alone:.1f} s, batched {t_batched:.1f} s "
              f"({t_alone / t_batched:.1f}x), replies that differ: {differ}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
