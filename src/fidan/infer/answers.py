"""Held-out questions in chat form: does the model answer them?

Fact questions: the reply counts as right when its first sentence contains the short answer
(case-insensitive, Turkish casing); only the first sentence, so that a model rambling through
every fact it knows about the subject does not score by accident. Word problems: right when the
number after ``####`` (or, failing that, the last number in the reply) equals the answer.
Questions about the user's own text (``data/eval/text.jsonl``): right when the reply overlaps
the reference sentence by half (word F1). Replies are greedy, so scores are deterministic.
"""
from __future__ import annotations

import re
from pathlib import Path

from fidan.corpus.turkish import lower
from fidan.infer.engine import SamplingParams, generate, greedy_many
from fidan.model.gpt import GPT
from fidan.records import read_jsonl
from fidan.text import overlap
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.tokenizer.chat import render

DEV_FRACTION = 0.1   # the first tenth of each held-out set is its dev split (k-shot examples), never scored


def split(items: list[dict]) -> tuple[list[dict], list[dict]]:
    """A held-out set's dev split (its first tenth, at least one item) and the items scored."""
    cut = max(1, int(len(items) * DEV_FRACTION))
    return items[:cut], items[cut:]


def load_items(path: Path, n: int) -> list[dict]:
    """``n`` of a held-out set's scored items (never its dev split), taken evenly across it."""
    if not path.exists():
        return []
    _, items = split([item for _, item in read_jsonl(path)])
    step = max(1, len(items) // n) if n else 1
    return items[::step][:n] if n else items


def answer(model: GPT, tok: FidanTokenizer, question: str, max_tokens: int) -> str:
    ids, _ = render(tok, [{"role": "user", "content": question}], add_generation_prompt=True)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, stop_ids=set(tok.stop_ids))
    budget = model.cfg.context - model.cfg.prompt_tokens - max_tokens
    return tok.decode(generate(model, ids[-budget:], params))


def answer_many(model: GPT, tok: FidanTokenizer, questions: list[str], max_tokens: int) -> list[str]:
    """``answer`` for many questions at once (batched greedy decoding): the same replies, in order."""
    budget = model.cfg.context - model.cfg.prompt_tokens - max_tokens
    ids = [render(tok, [{"role": "user", "content": q}], add_generation_prompt=True)[0][-budget:] for q in questions]
    return [tok.decode(r) for r in greedy_many(model, ids, [max_tokens] * len(ids), set(tok.stop_ids))]


def first_sentence(text: str) -> str:
    text = re.sub(r"^[^\w]+", "", text.strip())  # a reply may open with stray punctuation
    return re.split(r"(?<=[.!?])\s|\n", text, maxsplit=1)[0]


TEXT_RIGHT = 0.5   # word F1 with the reference from which an answer about the user's text counts as right
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


def final_number(text: str) -> float | None:
    """The reply's answer as a number: after ``####`` if given, else its last number."""
    got = extract(text)
    found = got["strict"] or got["flexible"]
    try:
        value = float(found) if found else None
    except ValueError:
        return None
    return int(value) if value is not None and value.is_integer() else value


def right_number(reply: str, answer: str | float | int) -> bool:
    """Whether a reply's final number is the answer (the rule of every word-problem score)."""
    got = extract(reply)
    return same_number(got["strict"] or got["flexible"], answer)


def fact_right(reply: str, answer: str) -> bool:
    """The chat-form fact rule: the reply's first sentence holds the short answer."""
    return lower(answer) in lower(first_sentence(reply))


def facts_right(model: GPT, tok: FidanTokenizer, facts: list[dict]) -> list[bool]:
    """Each fact question asked in chat form (greedy, 24 tokens): answered right?"""
    replies = answer_many(model, tok, [f["question"] for f in facts], 24)
    return [fact_right(r, f["answer"]) for f, r in zip(facts, replies)]


def chat_scores(model: GPT, tok: FidanTokenizer, eval_dir: Path, n_items: int) -> dict[str, float]:
    facts = load_items(eval_dir / "facts.jsonl", n_items)
    problems = load_items(eval_dir / "arithmetic.jsonl", max(1, n_items // 3))
    model.eval()
    out: dict[str, float] = {}
    if facts:
        right = facts_right(model, tok, facts)
        out["facts_acc"] = sum(right) / len(facts)
        out["facts_n"] = len(facts)
    if problems:
        replies = answer_many(model, tok, [p["question"] for p in problems], 64)
        right = sum(right_number(r, p["answer"]) for p, r in zip(problems, replies))
        out["math_acc"] = right / len(problems)
    texts = load_items(eval_dir / "text.jsonl", n_items)
    if texts:
        replies = answer_many(model, tok, [t["question"] for t in texts], 48)
        f1 = [overlap(r, t["answer"]) for t, r in zip(texts, replies)]
        out["text_acc"] = sum(v >= TEXT_RIGHT for v in f1) / len(texts)
        out["text_f1"] = sum(f1) / len(texts)
        out["text_n"] = len(texts)
    accs = [v for k, v in out.items() if k.endswith("_acc")]
    if accs:
        out["heldout_score"] = sum(accs) / len(accs)
    return out
