"""Saving and loading a model: ``model.safetensors`` (weights) + ``model.json`` (config and provenance)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fidan import RUN_FORMAT, __version__, atomic
from fidan.errors import FidanError
from fidan.model.gpt import GPT, GPTConfig


def save_model(folder: str | Path, model: GPT, info: dict[str, Any] | None = None) -> None:
    folder = Path(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic.atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    atomic.write_json(folder / "model.json", {"format": RUN_FORMAT, "fidan": __version__,
                                              "model": model.cfg.to_dict(), **(info or {})})


def read_model_info(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "model.json"
    if not path.exists():
        raise FidanError(f"{path}: no model here; train one first (e.g. `fidan pretrain`)")
    try:
        info = json.loads(path.read_text())
    except ValueError:
        raise FidanError(f"{path}: damaged model description (not JSON); retrain or restore it") from None
    if info.get("format") != RUN_FORMAT:
        raise FidanError(f"{path}: written by run-directory format {info.get('format')}, this fidan reads "
                         f"{RUN_FORMAT}; retrain the model with this version")
    return info


def load_model(folder: str | Path, device: str | torch.device) -> tuple[GPT, dict[str, Any]]:
    """The model in ``folder`` on ``device`` (required: a stage passes its context's device, so
    no model silently stays on the CPU), and its model.json."""
    folder = Path(folder)
    info = read_model_info(folder)
    try:
        cfg = GPTConfig(**info["model"])
    except TypeError as e:
        raise FidanError(f"{folder / 'model.json'}: model config does not match this fidan ({e})") from None
    weights = folder / "model.safetensors"
    try:
        state = load_file(str(weights), device=str(device))
    except FileNotFoundError:
        raise FidanError(f"{weights}: weights missing; retrain or restore them") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise FidanError(f"{weights}: damaged weights file ({e}); retrain or restore it") from None
    model = GPT(cfg).to(device)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise FidanError(f"{weights}: weights do not fit the model in model.json "
                         f"({str(e).splitlines()[0]})") from None
    return model, info
