"""Evaluation tasks, found by name: each is an object with ``evaluate(inputs)`` and, where its
items have a checkable answer, ``reward(item, reply)``, the score RL can optimise (GRPO trains on
``world_math``'s). A task module registers its tasks with :func:`register`; the harness runs
every registered task in registration order, each returning named rows
(``{"world_facts/zero-shot": {...}, ...}``) for the report card.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fidan.errors import FidanError

# the task modules, in the order the report card lists their rows
MODULES = ("fidan.eval.tasks.world", "fidan.eval.tasks.steps", "fidan.eval.tasks.abstain", "fidan.eval.tasks.text",
           "fidan.eval.tasks.world_code", "fidan.eval.redteam", "fidan.eval.bias")


@dataclass
class EvalInputs:
    """What a task may use: the model and tokenizer, whether it is a chat model, the data
    stage's held-out files, and the ``[eval]`` settings."""
    model: Any
    tok: Any
    chat: bool
    eval_dir: Path
    settings: Any


class Task:
    name = ""

    def evaluate(self, inputs: EvalInputs) -> dict[str, dict]:
        raise NotImplementedError

    def reward(self, item: dict, reply: str) -> float | None:
        """1.0 for a right reply to ``item``, 0.0 for a wrong one; None where nothing is checkable."""
        return None


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    _REGISTRY[task.name] = task
    return task


def all_tasks() -> list[Task]:
    for module in MODULES:
        importlib.import_module(module)
    return list(_REGISTRY.values())


def get(name: str) -> Task:
    all_tasks()
    if name not in _REGISTRY:
        raise FidanError(f"unknown evaluation task '{name}' (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[name]
