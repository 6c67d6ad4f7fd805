"""Token-by-token generation with a KV cache and the usual sampling controls.

``generate`` yields one token id at a time, so callers can stream text as it is produced; when
the sequence reaches the model's context, the cache is rebuilt from the most recent half-context.
``BatchDecoder`` runs several conversations at once: prompts of different lengths are left-padded
into one prefill (pads are masked out of attention; RoPE scores depend only on the distance
between tokens, so a row's outputs do not depend on its padding), then every step decodes one
token per unfinished row, and finished rows leave the batch.

Temperature scales the logits, top-k keeps the k most likely tokens, top-p (nucleus) keeps the
smallest set whose probability reaches p, a repetition penalty makes tokens already present less
likely; temperature 0 is greedy decoding, and so is any temperature below ``GREEDY_BELOW`` (dividing
float32 logits by 1e-300 would overflow to inf and NaN). ``TextStream`` turns ids into text and applies stop
strings, holding back just enough text that a stop string split over two tokens is still caught.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from fidan.model.gpt import GPT
from fidan.tokenizer.bpe import FidanTokenizer

GREEDY_BELOW = 1e-4   # temperatures under this decode greedily (the limit of sampling as T -> 0)
SEED_MAX = 2**63 - 1  # seeds in [0, SEED_MAX] are what the server accepts (torch takes them all)


@dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    max_tokens: int = 200
    seed: int | None = None
    stop_ids: set[int] = field(default_factory=set)
    repetition_penalty: float = 1.0   # > 1 discourages tokens already in the prompt or reply (CTRL)
    stop: list[str] = field(default_factory=list)   # text that ends the reply (not included in it)

    def generator(self, device) -> torch.Generator:
        g = torch.Generator(device=device)
        if self.seed is not None:
            g.manual_seed(self.seed)
        else:
            g.seed()
        return g


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
        drop[..., 0] = False  # a top_p that rounds to 0 in float32 (5e-324) would drop it too
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
    if not math.isfinite(params.temperature):
        raise ValueError(f"temperature must be a finite number, not {params.temperature}")
    if params.temperature < GREEDY_BELOW:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def pick(logits: torch.Tensor, seen: list[int], params: SamplingParams, generator: torch.Generator) -> int:
    """One sequence's next token from its logits ``[vocab]``: repetition penalty, then sampling."""
    logits = penalize_repeats(logits[None], seen, params.repetition_penalty)
    return int(sample_next(logits, params, generator)[0])


@torch.no_grad()
def generate(model: GPT, prompt: list[int], params: SamplingParams,
             trace: Callable[[torch.Tensor], None] | None = None) -> Iterator[int]:
    """Yield generated token ids one at a time. ``trace``, if given, receives the model's
    next-token probabilities (before sampling settings) at every step."""
    if not prompt:
        raise ValueError("generation needs at least one prompt token (e.g. <|bos|>)")
    model.eval()
    device = next(model.parameters()).device
    generator = params.generator(device)
    context = model.cfg.context
    tokens = list(prompt)
    cache = model.new_cache(1)
    logits = model(torch.tensor([tokens[-context:]], device=device), cache)[:, -1]
    for _ in range(params.max_tokens):
        if trace is not None:
            trace(logits[0].float().softmax(-1))
        nxt = pick(logits[0], tokens, params, generator)
        if nxt in params.stop_ids:
            return
        yield nxt
        tokens.append(nxt)
        if cache.pos >= context:  # slide: rebuild the cache from the recent half
            cache.reset()
            logits = model(torch.tensor([tokens[-(context // 2):]], device=device), cache)[:, -1]
        else:
            logits = model(torch.tensor([[nxt]], device=device), cache)[:, -1]


class BatchDecoder:
    """Several sequences decoded together, each with its own sampling settings.

    ``step()`` returns ``{row: token}`` for the rows still running (``None`` marks a row that
    just ended: a stop token or its ``max_tokens``); ``cancel(row)`` ends a row early. Rows are
    the indices of the prompts given. A sequence cannot grow past the model's context here (no
    sliding window): each row's ``max_tokens`` is cut to the room its batch leaves.

    With ``isolate=True`` (the server) a row whose sampling fails (its generator cannot be seeded,
    its settings give NaN probabilities, ...) ends alone: the exception is kept in ``failed[row]``
    and ``step()`` reports the row as ended, while the other rows carry on. A failure of the shared
    forward pass is kept in ``broken`` instead of raised: the tokens of that step are still returned,
    and the caller can continue each unfinished row on its own from ``seen[row]`` with
    ``generators[row]``. Without ``isolate`` (training rollouts) every error is raised as before.
    """

    def __init__(self, model: GPT, prompts: list[list[int]], params: list[SamplingParams], pad_id: int = 0,
                 generators: list[torch.Generator] | None = None, isolate: bool = False):
        if not prompts or any(not p for p in prompts):
            raise ValueError("every sequence needs at least one prompt token")
        if model.cfg.prompt_tokens and len(prompts) > 1:
            raise ValueError("a model with a soft prompt decodes one sequence at a time (its soft prompt "
                             "would sit at different distances from differently padded prompts)")
        self.model, self.params = model.eval(), params
        device = next(model.parameters()).device
        longest = max(len(p) for p in prompts)
        room = model.cfg.context - model.cfg.prompt_tokens - longest
        if room < 1:
            raise ValueError(f"a prompt of {longest} tokens leaves no room in the context of {model.cfg.context}")
        self.limits = [min(p.max_tokens, room) for p in params]
        self.isolate = isolate
        self.failed: dict[int, Exception] = {}
        self.broken: Exception | None = None
        self.generators: list[torch.Generator | None] = []
        for row, p in enumerate(params):
            if generators is not None:
                self.generators.append(generators[row])
                continue
            try:
                self.generators.append(p.generator(device))
            except Exception as e:  # e.g. a seed torch refuses
                if not isolate:
                    raise
                self.generators.append(None)
                self.failed[row] = e
        self.seen = [list(p) for p in prompts]
        self.produced = [0] * len(prompts)
        self.rows = list(range(len(prompts)))      # batch position -> row id
        self.cancelled: set[int] = set()
        ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
        self.cache = model.new_cache(len(prompts))
        self.cache.valid = torch.ones(len(prompts), self.cache.max_len, dtype=torch.bool, device=device)
        for i, p in enumerate(prompts):
            ids[i, longest - len(p):] = torch.tensor(p)
            self.cache.valid[i, :longest - len(p)] = False
        with torch.no_grad():
            self.logits = model(ids.to(device), self.cache)[:, -1]

    @property
    def done(self) -> bool:
        return not self.rows

    def cancel(self, row: int) -> None:
        self.cancelled.add(row)

    @torch.no_grad()
    def step(self) -> dict[int, int | None]:
        if self.broken is not None:
            raise RuntimeError(f"this batch's forward pass failed ({self.broken}); continue its rows alone")
        out: dict[int, int | None] = {}
        keep, feed = [], []
        for b, row in enumerate(self.rows):
            params = self.params[row]
            nxt = None
            if row not in self.cancelled and row not in self.failed:
                try:
                    nxt = pick(self.logits[b], self.seen[row], params, self.generators[row])
                except Exception as e:
                    if not self.isolate:
                        raise
                    self.failed[row] = e
            if nxt is None or nxt in params.stop_ids:
                out[row] = None
                continue
            self.seen[row].append(nxt)
            self.produced[row] += 1
            out[row] = nxt
            if self.produced[row] >= self.limits[row]:
                self.cancelled.add(row)  # that was its last token; the row reports its end next step
            keep.append(b)
            feed.append(nxt)
        if len(keep) < len(self.rows):
            index = torch.tensor(keep, dtype=torch.long, device=self.cache.k.device)
            self.cache.keep_rows(index)
            self.rows = [self.rows[b] for b in keep]
        if self.rows:
            tokens = torch.tensor(feed, device=self.cache.k.device)[:, None]
            try:
                self.logits = self.model(tokens, self.cache)[:, -1]
            except Exception as e:
                if not self.isolate:
                    raise
                self.broken = e   # the rows still running cannot go on together; see the class note
        return out


class TextStream:
    """Turns a stream of token ids into a stream of text pieces, never splitting a character.

    With stop strings, ``push`` holds back the last ``len(longest stop) - 1`` characters (a stop
    string may straddle two tokens); once one appears, ``stopped`` is set and nothing after it
    is released. ``flush()`` returns what is still held when generation ends.
    """

    def __init__(self, tok: FidanTokenizer, stop: list[str] | tuple[str, ...] = ()):
        self.tok, self.ids, self.decoded = tok, [], ""
        self.stops = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.sent = 0            # characters of ``decoded`` already released
        self.stopped = False

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its remaining bytes
            return ""
        self.decoded = text
        cuts = [i for i in (text.find(s, max(0, self.sent - self.hold)) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped = True
            return self._release(min(cuts))
        return self._release(len(text) - self.hold)

    def flush(self) -> str:
        return "" if self.stopped else self._release(len(self.decoded))

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        piece, self.sent = self.decoded[self.sent:upto], upto
        return piece

    @property
    def text(self) -> str:
        return self.decoded[:self.sent]


def stream_text(model: GPT, tok: FidanTokenizer, prompt: list[int], params: SamplingParams,
                trace: Callable[[torch.Tensor], None] | None = None) -> Iterator[str]:
    """Generated text in pieces, ended by a stop token, ``max_tokens`` or one of ``params.stop``."""
    stream = TextStream(tok, params.stop)
    for token in generate(model, prompt, params, trace):
        piece = stream.push(token)
        if piece:
            yield piece
        if stream.stopped:
            return
    if tail := stream.flush():
        yield tail
