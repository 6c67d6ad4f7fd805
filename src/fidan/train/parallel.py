"""How the training loop spreads one model over the ranks of a torchrun job.

* ``none``: one process, the model as it is.
* ``ddp``: :class:`torch.nn.parallel.DistributedDataParallel`; every rank holds the whole model
  and the gradients are averaged over the ranks in the backward pass of the last micro-batch.
* ``fsdp``: FSDP2 (:func:`torch.distributed.fsdp.fully_shard`) on every transformer block and on
  the root, so each rank holds ``1/N`` of the parameters, gradients and optimizer state; bf16
  parameters with fp32 gradient reduction on CUDA, optional CPU offload.

The loop never looks inside: it calls :func:`wrap`, trains what comes back, and asks
:func:`plain_copy` for an ordinary model at the end (what ``model.safetensors`` holds and what
the stage evaluates afterwards).
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from fidan import dist
from fidan.errors import FidanError
from fidan.model.gpt import Block


class _DDP(nn.parallel.DistributedDataParallel):
    """DDP that lets a loss function reach the model's own attributes (``model.embed``, ``cfg``)."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def mode(requested: str) -> str:
    """``none`` in one process, else the requested ``train.parallel``."""
    return requested if dist.active() else "none"


def wrap(model: nn.Module, kind: str, device: torch.device, cpu_offload: bool = False,
         find_unused: bool = True) -> nn.Module:
    """The module to train: the model itself, a DDP wrapper, or the model sharded in place."""
    if kind == "none":
        return model
    if kind == "ddp":
        # Every parameter joins the reducer, so a method that thaws frozen ones later (gradual
        # unfreezing) still has their gradients averaged; frozen ones simply produce none.
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(True)
        wrapped = _DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                       find_unused_parameters=find_unused or not all(flags))
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        return wrapped
    if kind == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        mesh = init_device_mesh(device.type, (dist.world_size(),))
        options = {"mesh": mesh, "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy()}
        if device.type == "cuda":
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        blocks = [m for m in model.modules() if isinstance(m, Block)]
        if not blocks:
            raise FidanError("train.parallel=fsdp needs a model with transformer blocks to shard")
        for block in blocks:
            fully_shard(block, **options)
        fully_shard(model, **options)
        return model
    raise FidanError(f"train.parallel={kind!r}: expected ddp or fsdp")


def inner(run_model: nn.Module) -> nn.Module:
    """The model a wrapper trains (its parameters are the optimizer's)."""
    return run_model.module if isinstance(run_model, nn.parallel.DistributedDataParallel) else run_model


@contextlib.contextmanager
def accumulating(run_model: nn.Module, kind: str, last: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on every micro-batch but an optimizer step's last."""
    if kind == "ddp" and not last:
        with run_model.no_sync():
            yield
    elif kind == "fsdp":
        run_model.set_requires_gradient_sync(last)
        yield
    else:
        yield


def skeleton(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters are on the meta device (no memory), buffers real: what
    :func:`plain_copy` fills with the trained weights after sharding has replaced the originals."""
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in model.parameters()}
    return copy.deepcopy(model, memo)


def plain_copy(run_model: nn.Module, kind: str, template: nn.Module | None, device: torch.device) -> nn.Module:
    """An ordinary module with the trained weights, on every rank."""
    if kind != "fsdp":
        return inner(run_model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(run_model, options=StateDictOptions(full_state_dict=True))
    assert template is not None
    shared: dict[int, nn.Parameter] = {}  # tied parameters stay tied
    for name, p in list(template.named_parameters(remove_duplicate=False)):
        owner, _, leaf = name.rpartition(".")
        module = template.get_submodule(owner) if owner else template
        if id(p) not in shared:
            shared[id(p)] = nn.Parameter(full[name].detach().to(device).clone(), requires_grad=p.requires_grad)
        module._parameters[leaf] = shared[id(p)]
    return template.to(device)
