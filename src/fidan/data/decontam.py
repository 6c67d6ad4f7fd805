"""Decontamination: find evaluation text inside training documents and cut it out.

As in GPT-3, text is compared as word ``n``-grams (lower-cased, punctuation ignored; n = 13 by
default). An evaluation item shorter than ``n`` words is matched as a whole, if it has at least
``min_words`` words (a two-word item would match too much ordinary text). ``mode="cut"``
removes every paragraph that holds a match and keeps the rest of the document; ``"drop"`` removes
the whole document. The index is a set of hashed n-grams and the evaluation items' vocabulary, so
it stays small for large eval sets.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fidan.errors import FidanError
from fidan.records import read_jsonl
from fidan.text import word_spans, words

EVAL_FIELDS = ("question", "prompt", "problem", "input")


def _key(gram: Iterable[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(gram).encode(), digest_size=8).digest(), "little")


@dataclass
class Index:
    n: int = 13
    min_words: int = 3
    grams: dict[int, set[int]] = field(default_factory=dict)   # gram length -> hashed grams
    items: int = 0
    vocab: set[str] | None = field(default_factory=set)   # every word of the indexed items (None: not known)

    def add(self, text: str) -> None:
        w = words(text)
        if len(w) < self.min_words:
            return
        self.items += 1
        size = min(self.n, len(w))
        bucket = self.grams.setdefault(size, set())
        bucket.update(_key(w[i:i + size]) for i in range(len(w) - size + 1))
        if self.vocab is not None:
            self.vocab.update(w)

    def matches(self, text: str) -> list[tuple[int, int]]:
        """Character spans of ``text`` covered by an evaluation n-gram. Only windows whose every
        word occurs in the evaluation items are hashed: in ordinary text that is a few percent."""
        spans = list(word_spans(text))
        tokens = [s[0] for s in spans]
        known = [t in self.vocab for t in tokens] if self.vocab is not None else [True] * len(tokens)
        found = []
        for size, bucket in self.grams.items():
            run = 0   # known words ending at position i
            for i, ok in enumerate(known):
                run = run + 1 if ok else 0
                if run >= size and _key(tokens[i - size + 1:i + 1]) in bucket:
                    found.append((spans[i - size + 1][1], spans[i][2]))
        return found

    def to_json(self) -> dict:
        return {"n": self.n, "min_words": self.min_words, "items": self.items,
                "grams": {str(k): sorted(v) for k, v in self.grams.items()},
                **({"vocab": sorted(self.vocab)} if self.vocab is not None else {})}

    @classmethod
    def from_json(cls, obj: dict) -> Index:
        vocab = set(obj["vocab"]) if "vocab" in obj else None
        return cls(obj["n"], obj["min_words"], {int(k): set(v) for k, v in obj["grams"].items()}, obj["items"], vocab)


def build_index(texts: Iterable[str], n: int = 13, min_words: int = 3) -> Index:
    index = Index(n, min_words)
    for text in texts:
        index.add(text)
    return index


def eval_texts_from_file(path: str | Path) -> list[str]:
    """Evaluation prompts from a jsonl file (fields: question, prompt, problem or input)."""
    path = Path(path)
    if not path.is_file():
        raise FidanError(f"{path}: decontamination file not found (check --data.decontam_files)")
    texts = []
    for number, record in read_jsonl(path):
        text = next((record[k] for k in EVAL_FIELDS if isinstance(record.get(k), str)), None)
        if text is None:
            raise FidanError(f"{path}:{number}: no text field (one of {', '.join(EVAL_FIELDS)})")
        texts.append(text)
    return texts


def decontaminate(text: str, index: Index, mode: str = "cut") -> tuple[str | None, int]:
    """(text without contaminated paragraphs, or None when the document must go; matches found)."""
    spans = index.matches(text)
    if not spans:
        return text, 0
    if mode == "drop":
        return None, len(spans)
    kept, pos = [], 0
    for paragraph in text.split("\n\n"):
        start, end = pos, pos + len(paragraph)
        pos = end + 2
        if not any(s < end and e > start for s, e in spans):
            kept.append(paragraph)
    cleaned = "\n\n".join(kept).strip()
    return (cleaned or None), len(spans)
