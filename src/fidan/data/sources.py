"""Reading a user's text: plain text, jsonl, parquet and WARC files, folders of them, gzipped or
not, and Hugging Face datasets by name (``hf:<name>[:<config>][:<split>]``, streamed, when online).

Every document keeps its provenance (file, and line, row or record for multi-document files).
Problems are reported with the file and line: an empty, binary or unreadable file, invalid UTF-8,
a malformed jsonl line (not JSON, nested too deep, a lone surrogate such as ``"\\ud800"``), a
missing or non-string text field, a gzip or parquet file cut short. With ``on_error="fail"`` the
first problem stops the run; with ``"skip"`` the bad document is counted, reported, and left out
while good documents, including those read before a truncation, are kept. jsonl, parquet and
WARC files are streamed, so a file never has to fit in memory.
"""
from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fidan.errors import FidanError
from fidan.records import Document

TEXT_SUFFIXES = {".txt", ".md", ".text"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}
WARC_SUFFIXES = {".warc", ".wet"}


@dataclass
class SourceReport:
    """What reading the sources found wrong (only filled with ``on_error="skip"``)."""
    problems: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.problems.append(message)

    def bad_document(self, message: str, on_error: str, hint: str = " (or pass --data.on_error=skip)") -> None:
        """Stop with ``message`` (``on_error="fail"``), or count it and go on (``"skip"``)."""
        if on_error == "fail":
            raise FidanError(message + hint)
        self.add(message)


def _kind(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in TEXT_SUFFIXES:
        return "text"
    if last in JSONL_SUFFIXES:
        return "jsonl"
    if last in PARQUET_SUFFIXES:
        return "parquet"
    if last in WARC_SUFFIXES:
        return "warc"
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
                raise FidanError(f"{path}: folder holds no .txt, .jsonl, .parquet or .warc files")
            paths.extend(found)
        elif path.is_file():
            if _kind(path) is None:
                raise FidanError(f"{path}: unsupported file type "
                                 f"(use .txt, .md, .jsonl, .parquet, .warc, optionally .gz)")
            paths.append(path)
        else:
            raise FidanError(f"{path}: no such file or folder (check --data.source)")
    if not paths:
        raise FidanError("data.source names no files")
    return paths


def unreadable(path: Path, e: OSError) -> FidanError:
    """The one-line error for a file the operating system will not let us read."""
    why = e.strerror or str(e) or type(e).__name__
    if isinstance(e, PermissionError):
        why += "; check the file's permissions"
    return FidanError(f"{path}: cannot read the file ({why})")


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e).strip() else type(e).__name__


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise FidanError(f"{path}: damaged gzip file ({e}); re-download or re-compress it") from None
    except OSError as e:
        raise unreadable(path, e) from None


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


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line), streamed; a gzip file cut short raises FidanError at the break."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    number = 0
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                yield number, raw
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise FidanError(f"{path}:{number + 1}: damaged or truncated gzip file ({e}); "
                         f"the {number} lines before it were read") from None
    except OSError as e:
        raise unreadable(path, e) from None


def lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds half of a UTF-16 surrogate pair (JSON's ``"\\ud800"``): not a
    character, and not writable as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_jsonl_file(path: Path, text_field: str, on_error: str, report: SourceReport) -> Iterator[Document]:
    empty = True
    for number, raw in _lines(path):
        if not raw.strip():
            continue
        empty = False
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("line is not a JSON object")
            if text_field not in record:
                raise ValueError(f"no '{text_field}' field (set --data.text_field)")
            text = record[text_field]
            if not isinstance(text, str):
                raise ValueError(f"field '{text_field}' is not a string")
            doc_id = str(record.get("id", f"{path.name}:{number}"))
            if lone_surrogate(text) or lone_surrogate(doc_id):
                raise ValueError(f"field '{text_field if lone_surrogate(text) else 'id'}' holds a lone surrogate "
                                 "(such as \\ud800), which is not a character")
        except RecursionError:
            report.bad_document(f"{path}:{number}: JSON nested too deep", on_error)
            continue
        except (UnicodeDecodeError, ValueError) as e:
            reason = "invalid UTF-8" if isinstance(e, UnicodeDecodeError) else str(e).split("\n")[0]
            report.bad_document(f"{path}:{number}: {reason}", on_error)
            continue
        yield Document(id=doc_id, text=text, source=str(path), meta={"line": number})
    if empty:
        raise FidanError(f"{path}: file is empty; give a file with text in it")


def read_parquet_file(path: Path, text_field: str, on_error: str, report: SourceReport) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        f = pq.ParquetFile(path)
    except OSError as e:
        if e.errno is not None:  # the operating system's refusal, not a damaged file
            raise unreadable(path, e) from None
        raise FidanError(f"{path}: not a readable parquet file ({_first_line(e)})") from None
    except pa.ArrowException as e:
        raise FidanError(f"{path}: not a readable parquet file ({_first_line(e)})") from None
    names = f.schema_arrow.names
    if text_field not in names:
        raise FidanError(f"{path}: no '{text_field}' column (columns: {', '.join(names)}); set --data.text_field")
    columns = [text_field] + (["id"] if "id" in names and text_field != "id" else [])
    row = 0
    batches = f.iter_batches(columns=columns, batch_size=1024)
    while True:
        try:
            batch = next(batches, None)
            data = batch.to_pydict() if batch is not None else {}
        except (OSError, pa.ArrowException, UnicodeDecodeError) as e:
            raise FidanError(f"{path}: row {row + 1}: damaged parquet file ({_first_line(e)}); "
                             f"the {row} rows before it were read") from None
        if batch is None:
            break
        ids = data.get("id", [None] * batch.num_rows)
        for text, doc_id in zip(data[text_field], ids):
            row += 1
            if not isinstance(text, str):
                report.bad_document(f"{path}: row {row}: '{text_field}' is "
                                    f"{'empty (null)' if text is None else 'not text'}", on_error)
                continue
            yield Document(id=str(doc_id) if doc_id is not None else f"{path.name}:{row}", text=text,
                           source=str(path), meta={"row": row})


def read_warc_file(path: Path, on_error: str, report: SourceReport) -> Iterator[Document]:
    """HTML responses (WARC) or extracted text (WET "conversion" records) as documents."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    from fidan.data.html import html_to_text
    number = 0
    try:
        f = open(path, "rb")
    except OSError as e:
        raise unreadable(path, e) from None
    try:
        with f:
            for number, record in enumerate(ArchiveIterator(f), start=1):
                if record.rec_type not in ("response", "conversion"):
                    continue
                url = record.rec_headers.get_header("WARC-Target-URI") or ""
                payload = record.content_stream().read()
                if record.rec_type == "response":
                    kind = (record.http_headers.get_header("Content-Type") or "") if record.http_headers else ""
                    if "html" not in kind.lower():
                        continue
                    text = html_to_text(payload)
                else:
                    text = payload.decode("utf-8", errors="replace")
                if not text or not text.strip():
                    continue
                doc_id = record.rec_headers.get_header("WARC-Record-ID") or f"{path.name}:{number}"
                yield Document(id=doc_id.strip("<>"), text=text, source=str(path), meta={"record": number, "url": url})
    except (ArchiveLoadFailed, EOFError, zlib.error, OSError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        message = f"{path}: record {number + 1}: damaged WARC ({why})"
        if on_error == "fail":
            raise FidanError(message + f"; the {number} records before it were read") from None
        report.add(message)


def read_hf(name: str, text_field: str, config: str | None = None, split: str = "train",
            data_files: str | None = None, on_error: str = "fail",
            report: SourceReport | None = None) -> Iterator[Document]:
    """Stream a Hugging Face dataset (needs network for hub names; ``parquet`` + ``data_files`` is local)."""
    report = report if report is not None else SourceReport()
    try:
        from datasets import load_dataset
    except ImportError:
        raise FidanError("hf: sources need the datasets library: pip install 'fidan[hf]'") from None
    try:
        stream = load_dataset(name, config, split=split, streaming=True, data_files=data_files)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; all mean "cannot open"
        raise FidanError(f"hf:{name}: cannot open the dataset ({str(e).splitlines()[0]}); "
                         "check the name, and that this machine is online") from None
    for row, record in enumerate(stream, start=1):
        text = record.get(text_field)
        if not isinstance(text, str):
            report.bad_document(f"hf:{name}: row {row}: no text in '{text_field}' (fields: {', '.join(record)})",
                                on_error, "; set --data.text_field or pass --data.on_error=skip")
            continue
        yield Document(id=str(record.get("id", f"{name}:{row}")), text=text, source=f"hf:{name}",
                       meta={"row": row, **({"config": config} if config else {}), "split": split})


def read_documents(spec: str, text_field: str = "text", on_error: str = "fail",
                   report: SourceReport | None = None) -> Iterator[Document]:
    report = report if report is not None else SourceReport()
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        yield from read_hf(parts[0], text_field, parts[1] if len(parts) > 1 and parts[1] else None,
                           parts[2] if len(parts) > 2 else "train", on_error=on_error, report=report)
        return
    for path in expand(spec):
        try:
            kind = _kind(path)
            if kind == "jsonl":
                yield from read_jsonl_file(path, text_field, on_error, report)
            elif kind == "parquet":
                yield from read_parquet_file(path, text_field, on_error, report)
            elif kind == "warc":
                yield from read_warc_file(path, on_error, report)
            else:
                yield from read_text_file(path)
        except FidanError as e:
            if on_error == "fail":
                raise
            report.add(str(e))
