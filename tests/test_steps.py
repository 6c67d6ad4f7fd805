"""Prompting modes that can be shown to work: chain of thought in the question's language, and
two-step problems asked directly, step by step, with shots and with the first step given."""
from conftest import one_by_one
from fidan.config import CorpusConfig
from fidan.corpus.generate import generate
from fidan.eval.tasks import math as math_task
from fidan.eval.tasks import steps


def test_chain_of_thought_speaks_the_questions_language():
    tr = math_task.prompt({"question": "Ada 3 elma topladı. Kaç elma?", "lang": "tr"}, [], "cot")
    assert tr == "Soru: Ada 3 elma topladı. Kaç elma?\nCevap: Adım adım düşünelim."
    en = math_task.prompt({"question": "How many?"}, [], "cot")   # GSM8K's items have no language: English
    assert en == "Question: How many?\nAnswer: Let's think step by step."


def test_two_step_problems_are_held_out_and_prompted_four_ways(monkeypatch):
    docs, sets = generate(CorpusConfig(scale_mb=0.3, n_places=8, n_people=12, n_creatures=6, sft_conversations=300,
                                       sentiment_examples=0), 3)
    items = sets["eval/steps"]
    assert len(items) == 240 and {it["lang"] for it in items} == {"en", "tr"}
    text = "\n".join(d.text for d in docs)
    sft = "\n".join(m["content"] for c in sets["sft/train"] for m in c["messages"])
    assert not any(it["question"] in text or it["question"] in sft for it in items)
    en = next(it for it in items if it["lang"] == "en")
    tr = next(it for it in items if it["lang"] == "tr")
    assert steps.prompt(en, "cot", []).endswith("\nSolution: Let's think step by step.")
    assert steps.prompt(tr, "cot", []).endswith("\nÇözüm: Adım adım düşünelim.")
    assert steps.prompt(tr, "direct", []).endswith("\nÇözüm: Cevap")
    assert steps.prompt(en, "context", []).endswith(steps.first_step(en["solution"]))
    assert steps.first_step(en["solution"]).startswith("First, ")
    assert steps.first_step(tr["solution"]).startswith("Önce ")
    assert steps.prompt(en, "k-shot", [en]).startswith(f"Problem: {en['question']}\nSolution: {en['solution']}\n\n")
    # scoring: a direct reply counts its first number, a worked one its last
    assert steps.right(f" {en['answer']}. First, 1 + 2 = 3.", en["answer"], "direct")
    assert not steps.right(f" 3. Then {en['answer']}.", en["answer"], "direct")
    assert steps.right(f" First, 1 + 2 = 3. Then 3 - 1 = {en['answer']}.", en["answer"], "cot")
    # a model that only gets it right when it works step by step: the modes separate, with intervals
    monkeypatch.setattr(steps, "reply_room", lambda model, tok, text, n, chat, least: n)
    answers = {it["question"]: it["answer"] for it in items}

    def complete(text):
        question = text.rsplit("Problem: ", 1)[1].split("\n")[0]
        return " 0." if text.endswith((steps.DIRECT["en"], steps.DIRECT["tr"])) else f" ... = {answers[question]}."
    monkeypatch.setattr(steps, "complete_many",
                        one_by_one(lambda model, tok, text, n, stop=(), chat=False: complete(text)))
    dev = items[:10]
    direct, cot = (steps.score(None, None, items[10:210], dev, m) for m in ("direct", "cot"))
    assert direct["acc"] == 0.0 and cot["acc"] == 1.0 and cot["n"] == 200
    assert direct["acc_hi"] < 0.05 and cot["acc_lo"] > 0.95


def test_k_shot_drops_shots_that_do_not_fit_and_says_how_many_it_used(monkeypatch):
    items = [{"question": f"Problem {i}: 2 + {i} then minus 1?", "solution": f"First, 2 + {i} = {2 + i}. "
              f"Then {2 + i} - 1 = {1 + i}.", "answer": 1 + i, "lang": "en"} for i in range(6)]
    one_shot = len(steps.prompt(items[3], "k-shot", items[:1]))
    # a context that holds the question with one solved problem, not with two
    monkeypatch.setattr(steps, "reply_room", lambda model, tok, text, n, chat, least: n if len(text) <= one_shot else 0)
    seen = []
    monkeypatch.setattr(steps, "complete_many",
                        one_by_one(lambda model, tok, text, n, stop=(), chat=False: seen.append(text) or " 0."))
    out = steps.score(None, None, items[3:], items[:2], "k-shot")
    assert out["n"] == 3 and "too_long" not in out
    assert (out["k"], out["k_min"], out["k_max"]) == (2, 1, 1)
    assert all(t.count("Problem ") == 2 for t in seen)     # one solved problem, then the question
