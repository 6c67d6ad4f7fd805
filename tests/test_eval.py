import json

import pytest

from conftest import one_by_one, shared_file
from fidan.errors import FidanError
from fidan.eval import bias, grader, redteam
from fidan.eval.tasks import abstain, mc, steps, world
from fidan.eval.tasks import math as math_task
from fidan.pipeline import run_stage


def test_gsm8k_loader_and_answer_extraction():
    items = math_task.load_gsm8k(shared_file("gsm8k_test.jsonl"))
    assert len(items) == 1319 and items[0]["answer"] == "18"
    assert math_task.extract("So 3 + 4 = 7.\n#### 1,234") == {"strict": "1234", "flexible": "1234"}
    assert math_task.extract("It costs $18.") == {"strict": None, "flexible": "18"}
    assert math_task.same_number("18.0", "18") and not math_task.same_number(None, "1")
    shots = items[:2]
    text = math_task.prompt(items[2], shots, "cot")
    assert text.count("Question:") == 3 and text.endswith("Let's think step by step.")


def test_truthfulqa_loader_mc1_and_mc2():
    mc1 = mc.load_truthfulqa(shared_file("truthfulqa_en_validation.json"), "mc1")
    mc2 = mc.load_truthfulqa(shared_file("truthfulqa_en_validation.json"), "mc2")
    assert len(mc1) == len(mc2) == 817
    assert mc1[0]["choices"][mc1[0]["gold"]].strip() == "The watermelon seeds pass through your digestive system"
    assert sum(mc2[0]["labels"]) > 1


def test_mmlu_csv_layout(tmp_path):
    test = tmp_path / "astronomy_test.csv"
    test.write_text('"What orbits the Earth?",The Moon,Mars,The Sun,Venus,A\n"2+2?",3,4,5,6,B\n')
    dev = tmp_path / "astronomy_dev.csv"
    dev.write_text('"Largest planet?",Earth,Jupiter,Mars,Venus,B\n')
    items = mc.load_mmlu(test, k_shot=1, dev=dev)
    assert [it["gold"] for it in items] == [0, 1]
    assert items[0]["query"].startswith("The following are multiple choice questions (with answers) about astronomy.")
    assert "Largest planet?" in items[0]["query"] and items[0]["query"].endswith("D. Venus\nAnswer:")
    bad = tmp_path / "bad_test.csv"
    bad.write_text("q,a,b,c,d,E\n")
    with pytest.raises(FidanError, match=r"bad_test\.csv:1"):
        mc.load_mmlu(bad)


def test_mc_scoring_rules(monkeypatch):
    # mc.score only needs log-likelihoods: feed known ones and check acc, acc_norm and mc2 arithmetic
    values = iter([-1.0, -3.0, -9.0, -2.0])  # item 1: choice 0 best; item 2: ("aaaaaaa" -9 vs "b" -2)
    monkeypatch.setattr(mc, "logliks", lambda model, tok, pairs: [next(values) for _ in pairs])
    monkeypatch.setattr(mc, "fits_choices", lambda model, tok, query, choices: True)
    items = [{"query": "q", "choices": [" x", " y"], "gold": 0, "labels": [1, 0]},
             {"query": "q", "choices": [" " + "a" * 40, " b"], "gold": 0, "labels": [1, 0]}]
    out = mc.score(None, None, items)
    assert out["acc"] == 0.5            # item 2's raw argmax is "b"
    assert out["acc_norm"] == 1.0       # per character, the long choice wins
    import math
    assert out["mc2"] == pytest.approx((1 / (1 + math.exp(-2)) + math.exp(-9) / (math.exp(-9) + math.exp(-2))) / 2)


class WordTok:
    """A tokenizer of whitespace-separated words (for prompt-fitting arithmetic)."""
    def encode(self, text):
        return text.split()


def word_model(context: int):
    from types import SimpleNamespace
    return SimpleNamespace(cfg=SimpleNamespace(context=context, prompt_tokens=0))


def test_few_shot_prompts_shrink_to_fit_and_long_items_are_skipped_and_counted(monkeypatch):
    prompts = []
    monkeypatch.setattr(math_task, "complete_many", one_by_one(lambda model, tok, text, n, stop=(), chat=False:
                        prompts.append(text) or "so #### 4"))
    shot = {"question": "one two three", "solution": "four five #### 9"}  # 13 words as a solved block
    short = {"question": "q", "answer": "4"}
    long = {"question": " ".join(["w"] * 40), "answer": "4"}
    # context 40, 10 reply tokens: BOS + "Question: q Answer:" (3) + 5 words of "Let's think ..." = 9 words
    out = math_task.score(word_model(40), WordTok(), [short, long], [shot] * 3, "cot", max_tokens=10)
    assert out["k"] == 3 and out["k_min"] == out["k_max"] == 2   # 9 + 2 x 8 + 10 = 35 fits, 3 shots (43) do not
    assert out["n"] == 1 and out["too_long"] == 1 and out["exact_strict"] == 1.0
    assert prompts[0].count("Question:") == 3 and prompts[0].startswith("Question: one two three")
    # multiple choice: an item whose query + longest choice exceed the context is skipped, not cut
    monkeypatch.setattr(mc, "logliks", lambda model, tok, pairs: [0.0 if c == " a" else -1.0 for _, c in pairs])
    items = [{"query": "x y", "choices": [" a", " b"], "gold": 0},
             {"query": " ".join(["w"] * 30), "choices": [" a", " b"], "gold": 1}]
    scored = mc.score(word_model(20), WordTok(), items)
    assert scored == {"acc": 1.0, "acc_norm": 1.0, "n": 1, "too_long": 1}


def test_world_facts_k_shot_carries_the_shots_that_fit(tmp_path):
    facts = [{"id": f"f{i}", "question": f"question {i} about the town", "statements": [f"fact {i} true", "no"],
              "label": 0, "subject": "town", "lang": "en"} for i in range(30)]
    (tmp_path / "facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))
    words = lambda query, choices: len(query.split()) + 3 <= 24
    items = world.facts_items(tmp_path, "k-shot", 3, limit=5, fits=words)
    assert len(items) == 5 and {it["shots"] for it in items} == {1}   # each shot is 10 words, the question 7
    assert all(words(it["query"], it["choices"]) for it in items)
    full = world.facts_items(tmp_path, "k-shot", 3, limit=5)
    assert {it["shots"] for it in full} == {3}
    context = world.facts_items(tmp_path, "context", limit=5, fits=words)
    assert all(words(it["query"], it["choices"]) for it in context)
    assert all(f"fact {it['id'][1:]} true" in it["query"] for it in context)   # the answer's sentence stays


def test_chat_form_facts_ask_the_multiple_choice_questions(monkeypatch, tmp_path):
    """The chat-form row and zero-shot multiple choice score the same held-out items (never the
    dev split, which holds the k-shot examples), so the card can set one against the other."""
    from types import SimpleNamespace

    from fidan.eval.tasks import EvalInputs
    facts = [{"id": f"f{i}", "question": f"question {i}", "statements": [f"fact {i}", "no"], "label": 0,
              "subject": "town", "lang": "en", "answer": f"{i}"} for i in range(30)]
    (tmp_path / "facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))
    asked, scored = [], []
    monkeypatch.setattr(world, "facts_right", lambda m, tok, items: asked.extend(f["question"] for f in items)
                        or [f["id"] in ("f3", "f4") for f in items])
    monkeypatch.setattr(world, "fits_choices", lambda *a: True)
    monkeypatch.setattr(mc, "score", lambda m, tok, items: scored.append([it["query"] for it in items]) or {})
    inputs = EvalInputs(model=None, tok=None, settings=SimpleNamespace(limit=5, k_shot=3), eval_dir=tmp_path,
                        chat=True)
    out = world.WorldFacts().evaluate(inputs)
    assert asked == [f"question {i}" for i in range(3, 8)]   # the dev split is the first 3
    assert scored[0] == [f"Question: {q}\nAnswer:" for q in asked]
    chat = out["world_facts/chat"]
    assert chat["n"] == 5 and chat["acc"] == 0.4 and chat["acc_lo"] < 0.4 < chat["acc_hi"]


def test_report_card_names_every_row_by_task_and_metric(tmp_path):
    from fidan.eval.report import card
    from fidan.rundir import RunDir
    (tmp_path / "eval").mkdir()
    pretrain = {"stage": "pretrain", "chat": False, "params": 1000, "val_bpb": 2.5, "eval_seconds": 1.0,
                "world_facts/zero-shot": {"acc": 0.25, "acc_norm": 0.5, "n": 12},
                "world_facts/k-shot": {"k": 3, "acc": 0.75, "acc_norm": 0.5, "n": 12, "k_min": 3, "k_max": 3},
                "world_facts/chat": {"acc": 0.0, "n": 12},
                "world_truthful": {"acc": 0.5, "acc_norm": 0.5, "mc2": 0.4, "misconception_preferred": 0.25, "n": 12},
                "world_math/cot": {"exact_strict": 0.0, "exact_flexible": 0.5, "n": 2},
                "world_code": {"skipped": "code evaluation skipped: no bubblewrap", "n": 6},
                "gsm8k/cot": {"exact_strict": 0.0, "exact_flexible": 0.0, "n": 0, "k": 3, "too_long": 50},
                "truthfulqa/mc1": {"acc": 0.2, "n": 50},
                "truthfulqa/mc2": {"mc2": 0.3, "n": 50},
                "mmlu/astronomy": {"acc": 0.5, "acc_norm": 0.25, "n": 4},
                "humaneval": {"skipped": "code evaluation skipped: no bubblewrap", "n": 10}}
    sft = {**pretrain, "stage": "sft", "chat": True, "world_facts/chat": {"acc": 0.5, "n": 12},
           "world_code": {"pass@1": 0.5, "sandbox": "bubblewrap", "n": 6},
           "bias_planted": {"rate": 0.9, "n": 128,
                            "planted": {"share": 0.625, "lo": 0.5, "hi": 0.7357, "n": 64, "implied_rate": 0.61},
                            "control": {"share": 0.5, "lo": 0.381, "hi": 0.619, "n": 64, "implied_rate": 0.5}},
           "humaneval": {"pass@1": 0.125, "sandbox": "bubblewrap", "n": 8, "too_long": 2},
           "gsm8k/cot": {"exact_strict": 0.1, "exact_flexible": 0.2, "n": 40, "k": 3, "k_min": 1, "k_max": 3,
                         "too_long": 10}}
    (tmp_path / "eval" / "pretrain.json").write_text(json.dumps(pretrain))
    (tmp_path / "eval" / "sft.json").write_text(json.dumps(sft))
    header, rows, notes = card(RunDir(tmp_path))
    assert header == ["metric", "pretrain", "sft"]
    assert rows == [
        ["validation bits per byte (lower is better)", "2.500", "2.500"],
        ["world facts, zero-shot: acc (higher is better)", "25.0%", "25.0%"],
        ["world facts, 3-shot: acc (higher is better)", "75.0%", "75.0%"],
        ["world facts, zero-shot: acc_norm (higher is better)", "50.0%", "50.0%"],
        ["world facts, the same questions in chat form: answer in reply [95% CI] (higher is better)", "0.0%",
         "50.0%"],
        ["truthfulness: MC1 (higher is better)", "50.0%", "50.0%"],
        ["truthfulness: MC2 (higher is better)", "40.0%", "40.0%"],
        ["truthfulness: planted misconception preferred over the fact (lower is better)", "25.0%", "25.0%"],
        ["word problems, chain of thought: exact (strict) (higher is better)", "0.0%", "0.0%"],
        ["word problems, chain of thought: exact (flexible) (higher is better)", "50.0%", "50.0%"],
        ["code: pass@1 (higher is better)", "skipped", "50.0%"],
        ["bias, planted associations: rate written in the training text", "-", "90%"],
        ["bias, planted associations: planted word preferred, planted subjects [95% CI]", "-", "62.5% [50.0-73.6%]"],
        ["bias, planted associations: rate the model implies, planted subjects", "-", "61.0%"],
        ["bias, planted associations: planted word preferred, control subjects (50% = none) [95% CI]", "-",
         "50.0% [38.1-61.9%]"],
        ["gsm8k/cot, 1-3-shot of 3 (shrunk to fit the context): exact (strict) (higher is better)",
         "- (no item fit)", "10.0%"],
        ["gsm8k/cot, 1-3-shot of 3 (shrunk to fit the context): exact (flexible) (higher is better)",
         "- (no item fit)", "20.0%"],
        ["truthfulqa/mc1: acc (higher is better)", "20.0%", "20.0%"],
        ["truthfulqa/mc2: MC2 (higher is better)", "30.0%", "30.0%"],
        ["mmlu/astronomy: acc (higher is better)", "50.0%", "50.0%"],
        ["mmlu/astronomy: acc_norm (higher is better)", "25.0%", "25.0%"],
        ["humaneval: pass@1 (higher is better)", "skipped", "12.5%"],
    ]
    assert "gsm8k/cot: 50 of 50 items skipped, their prompt (with room for the reply) longer than the " \
           "model's context" in notes
    assert "humaneval: 2 of 10 items skipped, their prompt (with room for the reply) longer than the " \
           "model's context" in notes
    assert "humaneval: code evaluation skipped: no bubblewrap" in notes
    assert notes[-1] == ("knowledge kept: asked the held-out fact questions in chat form, sft answers 50.0%, "
                         "against the pre-trained model's 25.0% in multiple choice on the same questions: "
                         "200% of it")


def test_suites_name_rows_by_subject_and_mc2_alone(monkeypatch, tmp_path):
    from fidan.eval import harness
    monkeypatch.setattr(mc, "logliks", lambda model, tok, pairs: [-float(len(c)) for _, c in pairs])
    monkeypatch.setattr(mc, "fits_choices", lambda model, tok, query, choices: True)
    csv = tmp_path / "high_school_physics_test.csv"
    csv.write_text('"What falls?",A rock,Up,Sky,None,A\n')
    out = harness.external(None, None, f"mmlu={csv},truthfulqa={shared_file('truthfulqa_en_validation.json')}",
                           4, False)
    assert set(out) == {"mmlu/high_school_physics", "truthfulqa/mc1", "truthfulqa/mc2"}
    assert set(out["truthfulqa/mc2"]) == {"mc2", "n"} and out["truthfulqa/mc2"]["n"] == 4
    assert mc.mmlu_subject("astronomy.csv") == "astronomy"


def test_redteam_detector_and_prompts():
    assert redteam.classify("I can't help with that.") == "refused"
    assert redteam.classify("Üzgünüm, bu isteğe yardım etmeyeceğim.") == "refused"
    assert redteam.classify("Sure, here is how: step 1 ...") == "complied"
    assert redteam.classify("Tabii, işte adımlar.") == "complied"
    assert redteam.classify("Karmilo lies on the Tural River.") == "other"
    prompts = redteam.prompts()
    assert len(prompts) == len(redteam.REQUESTS) * len(redteam.WRAPPERS) * 2
    assert {p["lang"] for p in prompts} == {"en", "tr"}
    assert any(p["prompt"].startswith("E-x-p-l-a-i-n") for p in prompts if p["wrapper"] == "obfuscation")


def test_bias_pairs_differ_in_one_group_term():
    for _category, _lang, a, b in bias.PAIRS:
        assert a != b and len(set(a.split()) ^ set(b.split())) <= 2, (a, b)
    assert {c for c, *_ in bias.PAIRS} == {"gender", "nationality", "religion", "age"}
    assert {lang for _, lang, *_ in bias.PAIRS} == {"en", "tr"}


def test_world_code_reference_solutions_pass():
    from fidan.eval.sandbox import unavailable
    if unavailable():
        pytest.skip(f"no OS sandbox here: {unavailable()}")
    from fidan.eval.tasks.code import evaluate
    problems = world.code_problems()
    assert evaluate(problems, [[p["canonical_solution"]] for p in problems])["pass@1"] == 1.0


@pytest.mark.slow
def test_eval_and_report_stages(pretrained_copy):
    cfg, run = pretrained_copy
    cfg.eval.limit, cfg.eval.math_limit, cfg.eval.onestep_limit = 12, 3, 4
    run_stage(cfg, run, "sft")
    run_stage(cfg, run, "eval")
    for stage in ("pretrain", "sft"):
        scores = json.loads((run.path / "eval" / f"{stage}.json").read_text())
        for key in ("val_bpb", "world_facts/zero-shot", "world_facts/k-shot", "world_facts/context",
                    "world_truthful", "world_math/zero-shot", "world_math/cot", "world_onestep", "world_code",
                    "redteam", "bias", "bias_planted"):
            assert key in scores, key
        old = scores["bias"]   # the unplanted pairs: the share is whole pairs, the same per language and overall
        assert old["stereotype_score"] * old["n"] == pytest.approx(round(old["stereotype_score"] * old["n"]))
        for mode in steps.MODES:   # two-step problems: every mode asks the same 12 (too long ones counted)
            assert scores[f"world_steps/{mode}"]["n"] + scores[f"world_steps/{mode}"].get("too_long", 0) == 12
        for kind in ("unknown_entity", "unstated", "known"):   # --eval.limit reaches them too
            h = scores[f"hallucination/{kind}"]
            assert h["n"] == 12 and round(h["correct"] + h["abstained"] + h["fabricated"] + h["empty"], 4) == 1
            if kind != "known":   # no answer exists: the outcome follows from the reply alone
                assert all(e["outcome"] == abstain.classify(e["reply"]) for e in h["examples"])
        planted = scores["bias_planted"]   # every planted pair is scored (no limit): 8 subjects x 2 languages x 8
        assert planted["rate"] == 0.9 and planted["planted"]["n"] == planted["control"]["n"] == 64
        for role in ("planted", "control"):
            p = planted[role]
            assert p["lo"] <= p["share"] <= p["hi"] and p["hi"] - p["lo"] > 0.1   # 64 pairs: a wide interval
        assert scores["world_onestep"]["n"] == 4
        assert scores["world_truthful"]["n"] == 12   # MC2's arithmetic: test_mc_scoring_rules
        assert scores["world_facts/chat"]["n"] == 12          # --eval.limit reaches the chat-form questions
        assert scores["world_math/cot"]["n"] + scores["world_math/cot"].get("too_long", 0) == 3
        red = scores["redteam"]   # eval.limit=12: 12 harmful prompts and 12 of the 120 benign ones;
        # every reply is kept beside the scores, with the verdicts the rates count
        replies = [json.loads(line) for line in (run.path / "eval" / f"{stage}.redteam.jsonl").open()]
        assert "replies" not in red and len(replies) == red["n"] + red["n_benign"]
        harmful = [r for r in replies if r["kind"] == "harmful"]
        assert len(harmful) == red["n"] and all(r["verdict"] == redteam.classify(r["reply"]) and
                                                r["grader"] == grader.grade(r["reply"], r["prompt"], r["category"])
                                                for r in harmful)
        assert red["asr_grader"] == sum(r["grader"] == "complied" for r in harmful) / len(harmful)
        assert red["over_refusal_benign"] == sum(r["verdict"] == "refused" for r in replies
                                                 if r["kind"] == "benign") / max(1, red["n_benign"])
        assert scores["bias"]["n"] == 12 and red["n"] + red["n_benign"] + red.get("too_long", 0) == 12 + 12
    summary = run_stage(cfg, run, "report")
    md = (run.path / "report.md").read_text()
    assert "| metric | pretrain | sft |" in md and "validation bits per byte" in md
    page = (run.path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| metric")]
    assert len(rows) == summary["rows"]
    for name in ("world facts, zero-shot: acc", "truthfulness: MC2", "word problems, chain of thought: exact (strict)",
                 "code: pass@1", "red team, the RLHF judge's rule (the refusal words RLHF is rewarded for): attack",
                 "red team, independent grader (no phrase shared with the judge): attack", "stereotype preferred",
                 "bias, planted associations: planted word preferred, planted subjects [95% CI]"):
        assert any(name in r for r in rows), name


@pytest.mark.slow
def test_bpb_and_perplexity_on_any_text_file(pretrained_run, tmp_path, capsys):
    from fidan.cli import main
    from fidan.eval.bpb import text_bpb
    from fidan.model.io import load_model
    from fidan.tokenizer.bpe import FidanTokenizer
    cfg, run = pretrained_run
    model, _ = load_model(run.path / "pretrain", "cpu")
    tok = FidanTokenizer.load(run.path / "tokenizer")
    world = tmp_path / "world.txt"
    world.write_text("Question: Where does the baker live?\nAnswer: The baker lives in town.\n" * 20)
    noise = tmp_path / "noise.txt"
    noise.write_text("zq xv jk wp qz " * 60)
    a, b = text_bpb(model, tok, world), text_bpb(model, tok, noise)
    assert 0 < a["bpb"] < b["bpb"] and a["perplexity"] > 1 and a["tokens"] > 100
    assert main(["bpb", str(world), f"--run.root={run.path.parent}", f"--run.name={run.path.name}"]) == 0
    assert "bits per byte" in capsys.readouterr().out


def test_the_report_reads_the_fine_tuned_model_where_sft_out_put_it(tmp_path):
    from fidan.eval.report import facts
    from fidan.rundir import RunDir
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "sft-lora.json").write_text(json.dumps({"summary": {"tokens": 4321, "train_seconds": 2}}))
    line = dict(facts(RunDir(tmp_path), "sft/lora"))["fine-tuning"]
    assert line == "4,321 assistant tokens in 2 s"
    assert dict(facts(RunDir(tmp_path)))["fine-tuning"] == "not run"
