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

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fidan import atomic, dist
from fidan.config import INHERITED_TRAIN, TrainConfig
from fidan.context import StageContext
from fidan.errors import FidanError
from fidan.model.gpt import GPT
from fidan.model.io import save_model
from fidan.progress import Progress
from fidan.train import checkpoint, dashboard, parallel, perf
from fidan.train import muon as muon_cpu
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
    optimizer_kind: str = "adamw"       # the loop's optimizer: "adamw" or "lamb" (make_optimizer)
    every_parameter_used: bool = False  # every trainable parameter gets a gradient each step (DDP skips a
                                        # search for unused ones; heads on a trunk leave lm_head unused)


def inherit(ctx: StageContext, **own: Any) -> TrainConfig:
    """Loop settings for a training stage other than pre-training: the shared ``[train]``
    settings plus the stage's own (steps, batch, lr, ...)."""
    shared = {k: getattr(ctx.cfg.train, k) for k in INHERITED_TRAIN}
    return TrainConfig(**{**shared, **own})


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig,
                   params: list[torch.nn.Parameter] | None = None, fused: bool = False,
                   kind: str = "adamw") -> torch.optim.Optimizer:
    """AdamW (or ``kind="lamb"``: LAMB's layer-wise trust ratios, ``train/lamb.py``, for every
    group); weight decay on matrices only (``fused``: AdamW's one-kernel CUDA implementation).
    Parameters whose gradient stays None (frozen) are skipped by the update entirely, decay
    included, so they stay bit-for-bit unchanged.

    ``head_lr`` gives an untied output head its own group; ``optimizer="muon"`` hands the
    blocks' weight matrices to Muon (``torch.optim.Muon``; on the CPU ``train/muon.py``'s float32
    version of it), the embedding, head and norms staying on AdamW. Each group's ``lr_scale`` is
    its peak lr over ``cfg.lr``: the loop sets ``lr = lr_at(step) * lr_scale``, so every group
    follows the one schedule."""
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    names = {id(p): n for n, p in model.named_parameters()}
    head = getattr(model, "lm_head", None)
    tied = head is not None and head.weight is getattr(getattr(model, "embed", None), "weight", None)
    own_head = [p for p in params if cfg.head_lr and not tied and head is not None and p is head.weight]

    def in_blocks(p: torch.nn.Parameter) -> bool:
        return p.dim() == 2 and names.get(id(p), "").startswith("blocks.")
    use_muon = kind != "lamb" and getattr(cfg, "optimizer", "adamw") == "muon"
    matrices = [p for p in params if use_muon and in_blocks(p)]
    taken = {id(p) for p in own_head + matrices}
    rest = [p for p in params if id(p) not in taken]
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
    if own_head:
        groups.append({"params": own_head, "weight_decay": cfg.weight_decay, "lr_scale": cfg.head_lr / cfg.lr})
    if kind == "lamb":
        from fidan.train.lamb import Lamb
        return Lamb([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    adamw = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                              eps=1e-8, **({"fused": True} if fused else {}))
    if not matrices:
        return adamw
    if any(type(p.data).__name__ == "DTensor" for p in matrices):
        raise FidanError("--train.optimizer=muon needs whole weight matrices; it does not run on FSDP-sharded "
                         "parameters (use --train.parallel=ddp)")
    group = [{"params": matrices, "lr_scale": cfg.muon_lr / cfg.lr}]
    if matrices[0].device.type == "cpu":  # torch's Muon orthogonalises in bfloat16: ~50x slower on a CPU
        muon = muon_cpu.Muon(group, lr=cfg.muon_lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum)
    else:
        muon = torch.optim.Muon(group, lr=cfg.muon_lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum,
                                adjust_lr_fn="original")
    return Optimizers(adamw, muon)


def set_lr(optimizer, lr: float) -> None:
    """The schedule's lr for this step on every group, times the group's ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class Optimizers:
    """Several optimizers stepped as one (what the loop and the checkpoints need of one)."""

    def __init__(self, *parts: torch.optim.Optimizer):
        self.parts = parts

    @property
    def param_groups(self) -> list[dict]:
        return [g for part in self.parts for g in part.param_groups]

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state: dict) -> None:
        if len(state.get("parts", ())) != len(self.parts):
            raise FidanError("the checkpoint's optimizer state does not match --train.optimizer; "
                             "resume with the optimizer it was written with")
        for part, own in zip(self.parts, state["parts"]):
            part.load_state_dict(own)


class Metrics:
    """Append-only ``metrics.jsonl``; on resume, records after the checkpoint's step are dropped.
    ``sink`` (``train/dashboard.py``: TensorBoard, W&B) gets a copy of every record."""

    def __init__(self, path: Path, resume_step: int | None, sink=None):
        self.path, self.sink = path, sink
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
        skip = {"step", "tokens", "elapsed_s", "cpu_s", "wall_s", "eval"}
        return {k: v for k, v in evals[-1].items() if k not in skip} if evals else {}

    def log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.sink is not None:
            self.sink.log(record)

    def close(self) -> None:
        self.file.close()
        if self.sink is not None:
            self.sink.close()


class _NoMetrics(Metrics):
    """What a rank other than 0 keeps: nothing (rank 0 writes ``metrics.jsonl``)."""

    def __init__(self, path: Path):
        self.path = path

    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _to_device(batch: Batch, device: torch.device) -> Batch:
    """On CUDA, a batch of CPU tensors goes over in pinned memory without blocking the host."""
    if device.type != "cuda":
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory().to(device, non_blocking=True) if batch.device.type == "cpu" else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    return batch


def train(model: GPT, cfg: TrainConfig, task: Task, ctx: StageContext,
          out: Path | None = None) -> tuple[GPT, dict[str, Any]]:
    """Train ``model`` per ``cfg`` on the context's device, resuming from ``<out>/ckpt`` if a
    checkpoint of the same stage hash exists; write the final model to ``out`` (default: the
    stage's folder). Returns the trained model and a summary.

    Under torchrun (``ctx.world_size`` > 1) every rank runs this with the same arguments.
    ``grad_accum`` counts the micro-batches of one optimizer step over all ranks: rank ``r`` of
    ``N`` takes micro-batches ``r*a .. r*a+a-1`` (``a = grad_accum / N``), so the step sees the
    same micro-batches, and the same averaged gradient, at any world size: N ranks with ``a``
    each equal one process with ``grad_accum = N*a``, the stage hash is the same, and a checkpoint
    resumes at another world size. The model is replicated (``train.parallel=ddp``) or sharded
    (``fsdp``, sharded checkpoints). Rank 0 alone writes metrics, checkpoints and the model."""
    out = out or ctx.out
    config_hash = ctx.hash
    device = ctx.device
    rank, world = dist.rank(), dist.world_size()
    main = rank == 0
    quiet = ctx.quiet or not main
    say = (lambda *a: None) if quiet else tqdm.write
    kind = parallel.mode(cfg.parallel)
    if cfg.grad_accum % world and task.step is None:
        raise FidanError(f"{task.name}: grad_accum={cfg.grad_accum} (micro-batches per step over all ranks) "
                         f"must be a multiple of the {world} ranks")
    accum = cfg.grad_accum // world  # this rank's share of each step's micro-batches
    if kind != "none" and task.step is not None and kind == "fsdp":
        raise FidanError(f"{task.name}: train.parallel=fsdp is for the supervised stages; use "
                         f"--train.parallel=ddp for on-policy RL")
    ckpt_root = out / "ckpt"
    found = None
    if main and ckpt_root.exists():
        found = checkpoint.newest_intact(ckpt_root, warn=say)
        old = checkpoint.read(found, "cpu").state.get("config_hash", "old") if found is not None else config_hash
        if old != config_hash:
            stale = out / f"ckpt-{old}"
            say(f"checkpoints in {ckpt_root} are from another config; moved to {stale}, starting afresh")
            ckpt_root.rename(stale)
            found = None
    found = dist.broadcast(str(found) if found else None)
    resumed = checkpoint.read(Path(found), device) if found else None
    if resumed and not resumed.sharded:
        model.load_state_dict(resumed.weights)
    model.to(device)
    names = {id(p): n for n, p in model.named_parameters()}
    chosen = [names[id(p)] for p in task.parameters] if task.parameters is not None else None
    template = parallel.skeleton(model) if kind == "fsdp" else None
    wrapped = parallel.wrap(model, kind, device, cfg.cpu_offload, find_unused=not task.every_parameter_used)
    trained = parallel.inner(wrapped)  # the module whose parameters the optimizer holds
    if task.optimizer is not None:
        optimizer = task.optimizer
    else:
        by_name = dict(trained.named_parameters())
        optimizer = make_optimizer(trained, cfg, [by_name[n] for n in chosen] if chosen is not None else None,
                                   fused=device.type == "cuda" and task.optimizer_kind == "adamw",
                                   kind=task.optimizer_kind)
    start, tokens_seen, elapsed = 0, 0, 0.0
    cpu_elapsed = 0.0  # this process's CPU seconds in the training steps (what a loaded machine does not inflate)
    if resumed:
        if resumed.sharded:
            checkpoint.load_sharded(resumed.folder, trained, optimizer)
        else:
            optimizer.load_state_dict(resumed.state["optimizer"])
        rngs = resumed.state.get("rank_rng")
        checkpoint.set_rng_state(rngs[rank] if rngs and rank < len(rngs) else
                                 {"torch": resumed.state["torch_rng"], **({"cuda": resumed.state["cuda_rng"]}
                                                                          if "cuda_rng" in resumed.state else {})})
        start = resumed.state["step"]
        tokens_seen, elapsed = resumed.state["tokens"], resumed.state["elapsed"]
        cpu_elapsed = resumed.state.get("cpu", 0.0)
        if task.load_state is not None:
            task.load_state(resumed.state["task"])
        say(f"resuming {task.name} from {resumed.folder.name} (step {start})")
    else:
        torch.manual_seed(int(config_hash[:8], 16) + rank)  # each rank its own dropout draws
    resume_step = start if resumed else None
    metrics = Metrics(out / "metrics.jsonl", resume_step, dashboard.open_sink(
        cfg.log_to, ctx.run.path, ctx.final_out if out == ctx.out else out, resume_step,
        {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}, ctx.rank)) \
        if main else _NoMetrics(out / "metrics.jsonl")
    run_model = torch.compile(wrapped) if ctx.cfg.run.compile else wrapped
    autocast = ctx.autocast()
    peak = matmul_peak_flops(device.type)
    info = {"stage": task.name, "config_hash": config_hash, **(task.info or {})}
    last_eval: dict[str, float] = {}
    wall_start = time.perf_counter()  # this session's wall clock, evaluations included

    def evaluate(step: int) -> None:
        nonlocal last_eval
        if task.evaluate is None:
            return
        wrapped.eval()
        with torch.no_grad(), autocast:
            last_eval = task.evaluate(trained)
        wrapped.train()
        metrics.log({"step": step, "eval": True, "tokens": tokens_seen, "elapsed_s": round(elapsed, 3),
                     "cpu_s": round(cpu_elapsed, 3),
                     "wall_s": round(time.perf_counter() - wall_start, 3), **last_eval})
        say(f"{task.name} step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))

    def save_checkpoint(done: int) -> None:
        extra = {"tokens": tokens_seen, "elapsed": elapsed, "cpu": cpu_elapsed, "config_hash": config_hash}
        if task.state is not None:
            extra["task"] = task.state()
        if kind == "fsdp":
            checkpoint.save_sharded(ckpt_root, trained, optimizer, done, extra, info, cfg.keep_checkpoints)
            return
        rngs = dist.gather(checkpoint.rng_state())
        if main:
            checkpoint.save(ckpt_root, trained, optimizer, done, {**extra, "rank_rng": rngs}, info,
                            cfg.keep_checkpoints)

    if start == 0:
        evaluate(0)
    elif start == cfg.steps:
        last_eval = metrics.last_eval()
    wrapped.train()
    bar = Progress(total=cfg.steps, initial=start, desc=task.name, unit="step", disable=quiet,
                   dynamic_ncols=True, mininterval=0.5)   # a bar on a terminal, log lines elsewhere
    window_t, window_tokens = time.perf_counter(), 0
    for step in range(start, cfg.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        if task.on_step is not None:
            task.on_step(step)
        done = step + 1
        if task.step is not None:  # an outer step: rollouts, then the stage's own updates
            record = task.step(step)
            step_tokens = int(dist.all_sum([record.pop("tokens", 0)])[0])
            elapsed += time.perf_counter() - t0
            tokens_seen += step_tokens
            metrics.log({"step": done, **record, "tokens": tokens_seen, "elapsed_s": round(elapsed, 2)})
            if task.describe is not None and (done % cfg.log_every == 0 or step == start):
                say(f"{task.name} step {done}/{cfg.steps}: {task.describe(record)}")
        else:
            lr = lr_at(step, cfg)
            set_lr(optimizer, lr)
            total_loss, step_tokens = 0.0, 0
            for micro in range(accum):
                batch = _to_device(task.batch(step, rank * accum + micro), device)
                with parallel.accumulating(wrapped, kind, last=micro == accum - 1):
                    with autocast:
                        loss, n_tokens = task.loss(run_model, batch)
                    (loss / accum).backward()  # DDP and FSDP average the ranks' gradients
                total_loss += loss.item() / accum
                step_tokens += n_tokens
            grad_norm = torch.nn.utils.clip_grad_norm_(trained.parameters(), cfg.grad_clip or float("inf"))
            if hasattr(grad_norm, "full_tensor"):  # a sharded model's norm is a DTensor
                grad_norm = grad_norm.full_tensor()
            grad_norm = grad_norm.item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if world > 1:
                total_loss, summed = dist.all_sum([total_loss, step_tokens])
                total_loss, step_tokens = total_loss / world, int(summed)
            elapsed += time.perf_counter() - t0
            cpu_elapsed += time.process_time() - c0
            tokens_seen += step_tokens
            window_tokens += step_tokens
            if done % cfg.log_every == 0 or done == cfg.steps:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_t, 1e-9)
                window_t, window_tokens = now, 0
                utilisation = perf.mfu(tps * task.flops_per_token, peak, world)
                metrics.log({"step": done, "loss": round(total_loss, 6), "lr": lr, "grad_norm": round(grad_norm, 4),
                             "tokens": tokens_seen, "elapsed_s": round(elapsed, 3), "cpu_s": round(cpu_elapsed, 3),
                             "tok_per_s": round(tps, 1),
                             "mfu": round(utilisation, 4)})
                bar.set_postfix(loss=f"{total_loss:.3f}", tok_s=f"{tps:,.0f}", mfu=f"{utilisation:.1%}", refresh=False)
        bar.update(1)
        if done % cfg.eval_every == 0 or done == cfg.steps:
            evaluate(done)
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            save_checkpoint(done)
    bar.close()
    if not last_eval and task.evaluate is not None:  # resumed from the final checkpoint
        evaluate(cfg.steps)
    metrics.close()
    model = parallel.plain_copy(wrapped, kind, template, device)
    if main:
        save_model(out, task.export(model) if task.export else model,
                   {**info, "step": cfg.steps, "tokens": tokens_seen})
    dist.barrier()
    tps = tokens_seen / max(elapsed, 1e-9)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # this process's peak resident memory (Linux reports KiB)
        import resource
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return model, {"steps": cfg.steps, "tokens": tokens_seen, "train_seconds": round(elapsed, 1),
                   "train_cpu_seconds": round(cpu_elapsed, 1),
                   "tokens_per_s": round(tps), "mfu": round(perf.mfu(tps * task.flops_per_token, peak, world), 4),
                   "peak_flops": peak,
                   "flops": float(tokens_seen * task.flops_per_token),
                   "energy_kwh": round(run_energy_kwh(device.type, elapsed) * world, 6), "device": device.type,
                   "world_size": world, "parallel": kind, "peak_memory_mb": round(peak_mb), **last_eval}
