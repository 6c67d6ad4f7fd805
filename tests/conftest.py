"""Shared fixtures: a micro configuration that runs every stage in seconds."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from fidan.config import Config, build_config
from fidan.pipeline import run_stage
from fidan.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

MICRO = [
    "corpus.scale_mb=0.15", "corpus.n_places=8", "corpus.n_people=12", "corpus.n_creatures=6",
    "corpus.sft_conversations=400", "corpus.sentiment_examples=400",
    "sft.steps=30", "sft.batch_size=8", "sft.eval_items=6", "classify.steps=60", "classify.batch_size=16",
    "tokenizer.vocab_size=512",
    "model.context=64", "model.n_layer=2", "model.n_head=2", "model.n_kv_head=2", "model.d_model=64",
    "model.sparse_every=2", "model.window=16",
    "train.steps=40", "train.batch_size=8", "train.lr=3e-3", "train.warmup_steps=5", "train.eval_every=20",
    "train.ckpt_every=20", "train.log_every=5", "run.threads=1",
    "sample.num_samples=1", "sample.max_tokens=20", "eval.limit=12", "eval.steps_limit=12", "eval.math_limit=2",
    "reward.steps=10", "reward.samples=2", "rlhf.steps=2", "rlhf.prompts_per_step=8", "rlhf.ppo.minibatch=8",
    "rlhf.dpo.steps=2", "rlhf.eval_prompts=8", "rlhf.grpo.eval_items=6",
]


@pytest.fixture
def one_thread():
    """For tests of tiny models: a second thread only waits for the first (20x slower on a busy
    machine). A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
def one_by_one(complete):
    """A stand-in for ``scoring.complete_many`` made of a stand-in for ``complete``, called once
    per prompt in order (tests that fake a model's replies)."""
    return lambda model, tok, prompts, limits, stop=(), chat=False: [
        complete(model, tok, p, n, stop=stop, chat=chat) for p, n in zip(prompts, limits)]


def micro_config(root: Path, name: str = "micro", *extra: str) -> Config:
    return build_config(None, None, MICRO + [f"run.root={root}", f"run.name={name}", *extra])


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present (the shared data sets sit beside the repository)")
    return path


@pytest.fixture(scope="session")
def prepared_run(tmp_path_factory) -> tuple[Config, RunDir]:
    """A run directory with data, tokenizer and token shards done (read-only for tests)."""
    root = tmp_path_factory.mktemp("runs")
    cfg = micro_config(root)
    run = RunDir.for_config(cfg)
    for stage in ("data", "tokenizer", "tokens"):
        run_stage(cfg, run, stage)
    return cfg, run


@pytest.fixture
def run_copy(prepared_run, tmp_path) -> tuple[Config, RunDir]:
    """A private copy of the prepared run, free to modify."""
    cfg, run = prepared_run
    dest = tmp_path / "runs"
    shutil.copytree(run.path, dest / "micro")
    cfg = micro_config(dest)
    return cfg, RunDir(dest / "micro")


@pytest.fixture(scope="session")
def pretrained_run(prepared_run, tmp_path_factory) -> tuple[Config, RunDir]:
    """The prepared run plus a pre-trained micro model (read-only for tests)."""
    cfg, run = prepared_run
    dest = tmp_path_factory.mktemp("pretrained")
    shutil.copytree(run.path, dest / "micro")
    cfg = micro_config(dest, "micro", "train.steps=120")
    run = RunDir(dest / "micro")
    run_stage(cfg, run, "pretrain")
    return cfg, run


@pytest.fixture
def pretrained_copy(pretrained_run, tmp_path) -> tuple[Config, RunDir]:
    cfg, run = pretrained_run
    shutil.copytree(run.path, tmp_path / "runs" / "micro")
    return micro_config(tmp_path / "runs", "micro", "train.steps=120"), RunDir(tmp_path / "runs" / "micro")
