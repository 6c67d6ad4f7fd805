"""The SFT stage: turn the pre-trained model into a chat model, by one of several methods.

``sft.method`` picks what trains, one of the methods in ``finetune/methods/`` (one file each):
``full`` (everything), ``layers`` (chosen blocks or parameter patterns), ``gradual`` (thawing
blocks from the top), ``lora`` (low-rank adapters, merged into the weights at the end),
``prompt`` (learned soft-prompt vectors, model frozen) or ``distill`` (a smaller student, cut
from the teacher's blocks, learning the teacher's softened predictions).
Options that combine with any of them: loss-softmax instance reweighting (``loss_reweight``),
gradient-based instance reweighting against a clean dev batch (``igbi``, ``finetune/igbi.py``),
adversarial ALUM training (``adversarial``), guided attention (GATE, ``gate``,
``finetune/gate.py``) and the LAMB optimizer for large batches (``optimizer=lamb``). All run on the
shared training loop, so they checkpoint and resume alike.

Writes ``<out>/model.safetensors`` + ``model.json`` (a plain model ``fidan chat`` loads; LoRA also
leaves ``adapter.safetensors``), ``metrics.jsonl``, and held-out chat scores of the base model and
the tuned one in the stage summary.
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from fidan import atomic
from fidan.context import StageContext
from fidan.corpus.instructions import (
    context_conversations,
    everyday_conversations,
    fact_conversations,
    is_refusal,
    lookalike_conversations,
    one_step_conversations,
    refusal_conversations,
    subject_conversations,
)
from fidan.corpus.world import build_world
from fidan.data.shards import load_meta, load_tokens
from fidan.errors import FidanError
from fidan.finetune import methods
from fidan.finetune.data import (
    ChatBatches,
    MixedBatches,
    collate,
    encode_conversations,
    plant_wrong_answers,
    pretrain_rows,
)
from fidan.finetune.formats import load_conversations
from fidan.finetune.gate import AttentionGuide, context_items, measure, parse_guide
from fidan.finetune.igbi import GradientReweighting, plain, weighted_lm
from fidan.finetune.layer_lr import decayed_adamw
from fidan.finetune.neftune import noisy_embeddings
from fidan.finetune.objectives import adversarial_term, distillation, masked_lm
from fidan.finetune.wise import interpolate
from fidan.infer.answers import chat_scores
from fidan.model.gpt import GPT, flops_per_token, recorded_attention
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
    """Validation before work: the method must exist, and the options must combine."""
    s = cfg.sft
    methods.get(s.method)
    if s.igbi and (s.method == "distill" or s.loss_reweight > 0):
        raise FidanError("sft.igbi weights the cross-entropy of each example; it does not combine with "
                         f"{'sft.method=distill' if s.method == 'distill' else 'sft.loss_reweight'}")
    if s.gate > 0:
        parse_guide(s.gate_layers, s.gate_heads)
    if s.lr_decay < 1 and s.optimizer != "adamw":
        raise FidanError(f"sft.lr_decay={s.lr_decay} builds its own AdamW groups; it does not combine with "
                         f"sft.optimizer={s.optimizer} (set sft.lr_decay=1 for it)")
    if s.lr_decay < 1 and cfg.train.parallel == "fsdp":   # its groups would hold the unsharded parameters
        raise FidanError(f"sft.lr_decay={s.lr_decay} builds its optimizer before the model is wrapped; it does "
                         "not run under train.parallel=fsdp (use ddp, or set sft.lr_decay=1)")
    if s.wise < 1 and s.method in ("prompt", "distill"):
        raise FidanError(f"sft.wise={s.wise} blends the tuned weights with the pre-trained ones; sft.method="
                         f"{s.method} changes the model's shape")
    if s.pretrain_mix > 0 and pretrain_rows(s.pretrain_mix, s.batch_size) >= s.batch_size:
        raise FidanError(f"sft.pretrain_mix={s.pretrain_mix} leaves no conversation in a batch of "
                         f"sft.batch_size={s.batch_size} rows")


def prepare(ctx: StageContext) -> methods.Prepared:
    """The chosen method's model, parameters and hooks, from the pre-trained model."""
    base, _ = load_model(ctx.input("base").parent, ctx.device)
    return methods.get(ctx.cfg.sft.method)(ctx, base)


def make_loss(s, teacher: GPT | None, reweighting: GradientReweighting | None = None,
              guide: AttentionGuide | None = None, mix_rows: int = 0):
    """The SFT loss for the ``[sft]`` settings ``s``: masked next-token loss (or distillation),
    optionally reweighted (by loss, or by gradient agreement with a clean dev batch), plus the
    ALUM term and the GATE term. Batches with extras carry the evidence mask, the examples'
    indices and the step. ``mix_rows``: the batch's last rows are pre-training windows
    (``MixedBatches``); the conversations' loss is then computed on the other rows alone and the
    windows' mean next-token loss (every token) is added, weighted by ``sft.pretrain_weight``."""

    def loss(model, batch):
        device = next(model.parameters()).device
        x, y, m = (t.to(device) for t in batch[:3])
        evidence, indices, step = batch[3:] if len(batch) > 3 else (None, None, 0)
        weights = reweighting.weights(model, x, y, m, indices, step) if reweighting is not None else None
        with recorded_attention(plain(model), guide.layers if guide is not None else ()) as probs:
            logits = model(x)
        chat = slice(0, x.shape[0] - mix_rows)
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher.to(device)(x[chat])
            value = distillation(logits[chat], t_logits, y[chat], m[chat], s.distill.temperature, s.distill.alpha)
        elif weights is not None:
            value = weighted_lm(logits, y, m, weights)
        else:
            value = masked_lm(logits[chat], y[chat], m[chat], s.loss_reweight)
        if mix_rows:
            window = slice(x.shape[0] - mix_rows, None)
            value = value + s.pretrain_weight * masked_lm(logits[window], y[window], m[window])
        if guide is not None:
            value = value + s.gate * guide.loss(probs, m, evidence.to(device))
        if s.adversarial > 0:
            value = value + s.adversarial_weight * adversarial_term(model, x, logits, m, s.adversarial)
        return value, int(m.sum())
    return loss


def embedded_world(ctx: StageContext, setting: str, hint: str = ""):
    """The run's embedded world, for the SFT settings that draw more conversations from it."""
    if ctx.cfg.data.source != "embedded":
        raise FidanError(f"{setting} needs the embedded world (data.source=embedded){hint}")
    c = ctx.cfg.corpus
    return build_world(ctx.cfg.run.seed, c.n_places, c.n_people, c.n_creatures)


def with_context(ctx: StageContext) -> list[list[dict]]:
    """The embedded world's with-context questions (``sft.context_questions`` of them), each
    marking the passage sentence that holds its answer."""
    world = embedded_world(ctx, "sft.context_questions", "; mark the evidence in your own data with a user "
                           "turn's \"evidence\" field instead")
    found = context_conversations(world, ctx.cfg.sft.context_questions, ctx.cfg.run.seed)
    ctx.say(f"sft: + {len(found):,} with-context questions (sft.context_questions)")
    return [obj["messages"] for obj in found]


def more_facts(ctx: StageContext) -> list[list[dict]]:
    """``sft.facts`` more fact questions of the embedded world (never a held-out pair)."""
    world = embedded_world(ctx, "sft.facts")
    ctx.say(f"sft: + {ctx.cfg.sft.facts:,} more fact questions (sft.facts)")
    return [obj["messages"] for obj in fact_conversations(world, ctx.cfg.sft.facts, ctx.cfg.run.seed)]


def one_step(ctx: StageContext, n: int) -> list[list[dict]]:
    """One-step problems, as many as make ``sft.one_step_share`` of the ``n`` conversations plus them."""
    share = ctx.cfg.sft.one_step_share
    world = embedded_world(ctx, "sft.one_step_share")
    found = one_step_conversations(world, round(n * share / (1 - share)), ctx.cfg.run.seed)
    ctx.say(f"sft: + {len(found):,} one-step problems (sft.one_step_share {share:.0%})")
    return [obj["messages"] for obj in found]


def pretrain_tokens(ctx: StageContext):
    """The run's pre-training token shard (``data/tokens/train.bin``) for ``sft.pretrain_mix``, or
    None (said why) where the run has none or the base model's tokenizer is not the run's."""
    if not ctx.has_input("tokens"):
        ctx.say("sft: no pre-training token shards in this run (fidan tokens); sft.pretrain_mix is not applied")
        return None
    if not ctx.has_input("tokenizer") or ctx.tokenizer_of("base") != ctx.input("tokenizer"):
        ctx.say("sft: the base model has its own tokenizer, not the one the run's token shards were encoded with; "
                "sft.pretrain_mix is not applied")
        return None
    meta = ctx.input("tokens")
    return load_tokens(meta.parent / "train.bin", load_meta(meta))


def scaled_lr(s) -> float:
    """``sft.lr`` scaled with the batch (``batch_size x grad_accum`` over ``base_batch``)."""
    ratio = s.batch_size * s.grad_accum / s.base_batch
    return s.lr * {"none": 1.0, "linear": ratio, "sqrt": ratio ** 0.5}[s.lr_scaling]


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
    if s.keep_refusals < 1:
        refusals = [i for i, c in enumerate(conversations) if is_refusal(c)]
        dropped = set(refusals[round(len(refusals) * s.keep_refusals):])
        conversations = [c for i, c in enumerate(conversations) if i not in dropped]
        ctx.say(f"sft: kept {len(refusals) - len(dropped):,} of the data's {len(refusals):,} refusals "
                "(sft.keep_refusals)")
    if s.context_questions:
        conversations = conversations + with_context(ctx)
    if s.lookalikes:
        conversations = conversations + [c["messages"] for c in lookalike_conversations(s.lookalikes, ctx.cfg.run.seed)]
        ctx.say(f"sft: + {s.lookalikes:,} benign requests worded like harmful ones, answered (sft.lookalikes)")
    if s.facts:
        conversations = conversations + more_facts(ctx)
    if s.subject_facts:
        found = subject_conversations(embedded_world(ctx, "sft.subject_facts"), s.subject_facts, ctx.cfg.run.seed)
        conversations = conversations + [c["messages"] for c in found]
        ctx.say(f"sft: + {s.subject_facts:,} fact questions spread evenly over the subjects (sft.subject_facts)")
    if s.everyday:
        conversations = conversations + [c["messages"] for c in everyday_conversations(s.everyday, ctx.cfg.run.seed)]
        ctx.say(f"sft: + {s.everyday:,} everyday requests from outside the world, answered (sft.everyday)")
    if s.refusals:
        conversations = conversations + [c["messages"] for c in refusal_conversations(s.refusals, ctx.cfg.run.seed)]
        ctx.say(f"sft: + {s.refusals:,} more harmful requests in other wordings, refused (sft.refusals)")
    if s.one_step_share:
        conversations = conversations + one_step(ctx, len(conversations))
    seed = ctx.cfg.run.seed
    dev_ids = set(np.random.default_rng([seed, 13]).permutation(len(conversations))[:s.igbi_dev].tolist()) \
        if s.igbi or s.corrupt else set()   # the same examples stay clean whether or not IGBI runs
    conversations, corrupted = plant_wrong_answers(conversations, s.corrupt, seed, keep=dev_ids)
    if corrupted:
        ctx.say(f"sft: planted wrong answers in {len(corrupted):,} conversations ({s.corrupt:.0%}, sft.corrupt)")
    max_len = model.cfg.context - model.cfg.prompt_tokens + 1
    examples = encode_conversations(tok, conversations, max_len)
    reweighting = None
    if s.igbi:
        dev = [ex for ex in examples if ex.index in dev_ids]
        examples = [ex for ex in examples if ex.index not in dev_ids]
        if not dev:
            raise FidanError("sft.igbi: no clean dev conversation fits the model's context")
        flags = torch.tensor([ex.index in corrupted for ex in examples], dtype=torch.bool)
        reweighting = GradientReweighting(collate(dev, tok.pad), params, s.igbi_every, flags)
        ctx.say(f"sft: IGBI weights each batch by gradient agreement with {len(dev)} clean dev conversations "
                f"(held back from training), refreshed every {s.igbi_every} step(s)")
    guide = AttentionGuide(s.gate_layers, s.gate_heads, s.gate_mass, model.cfg) \
        if s.gate > 0 else None
    if guide is not None:
        marked = sum(ex.span is not None for ex in examples)
        ctx.say(f"sft: GATE guides blocks {guide.layers} on {marked:,} conversations that mark their evidence")
    lr = scaled_lr(s)
    tcfg = inherit(ctx, steps=s.steps, batch_size=s.batch_size, grad_accum=s.grad_accum, lr=lr,
                   warmup_steps=s.warmup_steps, weight_decay=s.weight_decay, eval_every=s.steps + 1)
    extras = reweighting is not None or guide is not None
    batches = ChatBatches(examples, s.batch_size, tok.pad, seed, extras=extras)
    tokens = pretrain_tokens(ctx) if s.pretrain_mix > 0 and not s.igbi else None
    if s.pretrain_mix > 0 and s.igbi:
        ctx.say("sft: sft.igbi weighs each batch's conversations; sft.pretrain_mix is not applied with it")
    if tokens is not None:
        batches = MixedBatches(examples, s.batch_size, tok.pad, seed, tokens, s.pretrain_mix, extras=extras)
        ctx.say(f"sft: {batches.rows} of every {s.batch_size} rows are pre-training text "
                f"(sft.pretrain_mix={s.pretrain_mix}, loss on every token, weight {s.pretrain_weight})")
    optimizer = decayed_adamw(model, params, s.lr_decay, lr, s.weight_decay, (tcfg.beta1, tcfg.beta2)) \
        if s.lr_decay < 1 else None   # layer-wise lr decay: lower blocks and the embedding move less
    task = Task(name=f"sft-{method}", batch=batches, optimizer=optimizer,
                loss=make_loss(s, prepared.teacher, reweighting, guide, batches.rows if tokens is not None else 0),
                flops_per_token=flops_per_token(model.cfg),
                info={"tokenizer": "tokenizer/tokenizer.json", "method": method, "chat": True},
                parameters=params, on_step=prepared.on_step, optimizer_kind=s.optimizer)
    trainable = sum(p.numel() for p in params)
    t0 = time.perf_counter()
    with noisy_embeddings(model, s.neftune):
        model, summary = train(model, tcfg, task, ctx)
    if ctx.rank != 0:  # under torchrun rank 0 alone finishes, scores the model and writes the summary
        return summary
    if prepared.finish is not None:  # e.g. LoRA: adapters saved alone, then merged into a plain model
        model = prepared.finish(model, out)
    if s.wise < 1:   # WiSE-FT: part of the way back to the pre-trained weights
        model = interpolate(model, load_model(ctx.input("base").parent, ctx.device)[0], s.wise)
    if prepared.finish is not None or s.wise < 1:
        save_model(out, model, {"stage": "sft", "method": method, "tokenizer": "tokenizer/tokenizer.json",
                                "chat": True})
    model.eval()
    eval_dir = ctx.run.path / ctx.inputs["eval_sets"]
    with ctx.autocast():
        tuned = chat_scores(model, tok, eval_dir, s.eval_items)
        base = base_scores(ctx, tok)
    if s.gate > 0 or s.context_questions:   # attention on the passage and accuracy, held-out questions
        probe = guide or AttentionGuide(s.gate_layers, s.gate_heads, s.gate_mass, model.cfg)
        with ctx.autocast():
            summary.update(measure(model, tok, context_items(eval_dir, s.eval_items), probe))
        ctx.say(f"held-out with-context questions: attention mass on the answer's sentence "
                f"{summary['context_attention_mass']:.3f}, accuracy {summary['context_acc']:.1%} "
                f"({summary['context_n']} questions)")
    if reweighting is not None:
        summary.update(reweighting.summary())
        if corrupted:
            ctx.say(f"IGBI mean weight: corrupted {summary.get('igbi_mean_weight_corrupted', 0):.3f}, "
                    f"clean {summary.get('igbi_mean_weight_clean', 0):.3f}")
    result = {"method": method, "trainable_params": trainable, "total_params": model.num_params(),
              "optimizer": s.optimizer, "lr": lr, "corrupted": len(corrupted),
              "wall_seconds": round(time.perf_counter() - t0, 1), **summary,
              **{f"base_{k}": round(v, 4) for k, v in base.items()},
              **{f"sft_{k}": round(v, 4) for k, v in tuned.items()}}
    ctx.say(heldout_line(base, tuned, method))
    atomic.write_json(out / "summary.json", result)
    return result
