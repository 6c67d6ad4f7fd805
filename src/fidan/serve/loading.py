"""Finding a run's newest model and its tokenizer."""
from __future__ import annotations

from pathlib import Path

from fidan.context import pick_device
from fidan.errors import FidanError
from fidan.model.gpt import GPT
from fidan.model.io import load_model
from fidan.rundir import RunDir
from fidan.tokenizer.bpe import FidanTokenizer

# Later stages first: chat uses the most trained model a run has.
STAGE_PREFERENCE = ("rlhf", "sft", "pretrain")


def model_folder(run: RunDir, stage: str | None = None) -> Path:
    stages = (stage,) if stage else STAGE_PREFERENCE
    for name in stages:
        if (run.path / name / "model.safetensors").exists():
            return run.path / name
    raise FidanError(f"{run.path}: no trained model ({', '.join(stages)}); run `fidan pretrain` first")


def load_for_inference(folder: Path, run: RunDir | None = None, device="auto") -> tuple[GPT, FidanTokenizer]:
    """A model ready to answer, on ``device`` (a torch.device, or a name such as "auto"), and its tokenizer."""
    model, info = load_model(folder, pick_device(device) if isinstance(device, str) else device)
    model.eval()
    tok_path = folder / "tokenizer.json"
    if not tok_path.exists():
        base = run.path if run else folder.parent
        tok_path = base / info.get("tokenizer", "tokenizer/tokenizer.json")
    return model, FidanTokenizer.load(tok_path)
