"""The two ways a language model answers a task: scoring given continuations, or generating.

``logliks`` returns the summed log-probability of each continuation after its context (the
context and continuation are tokenised separately, so the boundary is where the task puts it),
batched and right-padded. ``complete`` generates greedily until a stop string or the token limit;
``complete_many`` does the same for many prompts at once (batched decoding).
Both keep only the last tokens of a context too long for the model; tasks ask ``fits_choices`` /
``fits_generation`` first and shrink their shots (``shrink_to_fit``) or skip the item, so no
prompt is cut silently.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fidan.infer.engine import SamplingParams, generate, greedy_many
from fidan.model.gpt import GPT
from fidan.tokenizer.bpe import FidanTokenizer


def room(model: GPT) -> int:
    """Positions the model attends over after its soft prompt."""
    return model.cfg.context - model.cfg.prompt_tokens


def prompt_length(tok: FidanTokenizer, prompt: str, chat: bool = False) -> int:
    """Tokens of ``prompt`` as ``complete`` feeds it (with BOS, or as a chat user turn)."""
    if chat:
        from fidan.tokenizer.chat import render
        return len(render(tok, [{"role": "user", "content": prompt}], add_generation_prompt=True)[0])
    return 1 + len(tok.encode(prompt))


def fits_generation(model: GPT, tok: FidanTokenizer, prompt: str, max_tokens: int, chat: bool = False) -> bool:
    """Whether ``prompt`` and ``max_tokens`` of reply fit the context whole."""
    return prompt_length(tok, prompt, chat) + max_tokens <= room(model)


def reply_room(model: GPT, tok: FidanTokenizer, prompt: str, max_tokens: int, chat: bool = False,
               least: int = 16) -> int:
    """Reply tokens that fit after the whole ``prompt``: ``max_tokens``, or fewer where the context
    is short, but never fewer than ``least`` (then 0: the item does not fit)."""
    free = room(model) - prompt_length(tok, prompt, chat)
    return min(max_tokens, free) if free >= min(least, max_tokens) else 0


def fits_choices(model: GPT, tok: FidanTokenizer, query: str, choices: list[str]) -> bool:
    """Whether ``query`` followed by its longest choice fits the context whole (as ``logliks`` scores it)."""
    longest = max((len(tok.encode(c)) for c in choices), default=0)
    return 1 + len(tok.encode(query)) + longest <= room(model) + 1


def shrink_to_fit(build, k: int, fits) -> tuple[str | None, int]:
    """The prompt ``build(j)`` with the most shots ``j <= k`` for which ``fits(prompt)``; ``(None, -1)``
    when not even ``build(0)`` fits."""
    for j in range(k, -1, -1):
        text = build(j)
        if fits(text):
            return text, j
    return None, -1


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


def _prompt_ids(tok: FidanTokenizer, prompt: str, chat: bool) -> list[int]:
    if chat:
        from fidan.tokenizer.chat import render
        return render(tok, [{"role": "user", "content": prompt}], add_generation_prompt=True)[0]
    return [tok.bos] + tok.encode(prompt)


def _cut(text: str, stop: tuple[str, ...]) -> str:
    for s in stop:
        if s in text:
            text = text[:text.index(s)]
    return text


def complete(model: GPT, tok: FidanTokenizer, prompt: str, max_tokens: int, stop: tuple[str, ...] = (),
             chat: bool = False) -> str:
    """Greedy continuation of ``prompt`` (as a user turn when ``chat``), cut at the first stop string."""
    ids = _prompt_ids(tok, prompt, chat)
    budget = model.cfg.context - model.cfg.prompt_tokens - max_tokens
    params = SamplingParams(temperature=0, max_tokens=max_tokens,
                            stop_ids={*tok.stop_ids, tok.bos})
    return _cut(tok.decode(generate(model, ids[-budget:], params)), stop)


def complete_many(model: GPT, tok: FidanTokenizer, prompts: list[str], max_tokens: list[int],
                  stop: tuple[str, ...] = (), chat: bool = False, batch: int = 64) -> list[str]:
    """``complete`` for many prompts at once (batched greedy decoding, ``engine.greedy_many``,
    ``batch`` rows at a time): the same replies, in the prompts' order."""
    budget = model.cfg.context - model.cfg.prompt_tokens
    ids = [_prompt_ids(tok, p, chat)[-(budget - n):] for p, n in zip(prompts, max_tokens)]
    replies = greedy_many(model, ids, list(max_tokens), {*tok.stop_ids, tok.bos}, batch)
    return [_cut(tok.decode(r), stop) for r in replies]
