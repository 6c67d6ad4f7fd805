"""Atomic, verifiable, resumable checkpoints.

A checkpoint is a folder ``ckpt/step_NNNNNNN/`` holding ``model.safetensors``, ``model.json``,
``state.pt`` (optimizer, step, RNG, counters) and ``manifest.json`` (size and SHA-256 of each
file). It is written under a temporary name and renamed into place in one step, so a crash
never leaves a half-written checkpoint under a real name; older checkpoints are deleted only
after the new one is in place. On resume, each checkpoint is verified against its manifest,
newest first: a damaged one is reported and the previous good one is used.

A run sharded with FSDP (``train.parallel=fsdp``) saves its checkpoints with
``torch.distributed.checkpoint`` instead: the same folder holds ``.metadata`` and one
``__<rank>_0.distcp`` file per rank (model and optimizer shards, written by all ranks at once)
beside ``state.pt`` (step, counters, every rank's RNG) and ``model.json``; rank 0 writes the
manifest over all of them and renames the folder into place only after every rank has written.
Such a checkpoint resumes at any world size, one process included (the loader reshards).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from fidan import atomic, dist
from fidan.errors import FidanError
from fidan.model.gpt import GPT
from fidan.model.io import save_model

FILES = ("model.safetensors", "model.json", "state.pt")
SHARDED_MARK = ".metadata"  # torch.distributed.checkpoint's index file


_sha256 = atomic.file_sha256


def save(root: Path, model: GPT, optimizer: torch.optim.Optimizer, step: int, extra: dict[str, Any],
         info: dict[str, Any], keep: int) -> Path:
    final = root / f"step_{step:07d}"
    with atomic.atomic_dir(final) as tmp:
        save_model(tmp, model, {**info, "step": step})
        state = {"optimizer": optimizer.state_dict(), "step": step, "torch_rng": torch.get_rng_state(), **extra}
        if torch.cuda.is_available():  # dropout on a GPU draws from the CUDA generators
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save(state, tmp / "state.pt")
        manifest = {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)} for name in FILES}
        (tmp / "manifest.json").write_text(json.dumps({"step": step, "files": manifest}, indent=1))
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(folder: Path) -> str | None:
    """None if the checkpoint is complete and intact, else what is wrong with it."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())["files"]
    except (OSError, ValueError, KeyError):
        return "manifest.json missing or unreadable"
    for name, expected in manifest.items():
        path = folder / name
        if not path.exists():
            return f"{name} missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{name} is {size} bytes, expected {expected['bytes']} (truncated?)"
        if _sha256(path) != expected["sha256"]:
            return f"{name} checksum mismatch (corrupted)"
    return None


def rng_state() -> dict[str, Any]:
    """This process's random generators (dropout draws from them)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_sharded(root: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                 extra: dict[str, Any], info: dict[str, Any], keep: int) -> Path:
    """A ``torch.distributed.checkpoint`` checkpoint of a sharded model; every rank calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = root / f"step_{step:07d}"
    rngs = dist.gather(rng_state())
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic.atomic_dir(final)) if dist.is_main() else None
        tmp = Path(dist.broadcast(str(tmp) if tmp else None))
        weights, optim = get_state_dict(model, optimizer)
        dcp.save({"model": weights, "optimizer": optim}, checkpoint_id=str(tmp), no_dist=not dist.active())
        if dist.is_main():
            atomic.write_json(tmp / "model.json", {**info, "step": step, "sharded": True})
            torch.save({"step": step, "rank_rng": rngs, "torch_rng": rngs[0]["torch"],
                        "world_size": dist.world_size(), **extra}, tmp / "state.pt")
            names = sorted(p.name for p in tmp.iterdir())
            manifest = {n: {"bytes": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in names}
            (tmp / "manifest.json").write_text(json.dumps({"step": step, "files": manifest}, indent=1))
    if dist.is_main():
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_sharded(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Fill ``model`` and ``optimizer`` (sharded or not, at any world size) from a sharded checkpoint."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    weights, optim = get_state_dict(model, optimizer)
    state = {"model": weights, "optimizer": optim}
    try:
        with warnings.catch_warnings():  # one process reading a sharded checkpoint is what we mean
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(folder), no_dist=not dist.active())
    except Exception as e:  # DCP wraps the cause in several layers
        raise FidanError(f"{folder}: cannot read checkpoint ({str(e).splitlines()[0]})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


@dataclass
class Resumed:
    folder: Path
    weights: dict[str, torch.Tensor] | None   # the model's state dict (None: a sharded checkpoint)
    state: dict[str, Any]

    @property
    def sharded(self) -> bool:
        return self.weights is None


def newest_intact(root: Path, warn=print) -> Path | None:
    """The newest checkpoint folder under ``root`` that matches its manifest, reporting damaged ones."""
    for folder in sorted(root.glob("step_*"), reverse=True):
        problem = verify(folder)
        if problem:
            warn(f"warning: checkpoint {folder} is damaged ({problem}); trying the previous one")
            continue
        return folder
    return None


def read(folder: Path, device: str | torch.device = "cpu") -> Resumed:
    """A verified checkpoint's weights (plain checkpoints) and state."""
    try:
        sharded = (folder / SHARDED_MARK).exists()
        weights = None if sharded else load_file(str(folder / "model.safetensors"), device=str(device))
        state = torch.load(folder / "state.pt", map_location="cpu" if sharded else device, weights_only=True)
    except Exception as e:  # safetensors and torch raise many types for a bad file
        raise FidanError(f"{folder}: cannot read checkpoint ({str(e).splitlines()[0]})") from None
    return Resumed(folder, weights, state)


def latest(root: Path, device: str | torch.device = "cpu", warn=print) -> Resumed | None:
    """The newest intact checkpoint under ``root``, skipping (and reporting) damaged ones."""
    folder = newest_intact(root, warn)
    return read(folder, device) if folder else None
