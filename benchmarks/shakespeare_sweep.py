"""Tiny Shakespeare: one change at a time against the `shakespeare` preset, interleaved.

Prepares the data, tokenizer and token shards once, then pre-trains every variant in turn
(round 1: A B C ..., round 2: A B C ...), so each sees the same load; prints, per run, the
final whole-split validation bits per byte, the training seconds (evaluations excluded), the CPU
seconds of those steps and the load average at its end.

    python benchmarks/shakespeare_sweep.py [--rounds 1] [--common "train.steps=200 run.threads=1"]
        base= muon=train.optimizer=muon "cap=model.logit_softcap=15" ...

A variant is ``name=key=value,key=value`` (empty after the first ``=``: the preset as it is).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from fidan.config import build_config
from fidan.pipeline import run_stage
from fidan.rundir import RunDir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--common", default="", help="overrides for every variant, space-separated key=value")
    ap.add_argument("--run", default="bench-sweep")
    args = ap.parse_args()
    common = args.common.split() + [f"run.name={args.run}"]
    variants = {}
    for spec in args.variants:
        name, _, rest = spec.partition("=")
        variants[name] = [x for x in rest.split(",") if x]
    cfg = build_config("shakespeare", None, common)
    run = RunDir.for_config(cfg)
    for stage in ("data", "tokenizer", "tokens"):
        run_stage(cfg, run, stage)
    rows = []
    for r in range(args.rounds):
        for name, extra in variants.items():
            cfg = build_config("shakespeare", None, common + extra)
            shutil.rmtree(run.path / "pretrain", ignore_errors=True)
            t0 = time.perf_counter()
            summary = run_stage(cfg, run, "pretrain", force=True)
            wall = time.perf_counter() - t0
            records = [json.loads(x) for x in (run.path / "pretrain" / "metrics.jsonl").read_text().splitlines()]
            train_s = max(rec.get("elapsed_s", 0) for rec in records)
            load = os.getloadavg()[0]
            cpu_s = summary.get("train_cpu_seconds", 0.0)
            rows.append((r, name, summary["val_bpb"], train_s, cpu_s, wall, load))
            print(f"round {r} {name:>10}: val bpb {summary['val_bpb']:.4f}, {train_s:.1f} s training "
                  f"({cpu_s:.1f} CPU s), {wall:.1f} s stage wall, load {load:.2f}", flush=True)
    print("\nround  variant     val_bpb  train_s  cpu_s  wall_s  load")
    for r, name, bpb, train_s, cpu_s, wall, load in rows:
        print(f"{r:>5}  {name:<10} {bpb:8.4f} {train_s:8.1f} {cpu_s:6.1f} {wall:7.1f} {load:5.2f}")


if __name__ == "__main__":
    main()
