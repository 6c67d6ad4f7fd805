"""Two-step word problems under four prompting modes: where working step by step can help.

Held-out two-step problems (``data/eval/steps.jsonl``: "picked a, then b more, sold c: how many
are left?"), 120 per language, never in the training text. The training text writes such
problems as ``Problem: ...`` / ``Solution: First, a + b = s. Then, s - c = r. The answer is r.``
(Turkish ``Çözüm: Önce ... Sonra ... Cevap r.``) and SFT's math conversations carry the same
worked solutions. Every stage gets the same plain prompts (no chat template), so columns compare:

* ``direct``: ``Solution: The answer is`` (``Çözüm: Cevap``): the number must come at once;
* ``cot``: ``Solution: Let's think step by step.`` (``Adım adım düşünelim.``), then free working;
* ``k-shot``: two solved problems of the same language first (fewer, down to one, when two do not
  fit the context; the card says so), then ``Solution:``;
* ``context``: the first step given (``Solution: First, a + b = s.``), the model finishes.

Direct replies are scored on their first number, the others on the final number (``####`` or the
last one). Each accuracy has a 95% Wilson interval; ``eval.steps_limit`` items per mode, at most
``eval.limit`` (200 or more to tell a 5-point difference from noise).
"""
from __future__ import annotations

import re

from fidan.eval.tasks import EvalInputs, Task, register
from fidan.eval.tasks.math import COT
from fidan.eval.tasks.world import _read, split
from fidan.infer.answers import NUMBER, _clean, right_number, same_number
from fidan.infer.scoring import complete_many, reply_room
from fidan.stats import wilson

MODES = ("direct", "cot", "k-shot", "context")
LABEL = {"en": "Solution", "tr": "Çözüm"}
DIRECT = {"en": "The answer is", "tr": "Cevap"}
SHOTS = 2


def first_step(solution: str) -> str:
    """``First, a + b = s.`` / ``Önce a + b = s.``: the solution's first sentence."""
    return re.split(r"(?<=\.)\s", solution, maxsplit=1)[0]


def prompt(item: dict, mode: str, shots: list[dict]) -> str:
    lang = item["lang"]
    head = f"Problem: {item['question']}\n{LABEL[lang]}:"
    if mode == "direct":
        return f"{head} {DIRECT[lang]}"
    if mode == "cot":
        return f"{head} {COT[lang]}"
    if mode == "context":
        return f"{head} {first_step(item['solution'])}"
    solved = "".join(f"Problem: {s['question']}\n{LABEL[lang]}: {s['solution']}\n\n" for s in shots)
    return solved + head


def right(reply: str, answer, mode: str) -> bool:
    if mode == "direct":
        numbers = NUMBER.findall(reply)
        return same_number(_clean(numbers[0]) if numbers else None, answer)
    return right_number(reply, answer)


def score(model, tok, items: list[dict], dev: list[dict], mode: str) -> dict:
    hits, skipped, n = 0, 0, 0
    examples, ks, asked = [], [], []
    want = 8 if mode == "direct" else 48
    for it in items:
        shots = [s for s in dev if s["lang"] == it["lang"]][:SHOTS]
        # k-shot: as many solved problems as fit the context (down to one), never a cut prompt
        for k in range(len(shots) if mode == "k-shot" else 0, -1, -1):
            text = prompt(it, mode, shots[:k])
            room = reply_room(model, tok, text, want, False, least=min(want, 24))
            if room or k <= 1:
                break
        if not room:
            skipped += 1
            continue
        ks.append(k)
        asked.append((it, text, room))
    replies = complete_many(model, tok, [a[1] for a in asked], [a[2] for a in asked],
                            stop=("\n\nProblem:", "\n\n"), chat=False)
    for (it, text, _), reply in zip(asked, replies):
        ok = right(reply, it["answer"], mode)
        hits += ok
        n += 1
        if len(examples) < 2:
            examples.append({"prompt": text[-160:], "reply": reply[:160], "right": ok})
    lo, hi = wilson(hits, n)
    out = {"acc": round(hits / n, 4) if n else 0.0, "acc_lo": lo, "acc_hi": hi, "n": n, "examples": examples}
    if mode == "k-shot":
        out["k"] = SHOTS
        if ks:
            out["k_min"], out["k_max"] = min(ks), max(ks)
    if skipped:
        out["too_long"] = skipped
    return out


class WorldSteps(Task):
    """Two-step problems: direct answer, chain of thought, k-shot and the first step as context."""
    name = "world_steps"

    def evaluate(self, inputs: EvalInputs) -> dict[str, dict]:
        items = _read(inputs.eval_dir / "steps.jsonl")
        e = inputs.settings
        n = min(e.steps_limit, e.limit) if e.limit else e.steps_limit
        if not items or not n:
            return {}
        dev, test = split([it for it in items if it["lang"] == "en"])
        dev_tr, test_tr = split([it for it in items if it["lang"] == "tr"])
        chosen = [it for pair in zip(test, test_tr) for it in pair][:n]   # the two languages in turn
        return {f"world_steps/{mode}": score(inputs.model, inputs.tok, chosen, dev + dev_tr, mode) for mode in MODES}


register(WorldSteps())
