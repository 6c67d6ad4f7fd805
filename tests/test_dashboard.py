"""--train.log_to: TensorBoard event files and an offline Weights & Biases run carry what metrics.jsonl carries."""
import json

import pytest

from conftest import micro_config
from fidan.eval.report import facts
from fidan.pipeline import run_stage
from fidan.train.dashboard import scalars

tb = pytest.importorskip("tensorboard")
wandb = pytest.importorskip("wandb")


def test_scalars_split_training_and_evaluation_records():
    assert scalars({"step": 3, "loss": 1.5, "lr": 0.1, "device": "cpu", "eval": False}) == \
        ("train", {"loss": 1.5, "lr": 0.1})
    assert scalars({"step": 3, "eval": True, "val_bpb": 2.0}) == ("eval", {"val_bpb": 2.0})


def test_sft_logs_to_tensorboard_and_offline_wandb(pretrained_copy, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, run = pretrained_copy
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = micro_config(run.path.parent, "micro", "train.steps=120", "sft.steps=4", "train.log_every=1",
                       "train.log_to=tensorboard,wandb")
    run_stage(cfg, run, "sft")
    records = [json.loads(line) for line in (run.path / "sft" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]

    events = EventAccumulator(str(run.path / "tb" / "sft"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([r["lr"] for r in train], rel=1e-6)

    offline = list((run.path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert (run.path / "sft" / "wandb_id").read_text().strip() in offline[0].name
    log = next(offline[0].glob("*.wandb")).read_bytes()  # the offline run's records (protobuf, values as JSON)
    assert b"train/loss" in log
    assert all(json.dumps(r["loss"]).encode() in log for r in train)

    links = dict(facts(run))["dashboards"]
    assert f"tensorboard --logdir {run.path / 'tb'}" in links and "wandb sync" in links
