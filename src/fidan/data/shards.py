"""Token shards: every document encoded once, concatenated into flat binary arrays.

``data/tokens/{train,val}.bin`` hold the ids (uint16 when the vocabulary fits, else uint32),
each document preceded by ``<|bos|>``; ``{train,val}.idx`` hold int64 document start offsets;
``meta.json`` records dtype, counts, bytes, and the unigram baseline in bits per byte. The
pre-training loader reads the ``.bin`` files with ``numpy.memmap``, so they never need to fit
in memory.

Encoding streams too: the documents are read from the parquet split in batches of ``BATCH``,
and with ``data.workers`` > 1 (0: one per core) the batches are encoded by a pool of worker
processes, at most two batches per worker in flight, and written in input order, so the shards
are byte-identical whatever the number of workers. A split of fewer than ``PARALLEL_MIN_DOCS``
documents is encoded in this process (starting workers would cost more than it saves).
"""
from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fidan import atomic
from fidan.context import StageContext
from fidan.data.executor import die_with_parent
from fidan.errors import FidanError
from fidan.records import text_batches
from fidan.tokenizer.bpe import FidanTokenizer

BATCH = 512
PARALLEL_MIN_DOCS = 4 * BATCH   # smaller splits are encoded in this process
WINDOW = 1 << 22  # tokens read at a time from a memory-mapped shard


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _encode(tok: FidanTokenizer, texts: list[str]) -> tuple[bytes, list[int], int]:
    """One batch: the ids of every document, each after ``<|bos|>``, as bytes of the shard's
    dtype; the documents' lengths in tokens; their UTF-8 bytes."""
    dtype = dtype_for(tok.vocab_size)
    arrays = [np.asarray([tok.bos] + ids, dtype=dtype) for ids in tok.encode_batch(texts)]
    blob = np.concatenate(arrays).tobytes() if arrays else b""
    return blob, [len(a) for a in arrays], sum(len(t.encode("utf-8")) for t in texts)


_WORKER_TOKENIZER: FidanTokenizer | None = None


def _worker_init(tokenizer_path: str, parent: int, pdeathsig: bool) -> None:
    global _WORKER_TOKENIZER
    die_with_parent(parent, pdeathsig)   # a killed stage takes its encoders with it, as the data stage's
    os.environ["TOKENIZERS_PARALLELISM"] = "false"   # one thread per worker process: the pool is the parallelism
    _WORKER_TOKENIZER = FidanTokenizer.load(tokenizer_path)


def _worker_encode(texts: list[str]) -> tuple[bytes, list[int], int]:
    assert _WORKER_TOKENIZER is not None
    return _encode(_WORKER_TOKENIZER, texts)


def _encoded(tok: FidanTokenizer, tokenizer_path: str | Path | None, batches: Iterator[list[str]],
             workers: int) -> Iterator[tuple[bytes, list[int], int]]:
    """Encoded batches in input order, from this process or from ``workers`` processes."""
    if workers <= 1 or tokenizer_path is None:
        for texts in batches:
            yield _encode(tok, texts)
        return
    pdeathsig = threading.current_thread() is threading.main_thread()   # see executor.run_local
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(str(tokenizer_path), os.getpid(), pdeathsig)) as pool:
        pending: deque = deque()
        for texts in batches:
            if len(pending) >= 2 * workers:   # bounded: reading never runs far ahead of encoding
                yield pending.popleft().result()
            pending.append(pool.submit(_worker_encode, texts))
        while pending:
            yield pending.popleft().result()


def encode_split(tok: FidanTokenizer, source: str | Path | list[str], path: Path, workers: int = 1,
                 tokenizer_path: str | Path | None = None, batch: int = BATCH) -> tuple[int, int, int]:
    """Encode a parquet split (or a list of texts) into ``path``.bin / .idx; returns (tokens,
    UTF-8 bytes, documents). ``workers`` > 1 encodes in worker processes that load the tokenizer
    from ``tokenizer_path``; the files are the same bytes either way."""
    batches = (iter([source[i:i + batch] for i in range(0, len(source), batch)]) if isinstance(source, list)
               else text_batches(source, batch))
    offsets, pos, n_bytes = [], 0, 0
    with atomic.atomic_path(path.with_suffix(".bin")) as tmp, open(tmp, "wb") as f:
        for blob, lengths, nbytes in _encoded(tok, tokenizer_path, batches, workers):
            f.write(blob)
            for n in lengths:
                offsets.append(pos)
                pos += n
            n_bytes += nbytes
    with atomic.atomic_path(path.with_suffix(".idx")) as tmp:
        np.asarray(offsets, dtype=np.int64).tofile(tmp)
    return pos, n_bytes, len(offsets)


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


def workers_for(asked: int, documents: int) -> int:
    """Encoding processes for a split of ``documents``: ``data.workers`` (0: one per core), or
    this process alone for a small split."""
    if documents < PARALLEL_MIN_DOCS:
        return 1
    return asked or os.cpu_count() or 1


def run(ctx: StageContext) -> dict:
    tokenizer_path = ctx.input("tokenizer")
    tok = FidanTokenizer.load(tokenizer_path)
    out = ctx.out
    meta: dict = {"dtype": dtype_for(tok.vocab_size).name, "vocab_size": tok.vocab_size}
    for split in ("train", "val"):
        source = ctx.input(split)
        try:
            documents = pq.ParquetFile(source).metadata.num_rows
        except (OSError, pa.ArrowException) as e:
            raise FidanError(f"{source}: cannot read parquet ({e}); re-run `fidan data`") from None
        n_tokens, n_bytes, n_docs = encode_split(tok, source, out / split, workers_for(ctx.cfg.data.workers, documents),
                                                 tokenizer_path)
        meta[split] = {"tokens": n_tokens, "bytes": n_bytes, "documents": n_docs}
    train = load_tokens(out / "train.bin", meta)
    val = load_tokens(out / "val.bin", meta)
    meta["unigram_bpb"] = round(unigram_bpb(train, val, tok.token_byte_lengths(), tok.vocab_size), 4)
    meta["bytes_per_token"] = round(meta["train"]["bytes"] / max(1, meta["train"]["tokens"]), 3)
    atomic.write_json(out / "meta.json", meta)
    return {"train_tokens": meta["train"]["tokens"], "val_tokens": meta["val"]["tokens"],
            "bytes_per_token": meta["bytes_per_token"], "unigram_bpb": meta["unigram_bpb"]}
