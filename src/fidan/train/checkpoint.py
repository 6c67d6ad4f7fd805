"""Atomic, verifiable, resumable checkpoints.

A checkpoint is a folder ``ckpt/step_NNNNNNN/`` holding ``model.safetensors``, ``model.json``,
``state.pt`` (optimizer, step, RNG, counters) and ``manifest.json`` (size and SHA-256 of each
file). It is written under a temporary name and renamed into place in one step, so a crash
never leaves a half-written checkpoint under a real name; older checkpoints are deleted only
after the new one is in place. On resume, each checkpoint is verified against its manifest,
newest first: a damaged one is reported and the previous good one is used.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from fidan import atomic
from fidan.errors import FidanError
from fidan.model.gpt import GPT
from fidan.model.io import save_model

FILES = ("model.safetensors", "model.json", "state.pt")


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


@dataclass
class Resumed:
    folder: Path
    weights: dict[str, torch.Tensor]   # the model's state dict (adapters and soft prompts included)
    state: dict[str, Any]


def latest(root: Path, device: str | torch.device = "cpu", warn=print) -> Resumed | None:
    """The newest intact checkpoint under ``root``, skipping (and reporting) damaged ones."""
    for folder in sorted(root.glob("step_*"), reverse=True):
        problem = verify(folder)
        if problem:
            warn(f"warning: checkpoint {folder} is damaged ({problem}); trying the previous one")
            continue
        try:
            weights = load_file(str(folder / "model.safetensors"), device=str(device))
            state = torch.load(folder / "state.pt", map_location=device, weights_only=True)
        except Exception as e:  # safetensors and torch raise many types for a bad file
            raise FidanError(f"{folder}: cannot read checkpoint ({str(e).splitlines()[0]})") from None
        return Resumed(folder, weights, state)
    return None
