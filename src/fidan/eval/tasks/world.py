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

import random
from pathlib import Path

from fidan.eval.tasks import EvalInputs, Task, register
from fidan.infer.answers import facts_right, right_number, split
from fidan.infer.scoring import fits_choices, shrink_to_fit
from fidan.records import read_jsonl
from fidan.stats import wilson

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
    return [item for _, item in read_jsonl(path)]


def facts_items(eval_dir: Path, mode: str = "zero-shot", k: int = 3, limit: int = 0, fits=None) -> list[dict]:
    """The held-out fact questions as multiple choice. ``fits(query, choices)`` (when given) says
    whether a prompt fits the model: k-shot prompts then carry the most shots that fit (``"shots"``)
    and context passages drop other sentences (never the answer's) until they fit."""
    items = _read(eval_dir / "facts.jsonl")
    if not items:
        return []
    fits = fits or (lambda query, choices: True)
    dev, test = split(items)
    test = test[:limit] if limit else test
    rng = random.Random(0)
    by_subject: dict[str, list[str]] = {}
    for it in items:
        by_subject.setdefault(it["subject"], []).append(it["statements"][it["label"]])
    out = []
    for it in test:
        question = f"Question: {it['question']}\nAnswer:"
        choices = [f" {s}" for s in it["statements"]]
        row = {"id": it["id"], "query": question, "choices": choices, "gold": it["label"]}
        if mode == "k-shot":
            shots = [s for s in rng.sample(dev, min(k, len(dev))) if s["lang"] == it["lang"]] or dev[:1]
            build = _with_shots(shots, question)
            query, used = shrink_to_fit(build, len(shots), _fitting(fits, choices))
            row.update(query=query if query is not None else build(0), shots=max(used, 0))
        elif mode == "context":
            passage = [s for s in by_subject[it["subject"]]]
            rng.shuffle(passage)
            build = _with_passage(passage, it["statements"][it["label"]], question)
            query, _ = shrink_to_fit(build, len(passage) - 1, _fitting(fits, choices))
            row["query"] = query if query is not None else build(0)
        out.append(row)
    return out


def _fitting(fits, choices):
    return lambda query: fits(query, choices)


def _with_shots(shots: list[dict], question: str):
    """The prompt with the first j solved shots before the question."""
    return lambda j: "".join(f"Question: {s['question']}\nAnswer: {s['statements'][s['label']]}\n\n"
                             for s in shots[:j]) + question


def _with_passage(passage: list[str], answer: str, question: str):
    """The question after the answer's sentence and the first j other sentences of the passage."""
    others = [s for s in passage if s != answer]
    return lambda j: f"{' '.join(s for s in passage if s == answer or s in others[:j])}\n\n" + question


def truthful_items(eval_dir: Path, limit: int = 0) -> list[dict]:
    items = _read(eval_dir / "truthful.jsonl")
    items = items[:limit] if limit else items
    return [{"id": it["id"], "query": "A true statement:", "choices": [f" {s}" for s in it["statements"]],
             "gold": it["labels"].index(1), "labels": it["labels"], "misconception": it["misconception_index"]}
            for it in items]


def math_items(eval_dir: Path, limit: int = 0) -> tuple[list[dict], list[dict]]:
    items = [{"id": it["id"], "question": it["question"], "solution": it["solution"], "answer": str(it["answer"]),
              "lang": it.get("lang", "en")} for it in _read(eval_dir / "arithmetic.jsonl")]
    dev, test = split(items)
    return dev, (test[:limit] if limit else test)


def code_problems() -> list[dict]:
    return [{"task_id": f"world/{name}", "prompt": prompt, "canonical_solution": solution, "test": test,
             "entry_point": name} for name, prompt, solution, test in CODE_PROBLEMS]


# ---------------------------------------------------------------------------------------------
# The world's tasks, registered for the harness

class WorldFacts(Task):
    """Held-out fact questions: multiple choice by log-likelihood, zero-shot, k-shot (shots from
    the dev split) and with the passage as context; and the same questions asked in chat form, so
    that chat-form accuracy and multiple choice compare on the same items."""
    name = "world_facts"

    def evaluate(self, inputs: EvalInputs) -> dict[str, dict]:
        from fidan.eval.tasks import mc
        m, tok, e, d = inputs.model, inputs.tok, inputs.settings, inputs.eval_dir
        if not (d / "facts.jsonl").exists():
            return {}
        fits = lambda query, choices: fits_choices(m, tok, query, choices)
        _, test = split(_read(d / "facts.jsonl"))
        right = facts_right(m, tok, test[:e.limit] if e.limit else test)
        lo, hi = wilson(sum(right), len(right))
        return {
            "world_facts/zero-shot": mc.score(m, tok, facts_items(d, "zero-shot", limit=e.limit, fits=fits)),
            "world_facts/k-shot": {"k": e.k_shot,
                                   **mc.score(m, tok, facts_items(d, "k-shot", e.k_shot, e.limit, fits))},
            "world_facts/context": mc.score(m, tok, facts_items(d, "context", limit=e.limit, fits=fits)),
            "world_facts/chat": {"acc": sum(right) / max(1, len(right)), "acc_lo": lo, "acc_hi": hi,
                                 "n": len(right)},
        }


class WorldTruthful(Task):
    """Pick the true statement among plausible false ones (MC1 and MC2 over planted misconceptions)."""
    name = "world_truthful"

    def evaluate(self, inputs: EvalInputs) -> dict[str, dict]:
        from fidan.eval.tasks import mc
        if not (inputs.eval_dir / "truthful.jsonl").exists():
            return {}
        items = truthful_items(inputs.eval_dir, limit=inputs.settings.limit)
        return {"world_truthful": mc.score(inputs.model, inputs.tok, items)}


class WorldMath(Task):
    """Held-out word problems, zero-shot and with "Let's think step by step"; a reply is right
    when its final number is the answer, which is also the reward GRPO trains on."""
    name = "world_math"

    def evaluate(self, inputs: EvalInputs) -> dict[str, dict]:
        from fidan.eval.tasks import math as math_task
        if not (inputs.eval_dir / "arithmetic.jsonl").exists():
            return {}
        e = inputs.settings
        _, test = math_items(inputs.eval_dir, min(e.math_limit, e.limit) if e.limit and e.math_limit else
                             e.math_limit or e.limit)
        return {f"world_math/{mode}": math_task.score(inputs.model, inputs.tok, test, [], mode, inputs.chat,
                                                      max_tokens=64) for mode in ("zero-shot", "cot")}

    def reward(self, item: dict, reply: str) -> float:
        return float(right_number(reply, item["answer"]))


register(WorldFacts())
register(WorldTruthful())
register(WorldMath())
