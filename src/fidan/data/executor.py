"""Running the cleaning chain over many documents: shards, worker processes or Ray, and dedup.

The input stream is cut into shards of ``shard_docs`` documents as it is read, so memory does
not grow with the input. Each shard is cleaned by one worker (``process_shard``), which writes,
in ``data/work/``:

    shard-00012.parquet   documents that survived, with their exact hash and MinHash band hashes
    shard-00012.log.parquet  one row per input document: id, language, where it was dropped and why
    shard-00012.json      the shard's counters; written last, so its presence means "done"

A killed run therefore resumes by skipping shards whose ``.json`` exists with the same settings.
Then ``deduplicate`` groups the hashes of all shards (exact first, then MinHash bands), and
``finish`` streams the survivors into ``clean/train.parquet`` and ``clean/val.parquet``.

Two executors run the same ``process_shard``: ``local`` (a pool of worker processes, at most
two shards in flight per worker) and ``ray`` (tasks on an existing Ray cluster, or a local one).
Local workers end with the command that started them, even when it is killed with SIGKILL and
cannot clean up: on Linux the kernel sends each worker SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``), and everywhere a watchdog thread in each worker exits once its parent
is gone.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fidan import atomic
from fidan.data import steps as S
from fidan.data.decontam import Index
from fidan.data.minhash import duplicates
from fidan.data.parquet import SCHEMA
from fidan.errors import FidanError
from fidan.records import Document

WORK_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.string()),
                         ("meta", pa.string()), ("exact", pa.int64()), ("bands", pa.list_(pa.int64()))])
LOG_SCHEMA = pa.schema([("id", pa.string()), ("lang", pa.string()), ("lang_score", pa.float32()),
                        ("dropped_by", pa.string()), ("reason", pa.string())])


def settings_hash(settings: S.Settings, index: Index | None, inputs_key: str = "") -> str:
    """The tag a finished shard carries: it is reused only under the same tag."""
    blob = json.dumps(asdict(settings), sort_keys=True) + (json.dumps(index.to_json(), sort_keys=True)
                                                           if index else "") + inputs_key
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def shard_name(work: Path, i: int) -> Path:
    return work / f"shard-{i:05d}"


def process_shard(i: int, docs: list[tuple], work: str, settings: S.Settings, index_path: str | None,
                  tag: str) -> dict:
    """Clean one shard and write its three files. ``docs`` are (id, text, source, meta) tuples."""
    index = Index.from_json(json.loads(Path(index_path).read_text())) if index_path else None
    cleaner = S.Cleaner(settings, index)
    base = shard_name(Path(work), i)
    kept: dict[str, list] = {name: [] for name in WORK_SCHEMA.names}
    log: dict[str, list] = {name: [] for name in LOG_SCHEMA.names}
    for doc_id, text, source, meta in docs:
        doc, reason = cleaner.clean(Document(doc_id, text, source, dict(meta)))
        log["id"].append(doc_id)
        meta_out = doc.meta if doc is not None else meta
        log["lang"].append(meta_out.get("lang") if "language" in settings.steps else None)
        log["lang_score"].append(meta_out.get("lang_score"))
        log["dropped_by"].append(reason.split(":")[0] if reason else None)
        log["reason"].append(reason)
        if doc is None:
            continue
        exact, bands = cleaner.keys(doc)
        for name, value in zip(WORK_SCHEMA.names, (doc.id, doc.source, doc.text,
                                                    json.dumps(doc.meta, ensure_ascii=False), exact, bands)):
            kept[name].append(value)
    with atomic.atomic_path(base.with_suffix(".parquet")) as tmp:
        pq.write_table(pa.table(kept, schema=WORK_SCHEMA), tmp, compression="zstd")
    with atomic.atomic_path(base.with_suffix(".log.parquet")) as tmp:
        pq.write_table(pa.table(log, schema=LOG_SCHEMA), tmp, compression="zstd")
    result = {"shard": i, "settings": tag, "docs": len(docs), "kept": len(kept["id"]),
              "counters": cleaner.counters}
    atomic.write_json(base.with_suffix(".json"), result)
    return result


def finished(work: Path, i: int, tag: str) -> dict | None:
    path = shard_name(work, i).with_suffix(".json")
    if not path.exists() or not shard_name(work, i).with_suffix(".parquet").exists():
        return None
    try:
        result = json.loads(path.read_text())
    except ValueError:
        return None
    return result if result.get("settings") == tag else None


def shards(docs: Iterable[Document], size: int) -> Iterator[list[tuple]]:
    it = iter(docs)
    while chunk := [(d.id, d.text, d.source, d.meta) for d in islice(it, size)]:
        yield chunk


def die_with_parent(parent: int, pdeathsig: bool) -> None:
    """Worker initializer: end this process when ``parent`` is gone."""
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, name="fidan-parent-watch", daemon=True).start()


def run_local(chunks: Iterator[tuple[int, list[tuple]]], submit_args: Callable[[int, list], tuple],
              workers: int) -> Iterator[dict]:
    """Process shards with ``workers`` processes (in this process when workers == 1)."""
    if workers <= 1:
        for i, docs in chunks:
            yield process_shard(*submit_args(i, docs))
        return
    # PDEATHSIG fires when the *thread* that started a worker ends, so only the main thread (whose
    # end is the process's) may ask for it; the watchdog covers the rest.
    pdeathsig = threading.current_thread() is threading.main_thread()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=die_with_parent,
                             initargs=(os.getpid(), pdeathsig)) as pool:
        pending: set = set()
        for i, docs in chunks:
            if len(pending) >= 2 * workers:  # bounded: reading never runs far ahead of cleaning
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
            pending.add(pool.submit(process_shard, *submit_args(i, docs)))
        for f in pending:
            yield f.result()


def run_ray(chunks: Iterator[tuple[int, list[tuple]]], submit_args: Callable[[int, list], tuple],
            workers: int, address: str = "") -> Iterator[dict]:
    """Process shards as Ray tasks: on the cluster at ``address`` (or $RAY_ADDRESS), else a local one."""
    try:
        import ray
    except ImportError:
        raise FidanError("data.executor=ray needs Ray: pip install 'fidan[ray]'") from None
    started = False
    if not ray.is_initialized():
        _connect_ray(ray, address or os.environ.get("RAY_ADDRESS", ""), workers)
        started = True
    remote = ray.remote(process_shard)
    try:
        pending: list = []
        limit = 2 * max(1, int(ray.available_resources().get("CPU", 1)))
        for i, docs in chunks:
            if len(pending) >= limit:
                done, pending = ray.wait(pending, num_returns=1)
                yield from ray.get(done)
            pending.append(remote.remote(*submit_args(i, docs)))
        yield from ray.get(pending)
    finally:
        if started:
            ray.shutdown()


def _connect_ray(ray, address: str, workers: int) -> None:
    """Join the cluster at ``address`` (or start a local one when it is empty), with a clear error.

    A cluster started with ``ray start`` uses token authentication by default (Ray >= 2.5x), and
    a driver connects with the token only when ``RAY_AUTH_MODE=token``; without it, ``ray.init``
    retries for a minute and fails without saying why. So when the mode is unset and a token is
    at hand (``~/.ray/auth_token`` or ``$RAY_AUTH_TOKEN``), the driver uses it, as ``ray start``'s
    own nodes do.
    """
    if address and "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").exists()):
        os.environ["RAY_AUTH_MODE"] = "token"
        try:    # Ray caches its config at import; refresh it so this process sees the mode
            from ray._private.authentication.authentication_token_setup import _enable_token_auth
            _enable_token_auth()
        except ImportError:
            pass
    try:
        ray.init(address=address or None, num_cpus=None if address else (workers or None),
                 include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    except ConnectionError as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise FidanError(f"--data.ray_address: could not connect to {where} ({e}); is `ray start --head` "
                         "running there, and does RAY_AUTH_MODE / ~/.ray/auth_token match the cluster's?") from None


def deduplicate(work: Path, n_shards: int, exact: bool, near: bool) -> tuple[list[np.ndarray], dict]:
    """Per shard, the global index of the document each row duplicates (-1: keep), and counters."""
    sizes, ex_cols, band_cols = [], [], None
    for i in range(n_shards):
        table = pq.read_table(shard_name(work, i).with_suffix(".parquet"), columns=["exact", "bands"])
        sizes.append(table.num_rows)
        ex_cols.append(table.column("exact").to_numpy())
        if near:
            bands = table.column("bands").to_pylist()
            if bands:
                arr = np.asarray(bands, dtype=np.int64)
                band_cols = [[] for _ in range(arr.shape[1])] if band_cols is None else band_cols
                for b in range(arr.shape[1]):
                    band_cols[b].append(arr[:, b])
    n = sum(sizes)
    dup_exact = duplicates([np.concatenate(ex_cols)], n) if exact and n else np.full(n, -1)
    dup_near = np.full(n, -1)
    if near and n and band_cols:
        columns = [np.concatenate(c) for c in band_cols]
        alive = dup_exact < 0  # exact copies are gone already; cluster what is left
        local = duplicates([c[alive] for c in columns], int(alive.sum()))
        positions = np.flatnonzero(alive)
        dup_near[positions] = np.where(local >= 0, positions[np.maximum(local, 0)], -1)
    verdict = np.where(dup_exact >= 0, dup_exact, dup_near)
    kinds = np.where(dup_exact >= 0, 1, np.where(dup_near >= 0, 2, 0))
    out, start = [], 0
    for size in sizes:
        out.append(np.stack([verdict[start:start + size], kinds[start:start + size]]))
        start += size
    return out, {"documents": n, "exact": int((kinds == 1).sum()), "near": int((kinds == 2).sum())}


def in_validation(doc_id: str, val_fraction: float) -> bool:
    """Whole documents go to validation by a hash of their id (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:4], "big") < val_fraction * 2**32


class SplitWriter:
    """Streams documents into train and validation parquet files: whole documents chosen by a hash
    of the id, or (given ``cut``, the ``tails`` split) each document's head to training and the
    tail from ``cut(text)`` on to validation, as ``<id>#tail``. Nothing is held but the table
    being written, so the split's memory does not grow with the corpus."""

    def __init__(self, folder: Path, val_fraction: float, cut: Callable[[str], int] | None = None):
        self.val_fraction = val_fraction
        self.cut = cut
        self.paths = {s: folder / f"{s}.parquet" for s in ("train", "val")}
        self.tmp = {s: p.with_name(f".{p.name}.partial") for s, p in self.paths.items()}
        for p in self.tmp.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        self.writers = {s: pq.ParquetWriter(self.tmp[s], SCHEMA, compression="zstd") for s in self.paths}
        self.counts = {s: [0, 0] for s in self.paths}

    def write(self, table: pa.Table) -> None:
        if self.cut is not None:
            self._write_tails(table)
            return
        ids = table.column("id").to_pylist()
        mask = np.array([in_validation(i, self.val_fraction) for i in ids], dtype=bool)
        for split, m in (("val", mask), ("train", ~mask)):
            self._append(split, table.filter(pa.array(m)).select(SCHEMA.names))

    def _write_tails(self, table: pa.Table) -> None:
        assert self.cut is not None
        rows: dict[str, dict[str, list]] = {s: {n: [] for n in SCHEMA.names} for s in ("train", "val")}
        for row in table.select(SCHEMA.names).to_pylist():
            text = row["text"]
            k = self.cut(text)
            if 0 < k < len(text):
                meta = json.loads(row["meta"] or "{}")
                for split, doc_id, part, piece in (("train", row["id"], "head", text[:k]),
                                                   ("val", row["id"] + "#tail", "tail", text[k:])):
                    out = rows[split]
                    out["id"].append(doc_id)
                    out["source"].append(row["source"])
                    out["text"].append(piece)
                    out["meta"].append(json.dumps({**meta, "part": part}, ensure_ascii=False))
            else:
                for name in SCHEMA.names:
                    rows["train"][name].append(row[name])
        for split, cols in rows.items():
            self._append(split, pa.table(cols, schema=SCHEMA))

    def _append(self, split: str, part: pa.Table) -> None:
        if part.num_rows:
            self.writers[split].write_table(part.cast(SCHEMA))
            self.counts[split][0] += part.num_rows
            self.counts[split][1] += sum(len(t.encode("utf-8")) for t in part.column("text").to_pylist())

    def close(self) -> dict[str, Any]:
        for w in self.writers.values():
            w.close()
        if not self.counts["train"][0] or not self.counts["val"][0]:
            for p in self.tmp.values():
                p.unlink(missing_ok=True)
            if not self.counts["train"][0] and not self.counts["val"][0]:
                raise FidanError("cleaning left 0 training and 0 validation documents; add data or loosen "
                                 "--data.steps (or --data.profile)")
            fix = ("split inside documents with --data.split=tails" if self.cut is None else
                   "lower --data.val_fraction" if not self.counts["train"][0] else "raise --data.val_fraction")
            raise FidanError(f"cleaning left {self.counts['train'][0]} training and {self.counts['val'][0]} "
                             f"validation documents; add data, loosen --data.steps, or {fix}")
        for s in self.paths:
            os.replace(self.tmp[s], self.paths[s])
        return {s: {"documents": c[0], "bytes": c[1]} for s, c in self.counts.items()}
