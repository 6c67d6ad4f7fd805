"""Decoding speed against Hugging Face transformers' ``generate`` on the same exported model.

Random weights in a preset's shape (context raised to fit ``--prompt + --new``), exported with
``fidan export``'s code (``serve/export.py``) and loaded back with ``AutoModelForCausalLM``; both
sides decode greedily ``--new`` tokens after ``--prompt`` random prompt tokens, at batch 1 and 8
(equal-length prompts, so neither side pads), in one process with the same torch threads. Each
repeat runs the engine (``BatchDecoder``, as the server does) and ``generate`` back to back, so
both see the same load; the table gives the median of the repeats and the load average.

    python benchmarks/decode_vs_hf.py [--presets tiny,small] [--new 256] [--prompt 64] [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace

import torch

from fidan.config import build_config
from fidan.infer.engine import BatchDecoder, SamplingParams
from fidan.model.gpt import GPT
from fidan.serve.export import export_hf
from fidan.tokenizer.bpe import train_tokenizer


def engine(model: GPT, prompts: torch.Tensor, new: int) -> float:
    """Tokens/s of ``BatchDecoder`` (greedy, ``new`` tokens a row, no stop token)."""
    params = [SamplingParams(temperature=0, max_tokens=new) for _ in range(len(prompts))]
    start = time.perf_counter()
    decoder = BatchDecoder(model, prompts.tolist(), params)
    while not decoder.done:
        decoder.step()
    assert sum(decoder.produced) == new * len(prompts)
    return sum(decoder.produced) / (time.perf_counter() - start)


@torch.inference_mode()
def hf(model, prompts: torch.Tensor, new: int) -> float:
    start = time.perf_counter()
    out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False, max_new_tokens=new,
                         min_new_tokens=new, pad_token_id=0, eos_token_id=None)
    assert out.shape[1] == prompts.shape[1] + new
    return new * len(prompts) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import transformers
    from transformers import AutoModelForCausalLM
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    text = " ".join(f"word{i % 97} and{i % 13}" for i in range(5000))
    print(f"{'preset':<7} {'batch':>5} {'load':>5} {'engine tok/s':>13} {'generate tok/s':>15} {'ratio':>6}  "
          f"(median of {args.repeats}, transformers {transformers.__version__}, {args.threads} threads)")
    for name in args.presets.split(","):
        cfg = build_config(name)
        tok = train_tokenizer([text], cfg.tokenizer.vocab_size)
        mcfg = replace(cfg.model, vocab_size=tok.vocab_size, context=max(cfg.model.context, args.prompt + args.new))
        torch.manual_seed(0)
        model = GPT(mcfg).eval()
        with tempfile.TemporaryDirectory() as tmp:
            export_hf(model, tok, f"{tmp}/hf")
            theirs = AutoModelForCausalLM.from_pretrained(f"{tmp}/hf", torch_dtype=torch.float32).eval()
        for batch in (1, 8):
            prompts = torch.randint(3, mcfg.vocab_size, (batch, args.prompt))
            engine(model, prompts, 8), hf(theirs, prompts, 8)   # warm-up
            ours, others, loads = [], [], []
            for _ in range(args.repeats):
                loads.append(os.getloadavg()[0])
                ours.append(engine(model, prompts, args.new))
                others.append(hf(theirs, prompts, args.new))
            a, b = statistics.median(ours), statistics.median(others)
            load = statistics.mean(loads)
            print(f"{name:<7} {batch:>5} {load:>5.1f} {a:>13.0f} {b:>15.0f} {a / b:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
