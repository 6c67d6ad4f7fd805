"""Records every layer reads: the :class:`Document` every data step passes along, JSON lines
(``.jsonl``, optionally gzipped) and the text column of the data stage's parquet files.

:func:`read_jsonl` is the one JSON-lines reader: a bad line (not JSON, not an object, nested too
deep, invalid UTF-8, a lone surrogate such as ``"\\ud800"``, a gzip stream cut short) is reported
as ``file:line`` and either stops the read (``on_error="fail"``, a :class:`FidanError`) or is
counted and skipped (``"skip"``).
"""
from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fidan.errors import FidanError


@dataclass
class Document:
    """The unit every data step passes along."""
    id: str                  # unique within a run
    text: str
    source: str              # file path, "embedded", or a data set name
    meta: dict[str, Any] = field(default_factory=dict)  # provenance: line number, language, kind ...


@dataclass
class Problems:
    """What a skipping reader left out: ``file:line: why`` for each bad line."""
    items: list[str] = field(default_factory=list)

    def add(self, where: str) -> None:
        self.items.append(where)

    def __len__(self) -> int:
        return len(self.items)


def _open_text(path: Path):
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def read_jsonl(path: str | Path, on_error: str = "fail", problems: Problems | None = None, hint: str = ""
               ) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSON-lines file. ``hint`` is added
    to the message of a failing read (say, which setting skips bad lines instead)."""
    path = Path(path)
    problems = problems if problems is not None else Problems()

    def bad(where: str) -> None:
        if on_error != "skip":
            raise FidanError(where + hint)
        problems.add(where)

    try:
        f = _open_text(path)
    except FileNotFoundError:
        raise FidanError(f"{path}: file not found") from None
    except OSError as e:
        raise FidanError(f"{path}: cannot read ({e.strerror or e})") from None
    number = 0
    with f:
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError:
                bad(f"{path}:{number + 1}: invalid UTF-8; convert the file to UTF-8")
                return
            except (EOFError, OSError, gzip.BadGzipFile) as e:
                bad(f"{path}:{number + 1}: the file is cut short or damaged ({e})")
                return
            if not line:
                return
            number += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except RecursionError:
                bad(f"{path}:{number}: JSON nested too deep")
                continue
            except ValueError as e:
                bad(f"{path}:{number}: not valid JSON ({e})")
                continue
            if not isinstance(obj, dict):
                bad(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
                continue
            if "\\u" in line and _lone_surrogate(obj):
                bad(f"{path}:{number}: a string holds a lone surrogate (such as \\ud800), which is not a character")
                continue
            yield number, obj


def _lone_surrogate(obj: Any) -> bool:
    """Whether any key or string in a parsed JSON value is not valid Unicode (half a surrogate pair)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except RecursionError:  # as deep as the parser allowed, deeper than the encoder does
        return True
    return False


def read_texts(path: str | Path) -> list[str]:
    """The ``text`` column of a parquet file of documents."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        return pq.read_table(path, columns=["text"]).column("text").to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise FidanError(f"{path}: cannot read parquet ({e}); re-run `fidan data`") from None


def text_batches(path: str | Path, batch: int = 512) -> Iterator[list[str]]:
    """The ``text`` column of a parquet file of documents, ``batch`` documents at a time (the file
    is never read whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        source = pq.ParquetFile(path)
        for record_batch in source.iter_batches(batch_size=batch, columns=["text"]):
            yield record_batch.column(0).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise FidanError(f"{path}: cannot read parquet ({e}); re-run `fidan data`") from None


def batch_bytes(path: str | Path, batch: int = 512) -> list[int]:
    """UTF-8 bytes of each ``batch``-document batch of a parquet file's ``text`` column, read in
    batches (pyarrow counts them without making Python strings)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    try:
        source = pq.ParquetFile(path)
        return [pc.sum(pc.binary_length(b.column(0))).as_py() or 0
                for b in source.iter_batches(batch_size=batch, columns=["text"])]
    except (OSError, pa.ArrowException) as e:
        raise FidanError(f"{path}: cannot read parquet ({e}); re-run `fidan data`") from None


def spread_batches(sizes: list[int], max_bytes: int) -> list[int]:
    """Indices of the batches to keep so that about ``max_bytes`` are kept, spread evenly over the
    file (every batch when it fits, or when ``max_bytes`` is 0): a cap that takes the first
    documents would see only the sources that come first."""
    total = sum(sizes)
    if max_bytes <= 0 or total <= max_bytes:
        return list(range(len(sizes)))
    ratio = max_bytes / total
    return [i for i in range(len(sizes)) if int((i + 1) * ratio) > int(i * ratio)] or [0]
