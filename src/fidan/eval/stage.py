"""The eval stage: score every model the run has (pretrain, sft, rlhf) and write ``eval/<stage>.json``.

The models are the stage's declared inputs (``sft.out`` and ``rlhf.out`` say which folders), each
loaded on the context's device and scored under its precision. Every red-team reply goes to
``eval/<stage>.redteam.jsonl`` (prompt, reply, the judge's rule's verdict and the grader's).
"""
from __future__ import annotations

import json

from fidan import atomic
from fidan.context import StageContext
from fidan.data.shards import load_meta, load_tokens
from fidan.eval.harness import evaluate_model
from fidan.model.io import load_model
from fidan.tokenizer.bpe import FidanTokenizer

MODEL_STAGES = ("pretrain", "sft", "rlhf")


def run(ctx: StageContext) -> dict:
    from fidan.train.pretrain import bits_per_byte, token_bytes_for
    val = None
    summary = {}
    for stage in MODEL_STAGES:
        if not ctx.has_input(stage):
            continue
        tok_path = ctx.tokenizer_of(stage)   # a model imported from Hugging Face brings its own
        tok = FidanTokenizer.load(tok_path)
        model, info = load_model(ctx.input(stage).parent, ctx.device)
        model.eval()
        with ctx.autocast():
            bpb = None
            if ctx.has_input("tokens") and ctx.has_input("tokenizer") and tok_path == ctx.input("tokenizer"):
                if val is None:  # the token shards are in the run tokenizer's ids
                    val = load_tokens(ctx.input("tokens").parent / "val.bin", load_meta(ctx.input("tokens")))
                bpb = bits_per_byte(model, val, token_bytes_for(tok, model.cfg.vocab_size), 32)["val_bpb"]
            scores = evaluate_model(model, tok, {**info, "stage": info.get("stage") or stage}, ctx.cfg,
                                    ctx.run.path, val_bpb=bpb)
        replies = scores.get("redteam", {}).pop("replies", None)
        if replies is not None:   # every red-team reply, whole, with both graders' verdicts
            atomic.write_text(ctx.out / f"{stage}.redteam.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in replies))
        atomic.write_json(ctx.out / f"{stage}.json", scores)
        summary[f"{stage}_seconds"] = scores["eval_seconds"]
        ctx.say(f"  {stage}: evaluated in {scores['eval_seconds']} s")
    return summary
