"""The pre-training stage: next-token prediction on the token shards.

Batches are random windows of ``context + 1`` tokens, drawn from a generator seeded by
``(seed, step, micro)``, so any step's batch can be recomputed (exact resume). Validation
reports bits per byte over the whole validation split: summed cross-entropy of every token,
divided by the UTF-8 bytes those tokens spell, so models with different tokenizers compare.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from fidan import dist
from fidan.context import StageContext
from fidan.data.shards import load_meta, load_tokens
from fidan.errors import FidanError
from fidan.model.config import GPTConfig
from fidan.model.gpt import GPT, flops_per_token
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.train.loop import Task, train
from fidan.train.xent import head_cross_entropy


class RandomWindows:
    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, seed: int):
        if len(tokens) < context + 2:
            raise ValueError(f"only {len(tokens)} training tokens; need more than the context ({context})")
        self.tokens, self.context, self.batch_size, self.seed = tokens, context, batch_size, seed
        self.offsets = np.arange(context + 1)

    def __call__(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, micro])
        starts = rng.integers(0, len(self.tokens) - self.context - 1, size=self.batch_size)
        chunk = torch.from_numpy(self.tokens[starts[:, None] + self.offsets].astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]


def next_token_loss(model: GPT, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy. A plain GPT in float32 on the CPU without a logit soft-cap
    takes ``train/xent.py``'s fused head + cross-entropy (the same loss and gradients, without the
    vocabulary-wide zero-fill and softmax backward); anything else, the logits and ``F.cross_entropy``."""
    device = next(model.parameters()).device
    x, y = (t.to(device) for t in batch)
    if (isinstance(model, GPT) and device.type == "cpu" and not model.cfg.logit_softcap
            and model.lm_head.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")):
        h = model(x, return_hidden=True)
        return head_cross_entropy(h.reshape(-1, h.size(-1)), model.lm_head.weight, y.reshape(-1)), y.numel()
    logits = model(x)
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1)), y.numel()


@torch.no_grad()
def bits_per_byte(model: GPT, tokens: np.ndarray, token_bytes: torch.Tensor, batch_size: int = 16,
                  max_tokens: int = 0) -> dict[str, float]:
    """Corpus-level bits per byte on consecutive, non-overlapping windows covering ``tokens``
    (``max_tokens``: a fixed sample of about that many tokens, whole windows spread evenly over
    the split, for the periodic evaluations).

    Under torchrun the windows are dealt out over the ranks and the sums added up, so the figure
    is the one-process value; every rank runs the same number of forward passes (a sharded model
    needs all of them at each one), the ranks short of a batch scoring a copy they do not count."""
    context = model.cfg.context
    device = next(model.parameters()).device
    n = len(tokens) - 1
    starts = list(range(0, n, context))
    full = [s for s in starts if s + context <= n]
    tail = [s for s in starts if s + context > n]   # at most one, shorter window
    if max_tokens and max_tokens < n and full:
        keep = max(1, min(len(full), max_tokens // context))
        full, tail = [full[i * len(full) // keep] for i in range(keep)], []
    mine = list(dist.share(full))
    per_rank = -(-len(full) // dist.world_size())
    batches = -(-per_rank // batch_size)
    nats, nbytes, ntok = 0.0, 0.0, 0.0
    token_bytes = token_bytes.to(device)

    def score(sel: list[int], t: int, counted: bool) -> None:
        nonlocal nats, nbytes, ntok
        chunk = torch.from_numpy(np.stack([tokens[s:s + t + 1] for s in sel]).astype(np.int64)).to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits = model(x).float()
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), reduction="none")
        b = token_bytes[y.reshape(-1)]
        scored = b > 0
        if counted:
            nats += loss[scored].sum().item()
            nbytes += b.sum().item()
            ntok += scored.sum().item()

    for i in range(batches):
        sel = mine[i * batch_size:(i + 1) * batch_size]
        score(sel or full[:1], context, bool(sel))
    if tail:
        score(tail, n - tail[0], dist.is_main())
    nats, nbytes, ntok = dist.all_sum([nats, nbytes, ntok])
    return {"val_loss": nats / max(ntok, 1), "val_bpb": nats / (max(nbytes, 1) * math.log(2))}


def resolve_model_config(model_cfg: GPTConfig, vocab_size: int) -> GPTConfig:
    """The model's shape with its vocabulary taken from the tokenizer (rounded up to 64) unless set."""
    if model_cfg.vocab_size:
        if model_cfg.vocab_size < vocab_size:
            raise FidanError(f"model.vocab_size {model_cfg.vocab_size} is smaller than the tokenizer's {vocab_size}")
        return model_cfg
    return replace(model_cfg, vocab_size=64 * math.ceil(vocab_size / 64))


def token_bytes_for(tok: FidanTokenizer, vocab_size: int) -> torch.Tensor:
    table = np.zeros(vocab_size, dtype=np.int64)
    table[:tok.vocab_size] = tok.token_byte_lengths()
    return torch.from_numpy(table)


def enough_tokens(n_train: int, params: int, floor: float, tokens_per_step: int, steps: int) -> str:
    """A line on how much text the model has to learn from; raises when it is under ``floor``
    tokens per parameter (too little to learn from: the model would only memorise it)."""
    ratio = n_train / max(1, params)
    passes = tokens_per_step * steps / max(1, n_train)
    line = (f"pretrain: {n_train:,} training tokens for {params / 1e6:.2f}M parameters ({ratio:.3g} tokens per "
            f"parameter); {steps:,} steps read the split {passes:.1f} times")
    if floor and ratio < floor:
        raise FidanError(f"the training split has {n_train:,} tokens for a model of {params / 1e6:.2f}M parameters "
                         f"({ratio:.2g} tokens per parameter, under --train.min_tokens_per_param={floor:g}); "
                         f"{steps:,} steps would read it {passes:.0f} times over and learn it by heart. Add text "
                         f"(at least {floor * params:,.0f} tokens), choose a smaller model (--model.d_model, "
                         "--model.n_layer, --preset tiny), or pass --train.min_tokens_per_param=0 to train anyway")
    return line


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    meta = load_meta(ctx.input("tokens"))
    tok = FidanTokenizer.load(ctx.input("tokenizer"))
    model_cfg = resolve_model_config(cfg.section("model"), tok.vocab_size)
    folder = ctx.input("tokens").parent
    train_tokens = load_tokens(folder / "train.bin", meta)
    val_tokens = load_tokens(folder / "val.bin", meta)
    token_bytes = token_bytes_for(tok, model_cfg.vocab_size)
    torch.manual_seed(cfg.run.seed)
    model = GPT(model_cfg)
    ctx.say(enough_tokens(len(train_tokens), model.num_params(), cfg.train.min_tokens_per_param,
                          cfg.train.batch_size * cfg.train.grad_accum * model_cfg.context, cfg.train.steps))
    eval_batch = max(1, cfg.train.batch_size)
    task = Task(
        name="pretrain",
        batch=RandomWindows(train_tokens, model_cfg.context, cfg.train.batch_size, cfg.run.seed),
        loss=next_token_loss,
        evaluate=lambda m: bits_per_byte(m, val_tokens, token_bytes, eval_batch, cfg.train.eval_tokens),
        flops_per_token=flops_per_token(model_cfg),
        info={"tokenizer": "tokenizer/tokenizer.json"},
        every_parameter_used=True,
    )
    model, summary = train(model, cfg.train, task, ctx)
    if cfg.train.eval_tokens:  # the periodic evals used a subset; the final figure covers everything
        model.eval()
        with ctx.autocast():
            summary.update(bits_per_byte(model, val_tokens, token_bytes, eval_batch))
    summary["unigram_bpb"] = meta["unigram_bpb"]
    summary["params"] = model.num_params()
    return summary
