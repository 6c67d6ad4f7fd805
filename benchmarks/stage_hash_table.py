"""Which stages does each setting re-run? Prints one row per change: the stages whose hash it
changes (so `fidan pipeline` re-runs them), for the tiny preset.

    python benchmarks/stage_hash_table.py            # this checkout
    PYTHONPATH=<older checkout>/src python benchmarks/stage_hash_table.py   # an older one, to compare

Two rows change files instead of settings: a labelled pair appended to the run's
preferences.jsonl, and the content of a --data.source file edited in place (same path).
"""
from __future__ import annotations

import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from fidan.config import build_config
from fidan.errors import FidanError
from fidan.stages import STAGES, stage_hash

CHANGES = ["data.workers=3", "data.executor=ray", "train.threads=1", "train.log_every=7", "sft.lora_rank=4",
           "rlhf.dpo_beta=0.5", "sample.temperature=0.1", "rlhf.kl_coef=0.5", "rlhf.eval_prompts=10",
           "train.lr=1e-4"]


def hashes(cfg, run: Path) -> dict[str, str]:
    takes_run = len(inspect.signature(stage_hash).parameters) > 2
    return {s.name: (stage_hash(cfg, s.name, run) if takes_run else stage_hash(cfg, s.name)) for s in STAGES}


def diff(a: dict, b: dict) -> str:
    changed = [n for n in a if a[n] != b[n]]
    return ", ".join(changed) if changed else "nothing"


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    source = tmp / "notes.txt"
    source.write_text("Bir varmış, bir yokmuş.\n")
    base_args = [f"run.root={tmp}", "run.name=x"]
    base = build_config("tiny", None, base_args)
    run = tmp / "x"
    run.mkdir()
    before = hashes(base, run)
    print("| change | stages re-run |\n|---|---|")
    for change in CHANGES:
        try:
            print(f"| `--{change}` | {diff(before, hashes(build_config('tiny', None, base_args + [change]), run))} |")
        except FidanError as e:
            print(f"| `--{change}` | (refused: {e}) |")
    with open(run / "preferences.jsonl", "a") as f:
        f.write(json.dumps({"prompt": "Merhaba", "chosen": "Merhaba!", "rejected": "..."}) + "\n")
    print(f"| one pair appended to preferences.jsonl | {diff(before, hashes(base, run))} |")
    (run / "preferences.jsonl").unlink()
    own = build_config("tiny", None, base_args + [f"data.source={source}"])
    first = hashes(own, run)
    source.write_text("Once upon a time.\n")
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
    print(f"| --data.source file edited in place | {diff(first, hashes(own, run))} |")


if __name__ == "__main__":
    sys.exit(main())
