"""Tiny Shakespeare: validation bits per byte against training wall time on this machine.

Reference (../shared/data/README.md): nanoGPT's documented CPU configuration reaches
2.72 bits per byte in about 68 s on 2 CPU cores. This script runs fidan's data, tokenizer and
token stages on the standard split (first 90% train, last 10% validation), then pre-trains with
the `shakespeare` preset (plus any overrides given), evaluating every `train.eval_every` steps on
the preset's fixed sample of validation windows (`train.eval_tokens`; 0 = the whole split) and
once at the end on the whole split. It prints the curve and the first point at or below the target.

    python benchmarks/shakespeare_bpb.py [--target 2.72] [--section.key=value ...]

"train s" excludes evaluation and checkpoint writing; "cpu s" is this process's CPU time in those
same training steps (with one thread, what an idle core would take: a loaded machine stretches the
wall seconds, not these); "wall s" is the pre-training stage's wall clock with every evaluation
included; the wall time of the whole script (data, tokenizer, shards, training and every
evaluation) is printed last. The data stage makes no SFT conversations here (pre-training only).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import torch

from fidan.config import build_config
from fidan.pipeline import run_stage
from fidan.rundir import RunDir


def main() -> None:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=float, default=2.72)
    ap.add_argument("--run", default="bench-shakespeare")
    args, extra = ap.parse_known_args()
    # pre-training only: no SFT conversations or held-out questions made from the text (the data
    # stage's default for your own text, ~10 s here); a later override can ask for them
    overrides = ["data.synth_conversations=0", "data.synth_heldout=0", *(e[2:] for e in extra), f"run.name={args.run}"]
    cfg = build_config("shakespeare", None, overrides)
    run = RunDir.for_config(cfg)
    shutil.rmtree(run.path / "pretrain", ignore_errors=True)  # always a fresh training run, never a resume
    for stage in ("data", "tokenizer", "tokens"):
        run_stage(cfg, run, stage, force=True)
    t_pretrain = time.perf_counter() - t_start  # the pre-training stage's clock starts here
    summary = run_stage(cfg, run, "pretrain", force=True)
    wall = time.perf_counter() - t_start
    curve = [json.loads(line) for line in (run.path / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    curve = [r for r in curve if "val_bpb" in r]
    print(f"\n{'step':>6} {'train s':>8} {'cpu s':>7} {'wall s':>7} {'val bpb':>8}")
    for r in curve:
        print(f"{r['step']:>6} {r['elapsed_s']:>8.1f} {r.get('cpu_s', 0):>7.1f} {r.get('wall_s', 0):>7.1f} "
              f"{r['val_bpb']:>8.4f}")
    hit = next((r for r in curve if r["val_bpb"] <= args.target), None)
    print(f"\nmachine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    periodic = f"a fixed sample of about {cfg.train.eval_tokens} tokens" if cfg.train.eval_tokens else "the whole split"
    print(f"final: {summary['val_bpb']:.4f} bpb on the whole validation split after {curve[-1]['elapsed_s']:.1f} s "
          f"of training, {summary.get('train_cpu_seconds', 0):.1f} CPU s (periodic evals: {periodic}); "
          f"fp32 matmul peak measured at the stage's start {summary.get('peak_flops', 0) / 1e9:.1f} GFLOP/s")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if hit:
        print(f"reached {args.target} bpb at step {hit['step']} after {hit['elapsed_s']:.1f} s of training "
              f"({hit.get('wall_s', 0):.1f} s of pre-training wall time, evaluations included; "
              f"{t_pretrain + hit.get('wall_s', 0):.1f} s from the script's start)")
    else:
        print(f"did not reach {args.target} bpb")
    print(f"whole script wall time: {wall:.1f} s (data + tokenizer + shards + training + all evaluations)")


if __name__ == "__main__":
    main()
