"""Finding a run's newest model and its tokenizer."""
from __future__ import annotations

from pathlib import Path

from fidan.errors import FidanError
from fidan.model.gpt import GPT
from fidan.model.io import load_model
from fidan.rundir import RunDir
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.train.perf import pick_device

# Later stages first: chat uses the most trained model a run has.
STAGE_PREFERENCE = ("rlhf", "sft", "pretrain")


def latest_run(root: str | Path = "runs") -> RunDir:
    runs = [p for p in Path(root).glob("*") if (p / "fidan.json").exists()]
    if not runs:
        raise FidanError(f"no runs under {root}/; start one with `make demo` or `fidan pipeline --preset tiny`")
    return RunDir(max(runs, key=lambda p: (p / "config.toml").stat().st_mtime if (p / "config.toml").exists() else 0))


def model_folder(run: RunDir, stage: str | None = None) -> Path:
    stages = (stage,) if stage else STAGE_PREFERENCE
    for name in stages:
        if (run.path / name / "model.safetensors").exists():
            return run.path / name
    raise FidanError(f"{run.path}: no trained model ({', '.join(stages)}); run `fidan pretrain` first")


def load_for_inference(folder: Path, run: RunDir | None = None, device: str = "auto") -> tuple[GPT, FidanTokenizer]:
    model, info = load_model(folder, pick_device(device))
    model.eval()
    tok_path = folder / "tokenizer.json"
    if not tok_path.exists():
        base = run.path if run else folder.parent
        tok_path = base / info.get("tokenizer", "tokenizer/tokenizer.json")
    return model, FidanTokenizer.load(tok_path)
