"""Staged outputs: a stage writes into a staging folder, and its outputs replace the old ones,
stamp last, only once it has succeeded.

While stage ``<instance>`` runs, its ``ctx.out`` is ``runs/<name>/.staging/<instance>/``; the
folder the rest of fidan reads (``pretrain/``, ``data/``, ``sft/``...) keeps the previous outputs
and the previous stamp until the stage returns. A stage that fails or is killed therefore
leaves the run as it was: old outputs, old stamp, both consistent. Its staging folder stays, so
the next attempt with the same settings resumes from the checkpoints it holds; an attempt with
other settings starts it afresh.

Committing is a small journal, so a crash part-way through is finished by the next command
that takes the run's lock (:func:`recover`):

1. ``.commit.json`` (the stamp to write) is written atomically into the staging folder;
2. the old stamp is removed;
3. each top-level entry of the staging folder is moved into the output folder, the entry it
   replaces first moved aside into the staging folder's ``.trash/`` (repeating a half-done
   step is harmless: an entry already moved is no longer in the staging folder);
4. the stamp is written, and the staging folder removed.

Entries of the output folder that the new run did not produce stay (another stage's output
nested inside it, such as ``data/tokens/``, or ``sft/methods/``). A re-run with the settings
of the stamp in place, or with no stamp at all (a run killed before staging existed), starts its
staging folder with hard links to the resumable state (``StageSpec.resume``: checkpoints,
metrics, the data stage's shard work), so repeating a finished training stage resumes from its
last checkpoint as before; the training loop still checks each checkpoint's own hash.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from fidan import atomic

STAGING = ".staging"
COMMIT = ".commit.json"
HASH = ".hash"
TRASH = ".trash"


def folder(run_path: Path, instance: str) -> Path:
    return Path(run_path) / STAGING / instance


def prepare(run_path: Path, instance: str, final: Path, config_hash: str, stamp_hash: str | None,
            resume: tuple[str, ...]) -> Path:
    """The staging folder for this attempt: the previous attempt's when it had the same hash,
    else a fresh one (seeded with links to ``final``'s resumable state unless a stamp says
    ``final`` was made with other settings)."""
    staging = folder(run_path, instance)
    try:
        same = (staging / HASH).read_text().strip() == config_hash
    except OSError:
        same = False
    if same and not (staging / COMMIT).exists():
        return staging
    if staging.exists():
        shutil.rmtree(staging)
    tmp = staging.with_name(f".{instance}.new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if stamp_hash in (None, config_hash):
        for name in resume:
            _link_copy(final / name, tmp / name)
    atomic.write_text(tmp / HASH, config_hash + "\n")
    os.replace(tmp, staging)
    return staging


def commit(run_path: Path, instance: str, final: Path, stamp: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Move the staged outputs into ``final`` and write ``record`` as the stamp, in the journaled
    order of the module docstring. Paths inside ``record`` that name the staging folder are
    rewritten to name ``final``. Returns the record as written."""
    staging = folder(run_path, instance)
    record = _relocate(record, str(staging), str(final))
    atomic.write_json(staging / COMMIT, {"final": str(final), "stamp": str(stamp), "record": record})
    _finish(staging)
    return record


def recover(run_path: Path) -> list[str]:
    """Finish every commit a crash interrupted (a staging folder holding ``.commit.json``);
    returns the instances finished."""
    root = Path(run_path) / STAGING
    done = []
    if root.is_dir():
        for staging in sorted(root.iterdir()):
            if (staging / COMMIT).exists():
                _finish(staging)
                done.append(staging.name)
    return done


def _finish(staging: Path) -> None:
    journal = json.loads((staging / COMMIT).read_text())
    final, stamp = Path(journal["final"]), Path(journal["stamp"])
    stamp.unlink(missing_ok=True)
    final.mkdir(parents=True, exist_ok=True)
    trash = staging / TRASH
    for entry in sorted(staging.iterdir()):
        if entry.name.startswith("."):  # the journal, the hash, the trash, temporary files
            continue
        target = final / entry.name
        if target.exists() or target.is_symlink():
            trash.mkdir(exist_ok=True)
            aside = trash / entry.name
            if aside.exists():
                shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
            os.replace(target, aside)
        os.replace(entry, target)
    atomic.fsync_dir(final)
    atomic.write_json(stamp, journal["record"])
    shutil.rmtree(staging)


def _link_copy(src: Path, dst: Path) -> None:
    """Hard links where the file system allows (every fidan write replaces a file, never edits
    it in place, so a linked file is never changed under the other name), else copies."""
    if not src.exists():
        return
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link)
    else:
        link(src, dst)


def _relocate(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return new + value[len(old):] if value == old or value.startswith(old + os.sep) else value
    if isinstance(value, dict):
        return {k: _relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocate(v, old, new) for v in value]
    return value
