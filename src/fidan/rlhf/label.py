"""``fidan label``: a person compares two sampled answers per prompt in the terminal.

For each prompt the chat model samples two answers (two seeds). The person types ``a`` or ``b``
for the better one, ``t`` for a tie, ``s`` to skip, ``q`` to stop. Every choice is appended to the
preference file at once (locked, whole line, fsynced: see ``preferences.append``), so stopping or
a crash loses nothing already chosen, and prompts already in the file are not asked again. The
reward stage reads the run's ``preferences.jsonl`` by default.

Before anything is written the person is told what is kept (the prompt, both answers, the
choice, the time, an anonymous id) and why (the next reward model trains on it), and is asked to
agree; ``--consent`` gives that agreement on the command line. ``fidan forget --user ID`` takes
the choices back.

Prompts come from a file (``.txt``: one per line; ``.jsonl``: a ``prompt`` or ``question`` field)
or, for the embedded world, from the reward stage's training prompts.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from fidan.errors import FidanError
from fidan.records import read_jsonl
from fidan.rlhf import preferences
from fidan.rlhf.rollout import prompt_ids, sample

KEYS = {"a": "a", "1": "a", "b": "b", "2": "b", "t": "tie", "tie": "tie", "s": "skip", "skip": "skip"}


def read_prompts(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FidanError(f"{path}: prompt file not found")
    out = []
    if path.suffix == ".jsonl":
        for number, record in read_jsonl(path):
            text = record.get("prompt") or record.get("question")
            if not isinstance(text, str):
                raise FidanError(f"{path}:{number}: no 'prompt' or 'question' text")
            out.append(text)
    else:
        out = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not out:
        raise FidanError(f"{path}: no prompts in the file")
    return out


def already_labelled(path: Path) -> set[str]:
    if not path.exists():
        return set()
    # a torn last line is skipped here; the reward stage's loader reports it
    return {r["prompt"] for _, r in read_jsonl(path, on_error="skip") if isinstance(r.get("prompt"), str)}


def label(model, tok, prompts: list[str], out: Path, *, max_tokens: int, temperature: float, seed: int,
          model_name: str, user: str, consent: bool = False, ask: Callable[[str], str] = input,
          say: Callable[[str], None] = print, limit: int = 0) -> Counter:
    """Run the labelling loop; returns how many of each choice were recorded. Without ``consent``
    the person is asked first, and nothing is written unless they agree."""
    if not consent:
        say(f"Your choices will be kept in {out}: each prompt, both answers, your choice, the time and your "
            f"anonymous id {user}.\nThey train the next reward model. `fidan forget --user {user}` takes them back.")
        try:
            agreed = ask("Keep your choices for this? [y/N] ").strip().lower() in ("y", "yes")
        except (EOFError, KeyboardInterrupt):
            agreed = False
        if not agreed:
            say("nothing recorded (no consent)")
            return Counter()
    seen = already_labelled(out)
    todo = [p for p in prompts if p not in seen]
    if limit:
        todo = todo[:limit]
    say(f"{len(todo)} prompts to label ({sum(p in seen for p in prompts)} already in {out}). "
        "Keys: a / b = better answer, t = tie, s = skip, q = quit.")
    counts: Counter = Counter()
    room = model.cfg.context - max_tokens
    for n, prompt in enumerate(todo, start=1):
        ids = prompt_ids(tok, prompt, room)
        first, second = sample(model, tok, [ids, ids], max_tokens, temperature, seed + n)
        a, b = (tok.decode(ans.ids, skip_special=True).strip() for ans in (first, second))
        say(f"\n[{n}/{len(todo)}] {prompt}\n  a: {a}\n  b: {b}")
        while True:
            try:
                key = ask("better? [a/b/t/s/q] ").strip().lower()
            except (EOFError, KeyboardInterrupt):
                key = "q"
            if key in ("q", "quit"):
                say(f"stopped; recorded {dict(counts)} in {out}")
                return counts
            if key in KEYS:
                break
            say("  type a, b, t (tie), s (skip) or q (quit)")
        choice = KEYS[key]
        preferences.append(out, preferences.record(prompt, a, b, choice, "human-cli", model=model_name,
                                                   time=int(time.time()), user=user, consent=True))
        counts[choice] += 1
    say(f"done; recorded {dict(counts)} in {out} (your id: {user})")
    return counts
