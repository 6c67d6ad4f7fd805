"""Generative math with answer extraction (GSM8K conventions, ``infer.answers.extract``).

``strict``: the number after ``####``; ``flexible``: the last number in the reply. Commas and
``$`` are ignored. Chain-of-thought mode asks for step-by-step reasoning in the question's
language ("Let's think step by step." / "Adım adım düşünelim.", with "Soru:"/"Cevap:" labels for
Turkish items) and still extracts the final number after it. The same extraction scores
chat-form word problems and is GRPO's verifiable reward (``WorldMath.reward``).
"""
from __future__ import annotations

from pathlib import Path

from fidan.errors import FidanError
from fidan.infer.answers import STRICT, _clean, extract, same_number  # noqa: F401
from fidan.infer.scoring import complete_many, reply_room, shrink_to_fit
from fidan.records import read_jsonl


def load_gsm8k(path: str | Path) -> list[dict]:
    path = Path(path)
    items = []
    for number, row in read_jsonl(path):
        try:
            answer = _clean(STRICT.search(row["answer"]).group(1))
        except (KeyError, AttributeError, TypeError):
            raise FidanError(f"{path}:{number}: expected {{question, answer ending in '#### n'}}") from None
        items.append({"id": f"gsm8k-{number}", "question": row["question"], "solution": row["answer"],
                      "answer": answer})
    return items


# "Let's think step by step" in the question's language (items without ``lang``, GSM8K's, are English)
COT = {"en": "Let's think step by step.", "tr": "Adım adım düşünelim."}
LABELS = {"en": ("Question", "Answer"), "tr": ("Soru", "Cevap")}


def prompt(item: dict, shots: list[dict], mode: str) -> str:
    lang = item.get("lang", "en") if item.get("lang") in COT else "en"
    q, a = LABELS[lang]

    def block(it: dict, solved: bool) -> str:
        return f"{q}: {it['question']}\n{a}:" + (f" {it['solution']}\n\n" if solved else "")
    text = "".join(block(s, True) for s in shots) + block(item, False)
    if mode == "cot":
        text += " " + COT[lang]
    return text


def score(model, tok, items: list[dict], shots: list[dict] = (), mode: str = "zero-shot", chat: bool = False,
          max_tokens: int = 96) -> dict:
    """Exact match (strict and flexible) over ``items``. Each prompt carries the most of ``shots``
    that fit the context with a full ``max_tokens`` of reply (``k`` asked, ``k_min``/``k_max``
    used); without shots the reply may shrink to 16 tokens where the context is short; an item
    that does not fit even so is skipped and counted (``too_long``)."""
    shots = list(shots)
    strict = flexible = skipped = 0
    used, asked = [], []
    for it in items:
        text, k = shrink_to_fit(lambda j, it=it: prompt(it, shots[:j], mode), len(shots),
                                lambda t: reply_room(model, tok, t, max_tokens, chat, least=max_tokens) > 0)
        n_reply = max_tokens
        if text is None:
            text, k = prompt(it, [], mode), 0
            n_reply = reply_room(model, tok, text, max_tokens, chat)
            if not n_reply:
                skipped += 1
                continue
        used.append(k)
        asked.append((it, text, n_reply))
    replies = complete_many(model, tok, [a[1] for a in asked], [a[2] for a in asked],
                            stop=("\n\nQuestion:", "\n\nSoru:"), chat=chat)
    for (it, _, _), reply in zip(asked, replies):
        got = extract(reply)
        strict += same_number(got["strict"], it["answer"])
        flexible += same_number(got["flexible"], it["answer"])
    n = max(1, len(used))
    out = {"exact_strict": strict / n, "exact_flexible": flexible / n, "n": len(used)}
    if shots:
        out.update(k=len(shots), **({"k_min": min(used), "k_max": max(used)} if used else {}))
    if skipped:
        out["too_long"] = skipped
    return out
