"""Just enough Turkish morphology to write correct sentences about an invented world.

Case suffixes follow vowel harmony (the last vowel of the word picks the suffix vowel), take a
buffer consonant after a vowel (n, y), and harden d -> t after a voiceless consonant. Proper
nouns are separated from their suffix by an apostrophe ("Karmilo'da", "Tesna'nın").
"""
from __future__ import annotations

BACK = set("aıou")
FRONT = set("eiöü")
VOWELS = BACK | FRONT
VOICELESS = set("fstkçşhp")

# Suffix templates: A = two-way vowel (a/e), I = four-way vowel (ı/i/u/ü), D = d/t,
# a leading buffer letter in parentheses is used only after a vowel.
SUFFIXES = {
    "gen": "(n)In",   # genitive: Karmilo'nun, Tesna'nın, Deniz'in
    "acc": "(y)I",    # accusative
    "dat": "(y)A",    # dative: Karmilo'ya
    "loc": "DA",      # locative: Karmilo'da, Petek'te
    "abl": "DAn",     # ablative: Karmilo'dan
    "cop": "DIr",     # copula "is": ressamdır, öğretmendir, ipektir
}


def last_vowel(word: str) -> str:
    for ch in reversed(word.lower()):
        if ch in VOWELS:
            return ch
    return "e"  # words without vowels (abbreviations) are read with a front vowel


def _two_way(word: str) -> str:
    return "a" if last_vowel(word) in BACK else "e"


def _four_way(word: str) -> str:
    return {"a": "ı", "ı": "ı", "o": "u", "u": "u", "e": "i", "i": "i", "ö": "ü", "ü": "ü"}[last_vowel(word)]


def suffix(word: str, case: str, proper: bool = False) -> str:
    """``word`` with the case suffix attached, e.g. ``suffix("Karmilo", "loc", True) == "Karmilo'da"``."""
    template = SUFFIXES[case]
    ends_vowel = word[-1].lower() in VOWELS
    ends_voiceless = word[-1].lower() in VOICELESS
    out = []
    i = 0
    while i < len(template):
        ch = template[i]
        if ch == "(":
            close = template.index(")", i)
            if ends_vowel:
                out.append(template[i + 1:close])
            i = close + 1
            continue
        if ch == "A":
            out.append(_two_way(word))
        elif ch == "I":
            out.append(_four_way(word))
        elif ch == "D":
            out.append("t" if ends_voiceless else "d")
        else:
            out.append(ch)
        i += 1
    return word + ("'" if proper else "") + "".join(out)


def upper_first(text: str) -> str:
    """Capitalise the first letter the Turkish way (i -> İ, ı -> I)."""
    if not text:
        return text
    first = {"i": "İ", "ı": "I"}.get(text[0], text[0].upper())
    return first + text[1:]


def lower(text: str) -> str:
    """Lower-case the Turkish way (I -> ı, İ -> i)."""
    return text.replace("I", "ı").replace("İ", "i").lower()
