"""GRPO's curriculum: one-step problems first, the sampler moving on with the success rate, each
stage's reward the evaluation task's, and groups with signal on a micro run."""
import json
import random

import pytest

from conftest import micro_config
from fidan.config import build_config
from fidan.corpus.instructions import one_step_conversations
from fidan.corpus.stories import ONE_STEP_KINDS, one_step_problem, one_step_set
from fidan.corpus.world import LEGS, build_world
from fidan.errors import FidanError
from fidan.eval import tasks
from fidan.pipeline import run_stage
from fidan.rlhf import curriculum
from fidan.stats import wilson_difference

WORLD = build_world(5, 8, 12, 6)


def test_one_step_problems_are_small_true_to_the_world_and_in_both_languages():
    rng = random.Random(0)
    for lang in ("en", "tr"):
        for kind in ONE_STEP_KINDS:
            for _ in range(30):
                p = one_step_problem(WORLD, lang, rng, kind)
                assert 0 < p.answer < 40 and p.solution.endswith(f"#### {p.answer}")
                assert (" The answer is " in p.solution) == (lang == "en")
                if kind == "legs":   # the creature's true legs: arithmetic over a world fact
                    creature = next(c for c in WORLD.creatures if f" {c.name} " in f" {p.question} ")
                    assert f"{LEGS[creature.legs][0]} " in p.question and p.answer % LEGS[creature.legs][0] == 0
    assert "bacak" in one_step_problem(WORLD, "tr", rng, "legs").question


def test_each_stage_is_rewarded_by_its_evaluation_task_in_both_languages():
    held = curriculum.held_out(WORLD, 5)
    for stage in curriculum.CURRICULA["staged"]:
        task = tasks.get(curriculum.TASKS[stage])
        for lang in ("en", "tr"):
            item = next(it for it in held[stage] if it["lang"] == lang)
            assert task.reward(item, item["solution"]) == 1.0           # the worked solution is right
            wrong = item["solution"].replace(f"#### {item['answer']}", f"#### {int(item['answer']) + 1}")
            assert task.reward(item, wrong) == 0.0                      # the final number decides
            assert task.reward(item, f"{'Cevap' if lang == 'tr' else 'The answer is'} {item['answer']}.") == 1.0


def test_training_problems_and_sft_conversations_leave_the_held_out_problems_out():
    held = {it["question"] for it in one_step_set(WORLD, 5)[0]}
    assert len(held) == 200
    for stage in ("one_step", "word", "two_step"):
        train = curriculum.training_problems(WORLD, 5, stage, 300)
        questions = {p.question for p in train}
        assert len(questions) == 300 and not questions & {it["question"] for it in curriculum.held_out(WORLD, 5)[stage]}
    convos = one_step_conversations(WORLD, 300, 5)
    assert {c["lang"] for c in convos} == {"en", "tr"} and not {c["messages"][0]["content"] for c in convos} & held


def test_the_sampler_serves_one_step_problems_first_and_moves_on_at_the_threshold():
    plan = curriculum.Curriculum(curriculum.CURRICULA["staged"], advance_at=0.5, window=2, review=0.25)
    rng = random.Random(0)
    assert set(plan.pick(rng, 50)) == {0} and plan.name == "one_step"
    assert not plan.update(0.9)                 # one step is not yet a window of two
    assert not plan.update(0.05)                # mean 0.475 < 0.5
    assert plan.update(0.95) and plan.name == "word" and plan.history == []
    picks = plan.pick(rng, 400)
    assert set(picks) == {0, 1} and 0.15 < picks.count(0) / 400 < 0.35   # review: a quarter from stage one
    saved = plan.state()
    for rate in (0.7, 0.7):
        plan.update(rate)
    assert plan.name == "two_step"
    assert not plan.update(1.0) and not plan.update(1.0) and plan.name == "two_step"   # the last stage stays
    plan.load_state(saved)
    assert plan.name == "word" and plan.history == []
    timed = curriculum.Curriculum(("one_step", "word"), advance_at=1.0, window=3, stage_steps=2)
    assert not timed.update(0.0) and timed.update(0.0) and timed.name == "word"


def test_curriculum_settings_are_range_checked():
    for bad, key in (("rlhf.grpo.advance_at=1.5", "rlhf.grpo.advance_at"), ("rlhf.grpo.window=0", "rlhf.grpo.window"),
                     ("rlhf.grpo.curriculum=backwards", "rlhf.grpo.curriculum"),
                     ("sft.one_step_share=0.95", "sft.one_step_share")):
        with pytest.raises(FidanError, match=key.replace(".", r"\.")):
            build_config(None, None, [bad])


def test_newcombe_interval_brackets_the_difference():
    lo, hi = wilson_difference(20, 50, 200)
    assert lo < 0.15 < hi and lo > 0.05       # 10% -> 25% on 200 items: clearly above zero
    lo, hi = wilson_difference(20, 24, 200)
    assert lo < 0 < hi                         # 10% -> 12%: not told apart


def test_grpo_on_a_micro_run_starts_on_one_step_problems_with_signal(pretrained_copy):
    """SFT with one-step problems, then GRPO with the staged curriculum: the first steps serve
    one-step problems and some groups carry signal; stage_steps moves the sampler on; the held-out
    scores per stage come back."""
    cfg, run = pretrained_copy
    cfg = micro_config(run.path.parent, "micro", "train.steps=120", "sft.one_step_share=0.5", "sft.steps=60",
                       "rlhf.algo=grpo", "rlhf.steps=4", "rlhf.prompts_per_step=128", "rlhf.grpo.group=8",
                       "rlhf.temperature=1.5", "rlhf.grpo.stage_steps=2",
                       "rlhf.eval_prompts=2", "rlhf.eval_samples=1")
    run_stage(cfg, run, "sft")
    run_stage(cfg, run, "rlhf")
    rows = [json.loads(x) for x in (run.path / "rlhf" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["one_step", "one_step", "word", "word"]
    assert max(r["groups_with_signal"] for r in rows[:2]) > 0
    summary = json.loads((run.path / "rlhf" / "summary.json").read_text())
    assert [s["stage"] for s in summary["curriculum"]] == ["one_step", "word"]
    assert set(summary["held_out"]) == {"one_step", "word", "two_step"} and summary["held_out"]["word"]["n"] == 6
