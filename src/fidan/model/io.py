"""Saving and loading a model: ``model.safetensors`` (weights) + ``model.json`` (config and provenance).

``model.json`` carries a checksum: the size and SHA-256 of ``model.safetensors`` and a SHA-256 of the
model config it describes. ``load_model`` verifies both before it reads the weights, so a flipped
bit, a truncated copy or weights from another save is a clear error, not a model that talks
nonsense. Folders written before checksums existed load without the check.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fidan import RUN_FORMAT, __version__, atomic
from fidan.errors import FidanError
from fidan.model.gpt import GPT, GPTConfig

WEIGHTS = "model.safetensors"


file_sha256 = atomic.file_sha256


def config_sha256(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def save_model(folder: str | Path, model: GPT, info: dict[str, Any] | None = None) -> None:
    folder = Path(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic.atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp))
        checksum = {"file": WEIGHTS, "bytes": tmp.stat().st_size, "sha256": file_sha256(tmp)}
    config = model.cfg.to_dict()
    checksum["config_sha256"] = config_sha256(config)
    atomic.write_json(folder / "model.json", {"format": RUN_FORMAT, "fidan": __version__,
                                              "model": config, **(info or {}), "checksum": checksum})


def verify_model(folder: str | Path, info: dict[str, Any]) -> None:
    """Raise a FidanError if the weights or the config in ``info`` do not match its checksum."""
    folder = Path(folder)
    checksum = info.get("checksum")
    if checksum is None:
        return  # written before fidan recorded checksums
    weights = folder / WEIGHTS
    fix = "retrain this stage, or restore the folder from a backup"
    if not isinstance(checksum, dict) or not {"bytes", "sha256", "config_sha256"} <= set(checksum):
        raise FidanError(f"{folder / 'model.json'}: damaged checksum entry; {fix}")
    if checksum["config_sha256"] != config_sha256(info.get("model", {})):
        raise FidanError(f"{folder / 'model.json'}: the model config does not match its checksum (the file was "
                         f"damaged or edited); {fix}")
    if not weights.exists():
        raise FidanError(f"{weights}: weights missing; {fix}")
    size = weights.stat().st_size
    if size != checksum["bytes"]:
        raise FidanError(f"{weights}: damaged weights file ({size} bytes, but model.json says {checksum['bytes']}: "
                         f"truncated, or from an interrupted save); {fix}")
    if file_sha256(weights) != checksum["sha256"]:
        raise FidanError(f"{weights}: damaged weights file (checksum mismatch: a changed byte, or not the file "
                         f"model.json describes); {fix}")


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


def load_with_head(folder: str | Path, device: str | torch.device, wrap):
    """A trunk with a head (``wrap(GPT) -> module``: the reward model, the classifier) from
    ``folder``, checked against its model.json, on ``device``, in eval mode."""
    folder = Path(folder)
    info = read_model_info(folder)
    verify_model(folder, info)
    model = wrap(GPT(GPTConfig(**info["model"])))
    model.load_state_dict(load_file(str(folder / WEIGHTS), device=str(device)))
    return model.to(device).eval()


def load_model(folder: str | Path, device: str | torch.device) -> tuple[GPT, dict[str, Any]]:
    """The model in ``folder`` on ``device`` (required: a stage passes its context's device, so
    no model silently stays on the CPU), and its model.json."""
    folder = Path(folder)
    info = read_model_info(folder)
    verify_model(folder, info)
    try:
        cfg = GPTConfig(**info["model"])
    except TypeError as e:
        raise FidanError(f"{folder / 'model.json'}: model config does not match this fidan ({e})") from None
    weights = folder / WEIGHTS
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
