"""Held-out questions in chat form: does the model answer them?

Fact questions: the reply counts as right when its first sentence contains the short answer
(case-insensitive, Turkish casing); only the first sentence, so that a model rambling through
every fact it knows about the subject does not score by accident. Word problems: right when the
number after ``####`` (or, failing that, the last number in the reply) equals the answer. Replies
are greedy, so scores are deterministic.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from fidan.corpus.turkish import lower
from fidan.infer.engine import SamplingParams, generate
from fidan.model.gpt import GPT
from fidan.tokenizer.bpe import END, EOS, FidanTokenizer
from fidan.tokenizer.chat import render


def load_items(path: Path, n: int) -> list[dict]:
    if not path.exists():
        return []
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    step = max(1, len(items) // n) if n else 1
    return items[::step][:n] if n else items


def answer(model: GPT, tok: FidanTokenizer, question: str, max_tokens: int) -> str:
    ids, _ = render(tok, [{"role": "user", "content": question}], add_generation_prompt=True)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, stop_ids={tok.id_of(END), tok.id_of(EOS)})
    budget = model.cfg.context - model.cfg.prompt_tokens - max_tokens
    return tok.decode(generate(model, ids[-budget:], params))


def first_sentence(text: str) -> str:
    text = re.sub(r"^[^\w]+", "", text.strip())  # a reply may open with stray punctuation
    return re.split(r"(?<=[.!?])\s|\n", text, maxsplit=1)[0]


def final_number(text: str) -> int | None:
    m = re.search(r"####\s*(-?[\d,]+)", text)
    found = m.group(1) if m else (re.findall(r"-?\d[\d,]*", text) or [None])[-1]
    try:
        return int(found.replace(",", "")) if found else None
    except ValueError:
        return None


def chat_scores(model: GPT, tok: FidanTokenizer, eval_dir: Path, n_items: int) -> dict[str, float]:
    facts = load_items(eval_dir / "facts.jsonl", n_items)
    problems = load_items(eval_dir / "arithmetic.jsonl", max(1, n_items // 3))
    model.eval()
    out: dict[str, float] = {}
    if facts:
        right = sum(lower(f["answer"]) in lower(first_sentence(answer(model, tok, f["question"], 24)))
                    for f in facts)
        out["facts_acc"] = right / len(facts)
    if problems:
        right = sum(final_number(answer(model, tok, p["question"], 64)) == p["answer"] for p in problems)
        out["math_acc"] = right / len(problems)
    if out:
        out["heldout_score"] = sum(out.values()) / len(out)
    return out
