"""Conversations as training batches.

Each conversation is rendered with the chat template; the loss mask marks assistant tokens
(their text and closing ``<|end|>``). Conversations are padded, not packed: each row of a batch
is one conversation, right-padded, so attention never crosses from one conversation into
another and no attention mask is needed (a causal model never looks right, at the padding).
Packing would waste less compute, but these conversations are short and the simplicity is worth
more than the padding costs here.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from fidan.errors import FidanError
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.tokenizer.chat import render


class Example(NamedTuple):
    ids: list[int]
    mask: list[bool]              # True: an assistant token (trained on)
    span: tuple[int, int] | None  # GATE: token positions [start, end) of the evidence, if marked
    index: int                    # the conversation's position in the list it was encoded from


def evidence_span(tok: FidanTokenizer, ids: list[int], evidence: str) -> tuple[int, int] | None:
    """The tokens ``[start, end)`` that cover the first occurrence of ``evidence`` in the
    rendered conversation (by byte offsets, so byte-level tokens never split the count)."""
    ends = np.cumsum([len(tok.token_bytes_of(i)) for i in ids])
    at = b"".join(tok.token_bytes_of(i) for i in ids).find(evidence.encode("utf-8"))
    if at < 0:
        return None
    start = int(np.searchsorted(ends, at, side="right"))
    end = int(np.searchsorted(ends, at + len(evidence.encode("utf-8")), side="left")) + 1
    return start, min(end, len(ids))


def encode_conversations(tok: FidanTokenizer, conversations: list[list[dict]], max_len: int) -> list[Example]:
    """Each conversation with an assistant turn inside ``max_len`` tokens, rendered. A user turn
    may carry ``"evidence"``: the part of its text that holds the answer (GATE's span)."""
    out = []
    for index, messages in enumerate(conversations):
        ids, mask = render(tok, messages)
        ids, mask = ids[:max_len], mask[:max_len]
        if not any(mask[1:]):
            continue
        evidence = next((m["evidence"] for m in messages if m.get("evidence")), None)
        span = evidence_span(tok, ids, evidence) if evidence else None
        out.append(Example(ids, mask, span, index))
    if not out:
        raise FidanError("no conversation has an assistant turn within the model's context")
    return out


def plant_wrong_answers(conversations: list[list[dict]], share: float, seed: int,
                        keep: set[int] = frozenset()) -> tuple[list[list[dict]], set[int]]:
    """A copy of ``conversations`` where ``share`` of them (never those in ``keep``) have their
    last answer swapped for another conversation's last answer: planted wrong labels, for
    measuring how training copes with them. Returns the copy and the corrupted positions."""
    rng = np.random.default_rng([seed, 11])
    pool = [i for i in range(len(conversations)) if i not in keep]
    corrupted = set(rng.permutation(pool)[:round(share * len(pool))].tolist()) if share > 0 else set()
    out = []
    for i, messages in enumerate(conversations):
        if i in corrupted:
            donor = conversations[(i + 1 + int(rng.integers(len(conversations) - 1))) % len(conversations)]
            last = max(j for j, m in enumerate(messages) if m["role"] == "assistant")
            wrong = next(m["content"] for m in reversed(donor) if m["role"] == "assistant")
            messages = [*messages[:last], {**messages[last], "content": wrong}, *messages[last + 1:]]
        out.append(messages)
    return out, corrupted


class ChatBatches:
    """``(step, micro) -> (inputs, targets, loss_mask)``, the same batch for the same arguments;
    with ``extras``: ``(inputs, targets, loss_mask, span_mask, example_indices, step)``."""

    def __init__(self, examples: list[Example], batch_size: int, pad_id: int, seed: int, extras: bool = False):
        self.examples, self.batch_size, self.pad_id, self.seed = examples, batch_size, pad_id, seed
        self.extras = extras

    def __call__(self, step: int, micro: int):
        rng = np.random.default_rng([self.seed, step, micro, 7])
        picks = rng.integers(0, len(self.examples), size=self.batch_size)
        batch = collate([self.examples[i] for i in picks], self.pad_id, spans=self.extras)
        return (*batch, torch.from_numpy(picks), step) if self.extras else batch


class MixedBatches:
    """Pre-training text mixed into SFT batches (``sft.pretrain_mix``): of each batch's
    ``batch_size`` rows, ``pretrain_rows(share, batch_size)`` are windows of the token shards
    ``tokens``, as wide as the batch's conversations (so a step costs what it did), with the
    loss on every token; the rest are conversations drawn as ``ChatBatches`` draws them. The
    same batch for the same ``(step, micro)``. With extras, a window's evidence mask is empty
    and its example index is -1."""

    def __init__(self, examples: list[Example], batch_size: int, pad_id: int, seed: int, tokens: np.ndarray,
                 share: float, extras: bool = False):
        self.rows = pretrain_rows(share, batch_size)
        if self.rows >= batch_size:
            raise FidanError(f"sft.pretrain_mix={share} leaves no conversation in a batch of {batch_size} rows")
        self.chat = ChatBatches(examples, batch_size - self.rows, pad_id, seed, extras=extras)
        self.tokens, self.seed, self.extras = tokens, seed, extras
        if len(tokens) < max(len(ex.ids) for ex in examples) + 2:
            raise FidanError(f"sft.pretrain_mix: only {len(tokens)} pre-training tokens, fewer than a conversation")

    def __call__(self, step: int, micro: int):
        chat = self.chat(step, micro)
        x, y, m = chat[:3]
        width = x.shape[1]
        rng = np.random.default_rng([self.seed, step, micro, 17])
        starts = rng.integers(0, len(self.tokens) - width - 1, size=self.rows)
        window = torch.from_numpy(self.tokens[starts[:, None] + np.arange(width + 1)].astype(np.int64))
        out = (torch.cat([x, window[:, :-1]]), torch.cat([y, window[:, 1:]]),
               torch.cat([m, torch.ones((self.rows, width), dtype=torch.bool)]))
        if not self.extras:
            return out
        evidence, indices, _ = chat[3:]
        return (*out, torch.cat([evidence, torch.zeros((self.rows, width), dtype=torch.bool)]),
                torch.cat([indices, torch.full((self.rows,), -1, dtype=indices.dtype)]), step)


def pretrain_rows(share: float, batch_size: int) -> int:
    """Rows of pre-training text in a batch of ``batch_size`` at ``sft.pretrain_mix=share``
    (rounded, at least one when the share is above 0)."""
    return max(1, round(share * batch_size)) if share > 0 else 0


def collate(examples: list[Example], pad_id: int, spans: bool = False):
    """Right-padded ``(inputs, targets, loss_mask)``; ``spans`` adds a mask over the inputs
    that marks each row's evidence tokens (all False where a row has none)."""
    width = max(len(ex.ids) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    evidence = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, ex in enumerate(examples):
        ids[row, :len(ex.ids)] = torch.tensor(ex.ids)
        mask[row, :len(ex.mask)] = torch.tensor(ex.mask)
        if ex.span is not None:
            evidence[row, ex.span[0]:ex.span[1]] = True
    out = ids[:, :-1], ids[:, 1:], mask[:, 1:]
    return (*out, evidence[:, :-1]) if spans else out
