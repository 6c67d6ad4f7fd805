"""The shared training loop used by every training stage.

It knows nothing about what is being learned: the caller supplies a model, a ``batch(step,
micro)`` function that returns the same micro-batch for the same arguments (so a resumed run
sees exactly the data an uninterrupted one would), a ``loss(model, batch)`` function, and an
optional ``evaluate(model)``. The loop does AdamW with warm-up and decay, gradient accumulation,
clipping, periodic evaluation, ``metrics.jsonl`` logging, a progress bar with tokens/s and MFU,
and atomic checkpoints it resumes from. It runs on the stage context's device and precision and
writes into the stage's output folder.

Pre-training hands it ``[train]`` itself; every other training stage builds its settings with
:func:`inherit`: its own steps, batch and learning rate, plus the ``[train]`` settings all
training stages share (``config.INHERITED_TRAIN``, declared in their StageSpec).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fidan import atomic
from fidan.config import INHERITED_TRAIN, TrainConfig
from fidan.context import StageContext
from fidan.model.gpt import GPT
from fidan.model.io import save_model
from fidan.progress import Progress
from fidan.train import checkpoint
from fidan.train.energy import run_energy_kwh
from fidan.train.perf import matmul_peak_flops
from fidan.train.schedule import lr_at

Batch = Any
LossFn = Callable[[GPT, Batch], tuple[torch.Tensor, int]]  # (mean loss, tokens in the batch)


@dataclass
class Task:
    """What a stage asks the loop to train.

    Supervised stages give ``batch`` and ``loss``, and the loop accumulates, clips and steps.
    Reinforcement learning gives ``step`` instead, an outer step that collects rollouts and
    then optimises on them with the stage's own ``optimizer`` (its param groups, its lrs), and
    returns the step's record for ``metrics.jsonl``; ``state``/``load_state`` carry what else
    must survive a restart (PPO's adaptive KL coefficient and reward moments). Either way the
    loop owns resume, checkpoint cadence, metrics truncation and the final save."""
    name: str                                          # stage name, used in messages and model.json
    batch: Callable[[int, int], Batch] | None = None   # (step, micro) -> batch
    loss: LossFn | None = None
    evaluate: Callable[[GPT], dict[str, float]] | None = None
    flops_per_token: float = 0.0
    info: dict[str, Any] | None = None                 # extra provenance for model.json
    parameters: list[torch.nn.Parameter] | None = None # what the optimizer holds (default: the trainable ones)
    on_step: Callable[[int], None] | None = None       # called before each step (e.g. gradual unfreezing)
    step: Callable[[int], dict[str, Any]] | None = None  # an outer step (RL); its record may give "tokens"
    optimizer: torch.optim.Optimizer | None = None     # the stage's own optimizer (with ``step``)
    state: Callable[[], dict[str, Any]] | None = None  # extra state for checkpoints
    load_state: Callable[[dict[str, Any]], None] | None = None
    export: Callable[[torch.nn.Module], torch.nn.Module] | None = None  # what to save at the end (default: the model)
    describe: Callable[[dict[str, Any]], str] | None = None  # a progress line for an outer step's record


def inherit(ctx: StageContext, **own: Any) -> TrainConfig:
    """Loop settings for a training stage other than pre-training: the shared ``[train]``
    settings plus the stage's own (steps, batch, lr, ...)."""
    shared = {k: getattr(ctx.cfg.train, k) for k in INHERITED_TRAIN}
    return TrainConfig(**{**shared, **own})


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig,
                   params: list[torch.nn.Parameter] | None = None) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only. Parameters whose gradient stays None (frozen) are
    skipped by the update entirely, decay included, so they stay bit-for-bit unchanged."""
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)


class Metrics:
    """Append-only ``metrics.jsonl``; on resume, records after the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is None:
            atomic.write_text(path, "")
        elif path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic.write_text(path, "".join(line + "\n" for line in kept))
        self.file = open(path, "a", encoding="utf-8")

    def last_eval(self) -> dict[str, float]:
        """The newest evaluation already recorded (used when resuming a finished run)."""
        evals = [json.loads(line) for line in self.path.read_text().splitlines() if '"eval": true' in line]
        skip = {"step", "tokens", "elapsed_s", "wall_s", "eval"}
        return {k: v for k, v in evals[-1].items() if k not in skip} if evals else {}

    def log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def train(model: GPT, cfg: TrainConfig, task: Task, ctx: StageContext,
          out: Path | None = None) -> tuple[GPT, dict[str, Any]]:
    """Train ``model`` per ``cfg`` on the context's device, resuming from ``<out>/ckpt`` if a
    checkpoint of the same stage hash exists; write the final model to ``out`` (default: the
    stage's folder). Returns the trained model and a summary."""
    out = out or ctx.out
    quiet, config_hash = ctx.quiet, ctx.hash
    device = ctx.device
    say = (lambda *a: None) if quiet else tqdm.write
    ckpt_root = out / "ckpt"
    resumed = checkpoint.latest(ckpt_root, device, warn=say) if ckpt_root.exists() else None
    if resumed and resumed.state.get("config_hash") != config_hash:
        stale = out / f"ckpt-{resumed.state.get('config_hash', 'old')}"
        say(f"checkpoints in {ckpt_root} are from another config; moved to {stale}, starting afresh")
        ckpt_root.rename(stale)
        resumed = None
    if resumed:
        model.load_state_dict(resumed.weights)
    model.to(device)
    optimizer = task.optimizer or make_optimizer(model, cfg, task.parameters)
    start, tokens_seen, elapsed = 0, 0, 0.0
    if resumed:
        optimizer.load_state_dict(resumed.state["optimizer"])
        torch.set_rng_state(resumed.state["torch_rng"].cpu())
        if "cuda_rng" in resumed.state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in resumed.state["cuda_rng"]])
        start = resumed.state["step"]
        tokens_seen, elapsed = resumed.state["tokens"], resumed.state["elapsed"]
        if task.load_state is not None:
            task.load_state(resumed.state["task"])
        say(f"resuming {task.name} from {resumed.folder.name} (step {start})")
    else:
        torch.manual_seed(int(config_hash[:8], 16))
    metrics = Metrics(out / "metrics.jsonl", start if resumed else None)
    run_model = torch.compile(model) if ctx.cfg.run.compile else model
    autocast = ctx.autocast()
    peak = matmul_peak_flops(device.type)
    info = {"stage": task.name, "config_hash": config_hash, **(task.info or {})}
    last_eval: dict[str, float] = {}
    wall_start = time.perf_counter()  # this session's wall clock, evaluations included

    def evaluate(step: int) -> None:
        nonlocal last_eval
        if task.evaluate is None:
            return
        model.eval()
        with torch.no_grad(), autocast:
            last_eval = task.evaluate(model)
        model.train()
        metrics.log({"step": step, "eval": True, "tokens": tokens_seen, "elapsed_s": round(elapsed, 3),
                     "wall_s": round(time.perf_counter() - wall_start, 3), **last_eval})
        say(f"{task.name} step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))

    if start == 0:
        evaluate(0)
    elif start == cfg.steps:
        last_eval = metrics.last_eval()
    model.train()
    bar = Progress(total=cfg.steps, initial=start, desc=task.name, unit="step", disable=quiet,
                   dynamic_ncols=True, mininterval=0.5)   # a bar on a terminal, log lines elsewhere
    window_t, window_tokens = time.perf_counter(), 0
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        if task.on_step is not None:
            task.on_step(step)
        done = step + 1
        if task.step is not None:  # an outer step: rollouts, then the stage's own updates
            record = task.step(step)
            step_tokens = int(record.pop("tokens", 0))
            elapsed += time.perf_counter() - t0
            tokens_seen += step_tokens
            metrics.log({"step": done, **record, "tokens": tokens_seen, "elapsed_s": round(elapsed, 2)})
            if task.describe is not None and (done % cfg.log_every == 0 or step == start):
                say(f"{task.name} step {done}/{cfg.steps}: {task.describe(record)}")
        else:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            total_loss, step_tokens = 0.0, 0
            for micro in range(cfg.grad_accum):
                batch = task.batch(step, micro)
                with autocast:
                    loss, n_tokens = task.loss(run_model, batch)
                (loss / cfg.grad_accum).backward()
                total_loss += loss.item() / cfg.grad_accum
                step_tokens += n_tokens
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf")).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            elapsed += time.perf_counter() - t0
            tokens_seen += step_tokens
            window_tokens += step_tokens
            if done % cfg.log_every == 0 or done == cfg.steps:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_t, 1e-9)
                window_t, window_tokens = now, 0
                mfu = tps * task.flops_per_token / peak if task.flops_per_token else 0.0
                metrics.log({"step": done, "loss": round(total_loss, 6), "lr": lr, "grad_norm": round(grad_norm, 4),
                             "tokens": tokens_seen, "elapsed_s": round(elapsed, 3), "tok_per_s": round(tps, 1),
                             "mfu": round(mfu, 4)})
                bar.set_postfix(loss=f"{total_loss:.3f}", tok_s=f"{tps:,.0f}", mfu=f"{mfu:.1%}", refresh=False)
        bar.update(1)
        if done % cfg.eval_every == 0 or done == cfg.steps:
            evaluate(done)
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            extra = {"tokens": tokens_seen, "elapsed": elapsed, "config_hash": config_hash}
            if task.state is not None:
                extra["task"] = task.state()
            checkpoint.save(ckpt_root, model, optimizer, done, extra, info, cfg.keep_checkpoints)
    bar.close()
    if not last_eval and task.evaluate is not None:  # resumed from the final checkpoint
        evaluate(cfg.steps)
    metrics.close()
    save_model(out, task.export(model) if task.export else model, {**info, "step": cfg.steps, "tokens": tokens_seen})
    tps = tokens_seen / max(elapsed, 1e-9)
    return model, {"steps": cfg.steps, "tokens": tokens_seen, "train_seconds": round(elapsed, 1),
                   "tokens_per_s": round(tps), "mfu": round(tps * task.flops_per_token / peak, 4),
                   "flops": float(tokens_seen * task.flops_per_token),
                   "energy_kwh": round(run_energy_kwh(device.type, elapsed), 6), "device": device.type,
                   **last_eval}
