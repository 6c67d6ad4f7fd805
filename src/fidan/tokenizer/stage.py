"""The tokenizer stage: train byte-level BPE on the training split, save ``tokenizer/tokenizer.json``."""
from __future__ import annotations

import re

from fidan.context import StageContext
from fidan.records import read_texts
from fidan.tokenizer.bpe import train_tokenizer


def shortfall(asked: int, got: int, texts: list[str], min_frequency: int) -> str:
    """Why BPE stopped short of the vocabulary asked for: merges never cross a word (the
    pre-tokenizer splits at spaces and punctuation), and a pair is merged only when it occurs at
    least ``min_frequency`` times, so small text runs out of pairs."""
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    words = len({w for t in texts for w in re.findall(r"\S+", t)})
    return (f"tokenizer: the vocabulary came out at {got:,} tokens of the {asked:,} asked: the training split "
            f"({nbytes:,} bytes, {words:,} distinct words) has no more pairs within a word seen at least "
            f"--tokenizer.min_frequency={min_frequency} times; add text, or ask for fewer with "
            f"--tokenizer.vocab_size={got}")


def run(ctx: StageContext) -> dict:
    texts = read_texts(ctx.input("train"))
    t = ctx.cfg.tokenizer
    tok = train_tokenizer(texts, t.vocab_size, t.min_frequency)
    tok.save(ctx.out / "tokenizer.json")
    sample = "Merhaba dünya"
    summary = {"vocab_size": tok.vocab_size, "example": f"{sample!r} -> {tok.encode(sample)}"}
    if tok.vocab_size < t.vocab_size:
        ctx.say(shortfall(t.vocab_size, tok.vocab_size, texts, t.min_frequency))
        summary["vocab_asked"] = t.vocab_size
    return summary
