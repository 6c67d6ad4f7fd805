"""Decoding speed: tokens/s at batch 1 and 8, time to first token, and KV cache against recomputing.

Weights are random (speed does not depend on them); shapes come from the presets. The context is
raised to 512 where needed so that 256 tokens can be generated after a 64-token prompt. The
"engine" rows run ``BatchDecoder`` as the server does: 8 prompts of different lengths (16 to 64
tokens, left-padded), each sampled with its own seed (temperature 0.8, top-k 40).

    python benchmarks/decode_speed.py [--presets tiny,small] [--new 256] [--threads 2]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from fidan.config import build_config
from fidan.infer.engine import BatchDecoder, SamplingParams
from fidan.model.gpt import GPT


@torch.no_grad()
def decode(model: GPT, batch: int, prompt: int, new: int, cached: bool) -> tuple[float, float]:
    """(seconds to first token, seconds for all ``new`` tokens), greedy."""
    ids = torch.randint(0, model.cfg.vocab_size, (batch, prompt))
    start = time.perf_counter()
    if cached:
        cache = model.new_cache(batch)
        logits = model(ids, cache)[:, -1]
    else:
        logits = model(ids)[:, -1]
    nxt = logits.argmax(-1, keepdim=True)
    first = time.perf_counter() - start
    for _ in range(new - 1):
        if cached:
            logits = model(nxt, cache)[:, -1]
        else:
            ids = torch.cat([ids, nxt], 1)
            logits = model(ids)[:, -1]
        nxt = logits.argmax(-1, keepdim=True)
    return first, time.perf_counter() - start


def engine(model: GPT, batch: int, new: int) -> tuple[float, float]:
    """(seconds to first tokens, tokens/s) for ``BatchDecoder`` on prompts of mixed lengths."""
    lengths = [16 + (48 * i) // max(batch - 1, 1) for i in range(batch)]
    prompts = [torch.randint(0, model.cfg.vocab_size, (n,)).tolist() for n in lengths]
    params = [SamplingParams(temperature=0.8, top_k=40, max_tokens=new, seed=i) for i in range(batch)]
    start = time.perf_counter()
    decoder = BatchDecoder(model, prompts, params)
    decoder.step()
    first = time.perf_counter() - start
    while not decoder.done:
        decoder.step()
    return first, sum(decoder.produced) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'preset':<8} {'params':>8} {'batch':>5} {'TTFT ms':>8} {'tok/s':>9} {'no-cache tok/s':>15} "
          f"{'speed-up':>9}")
    for name in args.presets.split(","):
        cfg = build_config(name)
        mcfg = replace(cfg.model, vocab_size=64 * -(-cfg.tokenizer.vocab_size // 64),
                       context=max(cfg.model.context, args.prompt + args.new))
        torch.manual_seed(0)
        model = GPT(mcfg).eval()
        decode(model, 1, args.prompt, 8, True)  # warm-up
        for batch in (1, 8):
            ttft, total = decode(model, batch, args.prompt, args.new, True)
            _, slow = decode(model, batch, args.prompt, args.new, False) if batch == 1 else (0, 0)
            speed = batch * args.new / total
            row = f"{name:<8} {model.num_params() / 1e6:>7.1f}M {batch:>5} {ttft * 1000:>8.1f} {speed:>9.0f}"
            if slow:
                row += f" {args.new / slow:>15.0f} {slow / total:>8.1f}x"
            print(row, flush=True)
        for batch in (1, 8):
            ttft, speed = engine(model, batch, args.new)
            print(f"{name:<8} {'engine':>8} {batch:>5} {ttft * 1000:>8.1f} {speed:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
