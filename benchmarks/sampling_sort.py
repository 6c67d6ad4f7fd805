"""What the sort costs in sampling: the rlhf stage's 4 samples per prompt (``rollout.sample_seeds``,
temperature 1, no top-k or top-p) as the engine draws them (in id order, no sort) against the
same draws forced through the sorted path (top-p set to the largest float32 below 1, which keeps
all but a ~6e-8 tail), interleaved.

    PYTHONPATH=src python benchmarks/sampling_sort.py RUN_DIR [--threads 1] [--repeats 2] [--prompts 128]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

from fidan.infer import engine
from fidan.model.io import load_model
from fidan.rlhf import judge
from fidan.rlhf.rollout import prompt_ids, sample_seeds
from fidan.tokenizer.bpe import FidanTokenizer

BELOW_ONE = float(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = FidanTokenizer.load(a.run / "tokenizer/tokenizer.json")
    model, _ = load_model(a.run / "sft", "cpu")
    prompts = judge.held_out(a.run / "data/eval", 120)[:a.prompts]
    ids = [prompt_ids(tok, p.text, model.cfg.context - 64 - 1) for p in prompts]
    seeds = [1337 + 3 + i for i in range(4)]
    plain = engine.sample_rows

    def sorted_rows(logits, params, generators, seen=None):
        return plain(logits, [dataclasses.replace(p, top_p=BELOW_ONE) for p in params], generators, seen)

    print(f"vocabulary {model.cfg.vocab_size}, {len(ids)} prompts x {len(seeds)} seeds, 64 tokens, "
          f"{a.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    for _ in range(a.repeats):
        for name, fn in (("sorted", sorted_rows), ("id order", plain)):
            engine.sample_rows = fn
            t = time.perf_counter()
            sample_seeds(model, tok, ids, 64, 1.0, seeds)
            print(f"  {name:9s} {time.perf_counter() - t:6.1f} s   (load {os.getloadavg()[0]:.1f})")
    engine.sample_rows = plain


if __name__ == "__main__":
    main()
