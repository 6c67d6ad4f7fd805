"""The tokenizer stage: train byte-level BPE on the training split, save ``tokenizer/tokenizer.json``."""
from __future__ import annotations

from fidan.config import Config
from fidan.data.parquet import read_texts
from fidan.rundir import RunDir
from fidan.tokenizer.bpe import train_tokenizer


def run(cfg: Config, run: RunDir) -> dict:
    texts = read_texts(run.require("data/clean/train.parquet", "data"))
    tok = train_tokenizer(texts, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency)
    tok.save(run.stage("tokenizer") / "tokenizer.json")
    sample = "Merhaba dünya"
    return {"vocab_size": tok.vocab_size, "example": f"{sample!r} -> {tok.encode(sample)}"}
