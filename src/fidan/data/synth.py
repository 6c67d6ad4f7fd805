"""Instruction data made from the user's own text, for a run that has no conversations of its own.

The embedded world writes its SFT conversations and held-out questions itself; a run on your own
files gets them from here, in the spirit of instruction back-translation (Li et al. 2023: the
text's own sentences are the answers, and a question is written for each):

* ``recall``: "What does the text say about X?", answered by the sentence of a training
  document that mentions X (X a rare word of it: a name, a place, a term);
* ``read``: the same question after a short passage, answered by the passage's sentence;
* ``summary``: "Summarise this paragraph in one sentence", answered by its lead sentence;
* ``continue``: "Continue this passage", answered by the sentences that follow;

plus general conversations in English and Turkish: greetings, who-are-you, refusals of harmful
requests (the embedded set's), and "the text does not say" for a word the text never uses.
Templates follow each document's language (English or Turkish; other languages get English).

Held-out questions come from the validation documents only, and only of the kinds answerable from
the prompt itself (``read`` and ``summary``): their answers were never trained on, so the score
before and after fine-tuning says whether the model learned to answer, not what it memorised. A
reply is right when it overlaps its reference sentence (word F1, ``text.overlap``) by half.
"""
from __future__ import annotations

import random
import re
from collections import Counter

from fidan.corpus.instructions import HARMFUL, REFUSAL
from fidan.records import Document
from fidan.text import words

MAX_PASSAGE = 360        # characters of a passage in a prompt (short models have short contexts)
SENTENCE = re.compile(r"(?<=[.!?…])[\"'”’)]*\s+")

Q = {
    "en": {"recall": "What does the text say about {x}?",
           "read": "{p}\n\nWhat does this passage say about {x}?",
           "summary": "Summarise this paragraph in one sentence:\n\n{p}",
           "continue": "Continue this passage:\n\n{p}",
           "absent": "The text does not say anything about {x}."},
    "tr": {"recall": "Metin {x} hakkında ne söylüyor?",
           "read": "{p}\n\nBu parça {x} hakkında ne söylüyor?",
           "summary": "Bu paragrafı tek cümleyle özetle:\n\n{p}",
           "continue": "Bu metni sürdür:\n\n{p}",
           "absent": "Metin {x} hakkında bir şey söylemiyor."},
}
GENERAL = {
    "en": [("Hello!", "Hello! How can I help you today?"),
           ("Who are you?", "I am fidan, a small assistant. I was trained on the texts I was given, "
                            "and I answer questions about them."),
           ("Thank you!", "You are welcome.")],
    "tr": [("Merhaba!", "Merhaba! Bugün sana nasıl yardımcı olabilirim?"),
           ("Sen kimsin?", "Ben fidan, küçük bir asistanım. Bana verilen metinlerle eğitildim ve onlar hakkındaki "
                           "soruları cevaplarım."),
           ("Teşekkürler!", "Rica ederim.")],
}
ABSENT_WORDS = {"en": ["unicorns", "volcanoes on Mars", "the moon's oceans", "dragons", "time machines"],
                "tr": ["tek boynuzlu atlar", "Mars'taki yanardağlar", "ejderhalar", "zaman makineleri"]}


def sentences(paragraph: str) -> list[str]:
    """The sentences of a paragraph (its lines joined), each with 4 to 60 words."""
    flat = " ".join(paragraph.split())
    return [s.strip() for s in SENTENCE.split(flat) if 4 <= len(s.split()) <= 60]


def paragraphs(text: str) -> list[list[str]]:
    """The text's paragraphs (blank-line separated; a long block is cut every 8 lines) as sentences."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        for i in range(0, len(lines), 8):
            found = sentences("\n".join(lines[i:i + 8]))
            if found:
                out.append(found)
    return out


def _template_lang(lang: str | None) -> str:
    return lang if lang in Q else "en"


def keyword(sentence: str, common: Counter) -> str | None:
    """The sentence's rarest word of five letters or more (a name, a place, a term)."""
    candidates = [w for w in re.findall(r"[^\W\d_]{5,}", sentence)]
    if not candidates:
        return None
    return min(candidates, key=lambda w: (common[w.lower()], -len(w)))


def _passage(sents: list[str], i: int) -> tuple[str, int]:
    """Sentences from ``i`` on, as many as fit ``MAX_PASSAGE`` characters (at least one)."""
    text, j = sents[i], i + 1
    while j < len(sents) and len(text) + 1 + len(sents[j]) <= MAX_PASSAGE:
        text += " " + sents[j]
        j += 1
    return text, j


def _items(doc: Document, lang: str, common: Counter, rng: random.Random, kinds: tuple[str, ...]) -> list[dict]:
    t = Q[_template_lang(lang)]
    out = []
    for sents in paragraphs(doc.text):
        kind = rng.choice(kinds)
        if kind == "summary" and len(sents) >= 2:
            passage, _ = _passage(sents, 0)
            if passage != sents[0]:
                out.append({"kind": kind, "question": t["summary"].format(p=passage), "answer": sents[0]})
        elif kind == "continue" and len(sents) >= 2:
            k = rng.randrange(1, len(sents))
            head, _ = _passage(sents[max(0, k - 2):k], 0)
            out.append({"kind": kind, "question": t["continue"].format(p=head), "answer": sents[k]})
        elif kind in ("recall", "read"):
            i = rng.randrange(len(sents))
            x = keyword(sents[i], common)
            if x is None:
                continue
            if kind == "recall":
                out.append({"kind": kind, "question": t["recall"].format(x=x), "answer": sents[i], "keyword": x})
            else:
                start = max(0, i - rng.randrange(0, 2))
                passage, end = _passage(sents, start)
                if start <= i < end:
                    out.append({"kind": kind, "question": t["read"].format(p=passage, x=x), "answer": sents[i],
                                "keyword": x})
    for item in out:
        item.update(lang=_template_lang(lang), source=doc.id)
    return out


def word_counts(docs: list[Document]) -> Counter:
    common: Counter = Counter()
    for d in docs:
        common.update(words(d.text))
    return common


def general(n: int, langs: list[str], rng: random.Random) -> list[dict]:
    """Greetings, who-are-you, refusals of harmful requests and "the text does not say", in ``langs``."""
    out = []
    requests = [(category, pair) for category, pairs in sorted(HARMFUL.items()) for pair in pairs]
    for i in range(n):
        lang = langs[i % len(langs)]
        kind = rng.choices(["greeting", "refusal", "absent"], [0.3, 0.4, 0.3])[0]
        if kind == "greeting":
            q, a = rng.choice(GENERAL[lang])
        elif kind == "refusal":
            _, pair = rng.choice(requests)
            q, a = pair[0 if lang == "en" else 1], rng.choice(REFUSAL[lang])
        else:
            x = rng.choice(ABSENT_WORDS[lang])
            q, a = Q[lang]["recall"].format(x=x), Q[lang]["absent"].format(x=x)
        out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                    "kind": kind, "lang": lang})
    return out


def synthesise(train: list[Document], val: list[Document], n_train: int, n_heldout: int, seed: int,
               lang_of) -> dict[str, list[dict]]:
    """``{"sft/train": conversations, "eval/text": held-out questions}`` from the split's documents;
    ``lang_of(doc)`` gives a document's language."""
    rng = random.Random(f"fidan-owntext-{seed}")
    common = word_counts(train + val)
    langs = {d.id: _template_lang(lang_of(d)) for d in train + val}
    items = [it for d in train for it in _items(d, langs[d.id], common, rng, ("recall", "read", "summary", "continue"))]
    rng.shuffle(items)
    items = items[:n_train]
    seen = Counter(langs[d.id] for d in train) or Counter({"en": 1})
    conversations = [{"messages": [{"role": "user", "content": it["question"]},
                                   {"role": "assistant", "content": it["answer"]}],
                      "kind": it["kind"], "lang": it["lang"], "reference": it["answer"]} for it in items]
    conversations += general(max(10, len(conversations) // 8), [lang for lang, _ in seen.most_common(2)], rng)
    rng.shuffle(conversations)
    heldout = [it for d in val for it in _items(d, langs[d.id], common, rng, ("read", "summary"))]
    rng.shuffle(heldout)
    heldout = [{"id": f"text-{i:05d}", **it} for i, it in enumerate(heldout[:n_heldout])]
    return {"sft/train": conversations, "eval/text": heldout}
