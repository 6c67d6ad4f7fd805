"""Training MFU and where a step's time goes, for a preset's model shape (issue 21, item 2).

Random token batches of the preset's shape (batch x context), the preset's optimizer; measures
the fp32 matmul peak in the same process (``train/perf.py``), times ``--steps`` optimizer steps,
prints MFU through the function the training loop and the planner share (``perf.mfu``), then a
torch.profiler table of the top operators over 5 more steps.

    python benchmarks/train_profile.py [--preset shakespeare] [--threads 1] [--steps 10]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time

import torch
import torch.nn.functional as F
from torch.profiler import profile

from fidan.config import build_config
from fidan.model.gpt import GPT, flops_per_token
from fidan.train.loop import make_optimizer, set_lr
from fidan.train.perf import matmul_peak_flops, mfu
from fidan.train.pretrain import next_token_loss


def make_step(cfg, plain_loss: bool = False):
    """One optimizer step on a random batch of the config's shape (forward, backward, clipping as
    the loop clips, the config's optimizer), and the shape, model and batch it uses. The loss is
    pre-training's (``next_token_loss``: on the CPU the fused head + cross-entropy of
    ``train/xent.py``), or with ``plain_loss`` the logits and ``F.cross_entropy``."""
    shape = dataclasses.replace(cfg.model, vocab_size=64 * math.ceil(cfg.tokenizer.vocab_size / 64))
    torch.manual_seed(0)
    model = GPT(shape)
    opt = make_optimizer(model, cfg.train)
    set_lr(opt, cfg.train.lr)
    b, t = cfg.train.batch_size, shape.context

    def step() -> None:
        x = torch.randint(0, shape.vocab_size, (b, t + 1))
        if plain_loss:
            F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
        else:
            next_token_loss(model, (x[:, :-1], x[:, 1:]))[0].backward()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, shape, model, b, t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="shakespeare")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds (each side once per round)")
    ap.add_argument("--compare", action="store_true",
                    help="also time the plain loss (F.cross_entropy of the logits), interleaved")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, key=value")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = build_config(args.preset, None, args.set)
    sides = {"fused loss": make_step(cfg)}
    if args.compare:
        sides["plain loss"] = make_step(cfg, plain_loss=True)
    _, shape, _, b, t = sides["fused loss"]
    for step, *_ in sides.values():
        for _ in range(3):
            step()
    per_step: dict[str, list[float]] = {k: [] for k in sides}
    peaks = []
    for _ in range(args.rounds):
        peaks.append(matmul_peak_flops.__wrapped__("cpu"))   # each round's own peak, not a cached one
        for name, (step, *_) in sides.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            per_step[name].append((time.perf_counter() - start) / args.steps)
    peak = max(peaks)
    for name, times in per_step.items():
        best = min(times)
        print(f"{args.preset} ({name}): {cfg.train.optimizer}, {b}x{t} tokens per step, {best * 1e3:.1f} ms per "
              f"step (best of {len(times)}; all {', '.join(f'{x * 1e3:.1f}' for x in times)}), "
              f"{torch.get_num_threads()} threads; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (best of the rounds); "
              f"MFU {mfu(b * t / best * flops_per_token(shape), peak):.1%}; load {os.getloadavg()[0]:.2f}")
    step = sides["fused loss"][0]
    with profile() as prof:
        for _ in range(5):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16))


if __name__ == "__main__":
    main()
