"""The two ways a language model answers a task: scoring given continuations, or generating.

``logliks`` returns the summed log-probability of each continuation after its context (the
context and continuation are tokenised separately, so the boundary is where the task puts it),
batched and right-padded. ``complete`` generates greedily until a stop string or the token limit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fidan.infer.engine import SamplingParams, generate
from fidan.model.gpt import GPT
from fidan.tokenizer.bpe import FidanTokenizer


@torch.no_grad()
def logliks(model: GPT, tok: FidanTokenizer, pairs: list[tuple[str, str]], batch_size: int = 32) -> list[float]:
    model.eval()
    device = next(model.parameters()).device
    limit = model.cfg.context - model.cfg.prompt_tokens + 1
    encoded = []
    for context, continuation in pairs:
        ctx, cont = [tok.bos] + tok.encode(context), tok.encode(continuation)
        ids = (ctx + cont)[-limit:]
        encoded.append((ids, min(len(cont), len(ids) - 1)))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))  # similar lengths together
    out = [0.0] * len(encoded)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(encoded[i][0]) for i in chunk)
        ids = torch.full((len(chunk), width), tok.pad, dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, :len(encoded[i][0])] = torch.tensor(encoded[i][0])
        logp = F.log_softmax(model(ids[:, :-1].to(device)).float(), -1)
        for row, i in enumerate(chunk):
            seq, n_cont = encoded[i]
            targets = torch.tensor(seq[len(seq) - n_cont:], device=device)
            positions = torch.arange(len(seq) - n_cont - 1, len(seq) - 1, device=device)
            out[i] = logp[row, positions, targets].sum().item()
    return out


def complete(model: GPT, tok: FidanTokenizer, prompt: str, max_tokens: int, stop: tuple[str, ...] = (),
             chat: bool = False) -> str:
    """Greedy continuation of ``prompt`` (as a user turn when ``chat``), cut at the first stop string."""
    if chat:
        from fidan.tokenizer.chat import render
        ids, _ = render(tok, [{"role": "user", "content": prompt}], add_generation_prompt=True)
    else:
        ids = [tok.bos] + tok.encode(prompt)
    budget = model.cfg.context - model.cfg.prompt_tokens - max_tokens
    params = SamplingParams(temperature=0, max_tokens=max_tokens,
                            stop_ids={*tok.stop_ids, tok.bos})
    text = tok.decode(generate(model, ids[-budget:], params))
    for s in stop:
        if s in text:
            text = text[:text.index(s)]
    return text
