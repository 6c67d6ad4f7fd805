"""Quality rules from Gopher (Rae et al. 2021), C4 (Raffel et al. 2020) and FineWeb (Penedo et al. 2024).

Each rule set is a function of a document's text that returns why it should be dropped (a short
reason such as ``"gopher:few_stop_words"``) or ``None`` to keep it. The C4 rules also remove lines
(navigation, cookie notices, lines without an end mark), so ``c4`` returns the cleaned text too.
The thresholds are the published ones. Stop words and policy phrases are given for English and
Turkish; other kept languages use the English lists.

These are rules for web pages. Books and notes (``--data.profile``) get the same rule sets with
the web-only parts left out: short lines, headings, table rows, bullets and verse stay (no line
must end in a full stop, no minimum of sentences, none of FineWeb's line-shape rules), a curly
bracket (code on the web, OCR noise in a scan) removes its line rather than the document, lines
and n-grams may repeat as refrains and speaker names do, and notes may be short.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from fidan.text import TERMINAL_PUNCTUATION, WORD

STOP_WORDS = {
    # Gopher's list: a real English sentence almost always uses two of these.
    "en": {"the", "be", "to", "of", "and", "that", "have", "with"},
    # The commonest Turkish function words (conjunctions, postpositions, "a/one", "this").
    "tr": {"ve", "bir", "bu", "da", "de", "için", "ile", "çok", "olarak", "daha", "gibi", "ama", "ki"},
}
POLICY = {
    "en": ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"),
    "tr": ("kullanım koşulları", "gizlilik politikası", "çerez politikası", "çerez kullan", "çerezleri kullan"),
}
BULLETS = ("•", "-", "*", "‣", "●", "▪", "–", "·")
PROFILES = ("web", "books", "notes")
EXAMPLE_CHARS = 80
_SENTENCE_END = re.compile(r"[.!?…]+(?=\s|$)")
_PARAGRAPHS = re.compile(r"\n\s*\n")
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class Thresholds:
    # Gopher quality
    min_words: int = 50
    max_words: int = 100_000
    min_avg_word_length: float = 3.0
    max_avg_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = 0.8
    min_stop_words: int = 2
    # Gopher repetition
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    top_ngram_char_frac: tuple = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_ngram_char_frac: tuple = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
    # C4
    c4_min_words_per_line: int = 3
    c4_max_word_length: int = 1000
    c4_min_sentences: int = 5
    # FineWeb
    fw_line_punct: float = 0.12
    fw_short_line_chars: int = 30
    fw_short_lines: float = 0.67
    fw_char_dup: float = 0.01
    fw_newline_ratio: float = 0.3


DEFAULT = Thresholds()


def _raw_words(text: str) -> list[str]:
    return text.split()


# What books and notes relax: notes may be short lists (headings, bullets, tables of figures);
# books may be as long as they are, with OCR noise among their words.
PROSE = {"books": {"max_words": 0, "min_alpha_words": 0.7},
         "notes": {"min_words": 10, "max_words": 0, "max_bullet_lines": 1.0, "min_alpha_words": 0.5}}


def gopher_quality(text: str, lang: str, t: Thresholds = DEFAULT, profile: str = "web") -> str | None:
    if profile in PROSE:
        from dataclasses import replace
        t = replace(t, **PROSE[profile])
    tokens = _raw_words(text)
    n = len(tokens)
    if n < t.min_words:
        return "gopher:too_few_words"
    if t.max_words and n > t.max_words:
        return "gopher:too_many_words"
    mean = sum(len(w) for w in tokens) / n
    if not t.min_avg_word_length <= mean <= t.max_avg_word_length:
        return "gopher:mean_word_length"
    lines = [ln for ln in text.split("\n") if ln.strip()]
    symbols = text.count("#") + text.count("...") + text.count("…")
    if profile != "web":   # markdown headings are not symbols
        symbols -= sum(len(ln) - len(ln.lstrip("#")) for ln in lines if ln.startswith("#"))
    if symbols / n > t.max_symbol_word_ratio:
        return "gopher:symbol_ratio"
    if lines and sum(ln.lstrip().startswith(BULLETS) for ln in lines) / len(lines) > t.max_bullet_lines:
        return "gopher:bullet_lines"
    if lines and sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines) > t.max_ellipsis_lines:
        return "gopher:ellipsis_lines"
    if sum(1 for w in tokens if _LETTER.search(w)) / n < t.min_alpha_words:
        return "gopher:non_alpha_words"
    stops = STOP_WORDS.get(lang, STOP_WORDS["en"])
    if sum(w in stops for w in WORD.findall(text.lower())) < t.min_stop_words:
        return "gopher:few_stop_words"
    return None


def _dup_fraction(items: list[str]) -> tuple[float, float]:
    """Share of items that repeat an earlier one, and share of characters in those repeats."""
    seen: set[str] = set()
    dup, dup_chars, chars = 0, 0, 0
    for item in items:
        chars += len(item)
        if item in seen:
            dup += 1
            dup_chars += len(item)
        seen.add(item)
    return dup / max(1, len(items)), dup_chars / max(1, chars)


def _grams(words: list[str], n: int) -> list[tuple]:
    """Every word n-gram in order, built by ``zip`` (in C, not a slice per position)."""
    return list(zip(*(words[i:] for i in range(n))))


def _top_ngram_frac(words: list[str], n: int, total: int) -> float:
    grams = Counter(_grams(words, n))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    return count * sum(len(w) for w in gram) / total if count > 1 else 0.0


def _dup_ngram_frac(words: list[str], n: int, total: int) -> float:
    """Share of the characters covered by n-grams that repeat an earlier one."""
    seen: set[tuple] = set()
    repeats = []
    for i, gram in enumerate(_grams(words, n)):
        if gram in seen:
            repeats.append(i)
        else:
            seen.add(gram)
    if not repeats:
        return 0.0
    edges = np.zeros(len(words) + 1, dtype=np.int32)   # +1 where a repeat starts, -1 where it ends
    starts = np.asarray(repeats)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + n, -1)
    covered = np.cumsum(edges[:-1]) > 0
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    return int(lengths[covered].sum()) / total


def _dup_ngram_reason(words: list[str], total: int, t: Thresholds) -> str | None:
    """Gopher's duplicate 5- to 10-gram rules. What a repeated (n+1)-gram covers, a repeated
    n-gram covers too, so the shares only fall with n: once one is at or below the smallest
    limit, no longer n-gram can exceed its own, and the rest need not be counted."""
    floor = min(limit for _, limit in t.dup_ngram_char_frac)
    for n, limit in sorted(t.dup_ngram_char_frac):
        frac = _dup_ngram_frac(words, n, total)
        if frac > limit:
            return f"gopher:dup_{n}gram"
        if frac <= floor:
            return None
    return None


def _words_and_chars(text: str) -> tuple[list[str], int]:
    words = _raw_words(text.lower())
    return words, sum(len(w) for w in words) or 1


def _top_ngram_reason(words: list[str], total: int, t: Thresholds) -> str | None:
    """Gopher's rule that one 2-4-gram must not cover too much of the text."""
    for n, limit in t.top_ngram_char_frac:
        if _top_ngram_frac(words, n, total) > limit:
            return f"gopher:top_{n}gram"
    return None


def gopher_repetition(text: str, t: Thresholds = DEFAULT, profile: str = "web") -> str | None:
    """Gopher's repetition rules. Books and notes keep only what catches one text pasted over and
    over (half its paragraph characters repeated, or one 2-4-gram everywhere): refrains, speaker
    names and a long book's common phrases repeat by nature."""
    paragraphs = [p for p in _PARAGRAPHS.split(text) if p.strip()]
    frac, chars = _dup_fraction(paragraphs)
    if profile != "web":
        if chars > 0.5:
            return "gopher:dup_paragraph_chars"
        return _top_ngram_reason(*_words_and_chars(text), t)
    if frac > t.dup_para_frac:
        return "gopher:dup_paragraphs"
    if chars > t.dup_para_char_frac:
        return "gopher:dup_paragraph_chars"
    lines = [ln for ln in text.split("\n") if ln.strip()]
    frac, chars = _dup_fraction(lines)
    if frac > t.dup_line_frac:
        return "gopher:dup_lines"
    if chars > t.dup_line_char_frac:
        return "gopher:dup_line_chars"
    words, total = _words_and_chars(text)
    top = _top_ngram_reason(words, total, t)
    if top:
        return top
    return _dup_ngram_reason(words, total, t)


def c4(text: str, lang: str, t: Thresholds = DEFAULT, profile: str = "web", lines: dict | None = None
       ) -> tuple[str, str | None, int]:
    """C4's rules: returns (text with bad lines removed, drop reason or None, lines removed).
    ``lines`` (when given) gets ``{reason: [count, example line]}`` for the removed lines. Books
    and notes keep short lines and lines without an end mark, need no minimum of sentences, and
    lose only the line a curly bracket is on."""
    lower = text.lower()
    if "lorem ipsum" in lower:
        return text, "c4:lorem_ipsum", 0
    web = profile == "web"
    if web and "{" in text:
        return text, "c4:curly_bracket", 0
    policy = POLICY["en"] + POLICY.get(lang, ())
    kept, removed = [], 0
    for line in text.split("\n"):
        if not line.strip():
            kept.append(line)
            continue
        low = line.lower()
        words = line.split()
        why = ("javascript" if "javascript" in low else
               "policy" if any(p in low for p in policy) else
               "curly_bracket" if not web and "{" in line else
               "long_word" if max(len(w) for w in words) > t.c4_max_word_length else
               None if not web else
               "short_line" if len(words) < t.c4_min_words_per_line else
               "no_end_mark" if not line.rstrip().endswith(TERMINAL_PUNCTUATION[:5]) else None)
        if why:
            removed += 1
            if lines is not None:
                entry = lines.setdefault(why, [0, line.strip()[:EXAMPLE_CHARS]])
                entry[0] += 1
            continue
        kept.append(line)
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    if not cleaned and not web:
        return cleaned, "c4:no_lines_left", removed
    if web and len(_SENTENCE_END.findall(cleaned)) < t.c4_min_sentences:
        return cleaned, "c4:too_few_sentences", removed
    return cleaned, None, removed


def fineweb(text: str, t: Thresholds = DEFAULT, profile: str = "web") -> str | None:
    """FineWeb's line-shape rules: web-extraction artefacts, so books and notes skip them."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        return "fineweb:empty"
    if profile != "web":
        return None
    if sum(ln.rstrip().endswith(TERMINAL_PUNCTUATION) for ln in lines) / len(lines) < t.fw_line_punct:
        return "fineweb:line_punctuation"
    if sum(len(ln) < t.fw_short_line_chars for ln in lines) / len(lines) > t.fw_short_lines:
        return "fineweb:short_lines"
    _, dup_chars = _dup_fraction(lines)
    if dup_chars > t.fw_char_dup:
        return "fineweb:duplicate_line_chars"
    if text.count("\n") / max(1, len(text.split())) > t.fw_newline_ratio:
        return "fineweb:newline_ratio"
    return None
