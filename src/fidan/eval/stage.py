"""The eval stage: score every model the run has (pretrain, sft, rlhf) and write ``eval/<stage>.json``."""
from __future__ import annotations

from fidan import atomic
from fidan.config import Config
from fidan.data.shards import load_meta, load_tokens
from fidan.eval.harness import evaluate_model
from fidan.model.io import load_model
from fidan.rundir import RunDir
from fidan.tokenizer.bpe import FidanTokenizer

MODEL_STAGES = ("pretrain", "sft", "rlhf")


def run(cfg: Config, run: RunDir, quiet: bool = False) -> dict:
    from fidan.train.pretrain import bits_per_byte, token_bytes_for
    tok = FidanTokenizer.load(run.require("tokenizer/tokenizer.json", "tokenizer"))
    meta = load_meta(run)
    val = load_tokens(run.path / "data/tokens/val.bin", meta)
    summary = {}
    for stage in MODEL_STAGES:
        if not (run.path / stage / "model.safetensors").exists():
            continue
        model, info = load_model(run.path / stage)
        model.eval()
        bpb = bits_per_byte(model, val, token_bytes_for(tok, model.cfg.vocab_size), 32)["val_bpb"]
        scores = evaluate_model(model, tok, info, cfg, run.path, val_bpb=bpb)
        atomic.write_json(run.stage("eval") / f"{stage}.json", scores)
        summary[f"{stage}_seconds"] = scores["eval_seconds"]
        if not quiet:
            print(f"  {stage}: evaluated in {scores['eval_seconds']} s")
    return summary
