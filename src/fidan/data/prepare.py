"""The data stage: collect documents, split them into train and validation, write them out.

Outputs (in ``runs/<name>/data/``): ``clean/train.parquet``, ``clean/val.parquet``,
``stats.json``, and for the embedded corpus the held-out evaluation sets (``eval/*.jsonl``),
instruction-tuning conversations (``sft/train.jsonl``) and labelled sentiment sentences
(``sentiment/{train,test}.jsonl``).
"""
from __future__ import annotations

import hashlib
import json

from fidan import atomic
from fidan.config import Config
from fidan.data.document import Document
from fidan.data.parquet import write_documents
from fidan.data.sources import SourceReport, read_documents
from fidan.errors import FidanError
from fidan.rundir import RunDir


def collect(cfg: Config, report: SourceReport) -> tuple[list[Document], dict[str, list[dict]]]:
    if cfg.data.source == "embedded":
        from fidan.corpus.generate import generate
        return generate(cfg.corpus, cfg.run.seed)
    docs = [d for d in read_documents(cfg.data.source, cfg.data.text_field, cfg.data.on_error, report)
            if d.text.strip()]
    if not docs:
        raise FidanError(f"{cfg.data.source}: no usable documents found")
    return docs, {}


def split(docs: list[Document], mode: str, val_fraction: float) -> tuple[list[Document], list[Document]]:
    """``tail``: the last ``val_fraction`` of the text (by characters) is validation, cutting one
    document in two if needed; the standard split for a single long text. ``hash``: whole
    documents go to validation by a hash of their id. ``auto``: ``tail`` for one document."""
    if mode == "auto":
        mode = "tail" if len(docs) == 1 else "hash"
    if mode == "hash":
        def is_val(d: Document) -> bool:
            return int.from_bytes(hashlib.sha256(d.id.encode()).digest()[:4], "big") < val_fraction * 2**32
        train = [d for d in docs if not is_val(d)]
        val = [d for d in docs if is_val(d)]
    else:
        total = sum(len(d.text) for d in docs)
        cut = int(total * (1 - val_fraction))
        train, val, seen = [], [], 0
        for d in docs:
            if seen + len(d.text) <= cut:
                train.append(d)
            elif seen >= cut:
                val.append(d)
            else:
                k = cut - seen
                train.append(Document(d.id, d.text[:k], d.source, {**d.meta, "part": "head"}))
                val.append(Document(d.id + "#tail", d.text[k:], d.source, {**d.meta, "part": "tail"}))
            seen += len(d.text)
    if not train or not val:
        raise FidanError(f"the {mode} split left an empty train or validation set "
                         f"({len(docs)} documents); add data or change --data.val_fraction")
    return train, val


def _nbytes(docs: list[Document]) -> int:
    return sum(len(d.text.encode("utf-8")) for d in docs)


def run(cfg: Config, run: RunDir) -> dict:
    out = run.stage("data")
    report = SourceReport()
    docs, evals = collect(cfg, report)
    train, val = split(docs, cfg.data.split, cfg.data.val_fraction)
    write_documents(out / "clean" / "train.parquet", train)
    write_documents(out / "clean" / "val.parquet", val)
    for name, items in evals.items():
        atomic.write_text(out / f"{name}.jsonl",
                          "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items))
    stats = {
        "source": cfg.data.source,
        "documents": {"train": len(train), "val": len(val)},
        "bytes": {"train": _nbytes(train), "val": _nbytes(val)},
        "skipped": len(report.problems),
        "problems": report.problems[:50],
        "record_sets": {k: len(v) for k, v in evals.items()},
    }
    atomic.write_json(out / "stats.json", stats)
    for p in report.problems[:10]:
        print(f"  skipped: {p}")
    return {"train_docs": len(train), "val_docs": len(val), "train_MB": round(stats["bytes"]["train"] / 1e6, 2),
            "val_MB": round(stats["bytes"]["val"] / 1e6, 3), "skipped": len(report.problems)}
