"""Four samples per prompt: ``rollout.sample`` once per seed (each prompt prefilled four times)
against ``rollout.sample_seeds`` (one prefill, ``BatchDecoder.repeat``): seconds, and how many
answers are the same.

    PYTHONPATH=src python benchmarks/sample_seeds.py RUN_DIR [threads]

The prompts are the first 128 of rlhf's held-out prompts (``judge.held_out``), asked of the run's
SFT model at temperature 1 with 64 answer tokens, as the rlhf stage's evaluation samples them.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from fidan.model.io import load_model
from fidan.rlhf import judge
from fidan.rlhf.rollout import prompt_ids, sample, sample_seeds
from fidan.tokenizer.bpe import FidanTokenizer


def main(run: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    tok = FidanTokenizer.load(run / "tokenizer/tokenizer.json")
    model, _ = load_model(run / "sft", "cpu")
    ids = [prompt_ids(tok, p.text, model.cfg.context - 64 - 1) for p in judge.held_out(run / "data/eval", 120)[:128]]
    seeds = [1337 + 3 + i for i in range(4)]
    t = time.perf_counter()
    alone = [sample(model, tok, ids, 64, 1.0, s) for s in seeds]
    t_alone = time.perf_counter() - t
    t = time.perf_counter()
    merged = sample_seeds(model, tok, ids, 64, 1.0, seeds)
    t_merged = time.perf_counter() - t
    same = sum(a.ids == b.ids and a.ended == b.ended for x, y in zip(alone, merged) for a, b in zip(x, y))
    print(f"{len(ids)} prompts x {len(seeds)} seeds: one call per seed {t_alone:.1f} s, one prefill "
          f"{t_merged:.1f} s ({t_alone / t_merged:.1f}x), same answers {same}/{len(ids) * len(seeds)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
