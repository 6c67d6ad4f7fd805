"""Built-in tasks about the embedded world, read from ``data/eval/`` of a run.

* ``world_facts``: multiple choice over held-out facts (four statements, one true).
* ``world_truthful``: misconceptions planted in the training text ("many people believe X; that
  is a myth: Y") against the facts: which statement is true? (MC1, MC2, and how often the planted
  misconception is preferred over the fact.)
* ``world_math``: held-out word problems, answer extracted from the generated reply.
* ``world_code``: a few small Python functions to complete, run against tests in the sandbox.

The first tenth of each set is a dev split: k-shot examples come from there, never from the
items scored.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

DEV_FRACTION = 0.1

CODE_PROBLEMS = [
    ("add", "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n", "    return a + b\n",
     "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n"),
    ("is_even", "def is_even(n):\n    \"\"\"Return True if n is even.\"\"\"\n", "    return n % 2 == 0\n",
     "def check(f):\n    assert f(4) and not f(7)\n"),
    ("reverse", "def reverse(s):\n    \"\"\"Return the string s backwards.\"\"\"\n", "    return s[::-1]\n",
     "def check(f):\n    assert f('abc') == 'cba'\n    assert f('') == ''\n"),
    ("largest", "def largest(xs):\n    \"\"\"Return the largest number in the list xs.\"\"\"\n", "    return max(xs)\n",
     "def check(f):\n    assert f([3, 9, 2]) == 9\n"),
    ("count_vowels", "def count_vowels(s):\n    \"\"\"Count the vowels (a, e, i, o, u) in s.\"\"\"\n",
     "    return sum(c in 'aeiou' for c in s.lower())\n", "def check(f):\n    assert f('Karmilo') == 3\n"),
    ("total_price", "def total_price(price, count):\n    \"\"\"Coins paid for count items at price each.\"\"\"\n",
     "    return price * count\n", "def check(f):\n    assert f(4, 12) == 48\n"),
]


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split(items: list[dict]) -> tuple[list[dict], list[dict]]:
    cut = max(1, int(len(items) * DEV_FRACTION))
    return items[:cut], items[cut:]


def facts_items(eval_dir: Path, mode: str = "zero-shot", k: int = 3, limit: int = 0) -> list[dict]:
    items = _read(eval_dir / "facts.jsonl")
    if not items:
        return []
    dev, test = split(items)
    test = test[:limit] if limit else test
    rng = random.Random(0)
    by_subject: dict[str, list[str]] = {}
    for it in items:
        by_subject.setdefault(it["subject"], []).append(it["statements"][it["label"]])
    out = []
    for it in test:
        query = f"Question: {it['question']}\nAnswer:"
        if mode == "k-shot":
            shots = [s for s in rng.sample(dev, min(k, len(dev))) if s["lang"] == it["lang"]] or dev[:1]
            query = "".join(f"Question: {s['question']}\nAnswer: {s['statements'][s['label']]}\n\n"
                            for s in shots) + query
        elif mode == "context":
            passage = [s for s in by_subject[it["subject"]]]
            rng.shuffle(passage)
            query = f"{' '.join(passage)}\n\n" + query
        out.append({"id": it["id"], "query": query, "choices": [f" {s}" for s in it["statements"]],
                    "gold": it["label"]})
    return out


def truthful_items(eval_dir: Path, limit: int = 0) -> list[dict]:
    items = _read(eval_dir / "truthful.jsonl")
    items = items[:limit] if limit else items
    return [{"id": it["id"], "query": "A true statement:", "choices": [f" {s}" for s in it["statements"]],
             "gold": it["labels"].index(1), "labels": it["labels"], "misconception": it["misconception_index"]}
            for it in items]


def math_items(eval_dir: Path, limit: int = 0) -> tuple[list[dict], list[dict]]:
    items = [{"id": it["id"], "question": it["question"], "solution": it["solution"], "answer": str(it["answer"])}
             for it in _read(eval_dir / "arithmetic.jsonl")]
    dev, test = split(items)
    return dev, (test[:limit] if limit else test)


def code_problems() -> list[dict]:
    return [{"task_id": f"world/{name}", "prompt": prompt, "canonical_solution": solution, "test": test,
             "entry_point": name} for name, prompt, solution, test in CODE_PROBLEMS]
