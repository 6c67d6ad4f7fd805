"""Cost of one pre-training step for variants of a preset, interleaved (issue 21, item 5).

Random token batches of each variant's shape (batch x context) and its optimizer, as the
pre-training loop runs them (forward, backward, clipping, optimizer step); rounds of ``--steps``
steps of every variant in turn (A B C ..., A B C ...), so all see the same load. Prints, per
variant, the median milliseconds per step (wall and this process's CPU time) and the ratio to
the first variant. Speed only: what a variant reaches per step is the sweep's business.

    python benchmarks/step_cost.py [--preset tiny] [--threads 1] [--rounds 5] [--steps 5]
        base= muon=train.optimizer=muon "wide=model.n_layer=2,model.d_model=256" ...

A variant is ``name=key=value,key=value`` (empty after the first ``=``: the preset as it is).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from fidan.config import build_config
from train_profile import make_step  # this folder's: the step it profiles


def stepper(preset: str, overrides: list[str]):
    cfg = build_config(preset, None, overrides)
    step, _, model, b, t = make_step(cfg)
    return step, model.num_params(), b * t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = {}
    for spec in args.variants:
        name, _, rest = spec.partition("=")
        step, params, tokens = stepper(args.preset, [x for x in rest.split(",") if x])
        for _ in range(2):   # warm-up: first-call allocations
            step()
        variants[name] = (step, params, tokens, [], [])
    print(f"load before {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} threads", flush=True)
    for _ in range(args.rounds):
        for step, _, _, walls, cpus in variants.values():
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step()
            walls.append((time.perf_counter() - w0) / args.steps * 1e3)
            cpus.append((time.process_time() - c0) / args.steps * 1e3)
    print(f"load after {os.getloadavg()[0]:.2f}")
    first = None
    print("variant        params  tokens/step  wall ms/step  cpu ms/step  cpu ratio")
    for name, (_, params, tokens, walls, cpus) in variants.items():
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        first = first or cpu
        print(f"{name:<12} {params / 1e6:7.2f}M {tokens:11d} {wall:13.1f} {cpu:12.1f} {cpu / first:10.2f}")


if __name__ == "__main__":
    main()
