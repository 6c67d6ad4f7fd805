"""The tokenizer stage: train byte-level BPE on the training split, save ``tokenizer/tokenizer.json``.

The split is streamed, never read whole: BPE trains on at most ``tokenizer.max_bytes`` of it,
taken as batches of documents spread evenly over the file, so the stage's memory stays flat as
the corpus grows (its word counts still grow with the distinct words of what it reads).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from fidan.context import StageContext
from fidan.records import batch_bytes, spread_batches, text_batches
from fidan.tokenizer.bpe import train_tokenizer

BATCH = 64   # documents per batch: the unit the byte cap keeps or skips


def sampled_texts(path: Path, keep: list[int]) -> Iterator[str]:
    """The documents of the kept batches, in file order."""
    wanted = set(keep)
    for i, texts in enumerate(text_batches(path, BATCH)):
        if i in wanted:
            yield from texts


def shortfall(asked: int, got: int, texts: Iterator[str], nbytes: int, min_frequency: int) -> str:
    """Why BPE stopped short of the vocabulary asked for: merges never cross a word (the
    pre-tokenizer splits at spaces and punctuation), and a pair is merged only when it occurs at
    least ``min_frequency`` times, so small text runs out of pairs."""
    words = len({w for t in texts for w in re.findall(r"\S+", t)})
    return (f"tokenizer: the vocabulary came out at {got:,} tokens of the {asked:,} asked: the training text "
            f"({nbytes:,} bytes, {words:,} distinct words) has no more pairs within a word seen at least "
            f"--tokenizer.min_frequency={min_frequency} times; add text, or ask for fewer with "
            f"--tokenizer.vocab_size={got}")


def run(ctx: StageContext) -> dict:
    path = ctx.input("train")
    t = ctx.cfg.tokenizer
    sizes = batch_bytes(path, BATCH)
    keep = spread_batches(sizes, t.max_bytes)
    used = sum(sizes[i] for i in keep)
    tok = train_tokenizer(sampled_texts(path, keep), t.vocab_size, t.min_frequency)
    tok.save(ctx.out / "tokenizer.json")
    sample = "Merhaba dünya"
    summary = {"vocab_size": tok.vocab_size, "example": f"{sample!r} -> {tok.encode(sample)}",
               "trained_on_bytes": used, "split_bytes": sum(sizes)}
    if used < sum(sizes):
        ctx.say(f"tokenizer: trained on {used:,} of the split's {sum(sizes):,} bytes ({len(keep):,} of "
                f"{len(sizes):,} batches of {BATCH} documents, spread over it; --tokenizer.max_bytes="
                f"{t.max_bytes})")
    if tok.vocab_size < t.vocab_size:
        ctx.say(shortfall(t.vocab_size, tok.vocab_size, sampled_texts(path, keep), used, t.min_frequency))
        summary["vocab_asked"] = t.vocab_size
    return summary
