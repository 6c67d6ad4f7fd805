"""Dashboards: TensorBoard and Weights & Biases get what ``metrics.jsonl`` gets (``train.log_to``).

``metrics.jsonl`` stays the source of truth; a dashboard is a copy of its records for people who
watch training in a browser. The loop hands every record to :func:`open_sink`'s object (its
``log`` and ``close``), nothing else: a training record's numbers become ``train/<key>`` scalars
at its step, an evaluation's become ``eval/<key>``.

* ``tensorboard``: event files under ``<run>/tb/<stage folder>/`` (``tensorboard --logdir
  runs/<name>/tb``); a resumed stage drops the events after its checkpoint's step (``purge_step``),
  as ``metrics.jsonl`` does.
* ``wandb``: a run named ``<run>-<stage folder>`` in project ``fidan``, its files under
  ``<run>/wandb/``; ``WANDB_MODE=offline`` works without a network (``wandb sync`` uploads later).
  A resumed stage continues the same W&B run (its id is kept in ``<stage folder>/wandb_id``).

Only process rank 0 logs (under torchrun every rank would repeat the same numbers).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from fidan import atomic
from fidan.errors import FidanError

SKIP = {"step", "eval"}


def scalars(record: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """The record's prefix (``train`` or ``eval``) and its numbers by key."""
    prefix = "eval" if record.get("eval") else "train"
    return prefix, {k: float(v) for k, v in record.items()
                    if k not in SKIP and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoard:
    def __init__(self, folder: Path, resume_step: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise FidanError("--train.log_to=tensorboard needs TensorBoard: pip install 'fidan[dashboards]'") from None
        self.writer = SummaryWriter(str(folder), purge_step=resume_step)

    def log(self, record: dict[str, Any]) -> None:
        prefix, values = scalars(record)
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, record.get("step", 0))

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, run_path: Path, out: Path, name: str, config: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise FidanError("--train.log_to=wandb needs Weights & Biases: pip install 'fidan[dashboards]'") from None
        id_file = out / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        atomic.write_text(id_file, run_id + "\n")
        (run_path / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fidan"), name=name, id=run_id,
                              resume="allow", dir=str(run_path), config=config, reinit="create_new")

    def log(self, record: dict[str, Any]) -> None:
        prefix, values = scalars(record)
        self.run.log({f"{prefix}/{k}": v for k, v in values.items()}, step=record.get("step", 0))

    def close(self) -> None:
        self.run.finish()


class Sinks:
    """Every chosen dashboard, logged to and closed together."""

    def __init__(self, sinks: list):
        self.sinks = sinks

    def log(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.log(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_sink(log_to: str, run_path: Path, out: Path, resume_step: int | None, config: dict[str, Any],
              rank: int = 0) -> Sinks | None:
    """The dashboards ``log_to`` names for the stage writing into ``out`` (None: just metrics.jsonl)."""
    kinds = [k for k in log_to.split(",") if k and k != "none"]
    if not kinds or rank != 0:
        return None
    try:
        folder = out.resolve().relative_to(run_path.resolve()).as_posix().replace("/", "-")
    except ValueError:
        folder = out.name
    sinks: list = []
    if "tensorboard" in kinds:
        sinks.append(TensorBoard(run_path / "tb" / folder, resume_step))
    if "wandb" in kinds:
        sinks.append(WandB(run_path, out, f"{run_path.name}-{folder}", config))
    return Sinks(sinks)
