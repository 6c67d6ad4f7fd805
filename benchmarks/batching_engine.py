"""The two schedulers without HTTP: 64 queued requests of mixed answer lengths through one model.

Random weights in a preset's shape; every request is queued at once (prompts of 20-24 tokens,
greedy, ``max_tokens`` cycling over ``--lengths``), and the worker runs them ``--max-batch`` rows
at a time. Prints, per scheduler, the wall time and the model's forward passes (decoding steps
plus prefills), interleaved ``--repeats`` times, with the load average.

    python benchmarks/batching_engine.py [--preset tiny] [--lengths 8,16,24,32,48,64] [--repeats 2] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import threading
import time
from dataclasses import replace

import torch

from fidan.config import build_config
from fidan.infer.engine import SamplingParams
from fidan.model.gpt import GPT
from fidan.serve.batching import Scheduler


def run(model: GPT, batching: str, lengths: list[int], requests: int, max_batch: int) -> tuple[float, int, int]:
    calls = {"decode": 0, "prefill": 0}
    forward = model.forward

    def counted(ids, cache=None, **kw):
        calls["decode" if ids.shape[1] == 1 else "prefill"] += 1
        return forward(ids, cache, **kw)
    model.forward = counted
    s = Scheduler(model, max_batch, 0, 4 * requests, batching)
    ended = threading.Semaphore(0)

    def event(kind, value):
        if kind != "token":
            ended.release()
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for i in range(requests):
        prompt = torch.randint(3, model.cfg.vocab_size, (20 + i % 5,), generator=g).tolist()
        s.submit(prompt, SamplingParams(temperature=0, max_tokens=lengths[i % len(lengths)]), event)
    for _ in range(requests):
        ended.acquire()
    wall = time.perf_counter() - start
    s.close()
    s.thread.join(30)
    model.forward = forward
    return wall, calls["decode"], calls["prefill"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--lengths", default="8,16,24,32,48,64")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = build_config(args.preset)
    torch.manual_seed(0)
    model = GPT(replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size)).eval()
    lengths = [int(n) for n in args.lengths.split(",")]
    print(f"random {args.preset}; {args.requests} queued requests, lengths {args.lengths}, batch {args.max_batch}")
    print(f"{'batching':<11} {'load':>5} {'wall s':>7} {'decode steps':>13} {'prefills':>9}")
    for _ in range(args.repeats):
        for batching in ("static", "continuous"):
            load = os.getloadavg()[0]
            wall, steps, prefills = run(model, batching, lengths, args.requests, args.max_batch)
            print(f"{batching:<11} {load:>5.1f} {wall:>7.2f} {steps:>13} {prefills:>9}", flush=True)


if __name__ == "__main__":
    main()
