"""The cleaning chain: small steps, each with its own counters.

A step takes a document and returns it (possibly with changed text) or drops it with a reason.
Every step counts documents and bytes in and out, drops by reason and changed documents, and
keeps a few examples of each kind of removal, so the stage can show what it threw away and why.
Counters from different shards and workers add up with ``merge``.

Steps run in this fixed order (``data.steps`` chooses which of them run):

    normalize -> language -> c4 -> gopher_repetition -> gopher_quality -> fineweb
              -> decontam -> pii -> exact_dedup -> near_dedup

The last two compare documents with each other, so they run after all shards are through the
others (see ``fidan.data.executor``); here they only compute each document's hashes.

The quality steps (c4, gopher_*, fineweb) apply each document's *profile* (``data.profile``):
``web`` rules for web pages, relaxed ones for ``books`` and ``notes`` (see ``quality``); ``auto``
picks by where the document came from (:func:`profile_of`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fidan.data import quality
from fidan.data.decontam import Index, decontaminate
from fidan.data.language import identify
from fidan.data.minhash import band_hashes, exact_hash
from fidan.data.normalize import normalize
from fidan.data.pii import scrub
from fidan.errors import FidanError
from fidan.records import Document

ORDER = ("normalize", "language", "c4", "gopher_repetition", "gopher_quality", "fineweb",
         "decontam", "pii", "exact_dedup", "near_dedup")
GLOBAL = ("exact_dedup", "near_dedup")
EXAMPLES = 3
SNIPPET = 160


WEB_SUFFIXES = (".warc", ".wet", ".html", ".htm")
NOTE_SUFFIXES = (".md", ".markdown", ".jsonl", ".ndjson", ".parquet")


def profile_of(doc: Document, profile: str) -> str:
    """The cleaning profile of one document. ``auto``: ``web`` for web archives and HTML (and the
    embedded world, a simulated web crawl), ``notes`` for markdown and records (jsonl, parquet,
    Hugging Face rows), ``books`` for plain text files."""
    if profile != "auto":
        return profile
    source = doc.source.lower()
    name = source[:-3] if source.endswith(".gz") else source
    if source.startswith("embedded") or "url" in doc.meta or name.endswith(WEB_SUFFIXES):
        return "web"
    if source.startswith("hf:") or name.endswith(NOTE_SUFFIXES):
        return "notes"
    return "books"


def parse_steps(spec: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in names if s not in ORDER]
    if unknown:
        raise FidanError(f"data.steps: unknown step(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    return [s for s in ORDER if s in names]


def new_counter() -> dict[str, Any]:
    return {"docs_in": 0, "bytes_in": 0, "docs_out": 0, "bytes_out": 0, "changed": 0,
            "dropped": {}, "examples": {}}


def _add_lines(a: dict, b: dict) -> dict:
    """``{reason: [count, example]}`` of removed lines, summed."""
    out = {k: list(v) for k, v in a.items()}
    for reason, (n, example) in b.items():
        out.setdefault(reason, [0, example])[0] += n
    return out


def record_drop(counter: dict, reason: str, doc: Document, detail: str = "") -> None:
    counter["dropped"][reason] = counter["dropped"].get(reason, 0) + 1
    examples = counter["examples"].setdefault(reason, [])
    if len(examples) < EXAMPLES:
        snippet = doc.text[:SNIPPET].replace("\n", " / ")
        examples.append({"id": doc.id, "text": snippet + ("..." if len(doc.text) > SNIPPET else ""),
                         **({"detail": detail} if detail else {})})


def merge(total: dict[str, dict], part: dict[str, dict]) -> dict[str, dict]:
    for step, c in part.items():
        t = total.setdefault(step, new_counter())
        for key in ("docs_in", "bytes_in", "docs_out", "bytes_out", "changed"):
            t[key] += c[key]
        for reason, n in c["dropped"].items():
            t["dropped"][reason] = t["dropped"].get(reason, 0) + n
        for reason, items in c["examples"].items():
            have = t["examples"].setdefault(reason, [])
            have.extend(items[:EXAMPLES - len(have)])
        for key, value in c.items():  # step-specific extras: lines removed, personal data found
            if key.startswith("found_") or key == "profiles":
                t[key] = _add(t.get(key, {}), value)
            elif key == "line_reasons":
                t[key] = _add_lines(t.get(key, {}), value)
            elif key == "lines_removed":
                t[key] = t.get(key, 0) + value
    return total


def _add(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


@dataclass
class Settings:
    """What a worker needs to clean a shard (plain values, so it pickles to any process)."""
    steps: list[str]
    languages: list[str]
    lang_threshold: float
    ngram: int
    bands: int
    rows: int
    decontam_mode: str
    seed: int = 1
    profile: str = "auto"      # web, books, notes, or auto (by source; see profile_of)


class Cleaner:
    """Runs the per-document steps on one document at a time and keeps the counters."""

    def __init__(self, settings: Settings, index: Index | None = None):
        self.s = settings
        self.index = index
        self.counters = {name: new_counter() for name in settings.steps}
        funcs: dict[str, Callable[[Document], tuple[str | None, str | None]]] = {
            "normalize": self._normalize, "language": self._language, "c4": self._c4,
            "gopher_repetition": self._repetition, "gopher_quality": self._quality, "fineweb": self._fineweb,
            "decontam": self._decontam, "pii": self._pii}
        self.chain = [(name, funcs[name]) for name in settings.steps if name not in GLOBAL]

    # Each step returns (new text or None when dropped, reason when dropped).
    def _normalize(self, doc: Document):
        text = normalize(doc.text)
        return (text, None) if text else (None, "normalize:empty")

    def _language(self, doc: Document):
        lang, prob = identify(doc.text)
        doc.meta["lang"], doc.meta["lang_score"] = lang, round(prob, 4)
        if lang not in self.s.languages:
            return None, f"language:{lang}"
        if prob < self.s.lang_threshold:
            return None, "language:low_confidence"
        return doc.text, None

    def _lang(self, doc: Document) -> str:
        return doc.meta.get("lang", "en")

    def _profile(self, doc: Document) -> str:
        return doc.meta.get("profile") or profile_of(doc, self.s.profile)   # set by clean()

    def _c4(self, doc: Document):
        c = self.counters["c4"]
        lines: dict = {}
        text, reason, removed = quality.c4(doc.text, self._lang(doc), profile=self._profile(doc), lines=lines)
        if removed:
            c["lines_removed"] = c.get("lines_removed", 0) + removed
            c["line_reasons"] = _add_lines(c.get("line_reasons", {}), lines)
        return (None, reason) if reason else (text, None)

    def _repetition(self, doc: Document):
        reason = quality.gopher_repetition(doc.text, profile=self._profile(doc))
        return (None, reason) if reason else (doc.text, None)

    def _quality(self, doc: Document):
        reason = quality.gopher_quality(doc.text, self._lang(doc), profile=self._profile(doc))
        return (None, reason) if reason else (doc.text, None)

    def _fineweb(self, doc: Document):
        reason = quality.fineweb(doc.text, profile=self._profile(doc))
        return (None, reason) if reason else (doc.text, None)

    def _decontam(self, doc: Document):
        if self.index is None:
            return doc.text, None
        text, hits = decontaminate(doc.text, self.index, self.s.decontam_mode)
        if hits and text is not None:
            doc.meta["decontaminated"] = hits
        return (text, None) if text is not None else (None, "decontam:contaminated")

    def _pii(self, doc: Document):
        text, found = scrub(doc.text)
        if found:
            c = self.counters["pii"]
            c["found_pii"] = _add(c.get("found_pii", {}), dict(found))
        return text, None

    def clean(self, doc: Document) -> tuple[Document | None, str | None]:
        """The document after every per-document step, or (None, reason) when a step dropped it."""
        if self.chain:
            first = self.counters[self.chain[0][0]]
            profile = doc.meta["profile"] = profile_of(doc, self.s.profile)
            first["profiles"] = _add(first.get("profiles", {}), {profile: 1})
        for name, step in self.chain:
            c = self.counters[name]
            size = len(doc.text.encode("utf-8"))
            c["docs_in"] += 1
            c["bytes_in"] += size
            text, reason = step(doc)
            if text is None:
                record_drop(c, reason, doc)
                return None, reason
            if text != doc.text:
                c["changed"] += 1
                doc = Document(doc.id, text, doc.source, doc.meta)
            c["docs_out"] += 1
            c["bytes_out"] += len(doc.text.encode("utf-8"))
        return doc, None

    def keys(self, doc: Document) -> tuple[int, list[int]]:
        """The exact-duplicate hash and MinHash band hashes of a cleaned document."""
        bands = (band_hashes(doc.text, self.s.ngram, self.s.bands, self.s.rows, self.s.seed)
                 if "near_dedup" in self.s.steps else [])
        return exact_hash(doc.text), bands
