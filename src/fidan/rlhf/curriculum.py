"""GRPO's curriculum: which verifiable problems each step's groups get.

A group of answers to one problem carries signal only when some but not all of its answers are
right. The tiny SFT model solves no two-step word problem, so GRPO on those alone has nothing to
learn from; the curriculum starts where the model sometimes succeeds and moves on:

1. ``one_step``: one-step problems with small numbers ("Ayla has 3 apples and gets 2 more", a
   creature's true number of legs times a count; ``corpus.stories.one_step_problem``), scored by
   the ``world_onestep`` evaluation task;
2. ``word``: the word problems the ``world_math`` task evaluates (one step with larger numbers,
   prices, products, two steps);
3. ``two_step``: the ``world_steps`` task's two-step problems.

Each stage's reward is its evaluation task's ``reward`` (the final number of the reply is the
answer), so GRPO optimises what the report card scores, and its held-out problems are those
tasks' items, never trained on. The one-step stage can be scored on more problems than its task
holds (180 without the dev split): GRPO's own reserve of ``RESERVE`` further one-step problems
(their own random stream), which no GRPO training problem is drawn from and which leaves out the
first ``SFT_CHECKED`` one-step problems SFT's ``sft.one_step_share`` draws (1,575 at 0.2 of the
demo's 6,300 conversations). The sampler starts at the first stage of ``[rlhf.grpo]
curriculum`` and moves to the next when the mean success rate of the last ``window`` steps at
the stage reaches ``advance_at`` (or after ``stage_steps`` steps, when that is set); once past
the first stage, ``review`` of each step's groups come from earlier stages, so what was learnt
stays in the batch. The stage and its history are part of the checkpoint (``state``).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from fidan.corpus.generate import eval_sets
from fidan.corpus.stories import fresh_one_step, one_step_set, word_problem
from fidan.corpus.world import World, build_world
from fidan.eval.tasks.world import split

# the sequences of stages ``[rlhf.grpo] curriculum`` names
CURRICULA = {"staged": ("one_step", "word", "two_step"), "word": ("word",), "one_step": ("one_step",)}
TASKS = {"one_step": "world_onestep", "word": "world_math", "two_step": "world_steps"}   # stage -> reward task


@dataclass(frozen=True)
class Problem:
    question: str
    answer: int
    lang: str


RESERVE = 1000        # GRPO's own held-out one-step problems, beyond the evaluation task's
SFT_CHECKED = 10_000  # SFT's one-step problems the reserve leaves out (its stream's first ones)


def held_out(world: World, seed: int, one_step: int = 0) -> dict[str, list[dict]]:
    """Each stage's held-out problems (the evaluation tasks' items without their dev split); with
    ``one_step`` above the task's count, the one-step stage gets the reserve's first problems up
    to that many (both languages, drawn at random)."""
    evals, _ = eval_sets(world, seed)
    sets = {"one_step": one_step_set(world, seed)[0], "word": evals["arithmetic"], "two_step": evals["steps"]}
    out = {name: [it for lang in ("en", "tr") for it in split([x for x in items if x["lang"] == lang])[1]]
           for name, items in sets.items()}
    more = min(max(0, one_step - len(out["one_step"])), RESERVE)
    if more:
        out["one_step"] = out["one_step"] + [
            {"id": f"grpo-onestep-{p.key[0]}-{n:04d}", "lang": p.key[0], "question": p.question,
             "solution": p.solution, "answer": p.answer} for n, p in enumerate(reserve(world, seed)[:more])]
    return out


def reserve(world: World, seed: int) -> list:
    """GRPO's ``RESERVE`` further held-out one-step problems: none of the task's, none of SFT's."""
    taken = set(one_step_set(world, seed)[1])
    taken |= {p.key for p in fresh_one_step(world, SFT_CHECKED, random.Random(f"fidan-sft-onestep-{seed}"), taken)}
    return fresh_one_step(world, RESERVE, random.Random(f"fidan-grpo-heldout-{seed}"), taken)


def training_problems(world: World, seed: int, stage: str, n: int) -> list[Problem]:
    """``n`` distinct problems of ``stage``, none of them held out by any evaluation set."""
    _, heldout = eval_sets(world, seed)
    rng = random.Random(f"fidan-grpo-{stage}-{seed}" if stage != "word" else f"fidan-grpo-{seed}")
    if stage == "one_step":
        held = one_step_set(world, seed)[1] | {p.key for p in reserve(world, seed)}
        return [Problem(p.question, p.answer, p.key[0]) for p in fresh_one_step(world, n, rng, held)]
    out, seen = [], set(heldout)
    while len(out) < n:
        p = word_problem(world, rng.choice(["en", "tr"]), rng, "two_step" if stage == "two_step" else "")
        if p.key not in seen:
            seen.add(p.key)
            out.append(Problem(p.question, p.answer, p.key[0]))
    return out


@dataclass
class Curriculum:
    """The stage sampler (see the module docstring); ``update`` after every step with the step's
    success rate on the current stage's groups."""
    stages: tuple[str, ...]
    advance_at: float
    window: int
    stage_steps: int = 0
    review: float = 0.0
    stage: int = 0
    history: list[float] = field(default_factory=list)   # success rates of the current stage's steps

    def pick(self, rng: random.Random, n: int) -> list[int]:
        """The stage of each of a step's ``n`` groups: the current one, or with ``review`` odds an earlier one."""
        return [rng.randrange(self.stage) if self.stage and rng.random() < self.review else self.stage
                for _ in range(n)]

    def update(self, success: float) -> bool:
        """Record a step's success rate on the current stage; True when the sampler moves on."""
        self.history.append(success)
        recent = self.history[-self.window:]
        ready = len(recent) == self.window and sum(recent) / self.window >= self.advance_at
        timed = self.stage_steps and len(self.history) >= self.stage_steps
        if self.stage + 1 < len(self.stages) and (ready or timed):
            self.stage += 1
            self.history = []
            return True
        return False

    @property
    def name(self) -> str:
        return self.stages[self.stage]

    def state(self) -> dict:
        return {"stage": self.stage, "history": list(self.history)}

    def load_state(self, state: dict) -> None:
        self.stage, self.history = int(state["stage"]), list(state["history"])


def make(settings, cfg) -> tuple[Curriculum, dict[str, list[Problem]], World]:
    """The curriculum of the ``[rlhf.grpo]`` settings, each stage's training problems, and the world."""
    c = cfg.corpus
    world = build_world(cfg.run.seed, c.n_places, c.n_people, c.n_creatures)
    stages = CURRICULA[settings.curriculum]
    pools = {s: training_problems(world, cfg.run.seed, s, 2000) for s in stages}
    return (Curriculum(stages, settings.advance_at, settings.window, settings.stage_steps, settings.review),
            pools, world)


def greedy_accuracy(answer: Callable[[list[str]], list[str]], reward: Callable[[dict, str], float],
                    items: list[dict]) -> tuple[int, int]:
    """Right replies among ``items`` (answered all at once by ``answer``), and how many were asked."""
    replies = answer([it["question"] for it in items])
    return int(sum(reward({"answer": it["answer"]}, r) for it, r in zip(items, replies))), len(items)
