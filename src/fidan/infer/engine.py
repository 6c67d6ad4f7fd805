"""Token-by-token generation with a KV cache and the usual sampling controls.

``generate`` yields one token id at a time, so callers can stream text as it is produced; when
the sequence reaches the model's context, the cache is rebuilt from the most recent half-context.
``BatchDecoder`` runs several conversations at once: prompts of different lengths are left-padded
into one prefill (pads are masked out of attention, and each row is rotated by its own
positions, so a row's outputs do not depend on its padding), then every step decodes one token
per unfinished row; finished rows leave the batch at once and new ones can join it between two
steps (``BatchDecoder.add``, continuous batching). Sampling runs for all rows in one vectorised
call (``sample_rows``), each row with its own settings and its own random generator.

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


def _row_settings(params: list[SamplingParams], device) -> tuple[torch.Tensor, ...]:
    for p in params:
        if not math.isfinite(p.temperature):
            raise ValueError(f"temperature must be a finite number, not {p.temperature}")
    t = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=device)
    k = torch.tensor([p.top_k for p in params], dtype=torch.long, device=device)
    top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device)
    penalty = torch.tensor([p.repetition_penalty for p in params], dtype=torch.float32, device=device)
    return t, k, top_p, penalty


def sample_rows(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
                seen: torch.Tensor | None = None) -> torch.Tensor:
    """Next token ids ``[rows]`` from last-position logits ``[rows, vocab]``, one row per sequence
    with its own settings, all rows at once.

    ``seen`` (``[rows, vocab]``, True for tokens already in the prompt or reply) feeds the
    repetition penalty. Each sampled row draws one uniform number from its own generator and
    picks by inverse CDF over its filtered distribution (sorted, most likely first), so a row's
    token depends only on its logits, settings and generator: the same alone or in any batch.
    Greedy rows draw nothing. A row whose distribution is not a distribution (NaN, all zero)
    raises; the caller retries row by row to find whose it is.
    """
    if all(p.temperature < GREEDY_BELOW and p.repetition_penalty == 1.0 for p in params):
        return logits.argmax(-1)   # greedy rows only (a NaN temperature is not below anything)
    temp, top_k, top_p, penalty = _row_settings(params, logits.device)
    logits = logits.float()
    if seen is not None and bool((penalty != 1.0).any()):
        pen = penalty[:, None]
        hit = seen & (pen != 1.0)
        logits = torch.where(hit, torch.where(logits > 0, logits / pen, logits * pen), logits)
    out = logits.argmax(-1)
    sampled = (temp >= GREEDY_BELOW).nonzero().squeeze(-1)
    if sampled.numel() == 0:
        return out
    vocab = logits.size(-1)
    rows = logits[sampled] / temp[sampled, None]
    u = torch.stack([torch.rand((), generator=generators[int(i)], device=logits.device) for i in sampled])
    k = top_k[sampled]
    k = torch.where((k <= 0) | (k >= vocab), torch.full_like(k, vocab), k)
    p = top_p[sampled]
    # Rows without top-k or top-p draw over the vocabulary in id order; only filtered rows pay
    # for the sort (most of a sampling step at vocabulary 2,048 and 64 rows: the RL rollouts).
    plain = (k == vocab) & (p >= 1.0)
    if bool(plain.any()):
        out[sampled[plain]] = _draw(rows[plain].softmax(-1), u[plain])
    if not bool(plain.all()):
        keep = ~plain
        ordered, order = rows[keep].sort(-1, descending=True)
        kth = ordered.gather(1, (k[keep] - 1)[:, None])
        ordered = ordered.masked_fill(ordered < kth, float("-inf"))
        probs = ordered.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop = (probs.cumsum(-1) - probs >= p[keep, None]) & (p[keep, None] < 1.0)
        drop[:, 0] = False
        out[sampled[keep]] = order.gather(1, _draw(probs.masked_fill(drop, 0.0), u[keep])[:, None]).squeeze(-1)
    return out


def _draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw of one index per row of ``probs`` ``[rows, n]`` (not necessarily
    normalised) from uniform numbers ``u`` ``[rows]``: the first index whose cumulative mass
    exceeds ``u`` times the row's total, so an index with no mass is never drawn."""
    cdf = probs.cumsum(-1)
    total = cdf[:, -1]
    if not bool(torch.isfinite(total).all()) or bool((total <= 0).any()):
        raise ValueError("probability tensor contains either inf, nan or element < 0")
    index = torch.searchsorted(cdf, (u * total)[:, None], right=True).squeeze(-1)
    positions = torch.arange(probs.size(-1), device=probs.device)
    last = torch.where(probs > 0, positions, -1).amax(-1)   # a draw that rounds up to the total takes the last kept
    return torch.minimum(index, last)


def pick(logits: torch.Tensor, seen: list[int], params: SamplingParams, generator: torch.Generator) -> int:
    """One sequence's next token from its logits ``[vocab]``: repetition penalty, then sampling."""
    mask = torch.zeros(1, logits.size(-1), dtype=torch.bool, device=logits.device)
    if seen:
        mask[0, torch.tensor(sorted(set(seen)), device=logits.device)] = True
    return int(sample_rows(logits[None], [params], [generator], mask)[0])


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
    seen = torch.zeros(1, model.cfg.vocab_size, dtype=torch.bool, device=device)
    seen[0, torch.tensor(tokens, device=device)] = True
    cache = model.new_cache(1)
    logits = model(torch.tensor([tokens[-context:]], device=device), cache)[:, -1]
    for _ in range(params.max_tokens):
        if trace is not None:
            trace(logits[0].float().softmax(-1))
        nxt = int(sample_rows(logits, [params], [generator], seen)[0])
        if nxt in params.stop_ids:
            return
        yield nxt
        tokens.append(nxt)
        seen[0, nxt] = True
        if cache.pos >= context:  # slide: rebuild the cache from the recent half
            cache.reset()
            logits = model(torch.tensor([tokens[-(context // 2):]], device=device), cache)[:, -1]
        else:
            logits = model(torch.tensor([[nxt]], device=device), cache)[:, -1]


def greedy_many(model: GPT, prompts: list[list[int]], max_tokens: list[int], stop_ids: set[int],
                batch: int = 64) -> list[list[int]]:
    """Greedy continuations of many prompts, ``batch`` at a time in one KV cache (``BatchDecoder``),
    each up to its own ``max_tokens`` and ended by a token of ``stop_ids`` (left out). Prompts are
    grouped by length, so little of a batch is padding; the replies come back in the prompts'
    order, each what ``generate`` gives it alone. A prompt whose reply would not fit the context
    beside it (``generate`` slides its window then) and every prompt of a model with a soft prompt
    are decoded one at a time."""
    out: list[list[int]] = [[] for _ in prompts]
    room = model.cfg.context - model.cfg.prompt_tokens
    alone = [i for i, (p, n) in enumerate(zip(prompts, max_tokens))
             if n > 0 and (model.cfg.prompt_tokens or len(p) + n > room)]
    for i in alone:
        out[i] = list(generate(model, prompts[i], SamplingParams(temperature=0, max_tokens=max_tokens[i],
                                                                 stop_ids=set(stop_ids))))
    skip = set(alone)
    order = sorted((i for i in range(len(prompts)) if i not in skip), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch):
        chunk = [i for i in order[start:start + batch] if max_tokens[i] > 0]
        if not chunk:
            continue
        params = [SamplingParams(temperature=0, max_tokens=max_tokens[i], stop_ids=set(stop_ids)) for i in chunk]
        decoder = BatchDecoder(model, [prompts[i] for i in chunk], params, generators=[None] * len(chunk))
        while not decoder.done:
            for row, token in decoder.step().items():
                if token is not None:
                    out[chunk[row]].append(token)
    return out


class BatchDecoder:
    """Several sequences decoded together, each with its own sampling settings.

    ``step()`` returns ``{row: token}`` for the rows still running (``None`` marks a row that
    just ended: a stop token or its ``max_tokens``); ``cancel(row)`` ends a row early. Rows are
    the indices of the prompts given, then of those given to ``add``. A sequence cannot grow past
    the model's context here (no sliding window): each row's ``max_tokens`` is cut to the room its
    own prompt leaves.

    ``add(prompts, params)`` joins new sequences to the running batch between two steps
    (continuous batching): they are prefilled together in a cache of their own, then the two
    caches are aligned on their write position (whichever holds fewer positions gets pads in
    front) and joined. Every row keeps its own rotary positions (``KVCache.offsets``), so its
    numbers do not depend on when it joined or who it runs with. A row that ends leaves the batch
    at once; slots that have become pads of every row are dropped when they are half the cache
    or the context is reached. Sampling is one vectorised call for all rows (``sample_rows``).

    With ``isolate=True`` (the server) a row whose sampling fails (its generator cannot be seeded,
    its settings give NaN probabilities, ...) ends alone: the exception is kept in ``failed[row]``
    and ``step()`` reports the row as ended, while the other rows carry on. A failure of the shared
    forward pass is kept in ``broken`` instead of raised: the tokens of that step are still returned,
    and the caller can continue each unfinished row on its own from ``seen[row]`` with
    ``generators[row]``. Without ``isolate`` (training rollouts) every error is raised as before.
    A failing ``add`` raises and leaves the running batch as it was.
    """

    def __init__(self, model: GPT, prompts: list[list[int]], params: list[SamplingParams], pad_id: int = 0,
                 generators: list[torch.Generator | None] | None = None, isolate: bool = False):
        if not prompts:
            raise ValueError("every sequence needs at least one prompt token")
        self.model, self.pad_id, self.isolate = model.eval(), pad_id, isolate
        self.device = next(model.parameters()).device
        self.params: list[SamplingParams] = []
        self.limits: list[int] = []
        self.failed: dict[int, Exception] = {}
        self.broken: Exception | None = None
        self.generators: list[torch.Generator | None] = []
        self.seen: list[list[int]] = []
        self.produced: list[int] = []
        self.rows: list[int] = []      # batch position -> row id
        self.cancelled: set[int] = set()
        self.cache = None
        self.logits: torch.Tensor | None = None
        # [batch, vocab] tokens each row has seen (kept up to date while a row of the batch has a penalty)
        self.seen_mask: torch.Tensor | None = None
        self.add(prompts, params, generators)

    @property
    def done(self) -> bool:
        return not self.rows

    def cancel(self, row: int) -> None:
        self.cancelled.add(row)

    @torch.no_grad()
    def add(self, prompts: list[list[int]], params: list[SamplingParams],
            generators: list[torch.Generator | None] | None = None) -> list[int]:
        """Prefill ``prompts`` and join them to the batch; returns their row ids."""
        cfg = self.model.cfg
        if not prompts or any(not p for p in prompts):
            raise ValueError("every sequence needs at least one prompt token")
        if cfg.prompt_tokens and len(prompts) + len(self.rows) > 1:
            raise ValueError("a model with a soft prompt decodes one sequence at a time (its soft prompt "
                             "would sit at different distances from differently padded prompts)")
        longest = max(len(p) for p in prompts)
        room = cfg.context - cfg.prompt_tokens - longest
        if room < 1:
            raise ValueError(f"a prompt of {longest} tokens leaves no room in the context of {cfg.context}")
        limits = [min(q.max_tokens, cfg.context - cfg.prompt_tokens - len(p)) for p, q in zip(prompts, params)]
        gens: list[torch.Generator | None] = []
        failed: dict[int, Exception] = {}
        for i, q in enumerate(params):
            if generators is not None:
                gens.append(generators[i])
                continue
            try:
                gens.append(q.generator(self.device))
            except Exception as e:  # e.g. a seed torch refuses
                if not self.isolate:
                    raise
                gens.append(None)
                failed[i] = e
        n = len(prompts)
        width = longest + cfg.prompt_tokens
        ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        seen = torch.zeros(n, cfg.vocab_size, dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, longest - len(p):] = torch.tensor(p)
            seen[i, torch.tensor(p)] = True
        cache = self.model.new_cache(n, min(cfg.context, width + max(limits)))
        cache.set_offsets(torch.tensor([longest - len(p) for p in prompts]))
        logits = self.model(ids.to(self.device), cache)[:, -1]
        seen = seen.to(self.device)
        if not self.rows:
            self.cache, self.logits, self.seen_mask = cache, logits, seen
        else:
            if cache.pos > self.cache.pos:
                self.cache.shift(cache.pos - self.cache.pos)
            elif cache.pos < self.cache.pos:
                cache.shift(self.cache.pos - cache.pos)
            self.cache.join(cache)
            self.logits = torch.cat([self.logits, logits])
            self.seen_mask = torch.cat([self.seen_mask, seen])
        first = len(self.params)
        self.params += params
        self.limits += limits
        self.generators += gens
        self.seen += [list(p) for p in prompts]
        self.produced += [0] * n
        self.failed.update({first + i: e for i, e in failed.items()})
        new = list(range(first, first + n))
        self.rows += new
        return new

    @torch.no_grad()
    def repeat(self, params: list[SamplingParams]) -> None:
        """Before the first step, every row again ``len(params) // rows - 1`` more times (copy ``c``
        of row ``r`` becomes row ``c * rows + r``), each copy with its own settings and generator
        (``params`` covers every row, its first ``rows`` the current rows' own). The copies share
        the prompt's prefill instead of computing it again: many samples of one prompt."""
        n = len(self.rows)
        if any(self.produced) or self.rows != list(range(len(self.params))) or len(params) % n:
            raise ValueError("repeat() copies every row of a batch that has not stepped yet")
        copies = len(params) // n
        index = torch.arange(n, device=self.device).repeat(copies)
        cache = self.cache
        cache.k, cache.v = cache.k[:, index], cache.v[:, index]
        if cache.valid is not None:
            cache.valid = cache.valid[index]
        if cache.offsets is not None:
            cache.offsets = cache.offsets[index]
        self.logits, self.seen_mask = self.logits[index], self.seen_mask[index]
        extra, prompts = params[n:], self.seen[:n] * (copies - 1)
        room = self.model.cfg.context - self.model.cfg.prompt_tokens
        self.params = self.params[:n] + extra
        self.limits += [min(q.max_tokens, room - len(p)) for q, p in zip(extra, prompts)]
        self.generators += [q.generator(self.device) for q in extra]
        self.seen += [list(p) for p in prompts]
        self.produced += [0] * len(extra)
        self.rows = list(range(n * copies))

    def _sample(self, batch: list[int]) -> dict[int, int]:
        """Tokens for the batch positions ``batch``; a row whose sampling fails is put in ``failed``."""
        rows = [self.rows[b] for b in batch]
        if len(batch) == len(self.rows):   # every row: no gather
            logits, seen = self.logits, self.seen_mask
        else:
            index = torch.tensor(batch, device=self.device)
            logits, seen = self.logits[index], self.seen_mask[index]
        try:
            tokens = sample_rows(logits, [self.params[r] for r in rows], [self.generators[r] for r in rows],
                                 seen).tolist()
            return dict(zip(batch, tokens))
        except Exception as e:
            if not self.isolate:
                raise
            if len(batch) == 1:
                self.failed[rows[0]] = e
                return {}
        out: dict[int, int] = {}
        for b in batch:   # one row at a time, to find whose sampling fails
            out.update(self._sample([b]))
        return out

    def _compact(self) -> None:
        """Drop the slots that are pads of every row when they are half the cache or it is full."""
        cache = self.cache
        dead = 0 if cache.offsets is None else int(cache.offsets.min())
        if dead and (cache.pos >= self.model.cfg.context or 2 * dead >= cache.pos):
            cache.shift(-dead)
        if cache.pos + 1 > cache.max_len:
            cache.grow(min(self.model.cfg.context, max(cache.pos + 1, 2 * cache.max_len)))

    @torch.no_grad()
    def step(self) -> dict[int, int | None]:
        if self.broken is not None:
            raise RuntimeError(f"this batch's forward pass failed ({self.broken}); continue its rows alone")
        out: dict[int, int | None] = {}
        live = [b for b, row in enumerate(self.rows) if row not in self.cancelled and row not in self.failed]
        tokens = self._sample(live) if live else {}
        keep, feed = [], []
        for b, row in enumerate(self.rows):
            nxt = tokens.get(b)
            if nxt is None or nxt in self.params[row].stop_ids:
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
            index = torch.tensor(keep, dtype=torch.long, device=self.device)
            self.cache.keep_rows(index)
            self.seen_mask = self.seen_mask[index]
            self.rows = [self.rows[b] for b in keep]
        if self.rows:
            tokens_in = torch.tensor(feed, device=self.device)
            if any(self.params[row].repetition_penalty != 1.0 for row in self.rows):  # else the mask is unused
                self.seen_mask[torch.arange(len(feed), device=self.device), tokens_in] = True
            try:
                self._compact()
                self.logits = self.model(tokens_in[:, None], self.cache)[:, -1]
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
