"""The SFT stage: turn the pre-trained model into a chat model, by one of several methods.

``sft.method`` picks what trains, one of the methods in ``finetune/methods/`` (one file each):
``full`` (everything), ``layers`` (chosen blocks or parameter patterns), ``gradual`` (thawing
blocks from the top), ``lora`` (low-rank adapters, merged into the weights at the end),
``prompt`` (learned soft-prompt vectors, model frozen) or ``distill`` (a smaller student, cut
from the teacher's blocks, learning the teacher's softened predictions).
Instance reweighting and adversarial (ALUM) training combine with any of them. All run on the
shared training loop, so they checkpoint and resume alike.

Writes ``<out>/model.safetensors`` + ``model.json`` (a plain model ``fidan chat`` loads; LoRA also
leaves ``adapter.safetensors``), ``metrics.jsonl``, and held-out chat scores of the base model and
the tuned one in the stage summary.
"""
from __future__ import annotations

import json
import time

import torch

from fidan import atomic
from fidan.context import StageContext
from fidan.finetune import methods
from fidan.finetune.data import ChatBatches, encode_conversations
from fidan.finetune.formats import load_conversations
from fidan.finetune.objectives import adversarial_term, distillation, masked_lm
from fidan.infer.answers import chat_scores
from fidan.model.gpt import GPT, flops_per_token
from fidan.model.io import load_model, save_model
from fidan.records import read_jsonl
from fidan.tokenizer.bpe import FidanTokenizer, carry
from fidan.train.loop import Task, inherit, train


def conversations_for(ctx: StageContext) -> list[list[dict]]:
    s = ctx.cfg.sft
    if s.data:
        from fidan.data.sources import SourceReport
        counts: dict[str, int] = {}
        report = SourceReport()
        conversations = load_conversations(s.data, s.on_error, report, counts)
        formats = ", ".join(f"{n:,} {name}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        skipped = f"; {len(report.problems):,} rows skipped (first: {report.problems[0]})" if report.problems else ""
        ctx.say(f"sft: loaded {len(conversations):,} conversations from {s.data} ({formats}){skipped}")
        return conversations
    return [obj["messages"] for _, obj in read_jsonl(ctx.input("conversations"))]


def check(cfg) -> None:
    """Validation before work: the method must exist."""
    methods.get(cfg.sft.method)


def prepare(ctx: StageContext) -> methods.Prepared:
    """The chosen method's model, parameters and hooks, from the pre-trained model."""
    base, _ = load_model(ctx.input("base").parent, ctx.device)
    return methods.get(ctx.cfg.sft.method)(ctx, base)


def make_loss(s, teacher: GPT | None):
    """The SFT loss for the ``[sft]`` settings ``s``: masked next-token loss (or distillation),
    optionally reweighted, plus the ALUM term."""

    def loss(model, batch):
        device = next(model.parameters()).device
        x, y, m = (t.to(device) for t in batch)
        logits = model(x)
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher.to(device)(x)
            value = distillation(logits, t_logits, y, m, s.distill.temperature, s.distill.alpha)
        else:
            value = masked_lm(logits, y, m, s.reweight)
        if s.adversarial > 0:
            value = value + s.adversarial_weight * adversarial_term(model, x, logits, m, s.adversarial)
        return value, int(m.sum())
    return loss


def base_scores(ctx: StageContext, tok: FidanTokenizer) -> dict:
    """Held-out chat scores of the pre-trained model, prompted exactly like the tuned one (cached
    beside the pre-trained model, which is what they describe)."""
    base = ctx.input("base").parent
    cache = base / f"chat_scores_{ctx.cfg.sft.eval_items}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    model, _ = load_model(base, ctx.device)
    scores = chat_scores(model, tok, ctx.run.path / ctx.inputs["eval_sets"], ctx.cfg.sft.eval_items)
    atomic.write_json(cache, scores)
    return scores


KINDS = (("facts_acc", "facts"), ("math_acc", "word problems"), ("text_acc", "questions on your text"))


def heldout_line(base: dict, tuned: dict, method: str) -> str:
    """The before/after line, naming only the kinds of held-out question the run has."""
    kinds = [(k, name) for k, name in KINDS if k in base or k in tuned]
    if not kinds:
        return "held-out chat accuracy: no held-out questions in data/eval (nothing to compare before and after)"
    show = lambda s: ", ".join(f"{s.get(k, 0):.1%} {name}" for k, name in kinds)
    n = tuned.get("text_n")
    return (f"held-out chat accuracy: base model {show(base)}; after SFT ({method}) {show(tuned)}"
            + (f" ({n} questions from validation documents; right = half the reference sentence's words)" if n else ""))


def run(ctx: StageContext) -> dict:
    s = ctx.cfg.sft
    method = s.method
    out = ctx.out
    tok = FidanTokenizer.load(ctx.tokenizer_of("base"))
    carry(ctx.input("base").parent, out)
    prepared = prepare(ctx)
    model, params = prepared.model, prepared.parameters
    conversations = conversations_for(ctx)
    source = s.data or ("the embedded world's conversations" if ctx.cfg.data.source == "embedded" else
                        "made from your text and general conversations, data/sft/train.jsonl; "
                        "your own with --sft.data=FILE")
    ctx.say(f"sft: {len(conversations):,} conversations ({source}), method {method}")
    examples = encode_conversations(tok, conversations, model.cfg.context - model.cfg.prompt_tokens + 1)
    tcfg = inherit(ctx, steps=s.steps, batch_size=s.batch_size, grad_accum=s.grad_accum, lr=s.lr,
                   warmup_steps=s.warmup_steps, weight_decay=s.weight_decay, eval_every=s.steps + 1)
    task = Task(name=f"sft-{method}", batch=ChatBatches(examples, s.batch_size, tok.pad, ctx.cfg.run.seed),
                loss=make_loss(s, prepared.teacher), flops_per_token=flops_per_token(model.cfg),
                info={"tokenizer": "tokenizer/tokenizer.json", "method": method, "chat": True},
                parameters=params, on_step=prepared.on_step)
    trainable = sum(p.numel() for p in params)
    t0 = time.perf_counter()
    model, summary = train(model, tcfg, task, ctx)
    if ctx.rank != 0:  # under torchrun rank 0 alone finishes, scores the model and writes the summary
        return summary
    if prepared.finish is not None:  # e.g. LoRA: adapters saved alone, then merged into a plain model
        model = prepared.finish(model, out)
        save_model(out, model, {"stage": "sft", "method": method, "tokenizer": "tokenizer/tokenizer.json",
                                "chat": True})
    model.eval()
    eval_dir = ctx.run.path / ctx.inputs["eval_sets"]
    with ctx.autocast():
        tuned = chat_scores(model, tok, eval_dir, s.eval_items)
        base = base_scores(ctx, tok)
    result = {"method": method, "trainable_params": trainable, "total_params": model.num_params(),
              "wall_seconds": round(time.perf_counter() - t0, 1), **summary,
              **{f"base_{k}": round(v, 4) for k, v in base.items()},
              **{f"sft_{k}": round(v, 4) for k, v in tuned.items()}}
    ctx.say(heldout_line(base, tuned, method))
    atomic.write_json(out / "summary.json", result)
    return result
