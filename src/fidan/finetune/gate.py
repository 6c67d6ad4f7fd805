"""GATE, guided attention training: steer chosen heads' attention towards the evidence.

A training example may mark the span of its prompt that holds the answer (a user turn's
``"evidence"``; the embedded world's with-context questions mark the passage sentence that
states the fact). For every query position that predicts an answer token, the attention mass
``a`` a guided head puts on the span is pushed up to a target mass ``tau`` by the KL divergence
between the two-outcome distributions (on the span, elsewhere):
``KL(tau || a) = tau log(tau / a) + (1 - tau) log((1 - tau) / (1 - a))``, applied only while
``a < tau`` (a head already looking there is left alone). The term is averaged over guided
heads, answer positions and the examples that mark a span, and weighted by ``sft.gate``.

Only the guided blocks compute their attention explicitly (``model.gpt.recorded_attention``);
the rest keep the fused kernel. The held-out measure (:func:`measure`) asks the world's held-out
fact questions after a passage about their subject, and reports how much attention the answer's
tokens put on the answer's sentence and how often the greedy reply is right.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from fidan.corpus.turkish import lower
from fidan.errors import FidanError
from fidan.finetune.data import evidence_span
from fidan.infer.answers import answer, first_sentence
from fidan.model.config import GPTConfig
from fidan.model.gpt import GPT, recorded_attention
from fidan.records import read_jsonl
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.tokenizer.chat import render


def _indices(text: str, key: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise FidanError(f"bad value for 'sft.{key}': {text!r} (comma-separated integers)") from None


def parse_guide(layers: str, heads: str) -> tuple[list[int] | None, list[int] | None]:
    """``sft.gate_layers`` and ``sft.gate_heads`` as lists (layers None: the top dense block;
    heads None: all)."""
    heads_list = None if heads.strip() == "all" else _indices(heads, "gate_heads")
    if layers.strip() == "dense":
        return None, heads_list
    chosen = _indices(layers, "gate_layers")
    if not chosen:
        raise FidanError("bad value for 'sft.gate_layers': name at least one block")
    return chosen, heads_list


class AttentionGuide:
    def __init__(self, layers: str, heads: str, mass: float, cfg: GPTConfig):
        chosen, head_list = parse_guide(layers, heads)
        n_layer, n_head = cfg.n_layer, cfg.n_head
        if chosen is None:
            dense = [i for i in range(n_layer) if not cfg.is_banded(i)]
            chosen = [dense[-1] if dense else n_layer - 1]
        bad = [i for i in chosen if not -n_layer <= i < n_layer]
        if bad or any(not 0 <= h < n_head for h in head_list or []):
            raise FidanError(f"sft.gate_layers={layers!r} / sft.gate_heads={heads!r}: the model has "
                             f"{n_layer} blocks and {n_head} heads")
        self.layers = sorted({i % n_layer for i in chosen})
        self.heads, self.mass = head_list, mass

    def span_mass(self, probs: dict[int, torch.Tensor], evidence: torch.Tensor) -> torch.Tensor:
        """Attention mass on the span ``[batch, guided heads x layers, query]``."""
        out = []
        for layer in self.layers:
            p = probs[layer]
            p = p[:, :, -evidence.shape[1]:, -evidence.shape[1]:]  # leave out soft-prompt positions
            if self.heads is not None:
                p = p[:, self.heads]
            out.append((p.float() * evidence[:, None, None, :]).sum(-1))
        return torch.cat(out, dim=1)

    def loss(self, probs: dict[int, torch.Tensor], answer_mask: torch.Tensor, evidence: torch.Tensor
             ) -> torch.Tensor:
        rows = evidence.any(1)
        if not rows.any():
            return torch.zeros((), device=evidence.device)
        a = self.span_mass(probs, evidence)[rows].clamp(1e-6, 1 - 1e-6)
        tau = self.mass
        a = torch.minimum(a, torch.full_like(a, tau))   # at or above the target: no pull
        kl = tau * torch.log(tau / a) + (1 - tau) * torch.log((1 - tau) / (1 - a))
        where = answer_mask[rows][:, None, :].expand_as(kl).float()
        return (kl * where).sum() / where.sum().clamp(min=1)


# -- held-out measure ----------------------------------------------------------------------------

def context_items(eval_dir: Path, n: int, seed: int = 0) -> list[dict]:
    """Held-out fact questions after a passage: up to four true statements about the same subject
    from the held-out set, shuffled, one of them the answer's (``gold``)."""
    path = eval_dir / "facts.jsonl"
    if not path.exists():
        return []
    items = [it for _, it in read_jsonl(path)]
    by_subject: dict[str, list[str]] = {}
    for it in items:
        by_subject.setdefault(it["subject"], []).append(it["statements"][it["label"]])
    rng = random.Random(seed)
    out = []
    for it in items:
        gold = it["statements"][it["label"]]
        passage = [s for s in by_subject[it["subject"]] if s != gold][:3] + [gold]
        if len(passage) < 2:
            continue
        rng.shuffle(passage)
        out.append({"passage": passage, "question": it["question"], "gold": gold, "answer": it["answer"]})
    step = max(1, len(out) // n) if n else 1
    return out[::step][:n] if n else out


def measure(model: GPT, tok: FidanTokenizer, items: list[dict], guide: AttentionGuide) -> dict[str, float]:
    """On held-out with-context questions: the guided heads' mean attention mass on the answer's
    sentence, from the (teacher-forced) answer tokens; and the greedy reply's accuracy."""
    model.eval()
    device = next(model.parameters()).device
    masses, right = [], 0
    budget = model.cfg.context - model.cfg.prompt_tokens
    for it in items:
        passage = list(it["passage"])
        while True:   # other sentences go (never the answer's) until the question and answer fit
            prompt = f"{' '.join(passage)}\n\n{it['question']}"
            ids, mask = render(tok, [{"role": "user", "content": prompt},
                                     {"role": "assistant", "content": it["gold"]}])
            if len(ids) <= budget or len(passage) == 1:
                break
            passage.remove(next(s for s in passage if s != it["gold"]))
        span = evidence_span(tok, ids, it["gold"])   # first found in the passage, before the reply
        if span is None or len(ids) > budget:
            continue
        x = torch.tensor([ids[:-1]], device=device)
        evidence = torch.zeros_like(x, dtype=torch.bool)
        evidence[0, span[0]:span[1]] = True
        with torch.no_grad(), recorded_attention(model, guide.layers) as probs:
            model(x)
        a = guide.span_mass(probs, evidence)[0]                      # [heads, query]
        queries = torch.tensor(mask[1:], device=device)
        masses.append(float(a[:, queries].mean()))
        reply = answer(model, tok, prompt, 24)
        right += lower(it["answer"]) in lower(first_sentence(reply))
    n = len(masses)
    return {"context_n": n, "context_attention_mass": sum(masses) / n if n else 0.0,
            "context_acc": right / n if n else 0.0}
