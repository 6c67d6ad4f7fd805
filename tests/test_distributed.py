"""Training under real `torchrun --nproc_per_node=2` (gloo on the CPU), against one process.

`train.grad_accum` counts an optimizer step's micro-batches over all ranks, so a 2-rank run
with grad_accum 2 (one micro-batch per rank) must retrace the 1-process run with grad_accum 2.
Micro model, a few steps: each launch costs about ten seconds on two shared cores."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import MICRO, ROOT, micro_config
from fidan.model.io import load_model
from fidan.pipeline import run_stage
from fidan.rundir import RunDir

pytestmark = pytest.mark.torchrun
TORCHRUN = Path(sys.executable).parent / "torchrun"
PRETRAIN = ["train.steps=30", "train.grad_accum=2", "train.log_every=1", "train.eval_every=10",
            "train.ckpt_every=10", "train.keep_checkpoints=5"]
SFT = ["sft.steps=6", "sft.grad_accum=2", "train.log_every=1"]


def torchrun(stage: str, root: Path, *extra: str, wait: bool = True):
    """`torchrun --nproc_per_node=2 -m fidan <stage>` on the micro config in ``root/micro``."""
    args = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "fidan", stage,
            *[f"--{o}" for o in MICRO + list(extra)], f"--run.root={root}", "--run.name=micro"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def losses(folder: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(folder) if "loss" in r}


def copy_run(run: RunDir, dest: Path) -> Path:
    shutil.copytree(run.path, dest / "micro", ignore=shutil.ignore_patterns(".lock"))
    return dest


def one_process(root: Path, stage: str, *extra: str) -> dict:
    cfg = micro_config(root, "micro", *extra)
    return run_stage(cfg, RunDir(root / "micro"), stage, quiet=True)


@pytest.fixture(scope="module")
def single(prepared_run, tmp_path_factory) -> Path:
    """The 1-process pre-training run every 2-process run is held against."""
    root = copy_run(prepared_run[1], tmp_path_factory.mktemp("single"))
    one_process(root, "pretrain", *PRETRAIN)
    return root / "micro"


@pytest.fixture(scope="module")
def fsdp_straight(prepared_run, tmp_path_factory) -> Path:
    """An uninterrupted 2-process FSDP pre-training run (every checkpoint kept)."""
    root = copy_run(prepared_run[1], tmp_path_factory.mktemp("fsdp"))
    torchrun("pretrain", root, *PRETRAIN, "train.parallel=fsdp")
    return root / "micro"


def assert_same_trajectory(a: Path, b: Path) -> None:
    la, lb = losses(a), losses(b)
    assert sorted(la) == sorted(lb) == list(range(1, 31))
    assert max(abs(la[s] - lb[s]) for s in la) < 1e-5
    ea = [r["val_bpb"] for r in records(a) if r.get("eval")]
    eb = [r["val_bpb"] for r in records(b) if r.get("eval")]
    assert len(ea) == len(eb) == 4 and max(abs(x - y) for x, y in zip(ea, eb)) < 1e-5


def pipeline(root: Path, *extra: str) -> str:
    """`fidan pipeline --nproc=2 --until=pretrain`: the training stage under torchrun."""
    args = [sys.executable, "-m", "fidan", "pipeline", "--nproc=2", "--until=pretrain",
            *[f"--{o}" for o in MICRO + list(extra)], f"--run.root={root}", "--run.name=micro"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_ddp_pretraining_matches_one_process_and_rank0_alone_writes(single, prepared_run, tmp_path):
    """Through `fidan pipeline --nproc=2`: the data stages are up to date, pretrain runs under torchrun."""
    root = copy_run(prepared_run[1], tmp_path)
    out = pipeline(root, *PRETRAIN)
    assert "tokens     up to date, skipped" in out and "torch.distributed.run --nproc_per_node=2" in out
    run = root / "micro"
    assert_same_trajectory(single / "pretrain", run / "pretrain")
    # one writer: the same files as one process, one stamp, one progress line per stage
    files = lambda folder: sorted(p.name for p in folder.iterdir())
    assert files(run / "pretrain") == files(single / "pretrain")
    assert out.count("✓ pretrain") == 1 and out.count("▶ pretrain") == 1
    stamp = json.loads((run / "stages" / "pretrain.json").read_text())
    assert stamp["summary"]["world_size"] == 2 and stamp["summary"]["parallel"] == "ddp"
    a, _ = load_model(single / "pretrain", "cpu")
    b, _ = load_model(run / "pretrain", "cpu")
    assert max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values())) < 1e-4
    again = pipeline(root, *PRETRAIN)  # finished: skipped, torchrun not started
    assert "pretrain   up to date, skipped" in again and "torch.distributed.run" not in again


def test_fsdp_pretraining_matches_one_process(single, fsdp_straight):
    assert_same_trajectory(single / "pretrain", fsdp_straight / "pretrain")
    ckpt = fsdp_straight / "pretrain" / "ckpt" / "step_0000030"
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "manifest.json"} <= {p.name for p in ckpt.iterdir()}
    model, info = load_model(fsdp_straight / "pretrain", "cpu")  # the final model is a plain one
    assert info["step"] == 30 and model.num_params() > 0


def _worker_pids(parent: int) -> list[int]:
    """The processes torchrun started (its children), from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            out.append(int(stat.parent.name))
    return sorted(out)


def test_sigkill_one_rank_then_relaunch_continues_bit_identically(fsdp_straight, prepared_run, tmp_path):
    root = copy_run(prepared_run[1], tmp_path)
    run = root / "micro"
    proc = torchrun("pretrain", root, *PRETRAIN, "train.parallel=fsdp", wait=False)
    ckpt = run / ".staging" / "pretrain" / "ckpt"   # a running stage writes here
    deadline = time.time() + 240
    while time.time() < deadline and not (ckpt / "step_0000010").exists() and proc.poll() is None:
        time.sleep(0.02)
    workers = _worker_pids(proc.pid)
    assert len(workers) == 2, proc.poll()
    os.kill(workers[-1], signal.SIGKILL)  # one rank dies; torchrun stops the other
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert not (run / "pretrain" / "model.safetensors").exists(), "finished before the kill"
    out = torchrun("pretrain", root, *PRETRAIN, "train.parallel=fsdp")
    assert "resuming pretrain from step_00000" in out
    assert losses(run / "pretrain") == losses(fsdp_straight / "pretrain")
    a, _ = load_model(fsdp_straight / "pretrain", "cpu")
    b, _ = load_model(run / "pretrain", "cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_two_process_sharded_checkpoint_resumes_in_one_process(fsdp_straight, tmp_path):
    shutil.copytree(fsdp_straight, tmp_path / "micro", ignore=shutil.ignore_patterns(".lock"))
    run = tmp_path / "micro"
    for later in ("step_0000020", "step_0000030"):
        shutil.rmtree(run / "pretrain" / "ckpt" / later)
    (run / "pretrain" / "model.safetensors").unlink()
    (run / "stages" / "pretrain.json").unlink()
    one_process(tmp_path, "pretrain", *PRETRAIN)
    ref = losses(fsdp_straight / "pretrain")
    got = losses(run / "pretrain")
    assert sorted(got) == list(range(1, 31))
    assert max(abs(got[s] - ref[s]) for s in range(11, 31)) < 1e-5


@pytest.mark.parametrize("method", [["sft.adversarial=0.01"], ["sft.method=gradual", "sft.gradual.every=2"]],
                         ids=["alum", "gradual"])
def test_ddp_sft_matches_one_process(pretrained_run, tmp_path, method):
    """ALUM (the full method whose loss also calls the model three times per micro-batch, through
    ``model.embed``) and gradual unfreezing (parameters thaw mid-run); the plain full method is
    ALUM's path without the adversarial term, so it is not run apart (the suite's time)."""
    cfg, run = pretrained_run
    single = copy_run(run, tmp_path / "one")
    one_process(single, "sft", "train.steps=120", *SFT, *method)
    double = copy_run(run, tmp_path / "two")
    torchrun("sft", double, "train.steps=120", *SFT, *method)
    a, b = losses(single / "micro" / "sft"), losses(double / "micro" / "sft")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-5
    summary = json.loads((double / "micro" / "sft" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6


@pytest.fixture(scope="module")
def rewarded(pretrained_run, tmp_path_factory) -> Path:
    """The pre-trained run plus SFT and the reward model (one process)."""
    root = copy_run(pretrained_run[1], tmp_path_factory.mktemp("rewarded"))
    one_process(root, "sft", "train.steps=120", *SFT)
    one_process(root, "reward", "train.steps=120", *SFT)
    return root


DPO = ["train.steps=120", *SFT, "rlhf.algo=dpo", "rlhf.dpo.steps=4", "rlhf.dpo.grad_accum=2", "rlhf.dpo.batch=4",
       "train.log_every=1"]


def test_ddp_dpo_matches_one_process(rewarded, tmp_path):
    one = copy_run(RunDir(rewarded / "micro"), tmp_path / "one")
    one_process(one, "rlhf", *DPO)
    two = copy_run(RunDir(rewarded / "micro"), tmp_path / "two")
    out = torchrun("rlhf", two, *DPO)
    a, b = losses(one / "micro" / "rlhf"), losses(two / "micro" / "rlhf")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4] and max(abs(a[s] - b[s]) for s in a) < 1e-5
    assert out.count("✓ rlhf") == 1  # rank 0 alone evaluates and reports


@pytest.mark.parametrize("extra", [["rlhf.algo=ppo", "rlhf.out=rlhf-ppo"],
                                   ["rlhf.algo=grpo", "rlhf.out=rlhf-grpo", "rlhf.prompts_per_step=16"]],
                         ids=["ppo", "grpo"])
def test_on_policy_rl_runs_on_two_ranks_with_one_writer(rewarded, tmp_path, extra):
    root = copy_run(RunDir(rewarded / "micro"), tmp_path)
    out = torchrun("rlhf", root, "train.steps=120", *SFT, *extra)
    folder = root / "micro" / extra[1].split("=")[1]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["steps"] == 2 and out.count("✓ rlhf") == 1
    assert [r["step"] for r in records(folder)] == [1, 2]  # one record per step: rank 0 alone logs
    if "rlhf.algo=ppo" in extra:  # (the micro model solves no word problem, so GRPO has no signal to move on)
        sft, _ = load_model(root / "micro" / "sft", "cpu")
        tuned, _ = load_model(folder, "cpu")
        assert any(not torch.equal(x, y) for x, y in zip(sft.state_dict().values(), tuned.state_dict().values()))


def test_classify_runs_on_two_ranks(rewarded, tmp_path):
    root = copy_run(RunDir(rewarded / "micro"), tmp_path)
    torchrun("classify", root, "train.steps=120", "classify.steps=10", "classify.grad_accum=2")
    summary = json.loads((root / "micro" / "stages" / "classify.json").read_text())["summary"]
    assert summary["world_size"] == 2 and summary["steps"] == 10 and summary["test_accuracy"] > 0


def _grpo_update_on_rank(rank: int, init_file: str, per_rank: list, out: str) -> None:
    """One rank of a 2-process gloo group: GRPO's loss on this rank's tokens, then the reduction."""
    import torch.distributed as td

    from fidan import dist
    from fidan.rlhf.grpo import token_mean_over_ranks
    os.environ.update(RANK=str(rank), WORLD_SIZE="2")
    td.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    w = torch.nn.Parameter(torch.tensor(1.0))
    x, mask = per_rank[rank]
    total = dist.all_sum([float(mask.sum())])[0]
    token_mean_over_ranks(x * w, mask, total).backward()
    dist.average_gradients([w])
    torch.save(w.grad, f"{out}.{rank}")
    td.destroy_process_group()


def test_a_grpo_rank_without_signal_does_not_shrink_the_update(tmp_path):
    """Rank 1 kept no group (all its answers scored alike): its zero gradient must not halve the
    step. The reduced gradient equals one process's over the same tokens."""
    from fidan.rlhf.ppo import masked_mean
    x0, m0 = torch.tensor([[0.5, -2.0, 3.0], [1.5, 4.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    x1, m1 = torch.zeros(0, 3), torch.zeros(0, 3)
    out = str(tmp_path / "grad")
    torch.multiprocessing.spawn(_grpo_update_on_rank, args=(str(tmp_path / "init"), [(x0, m0), (x1, m1)], out),
                                nprocs=2, join=True)
    w = torch.nn.Parameter(torch.tensor(1.0))
    masked_mean(torch.cat([x0, x1]) * w, torch.cat([m0, m1])).backward()
    for rank in (0, 1):
        assert torch.allclose(torch.load(f"{out}.{rank}"), w.grad)   # 7.0 / 5 tokens = 1.4, not 0.7
    assert float(w.grad) == pytest.approx(1.4)
