"""Generative math with answer extraction (GSM8K conventions).

``strict``: the number after ``####``; ``flexible``: the last number in the reply. Commas and
``$`` are ignored. Chain-of-thought mode asks for step-by-step reasoning and still extracts the
final number after it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from fidan.errors import FidanError
from fidan.infer.scoring import complete

STRICT = re.compile(r"####\s*\$?(-?[0-9.,]+)")
NUMBER = re.compile(r"-?\$?[0-9][0-9.,]*")


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.replace(",", "").replace("$", "").rstrip(".")
    return text or None


def extract(reply: str) -> dict[str, str | None]:
    strict = STRICT.search(reply)
    numbers = NUMBER.findall(reply)
    return {"strict": _clean(strict.group(1)) if strict else None,
            "flexible": _clean(numbers[-1]) if numbers else None}


def same_number(a: str | None, b: str | float | int) -> bool:
    if a is None:
        return False
    try:
        return abs(float(a) - float(str(b).replace(",", ""))) < 1e-6
    except ValueError:
        return False


def load_gsm8k(path: str | Path) -> list[dict]:
    path = Path(path)
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            answer = _clean(STRICT.search(row["answer"]).group(1))
        except (ValueError, KeyError, AttributeError):
            raise FidanError(f"{path}:{number}: expected {{question, answer ending in '#### n'}}") from None
        items.append({"id": f"gsm8k-{number}", "question": row["question"], "solution": row["answer"],
                      "answer": answer})
    return items


def prompt(item: dict, shots: list[dict], mode: str) -> str:
    def block(it: dict, solved: bool) -> str:
        return f"Question: {it['question']}\nAnswer:" + (f" {it['solution']}\n\n" if solved else "")
    text = "".join(block(s, True) for s in shots) + block(item, False)
    if mode == "cot":
        text += " Let's think step by step."
    return text


def score(model, tok, items: list[dict], shots: list[dict] = (), mode: str = "zero-shot", chat: bool = False,
          max_tokens: int = 96) -> dict[str, float]:
    strict = flexible = 0
    for it in items:
        reply = complete(model, tok, prompt(it, list(shots), mode), max_tokens, stop=("\n\nQuestion:",), chat=chat)
        got = extract(reply)
        strict += same_number(got["strict"], it["answer"])
        flexible += same_number(got["flexible"], it["answer"])
    n = max(1, len(items))
    return {"exact_strict": strict / n, "exact_flexible": flexible / n, "n": len(items)}
