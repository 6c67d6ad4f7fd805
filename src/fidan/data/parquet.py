"""Documents on disk: parquet files with ``id``, ``source``, ``text`` and ``meta`` (JSON) columns."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fidan import atomic
from fidan.errors import FidanError
from fidan.records import (
    Document,
    read_texts,  # noqa: F401 (the data stage's readers live here too)
)

SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.string()), ("meta", pa.string())])


def write_documents(path: str | Path, docs: Iterable[Document]) -> None:
    docs = list(docs)
    table = pa.table({"id": [d.id for d in docs], "source": [d.source for d in docs],
                      "text": [d.text for d in docs],
                      "meta": [json.dumps(d.meta, ensure_ascii=False) for d in docs]}, schema=SCHEMA)
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_documents(path: str | Path, batch: int = 512) -> Iterator[Document]:
    """The documents of a parquet file, read ``batch`` rows at a time (a reader that stops early
    never loads the rest)."""
    try:
        source = pq.ParquetFile(path)
        for record_batch in source.iter_batches(batch_size=batch):
            for row in record_batch.to_pylist():
                yield Document(id=row["id"], text=row["text"], source=row["source"],
                               meta=json.loads(row["meta"] or "{}"))
    except (OSError, pa.ArrowException) as e:
        raise FidanError(f"{path}: cannot read parquet ({e}); re-run `fidan data`") from None
