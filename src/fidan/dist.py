"""Several processes, one run: torchrun's environment, the process group, and the few collectives
the stages need.

Under ``torchrun --nproc_per_node=N -m fidan <stage>`` every process reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init` opens the process group the device asks for
(NCCL on CUDA, with gloo beside it for CPU-side values; gloo on the CPU). Rank 0 is the only
writer: it holds the run's lock, writes models, metrics, checkpoints and stamps, and the ranks
meet at :func:`barrier` before anyone reads what it wrote. In one process every function here is
a no-op (a sum is the value itself), so the stages are written once for both.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    """True when a process group with more than one member is open. One process never imports
    torch here: the data stage would pay its import (seconds, and hundreds of MB) for nothing."""
    if world_size() <= 1:
        return False
    import torch.distributed as td
    return td.is_available() and td.is_initialized()


def init(device_type: str) -> bool:
    """Open the process group from torchrun's environment (once); False in a single process.
    ``FIDAN_DIST_TIMEOUT`` (seconds, default 3600) bounds how long a rank waits for the others,
    e.g. while rank 0 alone runs an evaluation."""
    if world_size() <= 1:
        return False
    import torch
    import torch.distributed as td

    if td.is_initialized():
        return True
    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
        backend = "cuda:nccl,cpu:gloo"  # NCCL for the model's tensors, gloo for CPU-side counters
    else:
        backend = "gloo"
    timeout = timedelta(seconds=float(os.environ.get("FIDAN_DIST_TIMEOUT", 3600)))
    td.init_process_group(backend=backend, timeout=timeout)
    return True


def barrier() -> None:
    if active():
        import torch.distributed as td
        td.barrier()


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over the ranks, in float64 on the CPU (gloo)."""
    if not active():
        return [float(v) for v in values]
    import torch
    import torch.distributed as td

    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    td.all_reduce(t, op=td.ReduceOp.SUM)
    return t.tolist()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable value)."""
    if not active():
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    import torch.distributed as td

    out: list[Any] = [None] * world_size()
    td.all_gather_object(out, obj)
    return out


def share(items: Sequence[Any]) -> Sequence[Any]:
    """This rank's share of ``items``: every ``world_size``-th item from its rank on (disjoint, and
    together all of them)."""
    return items[rank()::world_size()]


def all_mean(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (same keys on every rank)."""
    if not active():
        return dict(values)
    keys = sorted(values)
    return {k: v / world_size() for k, v in zip(keys, all_sum([values[k] for k in keys]))}


def average_gradients(parameters) -> None:
    """Average the ranks' gradients in place (``torch.distributed.all_reduce``), for the updates
    the RL algorithms make outside the loop's DDP wrapper. A parameter without a gradient on this
    rank contributes zeros, so every rank takes part in every reduction."""
    if not active():
        return
    import torch
    import torch.distributed as td

    for p in parameters:
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        td.all_reduce(p.grad, op=td.ReduceOp.SUM)
        p.grad.div_(world_size())


def need_multiple(value: int, name: str) -> None:
    """A per-step count that the ranks split evenly (one-line error otherwise)."""
    from fidan.errors import FidanError
    if value % world_size():
        raise FidanError(f"{name}={value} must be a multiple of the {world_size()} ranks under torchrun")
