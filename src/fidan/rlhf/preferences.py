"""Preference pairs: the format, reading and appending them, and the HH-RLHF transcript format.

One pair per jsonl line::

    {"prompt": "What is the capital of Velmora?", "chosen": "...", "rejected": "...",
     "source": "human-web", "time": 1763800000}

``prompt`` is the user's message, or a list of chat messages (``{"role", "content"}``) for a
multi-turn conversation. ``"tie": true`` marks two answers judged equally good (the reward model
learns a difference of zero for them); ``"skip": true`` records a pair the person declined to
judge (kept so a labelling session does not ask again, left out of training). Other keys
(``source``, ``models``, ``time``, ...) are provenance.

**Consent.** A record fidan takes from a person (``source`` starting with ``human``: the web
page's compare mode, ``fidan label``) carries ``user`` (an anonymous id the person is shown),
``time`` and ``"consent": true``, given in the page or the terminal before anything is written:
:func:`append` refuses such a record without them, and :func:`load` leaves out (and counts) any
that lacks them. :func:`forget` removes one person's records, atomically.

Appends lock the file, write one whole line and fsync it, so an interrupted labelling session
loses at most the pair being written, and two writers (the web page and ``fidan label``) never
interleave. A line cut short by a crash is reported with its file and line number, not fatal.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import tempfile
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
    user: str = ""             # the anonymous id of the person who chose (records from people only)

    @property
    def prompt_text(self) -> str:
        """The last user message (what a one-turn prompt shows)."""
        users = [m["content"] for m in self.prompt if m["role"] == "user"]
        return users[-1] if users else ""


@dataclass
class LoadReport:
    pairs: list[Pair] = field(default_factory=list)
    skipped: int = 0                                   # "skip" records
    no_consent: int = 0                                # records from people without consent, left out
    problems: list[str] = field(default_factory=list)  # bad lines, with file:line


def as_messages(prompt, where: str) -> Messages:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str) for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise ValueError(f"{where}: 'prompt' must be a string or a list of {{role, content}} messages")


USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def from_person(record: dict) -> bool:
    """Whether a record was taken from a person (and so needs their consent)."""
    return str(record.get("source", "")).startswith("human")


def consented(record: dict) -> bool:
    return record.get("consent") is True and isinstance(record.get("user"), str) and bool(
        USER_ID.fullmatch(record["user"]))


def new_user_id() -> str:
    """An anonymous id for one person: random, linked to nothing about them."""
    return "u-" + secrets.token_hex(4)


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
                bool(record.get("tie", False)), str(record.get("source", "")), str(record.get("user", "")))


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
        if isinstance(record, dict) and from_person(record) and not consented(record):
            report.no_consent += 1
            continue
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
    """Append one record as a whole line, under an exclusive lock, and make it durable. A record
    from a person must carry their consent and anonymous id."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if from_person(record) and not consented(record):
        raise ValueError("a choice made by a person is stored only with their consent and anonymous id "
                         "('consent': true, 'user')")
    if "skip" not in record:
        parse_pair(record, str(path))  # refuse to write what could not be read back
    line = json.dumps({**record, "time": record.get("time", int(time.time()))}, ensure_ascii=False) + "\n"
    with _locked(path) as f:
        f.seek(0, os.SEEK_END)
        if f.tell():  # a previous writer killed mid-line leaves no newline: start a fresh line
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def forget(path: str | Path, user: str) -> int:
    """Remove every record of ``user`` from a preference file (rewritten atomically, under the
    writers' lock); returns how many were removed."""
    path = Path(path)
    if not path.exists():
        return 0
    with _locked(path) as f:
        f.seek(0)
        kept, removed = [], 0
        for line in f.read().decode("utf-8", "replace").splitlines(keepends=True):
            try:
                mine = json.loads(line).get("user") == user
            except (ValueError, AttributeError):
                mine = False   # a torn or foreign line is not this person's to drop
            if mine:
                removed += 1
            else:
                kept.append(line)
        if removed:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as out:
                out.write("".join(kept).encode("utf-8"))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)   # writers waiting on the old file's lock reopen the new one
    return removed


class _locked:
    """The preference file opened for appending and locked; when another writer replaced the
    file while we waited (``forget``), the new one is opened and locked instead."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        while True:
            f = open(self.path, "a+b")
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                same = os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.f = f
                return f
            f.close()

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def record(prompt: str | Messages, a: str, b: str, choice: str, source: str, **meta) -> dict:
    """The line for a person's choice between answers ``a`` and ``b``: 'a', 'b', 'tie' or 'skip'
    (``meta`` carries ``user`` and ``consent`` for a person's choice)."""
    if choice == "skip":
        return {"prompt": prompt, "responses": [a, b], "skip": True, "source": source, **meta}
    if choice not in ("a", "b", "tie"):
        raise ValueError(f"choice must be a, b, tie or skip, not {choice!r}")
    chosen, rejected = (b, a) if choice == "b" else (a, b)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": source, **meta,
            **({"tie": True} if choice == "tie" else {})}
