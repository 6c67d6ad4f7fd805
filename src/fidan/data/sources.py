"""Reading a user's text: plain text and jsonl files, folders of them, gzipped or not.

Every document keeps its provenance (file, and line for jsonl). Problems are reported with the
file and line: an empty or binary file, invalid UTF-8, a malformed jsonl line, a missing or
non-string text field. With ``on_error="fail"`` the first problem stops the run; with ``"skip"``
the bad document is counted, reported, and left out while good documents are kept.
"""
from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from fidan.data.document import Document
from fidan.errors import FidanError

TEXT_SUFFIXES = {".txt", ".md", ".text"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}


@dataclass
class SourceReport:
    """What reading the sources found wrong (only filled with ``on_error="skip"``)."""
    problems: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.problems.append(message)


def _kind(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in TEXT_SUFFIXES:
        return "text"
    if last in JSONL_SUFFIXES:
        return "jsonl"
    return None


def expand(spec: str) -> list[Path]:
    """Files named by a comma-separated list of files and folders (folders are searched recursively)."""
    paths: list[Path] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        path = Path(part).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p))
            if not found:
                raise FidanError(f"{path}: folder holds no .txt or .jsonl files (gzipped or not)")
            paths.extend(found)
        elif path.is_file():
            if _kind(path) is None:
                raise FidanError(f"{path}: unsupported file type (use .txt, .md, .jsonl, optionally .gz)")
            paths.append(path)
        else:
            raise FidanError(f"{path}: no such file or folder (check --data.source)")
    if not paths:
        raise FidanError("data.source names no files")
    return paths


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise FidanError(f"{path}: damaged gzip file ({e}); re-download or re-compress it") from None


def _decode(path: Path, data: bytes) -> str:
    if not data.strip():
        raise FidanError(f"{path}: file is empty; give a file with text in it")
    if b"\x00" in data[:8192]:
        raise FidanError(f"{path}: looks like a binary file (NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise FidanError(f"{path}:{line}: invalid UTF-8 at byte {e.start}; convert the file to UTF-8") from None


def read_text_file(path: Path) -> Iterator[Document]:
    text = _decode(path, _read_bytes(path))
    if text.startswith("\ufeff"):
        text = text[1:]
    yield Document(id=f"{path.name}", text=text, source=str(path), meta={})


def read_jsonl_file(path: Path, text_field: str, on_error: str, report: SourceReport) -> Iterator[Document]:
    data = _read_bytes(path)
    if not data.strip():
        raise FidanError(f"{path}: file is empty; give a file with text in it")
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("line is not a JSON object")
            if text_field not in record:
                raise ValueError(f"no '{text_field}' field (set --data.text_field)")
            text = record[text_field]
            if not isinstance(text, str):
                raise ValueError(f"field '{text_field}' is not a string")
        except (UnicodeDecodeError, ValueError) as e:
            reason = "invalid UTF-8" if isinstance(e, UnicodeDecodeError) else str(e).split("\n")[0]
            message = f"{path}:{number}: {reason}"
            if on_error == "fail":
                raise FidanError(message + " (or pass --data.on_error=skip)") from None
            report.add(message)
            continue
        doc_id = str(record.get("id", f"{path.name}:{number}"))
        yield Document(id=doc_id, text=text, source=str(path), meta={"line": number})


def read_documents(spec: str, text_field: str = "text", on_error: str = "fail",
                   report: SourceReport | None = None) -> Iterator[Document]:
    report = report if report is not None else SourceReport()
    for path in expand(spec):
        try:
            if _kind(path) == "jsonl":
                yield from read_jsonl_file(path, text_field, on_error, report)
            else:
                yield from read_text_file(path)
        except FidanError as e:
            if on_error == "fail":
                raise
            report.add(str(e))
