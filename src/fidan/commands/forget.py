"""``fidan forget --user ID``: take one person's preference records back.

Removes the person's records from the run's ``preferences.jsonl`` (and from any further files
given), and from the copies the reward stage keeps (``reward/pairs.jsonl``,
``reward/heldout_pairs.jsonl``), each rewritten atomically. The models trained on them still
hold what they learned, so the stamps of the reward stage and of every stage after it are
removed: nothing claims to be up to date until `fidan pipeline` has trained them again without
the records.
"""
from __future__ import annotations

from pathlib import Path

from fidan.rlhf import preferences
from fidan.rundir import RunDir
from fidan.stages import STAGES


def downstream(name: str) -> list[str]:
    """``name`` and every stage that reads it, directly or not, in pipeline order."""
    found = {name}
    for stage in STAGES:
        if found & set(stage.after):
            found.add(stage.name)
    return [s.name for s in STAGES if s.name in found]


def forget(run: RunDir, user: str, files: list[Path] = ()) -> dict:
    with run.lock():
        removed = {}
        for path in [run.path / "preferences.jsonl", *files]:
            removed[str(path)] = preferences.forget(path, user)
        copies = sum(preferences.forget(run.path / "reward" / name, user)
                     for name in ("pairs.jsonl", "heldout_pairs.jsonl"))
        stale = []
        if sum(removed.values()) or copies:
            for name in downstream("reward"):
                for stamp in (run.path / "stages").glob(f"{name}*.json"):
                    stamp.unlink()
                    stale.append(stamp.stem)
    return {"removed": removed, "removed_copies": copies, "stale": stale}
