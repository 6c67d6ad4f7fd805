"""Bits per byte and perplexity of a model on any text.

Bits per byte: the summed cross-entropy of every token (in nats), divided by the UTF-8 bytes
those tokens spell and by ln 2; comparable across tokenizers. Perplexity is per token, so it is
only comparable between models with the same tokenizer.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fidan.data.sources import read_documents
from fidan.model.gpt import GPT
from fidan.tokenizer.bpe import FidanTokenizer


def text_bpb(model: GPT, tok: FidanTokenizer, path: str | Path, max_bytes: int = 0) -> dict[str, float]:
    from fidan.train.pretrain import bits_per_byte, token_bytes_for
    ids: list[int] = []
    for doc in read_documents(str(path)):
        text = doc.text[:max_bytes] if max_bytes else doc.text
        ids += [tok.bos] + tok.encode(text)
    result = bits_per_byte(model, np.asarray(ids, dtype=np.int64), token_bytes_for(tok, model.cfg.vocab_size))
    return {"bpb": result["val_bpb"], "perplexity": math.exp(result["val_loss"]), "tokens": len(ids)}
