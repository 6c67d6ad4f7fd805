"""The tokenizer stage: train byte-level BPE on the training split, save ``tokenizer/tokenizer.json``."""
from __future__ import annotations

from fidan.context import StageContext
from fidan.records import read_texts
from fidan.tokenizer.bpe import train_tokenizer


def run(ctx: StageContext) -> dict:
    texts = read_texts(ctx.input("train"))
    tok = train_tokenizer(texts, ctx.cfg.tokenizer.vocab_size, ctx.cfg.tokenizer.min_frequency)
    tok.save(ctx.out / "tokenizer.json")
    sample = "Merhaba dünya"
    return {"vocab_size": tok.vocab_size, "example": f"{sample!r} -> {tok.encode(sample)}"}
