"""Conversations as training batches.

Each conversation is rendered with the chat template; the loss mask marks assistant tokens
(their text and closing ``<|end|>``). Conversations are padded, not packed: each row of a batch
is one conversation, right-padded, so attention never crosses from one conversation into
another and no attention mask is needed (a causal model never looks right, at the padding).
Packing would waste less compute, but these conversations are short and the simplicity is worth
more than the padding costs here.
"""
from __future__ import annotations

import numpy as np
import torch

from fidan.errors import FidanError
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.tokenizer.chat import render


def encode_conversations(tok: FidanTokenizer, conversations: list[list[dict]], max_len: int
                         ) -> list[tuple[list[int], list[bool]]]:
    out = []
    for messages in conversations:
        ids, mask = render(tok, messages)
        ids, mask = ids[:max_len], mask[:max_len]
        if any(mask[1:]):
            out.append((ids, mask))
    if not out:
        raise FidanError("no conversation has an assistant turn within the model's context")
    return out


class ChatBatches:
    """``(step, micro) -> (inputs, targets, loss_mask)``, the same batch for the same arguments."""

    def __init__(self, examples: list[tuple[list[int], list[bool]]], batch_size: int, pad_id: int, seed: int):
        self.examples, self.batch_size, self.pad_id, self.seed = examples, batch_size, pad_id, seed

    def __call__(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, micro, 7])
        picks = rng.integers(0, len(self.examples), size=self.batch_size)
        return collate([self.examples[i] for i in picks], self.pad_id)


def collate(examples: list[tuple[list[int], list[bool]]], pad_id: int):
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, (tokens, learn) in enumerate(examples):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(learn)] = torch.tensor(learn)
    return ids[:, :-1], ids[:, 1:], mask[:, 1:]
