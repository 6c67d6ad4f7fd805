"""Hallucination and abstention: questions in chat form that the world can and cannot answer.

Three kinds of held-out question (``data/eval/unknown.jsonl`` and the held-out facts), English and
Turkish, asked as a user turn and answered greedily (24 tokens):

* ``hallucination/unknown_entity``: about a person, town or creature that does not exist (its
  name built like the world's own names), asked the world's usual way ("Where does X live?");
* ``hallucination/unstated``: about a real entity, asking what the world never states ("Who is
  the mayor of X?"), with templates never used in SFT;
* ``hallucination/known``: the held-out fact questions (answerable: the fact is in the text).

The rules, in order: a reply is **correct** (known questions only) when its first sentence holds
the short answer (the world_facts/chat rule); it **abstained** when it says it does not know
(``ABSTAIN`` below: "I don't know", "no information", "not sure", "bilmiyorum", "bilgim yok",
"emin değilim", ...); an empty reply is **empty**; anything else is **fabricated**: an answer
to a question with no answer, or a wrong answer to one with an answer. Each share comes with its
95% Wilson interval.
"""
from __future__ import annotations

import re

from fidan.corpus.turkish import lower
from fidan.eval.tasks import EvalInputs, Task, register
from fidan.eval.tasks.world import _read, split
from fidan.infer.answers import answer_many, first_sentence
from fidan.stats import wilson

ITEMS = 60     # per kind, at most eval.limit (generation is the slow part)
ABSTAIN = re.compile(r"\b(i don'?t know|i do not know|i am not sure|i'?m not sure|no information|not know|"
                     r"i have no idea|cannot say|can'?t say|nothing i have read)\b|"
                     r"bilmiyorum|bilgim yok|bilgi yok|emin değilim|bilinmiyor|bilmem", re.IGNORECASE)


def classify(reply: str, gold: str | None = None) -> str:
    """``correct``, ``abstained``, ``empty`` or ``fabricated`` (the rules of the module doc)."""
    if gold is not None and lower(gold) in lower(first_sentence(reply)):
        return "correct"
    if ABSTAIN.search(reply):
        return "abstained"
    if not re.search(r"\w", reply):
        return "empty"
    return "fabricated"


def summarise(outcomes: list[str], examples: list[dict]) -> dict:
    n = len(outcomes)
    out: dict = {"n": n}
    for name in ("correct", "abstained", "fabricated", "empty"):
        k = outcomes.count(name)
        lo, hi = wilson(k, n)
        out.update({name: round(k / n, 4) if n else 0.0, f"{name}_lo": lo, f"{name}_hi": hi})
    out["examples"] = examples[:3]
    return out


def _spread(items: list[dict], n: int) -> list[dict]:
    """``n`` items taken evenly, so both languages and every entity kind stay in."""
    step = max(1, len(items) // n) if n else 1
    return items[::step][:n]


def evaluate(model, tok, eval_dir, n: int) -> dict[str, dict]:
    out = {}
    unknown = _read(eval_dir / "unknown.jsonl")
    _, facts = split(_read(eval_dir / "facts.jsonl")) if (eval_dir / "facts.jsonl").exists() else ([], [])
    groups = {"unknown_entity": [it for it in unknown if it["kind"] == "unknown_entity"],
              "unstated": [it for it in unknown if it["kind"] == "unstated"], "known": facts}
    model.eval()
    for kind, items in groups.items():
        items = _spread(items, n)
        if not items:
            continue
        outcomes, examples = [], []
        for it, reply in zip(items, answer_many(model, tok, [it["question"] for it in items], 24)):
            outcome = classify(reply, it.get("answer"))
            outcomes.append(outcome)
            examples.append({"question": it["question"], "reply": reply, "outcome": outcome})
        out[f"hallucination/{kind}"] = summarise(outcomes, examples)
    return out


class Hallucination(Task):
    """Questions with and without an answer in the world, asked in chat form: correct, abstained
    or fabricated."""
    name = "hallucination"

    def evaluate(self, inputs: EvalInputs) -> dict[str, dict]:
        if not (inputs.eval_dir / "unknown.jsonl").exists():
            return {}
        limit = inputs.settings.limit
        return evaluate(inputs.model, inputs.tok, inputs.eval_dir, min(ITEMS, limit) if limit else ITEMS)


register(Hallucination())
