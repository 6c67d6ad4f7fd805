"""Loading instruction data in the common formats, all turned into chat ``messages``.

* messages:    ``{"messages": [{"role": "user", "content": ...}, ...]}``
* ShareGPT:    ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}``
* Alpaca:      ``{"instruction": ..., "input": ... (optional), "output": ...}``
* completion:  ``{"prompt": ..., "completion": ...}``

The format is recognised per row. Files are JSON lines (``.jsonl``, optionally gzipped) or, as
Alpaca's ``alpaca_data.json`` and the ShareGPT dumps are published, one JSON array of rows
(``.json``, optionally gzipped); folders are searched for both. A malformed row is reported with
its file and line (``file: item N`` in an array): with ``on_error="fail"`` it stops the load,
with ``"skip"`` it is counted and left out.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from fidan.data.sources import SourceReport
from fidan.errors import FidanError
from fidan.records import Problems, read_jsonl

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "bot": "assistant"}


def format_of(row: dict) -> str:
    """The name of a row's format: ``messages``, ``sharegpt``, ``alpaca``, ``completion`` or ``unknown``."""
    if not isinstance(row, dict):
        return "unknown"
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row:
        return "alpaca"
    return "completion" if "prompt" in row and "completion" in row else "unknown"


def to_messages(row: dict) -> list[dict[str, str]]:
    """One row in any supported format -> chat messages; raises ValueError saying what is wrong."""
    if not isinstance(row, dict):
        raise ValueError("row is not a JSON object")
    if "messages" in row or "conversations" in row:
        turns = row.get("messages", row.get("conversations"))
        if not isinstance(turns, list) or not turns:
            raise ValueError("'messages' must be a non-empty list")
        out = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise ValueError(f"turn {i} is not an object")
            role = turn.get("role", SHAREGPT_ROLES.get(str(turn.get("from", "")).lower()))
            content = turn.get("content", turn.get("value"))
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"turn {i} has unknown role {turn.get('role', turn.get('from'))!r}")
            if not isinstance(content, str):
                raise ValueError(f"turn {i} has no text content")
            out.append({"role": role, "content": content})
    elif "instruction" in row:
        if not isinstance(row.get("output"), str) or not isinstance(row["instruction"], str):
            raise ValueError("Alpaca rows need string 'instruction' and 'output'")
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        out = [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
    elif "prompt" in row and "completion" in row:
        if not isinstance(row["prompt"], str) or not isinstance(row["completion"], str):
            raise ValueError("'prompt' and 'completion' must be strings")
        out = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
    else:
        raise ValueError("unknown format (expected messages, conversations, instruction/output or prompt/completion)")
    if not any(m["role"] == "assistant" for m in out):
        raise ValueError("conversation has no assistant turn to learn from")
    return out


def sft_files(spec: str) -> list[Path]:
    """The instruction files a comma-separated ``sft.data`` names (folders searched recursively)."""
    out: list[Path] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        path = Path(part).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
            if not found:
                raise FidanError(f"{path}: folder holds no .jsonl or .json instruction files (--sft.data)")
            out += found
        elif path.is_file():
            if not path.name.lower().endswith(SUFFIXES):
                raise FidanError(f"{path}: instruction data must be .jsonl or a .json array (optionally .gz) "
                                 "(--sft.data)")
            out.append(path)
        else:
            raise FidanError(f"{path}: no such file or folder (check --sft.data)")
    return out


def load_conversations(spec: str, on_error: str = "fail", report: SourceReport | None = None,
                       counts: dict[str, int] | None = None) -> list[list[dict]]:
    """Every conversation of the files ``spec`` names; ``counts`` (when given) gets how many
    came in each format."""
    report = report if report is not None else SourceReport()
    counts = counts if counts is not None else {}
    conversations = []
    for path in sft_files(spec):
        conversations += _load_file(path, on_error, report, counts)
    if not conversations:
        raise FidanError(f"{spec}: no usable conversations found")
    return conversations


def _json_rows(path: Path):
    """``(where, row)`` for each element of a file holding one JSON array (or one object)."""
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FidanError(f"{path}: file not found") from None
    except (OSError, EOFError) as e:
        raise FidanError(f"{path}: cannot read ({e})") from None
    except UnicodeDecodeError:
        raise FidanError(f"{path}: invalid UTF-8; convert the file to UTF-8") from None
    except (ValueError, RecursionError) as e:
        hint = " (a file of one JSON object per line should be named .jsonl)" if "Extra data" in str(e) else ""
        raise FidanError(f"{path}: not valid JSON ({str(e).splitlines()[0]}){hint}") from None
    if isinstance(data, dict) and format_of(data) == "unknown":
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise FidanError(f"{path}: expected a JSON array of conversations (Alpaca, ShareGPT, messages)")
        data = lists[0]
    for number, row in enumerate(data if isinstance(data, list) else [data], start=1):
        yield f"item {number}", row


def _load_file(path: Path, on_error: str, report: SourceReport, counts: dict[str, int]) -> list[list[dict]]:
    out = []
    problems = Problems(report.problems)   # in line order with the rows that parse but do not fit
    if path.name.lower().endswith((".json", ".json.gz")):
        rows = _json_rows(path)
        sep = ": "
    else:
        rows = read_jsonl(path, on_error, problems, hint=" (or pass --sft.on_error=skip)")
        sep = ":"
    for number, record in rows:
        try:
            out.append(to_messages(record))
            counts[format_of(record)] = counts.get(format_of(record), 0) + 1
        except ValueError as e:
            message = f"{path}{sep}{number}: {str(e).splitlines()[0]}"
            if on_error == "fail":
                raise FidanError(message + " (or pass --sft.on_error=skip)") from None
            report.add(message)
    return out
