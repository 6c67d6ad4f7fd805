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
last one). Each accuracy has a 95% Wilson interval; ``eval.steps_limit`` items per mode (200 by
default: enough to tell a 5-point difference from noise; the two languages in turn, at most the 216
held-out ones), every prompt of a mode decoded together (``infer.scoring.complete_many``), so 200
items cost less than 40 did one at a time (BENCHMARKS.md).
"""
from __future__ import annotations

import re

from fidan.eval.tasks import EvalInputs, Task, register
from fidan.eval.tasks.math import COT
from fidan.eval.tasks.world import _read, split
from fidan.infer.answers import NUMBER, _clean, answer, right_number, same_number
from fidan.infer.scoring import complete, complete_many, reply_room
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
    asked, skipped, ks = [], 0, []
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
    # every prompt of the mode decoded together (greedy: the replies one at a time would give)
    replies = complete_many(model, tok, [t for _, t, _ in asked], [r for *_, r in asked],
                            stop=("\n\nProblem:", "\n\n"), chat=False)
    marks = [right(reply, it["answer"], mode) for (it, _, _), reply in zip(asked, replies)]
    hits, n = sum(marks), len(marks)
    examples = [{"prompt": text[-160:], "reply": reply[:160], "right": ok}
                for (_, text, _), reply, ok in list(zip(asked, replies, marks))[:2]]
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
        n = e.steps_limit
        if not items or not n:
            return {}
        dev, test = split([it for it in items if it["lang"] == "en"])
        dev_tr, test_tr = split([it for it in items if it["lang"] == "tr"])
        chosen = [it for pair in zip(test, test_tr) for it in pair][:n]   # the two languages in turn
        return {f"world_steps/{mode}": score(inputs.model, inputs.tok, chosen, dev + dev_tr, mode) for mode in MODES}


    def reward(self, item: dict, reply: str) -> float:
        """A reply is right when its final number is the answer (GRPO's last curriculum stage)."""
        return float(right_number(reply, item["answer"]))


class WorldOneStep(Task):
    """Held-out one-step problems with small numbers (``data/eval/onestep.jsonl``: "has 3 apples and
    gets 2 more", a creature's legs times a count), GRPO's first curriculum stage: asked as they
    are (chat models: in the chat template), right when the reply's final number is the answer."""
    name = "world_onestep"

    def evaluate(self, inputs: EvalInputs) -> dict[str, dict]:
        items = _read(inputs.eval_dir / "onestep.jsonl")
        n = inputs.settings.onestep_limit
        if not items or not n:
            return {}
        test = [it for pair in zip(*(split([it for it in items if it["lang"] == lang])[1] for lang in ("en", "tr")))
                for it in pair][:n]                                       # the two languages in turn
        m, tok = inputs.model, inputs.tok
        hits, examples = 0, []
        for it in test:
            if inputs.chat:   # the question alone in the chat template, as GRPO asks it
                reply = answer(m, tok, it["question"], 32)
            else:
                text = f"Problem: {it['question']}\n{LABEL[it['lang']]}:"
                reply = complete(m, tok, text, reply_room(m, tok, text, 32, False), stop=("\n\n",), chat=False)
            ok = bool(self.reward(it, reply))
            hits += ok
            if len(examples) < 2:
                examples.append({"question": it["question"], "reply": reply[:120], "right": ok})
        lo, hi = wilson(hits, len(test))
        return {"world_onestep": {"acc": round(hits / len(test), 4), "acc_lo": lo, "acc_hi": hi, "n": len(test),
                                  "examples": examples}}

    def reward(self, item: dict, reply: str) -> float:
        return float(right_number(reply, item["answer"]))


register(WorldSteps())
register(WorldOneStep())
