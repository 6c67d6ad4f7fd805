"""Preference pairs: the format, reading and appending them, and the HH-RLHF transcript format.

One pair per jsonl line::

    {"prompt": "What is the capital of Velmora?", "chosen": "...", "rejected": "...",
     "source": "human-web", "time": 1763800000}

``prompt`` is the user's message, or a list of chat messages (``{"role", "content"}``) for a
multi-turn conversation. ``"tie": true`` marks two answers judged equally good (the reward model
learns a difference of zero for them); ``"skip": true`` records a pair the person declined to
judge (kept so a labelling session does not ask again, left out of training). Other keys
(``source``, ``models``, ``time``, ...) are provenance.

Appends lock the file, write one whole line and fsync it, so an interrupted labelling session
loses at most the pair being written, and two writers (the web page and ``fidan label``) never
interleave. A line cut short by a crash is reported with its file and line number, not fatal.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fidan.errors import FidanError
from fidan.records import Problems, read_jsonl

Messages = list[dict[str, str]]


@dataclass
class Pair:
    prompt: Messages           # the conversation up to the answer
    chosen: str
    rejected: str
    tie: bool = False
    source: str = ""

    @property
    def prompt_text(self) -> str:
        """The last user message (what a one-turn prompt shows)."""
        users = [m["content"] for m in self.prompt if m["role"] == "user"]
        return users[-1] if users else ""


@dataclass
class LoadReport:
    pairs: list[Pair] = field(default_factory=list)
    skipped: int = 0                                   # "skip" records
    problems: list[str] = field(default_factory=list)  # bad lines, with file:line


def as_messages(prompt, where: str) -> Messages:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str) for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise ValueError(f"{where}: 'prompt' must be a string or a list of {{role, content}} messages")


def parse_pair(record: dict, where: str) -> Pair | None:
    """A pair from one decoded jsonl record; ``None`` for a skip record."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object")
    if record.get("skip"):
        return None
    if "prompt" not in record and isinstance(record.get("chosen"), str) and "\n\nHuman:" in record["chosen"]:
        return parse_hh(record, where)
    for key in ("prompt", "chosen", "rejected"):
        if key not in record:
            raise ValueError(f"{where}: missing '{key}' (a pair is {{prompt, chosen, rejected}})")
    if not isinstance(record["chosen"], str) or not isinstance(record["rejected"], str):
        raise ValueError(f"{where}: 'chosen' and 'rejected' must be strings")
    return Pair(as_messages(record["prompt"], where), record["chosen"], record["rejected"],
                bool(record.get("tie", False)), str(record.get("source", "")))


def split_transcript(text: str, where: str) -> Messages:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' into chat messages."""
    messages: Messages = []
    for chunk in text.split("\n\nHuman:")[1:]:
        human, *assistant = chunk.split("\n\nAssistant:")
        messages.append({"role": "user", "content": human.strip()})
        for a in assistant:
            messages.append({"role": "assistant", "content": a.strip()})
    if not messages:
        raise ValueError(f"{where}: not an HH-RLHF transcript (no '\\n\\nHuman:' turn)")
    return messages


def parse_hh(record: dict, where: str) -> Pair:
    """Anthropic HH-RLHF: two full transcripts that share everything but the final assistant turn."""
    chosen, rejected = (split_transcript(record.get(k, ""), where) for k in ("chosen", "rejected"))
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant" or chosen[:-1] != rejected[:-1]:
        raise ValueError(f"{where}: the two transcripts must differ only in their final assistant turn")
    return Pair(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], source="hh-rlhf")


def load(path: str | Path, on_error: str = "skip") -> LoadReport:
    """Read a preference file (jsonl, optionally gzipped; our format or HH-RLHF's)."""
    path = Path(path)
    if not path.exists():
        raise FidanError(f"{path}: no such preference file")
    report = LoadReport()
    problems = Problems(report.problems)   # in line order with the records that do not parse as pairs
    for number, record in read_jsonl(path, on_error, problems, hint="; a line cut short by an interruption?"):
        try:
            pair = parse_pair(record, f"{path}:{number}")
        except ValueError as e:
            if on_error == "fail":
                raise FidanError(str(e)) from None
            report.problems.append(str(e))
            continue
        if pair is None:
            report.skipped += 1
        else:
            report.pairs.append(pair)
    return report


def append(path: str | Path, record: dict) -> None:
    """Append one record as a whole line, under an exclusive lock, and make it durable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "skip" not in record:
        parse_pair(record, str(path))  # refuse to write what could not be read back
    line = json.dumps({**record, "time": record.get("time", int(time.time()))}, ensure_ascii=False) + "\n"
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0, os.SEEK_END)
            if f.tell():  # a previous writer killed mid-line leaves no newline: start a fresh line
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def record(prompt: str | Messages, a: str, b: str, choice: str, source: str, **meta) -> dict:
    """The line for a person's choice between answers ``a`` and ``b``: 'a', 'b', 'tie' or 'skip'."""
    if choice == "skip":
        return {"prompt": prompt, "responses": [a, b], "skip": True, "source": source, **meta}
    if choice not in ("a", "b", "tie"):
        raise ValueError(f"choice must be a, b, tie or skip, not {choice!r}")
    chosen, rejected = (b, a) if choice == "b" else (a, b)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": source, **meta,
            **({"tie": True} if choice == "tie" else {})}
