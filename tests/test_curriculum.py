"""GRPO's curriculum: one-step problems first, the sampler moving on with the success rate, each
stage's reward the evaluation task's, and groups with signal on a micro run."""
import json
import random

import pytest
import torch

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


def test_the_one_step_reserve_widens_the_held_out_set_and_stays_out_of_training():
    """More held-out one-step problems than the task's 180: GRPO's reserve, which neither GRPO's
    training problems nor SFT's one-step conversations (its first SFT_CHECKED) hold."""
    base = curriculum.held_out(WORLD, 5)["one_step"]
    wide = curriculum.held_out(WORLD, 5, one_step=500)["one_step"]
    assert len(base) == 180 and len(wide) == 500 and wide[:180] == base
    questions = [it["question"] for it in wide]
    assert len(set(questions)) == 500 and {it["lang"] for it in wide[180:]} == {"en", "tr"}
    assert not set(questions) & {p.question for p in curriculum.training_problems(WORLD, 5, "one_step", 2000)}
    sft = one_step_conversations(WORLD, curriculum.SFT_CHECKED, 5)
    assert not set(questions) & {c["messages"][0]["content"] for c in sft}
    task = tasks.get("world_onestep")
    assert all(task.reward(it, it["solution"]) == 1.0 for it in wide[180:])


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
                     ("sft.one_step_share=0.95", "sft.one_step_share"),
                     ("rlhf.grpo.dynamic_sampling=-1", "rlhf.grpo.dynamic_sampling"),
                     ("rlhf.grpo.clip_high=-0.1", "rlhf.grpo.clip_high")):
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
    scores per stage come back, and every eval_every steps in the metrics."""
    cfg, run = pretrained_copy
    cfg = micro_config(run.path.parent, "micro", "train.steps=120", "sft.one_step_share=0.5", "sft.steps=60",
                       "rlhf.algo=grpo", "rlhf.steps=4", "rlhf.prompts_per_step=128", "rlhf.grpo.group=8",
                       "rlhf.temperature=1.5", "rlhf.grpo.stage_steps=2", "rlhf.grpo.eval_every=2",
                       "rlhf.eval_prompts=2", "rlhf.eval_samples=1")
    run_stage(cfg, run, "sft")
    run_stage(cfg, run, "rlhf")
    rows = [json.loads(x) for x in (run.path / "rlhf" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["one_step", "one_step", "word", "word"]
    assert max(r["groups_with_signal"] for r in rows[:2]) > 0
    summary = json.loads((run.path / "rlhf" / "summary.json").read_text())
    assert [s["stage"] for s in summary["curriculum"]] == ["one_step", "word"]
    assert set(summary["held_out"]) == {"one_step", "word", "two_step"} and summary["held_out"]["word"]["n"] == 6
    # the curve: every 2 steps; its last point is the GRPO model the summary scores
    assert [sorted(k for k in r if k.startswith("held_out_")) for r in rows] == \
        [[], ["held_out_one_step", "held_out_two_step", "held_out_word"]] * 2
    assert all(rows[-1][f"held_out_{s}"] == v["grpo"] for s, v in summary["held_out"].items())


def _group(rewards: list[float]):
    from fidan.rlhf.grpo import Group
    return Group("one_step", [[1]] * len(rewards), [[2]] * len(rewards), torch.tensor(rewards))


def test_dynamic_sampling_drops_uniform_groups_and_refills_the_batch():
    """DAPO's dynamic sampling: the update holds only groups with signal, as many as the first
    round had groups, drawn from further rounds while any are short, and at most that many rounds."""
    from fidan.rlhf.grpo import with_signal
    rounds = [[_group([0, 0]), _group([1, 0]), _group([1, 1])],     # one group with signal of three
              [_group([0, 0]), _group([0, 1]), _group([0, 0])],
              [_group([1, 0]), _group([1, 0]), _group([1, 1])],
              [_group([0, 1]), _group([0, 1]), _group([0, 1])]]
    asked = []

    def draw(n):
        asked.append(n)
        return rounds[n]
    first, update, drawn = with_signal(draw, more_rounds=8)
    assert first is rounds[0] and asked == [0, 1, 2] and drawn == 3   # filled after round 2: no round 3
    assert len(update) == 3 and all(x.signal for x in update)
    assert update == [rounds[0][1], rounds[1][1], rounds[2][0]]
    asked.clear()
    assert with_signal(draw, more_rounds=1)[1:] == ([rounds[0][1], rounds[1][1]], 2)   # capped: short batch
    asked.clear()
    assert with_signal(draw, more_rounds=0) == (rounds[0], rounds[0], 1) and asked == [0]   # off: as before


def test_clip_higher_lets_a_rewarded_token_grow_past_the_symmetric_clip():
    """The surrogate's clip is asymmetric with clip_high: a ratio of 1.25 on a positive advantage
    still has a gradient at [0.8, 1.28] but not at [0.8, 1.2]; a ratio of 0.75 on a negative
    advantage is clipped by the lower bound in both."""
    import math

    from fidan.rlhf.ppo import clipped_surrogate
    zero = torch.zeros(1)
    for ratio, adv, high, moves in ((1.25, 1.0, 0.28, True), (1.25, 1.0, 0.2, False),
                                    (0.75, -1.0, 0.28, False), (0.75, -1.0, 0.2, False), (1.1, -1.0, 0.2, True)):
        logp = torch.tensor([math.log(ratio)], requires_grad=True)
        clipped_surrogate(logp, zero, torch.tensor([adv]), 0.2, high)[0].sum().backward()
        assert (float(logp.grad) != 0) == moves, (ratio, adv, high)
    loss, _ = clipped_surrogate(torch.tensor([math.log(1.5)]), zero, torch.tensor([2.0]), 0.2, 0.28)
    assert float(loss) == pytest.approx(-2 * 1.28)


def test_scale_rewards_off_centres_without_dividing_by_the_std():
    from fidan.rlhf.grpo import group_advantages
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    assert torch.allclose(group_advantages(r, 4, scale=False), torch.tensor([0.75, -0.25, -0.25, -0.25,
                                                                             0.5, 0.5, -0.5, -0.5]))
    scaled = group_advantages(r, 4)
    assert float(scaled[0]) == pytest.approx(0.75 / 0.5, rel=1e-3)   # std of (1, 0, 0, 0) is 0.5


def test_grpo_with_dynamic_sampling_updates_on_groups_with_signal_only(pretrained_copy):
    """On a micro run where few first-round groups carry signal, dynamic sampling draws further
    rounds until every group of the update has signal; clip-higher and Dr. GRPO's advantages run."""
    cfg, run = pretrained_copy
    cfg = micro_config(run.path.parent, "micro", "train.steps=120", "sft.one_step_share=0.5", "sft.steps=60",
                       "rlhf.algo=grpo", "rlhf.steps=2", "rlhf.prompts_per_step=32", "rlhf.grpo.group=8",
                       "rlhf.temperature=1.5", "rlhf.grpo.curriculum=one_step", "rlhf.grpo.dynamic_sampling=8",
                       "rlhf.grpo.clip_high=0.28", "rlhf.grpo.scale_rewards=false", "rlhf.grpo.eval_items=0",
                       "rlhf.eval_prompts=2", "rlhf.eval_samples=1")
    run_stage(cfg, run, "sft")
    run_stage(cfg, run, "rlhf")
    rows = [json.loads(x) for x in (run.path / "rlhf" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    trained = [r["tokens"] - prev for r, prev in zip(rows, [0] + [r["tokens"] for r in rows])]   # tokens: cumulative
    for r, tokens in zip(rows, trained):
        assert 1 <= r["rounds"] <= 9 and r["update_signal"] >= r["groups_with_signal"], r
        if r["rounds"] < 9:          # filled before the cap: every group of the batch has signal
            assert r["update_signal"] == 1.0, r
        # the update trained on those groups' answers alone: groups x 8 answers x their mean length
        assert tokens == round(r["update_signal"] * 4 * 8 * r["length"]), (r, tokens)
    assert any(r["groups_with_signal"] < r["update_signal"] and r["rounds"] > 1 for r in rows), rows
