import json

import pytest

from conftest import shared_file
from fidan.errors import FidanError
from fidan.eval import bias, redteam
from fidan.eval.tasks import math as math_task
from fidan.eval.tasks import mc, world
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
    items = [{"query": "q", "choices": [" x", " y"], "gold": 0, "labels": [1, 0]},
             {"query": "q", "choices": [" " + "a" * 40, " b"], "gold": 0, "labels": [1, 0]}]
    out = mc.score(None, None, items)
    assert out["acc"] == 0.5            # item 2's raw argmax is "b"
    assert out["acc_norm"] == 1.0       # per character, the long choice wins
    import math
    assert out["mc2"] == pytest.approx((1 / (1 + math.exp(-2)) + math.exp(-9) / (math.exp(-9) + math.exp(-2))) / 2)


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
    cfg.eval.limit, cfg.eval.math_limit = 12, 3
    run_stage(cfg, run, "sft")
    run_stage(cfg, run, "eval")
    for stage in ("pretrain", "sft"):
        scores = json.loads((run.path / "eval" / f"{stage}.json").read_text())
        for key in ("val_bpb", "world_facts/zero-shot", "world_facts/k-shot", "world_facts/context",
                    "world_truthful", "world_math/zero-shot", "world_math/cot", "world_code", "redteam", "bias"):
            assert key in scores, key
        assert 0 <= scores["bias"]["stereotype_score"] <= 1
        assert scores["world_truthful"]["n"] == 12 and 0 <= scores["world_truthful"]["mc2"] <= 1
    summary = run_stage(cfg, run, "report")
    md = (run.path / "report.md").read_text()
    assert "| metric | pretrain | sft |" in md and "validation bits per byte" in md
    page = (run.path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| metric")]
    assert len(rows) == summary["rows"]
    for name in ("world facts, zero-shot (acc)", "truthfulness MC2", "word problems, chain of thought",
                 "code, pass@1", "red team: attack success rate", "bias: stereotype preferred"):
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
