"""Loading instruction data in the common formats, all turned into chat ``messages``.

* messages:    ``{"messages": [{"role": "user", "content": ...}, ...]}``
* ShareGPT:    ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}``
* Alpaca:      ``{"instruction": ..., "input": ... (optional), "output": ...}``
* completion:  ``{"prompt": ..., "completion": ...}``

The format is recognised per row. A malformed row is reported with its file and line: with
``on_error="fail"`` it stops the load, with ``"skip"`` it is counted and left out.
"""
from __future__ import annotations

from pathlib import Path

from fidan.data.sources import SourceReport, expand
from fidan.errors import FidanError
from fidan.records import Problems, read_jsonl

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "bot": "assistant"}


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


def load_conversations(spec: str, on_error: str = "fail", report: SourceReport | None = None) -> list[list[dict]]:
    report = report if report is not None else SourceReport()
    conversations = []
    for path in expand(spec):
        if not path.name.endswith((".jsonl", ".jsonl.gz", ".json")):
            raise FidanError(f"{path}: instruction data must be .jsonl (optionally .gz)")
        conversations += _load_file(path, on_error, report)
    if not conversations:
        raise FidanError(f"{spec}: no usable conversations found")
    return conversations


def _load_file(path: Path, on_error: str, report: SourceReport) -> list[list[dict]]:
    out = []
    problems = Problems(report.problems)   # in line order with the rows that parse but do not fit
    for number, record in read_jsonl(path, on_error, problems, hint=" (or pass --sft.on_error=skip)"):
        try:
            out.append(to_messages(record))
        except ValueError as e:
            message = f"{path}:{number}: {str(e).splitlines()[0]}"
            if on_error == "fail":
                raise FidanError(message + " (or pass --sft.on_error=skip)") from None
            report.add(message)
    return out
