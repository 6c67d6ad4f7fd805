"""Transfer learning to a classifier: the pre-trained trunk plus a new linear head.

The text is encoded as ``<|bos|> text``; the head reads the final hidden state at the last real
token (the model is causal, so that position has seen the whole text) and predicts one of the
labels. The trunk is fine-tuned with the head, or frozen (``classify.freeze_trunk``) so only the
head learns. The seeds' example is sentiment: positive or negative reviews. The embedded
world's reviews put one keyword in a fixed frame, so a bag of words separates them; the summary
also scores the head and a bag-of-words baseline trained on the same reviews on harder ones
(``sentiment/hard.jsonl``: negation, contrast, irony, unseen sentiment words). Writes
``classify/model.safetensors`` (trunk and head), ``model.json`` and accuracy in the summary.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fidan.context import StageContext
from fidan.errors import FidanError
from fidan.model.gpt import GPT, flops_per_token
from fidan.model.heads import ScalarHead
from fidan.model.io import load_model, load_with_head
from fidan.records import read_jsonl
from fidan.stats import share
from fidan.tokenizer.bpe import FidanTokenizer, carry
from fidan.train.loop import Task, inherit, train


class Classifier(nn.Module):
    def __init__(self, trunk: GPT, n_classes: int = 2):
        super().__init__()
        self.trunk = trunk
        self.head = ScalarHead(trunk.cfg.d_model, n_classes, zero=False)
        self.cfg = trunk.cfg  # so checkpoints record the trunk's shape

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        device = self.head.weight.device
        ids, lengths = ids.to(device), lengths.to(device)
        return self.head.at(self.trunk(ids, return_hidden=True), lengths - 1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_labelled(path: Path) -> list[tuple[str, int]]:
    rows = []
    for number, row in read_jsonl(path):
        try:
            text, label = row["text"], int(row["label"])
            if not isinstance(text, str) or label not in (0, 1):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise FidanError(f"{path}:{number}: need {{\"text\": str, \"label\": 0 or 1}}") from None
        rows.append((text, label))
    if not rows:
        raise FidanError(f"{path}: no labelled examples")
    return rows


def encode(tok: FidanTokenizer, rows: list[tuple[str, int]], context: int):
    encoded = [([tok.bos] + tok.encode(text))[:context] for text, _ in rows]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(rows), width), tok.pad, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, :len(e)] = torch.tensor(e)
    lengths = torch.tensor([len(e) for e in encoded])
    labels = torch.tensor([label for _, label in rows])
    return ids, lengths, labels


@torch.no_grad()
def accuracy(model: Classifier, ids, lengths, labels, batch: int = 128) -> float:
    model.eval()
    right = 0
    for i in range(0, len(ids), batch):
        predicted = model(ids[i:i + batch], lengths[i:i + batch]).argmax(-1).cpu()
        right += (predicted == labels[i:i + batch]).sum().item()
    model.train()
    return right / len(ids)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def bag_of_words(train_rows: list[tuple[str, int]], *evaluated: list[tuple[str, int]], steps: int = 300) -> list:
    """The baseline the classifier head must beat: logistic regression on word counts (the training
    rows' vocabulary; other words are ignored), trained on the same rows; its predictions for each
    list of ``evaluated`` rows."""
    vocab = {w: i for i, w in enumerate(sorted({w for text, _ in train_rows for w in _words(text)}))}

    def counts(rows):
        x = torch.zeros(len(rows), len(vocab) + 1)
        for r, (text, _) in enumerate(rows):
            for w in _words(text):
                if w in vocab:
                    x[r, vocab[w]] += 1
            x[r, -1] = 1.0   # bias
        return x
    gen = torch.Generator().manual_seed(0)
    weights = (torch.randn(len(vocab) + 1, generator=gen) * 0.01).requires_grad_(True)
    x, y = counts(train_rows), torch.tensor([float(label) for _, label in train_rows])
    optimizer = torch.optim.Adam([weights], lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(x @ weights, y).backward()
        optimizer.step()
    with torch.no_grad():
        return [(counts(rows) @ weights > 0).long().tolist() for rows in evaluated]


@torch.no_grad()
def predictions(model: Classifier, ids, lengths, batch: int = 128) -> list[int]:
    model.eval()
    out = []
    for i in range(0, len(ids), batch):
        out += model(ids[i:i + batch], lengths[i:i + batch]).argmax(-1).cpu().tolist()
    return out


def hard_report(model: Classifier, tok: FidanTokenizer, train_rows, test_rows, path: Path, context: int) -> dict:
    """Accuracy of the head and of the bag-of-words baseline on the held-out test reviews and on
    the hard ones (``sentiment/hard.jsonl``: negation, contrast, irony, unseen words), per kind,
    with Wilson intervals."""
    hard = [row for _, row in read_jsonl(path)]
    hard_rows = [(r["text"], int(r["label"])) for r in hard]
    ids, lengths, _ = encode(tok, hard_rows, context)
    head = predictions(model, ids, lengths)
    bow_test, bow_hard = bag_of_words(train_rows, test_rows, hard_rows)
    out = {"bow_test_accuracy": round(sum(p == y for p, (_, y) in zip(bow_test, test_rows)) / len(test_rows), 4)}
    for name, predicted in (("head", head), ("bow", bow_hard)):
        out[f"{name}_hard"] = share([p == y for p, (_, y) in zip(predicted, hard_rows)])
        out[f"{name}_hard_by_kind"] = {kind: round(sum(p == y for p, (_, y), r in zip(predicted, hard_rows, hard)
                                                       if r["kind"] == kind)
                                                   / sum(r["kind"] == kind for r in hard), 4)
                                       for kind in dict.fromkeys(r["kind"] for r in hard)}
    return out


def load_classifier(folder: Path, device: str | torch.device) -> Classifier:
    """The trained classifier of ``folder`` (``classify/``): its trunk's shape from model.json."""
    return load_with_head(folder, device, Classifier)


@torch.no_grad()
def probabilities(model: Classifier, tok: FidanTokenizer, texts: list[str]) -> list[float]:
    """P(positive) for each text, as the head reads it."""
    ids, lengths, _ = encode(tok, [(t, 0) for t in texts], model.cfg.context)
    return torch.softmax(model(ids, lengths).float(), -1)[:, 1].cpu().tolist()


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    c = cfg.classify
    tok = FidanTokenizer.load(ctx.tokenizer_of("base"))
    carry(ctx.input("base").parent, ctx.out)
    if c.data:
        rows = load_labelled(Path(c.data))
        cut = int(len(rows) * 0.8)
        train_rows, test_rows = rows[:cut], rows[cut:]
    else:
        train_rows = load_labelled(ctx.input("sentiment") / "train.jsonl")
        test_rows = load_labelled(ctx.input("sentiment") / "test.jsonl")
    trunk, _ = load_model(ctx.input("base").parent, ctx.device)
    torch.manual_seed(cfg.run.seed)
    model = Classifier(trunk)
    if c.freeze_trunk:
        trunk.requires_grad_(False)
    train_ids, train_len, train_y = encode(tok, train_rows, trunk.cfg.context)
    test_ids, test_len, test_y = encode(tok, test_rows, trunk.cfg.context)

    def batch(step: int, micro: int):
        rng = np.random.default_rng([cfg.run.seed, step, micro, 11])
        pick = torch.from_numpy(rng.integers(0, len(train_ids), size=c.batch_size))
        return train_ids[pick], train_len[pick], train_y[pick]

    def loss(m, b):
        ids, lengths, y = b
        logits = m(ids, lengths)
        return F.cross_entropy(logits, y.to(logits.device)), int(lengths.sum())

    majority = max(test_y.float().mean().item(), 1 - test_y.float().mean().item())
    tcfg = inherit(ctx, steps=c.steps, batch_size=c.batch_size, grad_accum=c.grad_accum, lr=c.lr,
                   warmup_steps=min(10, c.steps), weight_decay=0.0, eval_every=c.steps + 1)
    task = Task(name="classify", batch=batch, loss=loss, flops_per_token=flops_per_token(trunk.cfg),
                info={"head": "sentiment (0 negative, 1 positive)", "freeze_trunk": c.freeze_trunk},
                evaluate=None, parameters=[p for p in model.parameters() if p.requires_grad])
    before = accuracy(model, test_ids, test_len, test_y)
    model, summary = train(model, tcfg, task, ctx)
    if ctx.rank != 0:  # under torchrun rank 0 alone scores the trained model
        return summary
    after = accuracy(model, test_ids, test_len, test_y)
    ctx.say(f"sentiment accuracy on {len(test_rows)} held-out reviews: {after:.1%} "
            f"(untrained head {before:.1%}, majority class {majority:.1%})")
    hard_path = ctx.input("sentiment") / "hard.jsonl" if not c.data else None
    hard = {}
    if hard_path is not None and hard_path.exists() and hard_path.stat().st_size:
        hard = hard_report(model, tok, train_rows, test_rows, hard_path, trunk.cfg.context)
        ctx.say(f"  bag-of-words baseline on the same reviews {hard['bow_test_accuracy']:.1%}; on "
                f"{hard['head_hard']['n']} hard reviews (negation, contrast, irony, unseen words): head "
                f"{hard['head_hard']['share']:.1%}, bag of words {hard['bow_hard']['share']:.1%}")
    return {**summary, **hard, "test_accuracy": round(after, 4), "untrained_accuracy": round(before, 4),
            "majority_baseline": round(majority, 4), "train_examples": len(train_rows),
            "test_examples": len(test_rows),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
