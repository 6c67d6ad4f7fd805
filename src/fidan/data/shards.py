"""Token shards: every document encoded once, concatenated into flat binary arrays.

``data/tokens/{train,val}.bin`` hold the ids (uint16 when the vocabulary fits, else uint32),
each document preceded by ``<|bos|>``; ``{train,val}.idx`` hold int64 document start offsets;
``meta.json`` records dtype, counts, bytes, and the unigram baseline in bits per byte. The
pre-training loader reads the ``.bin`` files with ``numpy.memmap``, so they never need to fit
in memory.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fidan import atomic
from fidan.context import StageContext
from fidan.errors import FidanError
from fidan.records import read_texts
from fidan.tokenizer.bpe import FidanTokenizer

BATCH = 512
WINDOW = 1 << 22  # tokens read at a time from a memory-mapped shard


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def encode_split(tok: FidanTokenizer, texts: list[str], path: Path) -> tuple[int, int]:
    dtype = dtype_for(tok.vocab_size)
    offsets, pos, n_bytes = [], 0, 0
    with atomic.atomic_path(path.with_suffix(".bin")) as tmp, open(tmp, "wb") as f:
        for start in range(0, len(texts), BATCH):
            chunk = texts[start:start + BATCH]
            for text, ids in zip(chunk, tok.encode_batch(chunk)):
                arr = np.asarray([tok.bos] + ids, dtype=dtype)
                f.write(arr.tobytes())
                offsets.append(pos)
                pos += len(arr)
                n_bytes += len(text.encode("utf-8"))
    with atomic.atomic_path(path.with_suffix(".idx")) as tmp:
        np.asarray(offsets, dtype=np.int64).tofile(tmp)
    return pos, n_bytes


def load_tokens(path: str | Path, meta: dict) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise FidanError(f"{path} is missing; run `fidan tokens` first")
    dtype = np.dtype(meta["dtype"])
    if path.stat().st_size % dtype.itemsize:
        raise FidanError(f"{path}: truncated token file; re-run `fidan tokens`")
    return np.memmap(path, dtype=dtype, mode="r")


def load_meta(path: Path) -> dict:
    """``data/tokens/meta.json`` (a stage gets its path from ``ctx.input``)."""
    return json.loads(Path(path).read_text())


def unigram_bpb(train: np.ndarray, val: np.ndarray, token_bytes: np.ndarray, vocab_size: int) -> float:
    """Bits per byte of the validation text under train-set token frequencies (add-one smoothed):
    the score of a model that learned nothing about context."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    for start in range(0, len(train), WINDOW):  # in windows: the shards are memory-mapped, never loaded
        counts += np.bincount(train[start:start + WINDOW], minlength=vocab_size)
    logp = np.log2((counts + 1.0) / (counts.sum() + vocab_size))
    bits, nbytes = 0.0, 0
    for start in range(0, len(val), WINDOW):
        ids = np.asarray(val[start:start + WINDOW])
        b = token_bytes[ids]
        bits -= float(logp[ids[b > 0]].sum())
        nbytes += int(b.sum())
    return bits / nbytes


def run(ctx: StageContext) -> dict:
    tok = FidanTokenizer.load(ctx.input("tokenizer"))
    out = ctx.out
    meta: dict = {"dtype": dtype_for(tok.vocab_size).name, "vocab_size": tok.vocab_size}
    for split in ("train", "val"):
        texts = read_texts(ctx.input(split))
        n_tokens, n_bytes = encode_split(tok, texts, out / split)
        meta[split] = {"tokens": n_tokens, "bytes": n_bytes, "documents": len(texts)}
    train = load_tokens(out / "train.bin", meta)
    val = load_tokens(out / "val.bin", meta)
    meta["unigram_bpb"] = round(unigram_bpb(train, val, tok.token_byte_lengths(), tok.vocab_size), 4)
    meta["bytes_per_token"] = round(meta["train"]["bytes"] / max(1, meta["train"]["tokens"]), 3)
    atomic.write_json(out / "meta.json", meta)
    return {"train_tokens": meta["train"]["tokens"], "val_tokens": meta["val"]["tokens"],
            "bytes_per_token": meta["bytes_per_token"], "unigram_bpb": meta["unigram_bpb"]}
