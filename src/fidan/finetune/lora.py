"""LoRA: low-rank adapters on frozen linear layers (Hu et al. 2021).

A frozen weight W gets a trainable update ``B @ A`` of rank r, scaled by ``alpha / r``:
``y = x W^T + (alpha / r) * dropout(x) A^T B^T``. B starts at zero, so training starts from the
unchanged model. Adapters can be saved alone (a few KB), merged into W for inference at no
extra cost, and unmerged again.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fidan import atomic
from fidan.errors import FidanError


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.rank, self.scale = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.drop = nn.Dropout(dropout)
        self.merged = False
        base.weight.requires_grad_(False)

    @property
    def weight(self) -> torch.Tensor:  # lets code that reads .weight (devices, dtypes) keep working
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + (self.drop(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta()
            self.merged = False


def apply_lora(model: nn.Module, rank: int, alpha: float, dropout: float, targets: list[str]) -> list[str]:
    """Freeze the model and wrap every linear layer whose name ends in a target; returns their names."""
    tied = getattr(getattr(model, "cfg", None), "tie_embeddings", False)
    if tied and "lm_head" in targets:
        raise FidanError("sft.lora.targets: lm_head shares its weights with the input embedding in this model "
                         "(tied embeddings); leave it out")
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in targets:
                setattr(module, child_name, LoRALinear(child, rank, alpha, dropout))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise FidanError(f"sft.lora.targets {targets} match no linear layer "
                         f"(try q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)")
    return wrapped


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_all(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.merge()


def unmerge_all(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.unmerge()


def strip(model: nn.Module) -> None:
    """Merge every adapter and put the plain linear layers back (a model that loads without LoRA)."""
    for _, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                child.merge()
                setattr(module, child_name, child.base)


def save_adapters(model: nn.Module, folder: str | Path, info: dict) -> None:
    folder = Path(folder)
    tensors = {f"{n}.{p}": getattr(m, p).detach().contiguous().cpu()
               for n, m in lora_modules(model).items() for p in ("lora_A", "lora_B")}
    with atomic.atomic_path(folder / "adapter.safetensors") as tmp:
        save_file(tensors, str(tmp))
    atomic.write_json(folder / "adapter.json", info)


def load_adapters(model: nn.Module, folder: str | Path) -> None:
    """Wrap ``model`` as the saved adapters describe and load their weights."""
    folder = Path(folder)
    try:
        info = json.loads((folder / "adapter.json").read_text())
        tensors = load_file(str(folder / "adapter.safetensors"))
    except (OSError, ValueError) as e:
        raise FidanError(f"{folder}: cannot read LoRA adapters ({e})") from None
    apply_lora(model, info["rank"], info["alpha"], 0.0, info["targets"])
    modules = lora_modules(model)
    for key, value in tensors.items():
        name, param = key.rsplit(".", 1)
        if name not in modules:
            raise FidanError(f"{folder}: adapter for {name} does not fit this model")
        getattr(modules[name], param).data.copy_(value)
