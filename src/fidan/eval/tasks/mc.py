"""Multiple choice scored by log-likelihood, as the common harnesses do.

``acc``: the choice with the highest summed log-probability; ``acc_norm``: the highest
log-probability per character of the choice. TruthfulQA MC2: the probabilities of the choices,
normalised over them, and the mass on the true ones. Loaders: the MMLU csv layout
(``question,A,B,C,D,answer`` without header, one file per subject) and TruthfulQA's JSON.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from fidan.errors import FidanError
from fidan.infer.scoring import fits_choices, logliks

LETTERS = "ABCD"


def shot_counts(items: list[dict]) -> dict:
    """``k_min``/``k_max``: the fewest and most shots the scored items' prompts carry (``"shots"``)."""
    ks = [it["shots"] for it in items if "shots" in it]
    return {"k_min": min(ks), "k_max": max(ks)} if ks else {}


def score(model, tok, items: list[dict]) -> dict[str, float]:
    """Items: ``{"query", "choices", "gold"}`` (+ ``"labels"`` for MC2-style scoring). An item
    whose query and longest choice do not fit the model's context is skipped and counted
    (``too_long``), never scored on a cut prompt."""
    fitting = [it for it in items if fits_choices(model, tok, it["query"], it["choices"])]
    skipped = len(items) - len(fitting)
    items = fitting
    pairs = [(it["query"], c) for it in items for c in it["choices"]]
    values = logliks(model, tok, pairs)
    acc = norm = mc2 = myth = 0.0
    i = 0
    for it in items:
        ll = values[i:i + len(it["choices"])]
        i += len(it["choices"])
        acc += max(range(len(ll)), key=ll.__getitem__) == it["gold"]
        per_char = [v / max(1, len(c)) for v, c in zip(ll, it["choices"])]
        norm += max(range(len(ll)), key=per_char.__getitem__) == it["gold"]
        if "misconception" in it:  # the planted falsehood beats the fact
            myth += ll[it["misconception"]] > ll[it["gold"]]
        if "labels" in it:
            top = max(ll)
            p = [math.exp(v - top) for v in ll]
            mc2 += sum(pi for pi, lab in zip(p, it["labels"]) if lab) / sum(p)
    n = max(1, len(items))
    out = {"acc": acc / n, "acc_norm": norm / n, "n": len(items), **shot_counts(items)}
    if skipped:
        out["too_long"] = skipped
    if any("labels" in it for it in items):
        out["mc2"] = mc2 / n
    if any("misconception" in it for it in items):
        out["misconception_preferred"] = myth / n
    return out


def mmlu_prompt(subject: str, row: list[str], shots: list[list[str]] = ()) -> str:
    def block(r: list[str], with_answer: bool) -> str:
        text = r[0] + "\n" + "\n".join(f"{LETTERS[i]}. {r[i + 1]}" for i in range(4)) + "\nAnswer:"
        return text + (f" {r[5]}\n\n" if with_answer else "")
    head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    return head + "".join(block(s, True) for s in shots) + block(row, False)


def load_mmlu(path: str | Path, k_shot: int = 0, dev: str | Path | None = None) -> list[dict]:
    """One subject's csv; shots come from a separate dev csv (MMLU's convention)."""
    path = Path(path)
    subject = mmlu_subject(path)
    rows = _read_csv(path)
    shots = _read_csv(Path(dev))[:k_shot] if dev and k_shot else []
    return [{"id": f"{subject}-{i}", "query": mmlu_prompt(subject, r, shots),
             "choices": [f" {c}" for c in LETTERS], "gold": LETTERS.index(r[5])} for i, r in enumerate(rows)]


def mmlu_subject(path: str | Path) -> str:
    """``astronomy`` for ``astronomy_test.csv`` (MMLU names its files ``<subject>_<split>.csv``)."""
    stem = Path(path).stem
    head, _, split = stem.rpartition("_")
    return head if head and split in ("test", "dev", "val", "validation") else stem


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise FidanError(f"{path}: cannot read ({e})") from None
    for number, r in enumerate(rows, start=1):
        if len(r) != 6 or r[5].strip() not in LETTERS:
            raise FidanError(f"{path}:{number}: expected question,A,B,C,D,answer (A-D)")
    return rows


def load_truthfulqa(path: str | Path, mode: str = "mc1") -> list[dict]:
    path = Path(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FidanError(f"{path}: cannot read TruthfulQA JSON ({e})") from None
    items = []
    for i, row in enumerate(data):
        targets = row.get(f"{mode}_targets")
        if not targets or len(targets["choices"]) != len(targets["labels"]):
            raise FidanError(f"{path}: item {i} has no valid {mode}_targets")
        item = {"id": f"tqa-{i}", "query": f"Q: {row['question']}\nA:",
                "choices": [f" {c}" for c in targets["choices"]], "gold": targets["labels"].index(1)}
        if mode == "mc2":
            item["labels"] = targets["labels"]
        items.append(item)
    return items
