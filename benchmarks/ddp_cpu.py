"""One process against `torchrun --nproc_per_node=2` (gloo) on the CPU: the loss match and the
seconds per optimizer step, for DDP and FSDP.

    PYTHONPATH=src python benchmarks/ddp_cpu.py [--steps 30] [--root /tmp/fidan-ddp]

Every run makes the same optimizer steps (train.grad_accum=2 micro-batches per step, over all
ranks). On a 2-core machine two ranks cannot beat one: each rank gets one core (torchrun sets
OMP_NUM_THREADS=1), the single process uses both, and the ranks add the all-reduce on top.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SHAPE = ["corpus.scale_mb=0.3", "tokenizer.vocab_size=1024", "model.context=128", "model.n_layer=4",
         "model.n_head=4", "model.n_kv_head=4", "model.d_model=192", "train.batch_size=16", "train.grad_accum=2",
         "train.warmup_steps=5", "train.log_every=1", "train.eval_every=1000", "train.ckpt_every=1000"]


def fidan(args: list[str], nproc: int, env: dict) -> None:
    launcher = [sys.executable, "-m", "fidan"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "fidan"]
    subprocess.run(launcher + args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--root", default="/tmp/fidan-ddp")
    a = ap.parse_args()
    root = Path(a.root)
    shutil.rmtree(root, ignore_errors=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base = [f"--{s}" for s in SHAPE + [f"train.steps={a.steps}"]]
    fidan(["pipeline", "--until=tokens", *base, f"--run.root={root}", "--run.name=base"], 1, env)
    rows = {}
    for label, nproc, extra in (("1 process", 1, []), ("2 ranks, ddp", 2, ["--train.parallel=ddp"]),
                                ("2 ranks, fsdp", 2, ["--train.parallel=fsdp"])):
        name = label.replace(" ", "").replace(",", "-")
        shutil.copytree(root / "base", root / name, ignore=shutil.ignore_patterns(".lock"))
        fidan(["pretrain", *base, *extra, f"--run.root={root}", f"--run.name={name}"], nproc, env)
        recs = [json.loads(x) for x in (root / name / "pretrain" / "metrics.jsonl").read_text().splitlines()]
        losses = {r["step"]: r["loss"] for r in recs if "loss" in r}
        elapsed = {r["step"]: r["elapsed_s"] for r in recs if "loss" in r}
        # seconds per step after the first 5 (start-up and the first all-reduces excluded)
        per_step = (elapsed[a.steps] - elapsed[5]) / (a.steps - 5)
        rows[label] = (losses, per_step)
    ref = rows["1 process"][0]
    print(f"| run | s / optimizer step | max abs loss difference vs 1 process over {a.steps} steps |")
    print("|---|---|---|")
    for label, (losses, per_step) in rows.items():
        diff = max(abs(losses[s] - ref[s]) for s in ref)
        print(f"| {label} | {per_step:.3f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
