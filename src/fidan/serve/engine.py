"""Token-by-token generation with a KV cache and the usual sampling controls.

``generate`` yields one token id at a time, so callers can stream text as it is produced.
Temperature scales the logits, top-k keeps the k most likely tokens, top-p (nucleus) keeps the
smallest set whose probability reaches p, a repetition penalty makes tokens already present less
likely; temperature 0 is greedy decoding. When the sequence
reaches the model's context, the cache is rebuilt from the most recent half-context of tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from fidan.model.gpt import GPT
from fidan.tokenizer.bpe import FidanTokenizer


@dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    max_tokens: int = 200
    seed: int | None = None
    stop_ids: set[int] = field(default_factory=set)
    repetition_penalty: float = 1.0   # > 1 discourages tokens already in the prompt or reply (CTRL)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / nucleus to -inf (rows are independent)."""
    logits = logits.clone()
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits[logits < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits[drop] = float("-inf")
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def penalize_repeats(logits: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019): a seen token's logit is divided by the
    penalty when positive and multiplied by it when negative, so it always becomes less likely."""
    if penalty == 1.0 or not seen:
        return logits
    logits = logits.clone()
    idx = torch.tensor(sorted(set(seen)), device=logits.device)
    values = logits[..., idx]
    logits[..., idx] = torch.where(values > 0, values / penalty, values * penalty)
    return logits


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Next token ids ``[batch]`` from last-position logits ``[batch, vocab]``."""
    if params.temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: GPT, prompt: list[int], params: SamplingParams,
             trace: Callable[[torch.Tensor], None] | None = None) -> Iterator[int]:
    """Yield generated token ids one at a time. ``trace``, if given, receives the model's
    next-token probabilities (before sampling settings) at every step."""
    if not prompt:
        raise ValueError("generation needs at least one prompt token (e.g. <|bos|>)")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if params.seed is not None:
        generator.manual_seed(params.seed)
    else:
        generator.seed()
    context = model.cfg.context
    tokens = list(prompt)
    cache = model.new_cache(1)
    logits = model(torch.tensor([tokens[-context:]], device=device), cache)[:, -1]
    for _ in range(params.max_tokens):
        if trace is not None:
            trace(logits[0].float().softmax(-1))
        logits = penalize_repeats(logits, tokens, params.repetition_penalty)
        nxt = int(sample_next(logits, params, generator)[0])
        if nxt in params.stop_ids:
            return
        yield nxt
        tokens.append(nxt)
        if cache.pos >= context:  # slide: rebuild the cache from the recent half
            cache.reset()
            logits = model(torch.tensor([tokens[-(context // 2):]], device=device), cache)[:, -1]
        else:
            logits = model(torch.tensor([[nxt]], device=device), cache)[:, -1]


class TextStream:
    """Turns a stream of token ids into a stream of text pieces, never splitting a character."""

    def __init__(self, tok: FidanTokenizer):
        self.tok, self.ids, self.emitted = tok, [], ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its remaining bytes
            return ""
        piece, self.emitted = text[len(self.emitted):], text
        return piece
