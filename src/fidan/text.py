"""Word splitting shared by the cleaning rules, deduplication and decontamination.

All of them compare text by its words, lower-cased, with punctuation stripped, so that
"Ayla's" and "ayla s" or a changed comma do not hide a duplicate. Turkish dotted and dotless I
are lower-cased the Turkish way only by ``casefold``'s rules, which is good enough for matching.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

WORD = re.compile(r"\w+", re.UNICODE)
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "”", "’", "…", ":", ";")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits), punctuation dropped."""
    return WORD.findall(text.lower())


def word_spans(text: str) -> Iterator[tuple[str, int, int]]:
    """(lower-cased word, start, end) for each word of ``text``."""
    for m in WORD.finditer(text):
        yield m.group(0).lower(), m.start(), m.end()


def shingles(text: str, n: int) -> set[str]:
    """The set of word ``n``-grams; a text shorter than ``n`` words is one shingle."""
    w = words(text)
    if len(w) < n:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def overlap(reply: str, reference: str) -> float:
    """Word F1 between a reply and a reference answer (SQuAD's rule, on ``words``)."""
    from collections import Counter
    a, b = Counter(words(reply)), Counter(words(reference))
    same = sum((a & b).values())
    if not same:
        return 0.0
    precision, recall = same / sum(a.values()), same / sum(b.values())
    return 2 * precision * recall / (precision + recall)
