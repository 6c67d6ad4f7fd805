"""Alignment algorithms by name: the one place one is registered.

Each is a module of ``rlhf/`` with ``run(ctx, policy, ref, tok, *, info, response_tokens) -> dict``
that trains ``policy`` in place on the shared loop (``loop.Task``: ``batch`` + ``loss`` for
offline methods, an outer ``step`` for on-policy ones) and returns its summary; its settings are
its sub-table of ``[rlhf]`` (``[rlhf.ppo]``). The rlhf stage loads the SFT model and its frozen
copy, calls the algorithm, and gives every algorithm the same held-out evaluation.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

from fidan.errors import FidanError

ALGORITHMS = {
    "ppo": "fidan.rlhf.ppo",     # against the learned reward model, KL-penalised, clipped
    "dpo": "fidan.rlhf.dpo",     # directly on the preference pairs
    "grpo": "fidan.rlhf.grpo",   # group-relative, with a verifiable reward
}


def get(name: str) -> Callable[..., dict]:
    if name not in ALGORITHMS:
        raise FidanError(f"bad value for 'rlhf.algo': {name!r} (choose one of: {', '.join(ALGORITHMS)})")
    return importlib.import_module(ALGORITHMS[name]).run
