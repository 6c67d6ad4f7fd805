"""Scoring the cleaning stage against the hidden ground truth of the embedded noisy web sample.

``fidan.corpus.web`` labels every document it plants a fault in; the cleaning steps never read
those labels. This module compares what came out of the stage with them, fault by fault.
"""
from __future__ import annotations

DROP = ("exact_dup", "near_dup", "spam", "short", "foreign", "listing", "template")
NOT_TEXT = ("spam", "short", "foreign", "listing", "template")  # pages whose language is no test of the identifier
FIX = ("boilerplate", "pii", "contaminated")


def _rate(hits: int, total: int) -> dict:
    return {"hits": hits, "total": total, "rate": round(hits / total, 4) if total else None}


def score(truth: list[dict], kept: dict[str, str], langs: dict[str, str | None]) -> dict:
    """``kept``: id -> final text of every document that survived; ``langs``: id -> detected language."""
    by_label: dict[str, list[dict]] = {}
    for t in truth:
        by_label.setdefault(t["label"], []).append(t)
    out: dict = {}
    clean = by_label.get("clean", [])
    out["clean_wrongly_dropped"] = _rate(sum(t["id"] not in kept for t in clean), len(clean))
    fixable = [t for label in FIX for t in by_label.get(label, [])]
    out["fixable_wrongly_dropped"] = _rate(sum(t["id"] not in kept for t in fixable), len(fixable))
    for label in DROP:
        items = by_label.get(label, [])
        if not items and label in ("listing", "template"):
            continue  # planted only by the web mix
        if label == "near_dup":
            items = [t for t in items if t.get("jaccard", 1.0) >= 0.8]
        out[f"{label}_removed"] = _rate(sum(t["id"] not in kept for t in items), len(items))
    pii = by_label.get("pii", [])
    # Personal data in pages that a quality rule dropped never reaches training; it is counted apart.
    values = [(t["id"], k, v) for t in pii if t["id"] in kept for k, v in t["planted"].items()]
    out["pii_replaced"] = _rate(sum(v not in kept[i] and f"<{k.upper()}>" in kept[i] for i, k, v in values),
                                len(values))
    out["pii_pages_dropped"] = sum(t["id"] not in kept for t in pii)
    cont = by_label.get("contaminated", [])
    out["contamination_removed"] = _rate(sum(t["planted"] not in kept.get(t["id"], "") for t in cont), len(cont))
    boiler = by_label.get("boilerplate", [])
    lines = [(t["id"], line) for t in boiler for line in t["planted"]]
    out["boilerplate_lines_removed"] = _rate(sum(i in kept and line not in kept[i] for i, line in lines), len(lines))
    text_docs = [t for t in truth if t["label"] not in NOT_TEXT and t["lang"] in ("en", "tr")
                 and langs.get(t["id"]) is not None]
    out["language_correct"] = _rate(sum(langs[t["id"]] == t["lang"] for t in text_docs), len(text_docs))
    foreign = [t for t in by_label.get("foreign", []) if langs.get(t["id"]) is not None]
    out["foreign_language_correct"] = _rate(sum(langs[t["id"]] == t["lang"] for t in foreign), len(foreign))
    junk = [t for t in truth if t["label"] in DROP]
    out["junk_removed"] = _rate(sum(t["id"] not in kept for t in junk), len(junk))  # the filters' recall
    dropped = [t for t in truth if t["id"] not in kept]
    out["drop_precision"] = _rate(sum(t["label"] in DROP for t in dropped), len(dropped))
    return out


BARS = {  # the bars: (metric, minimum rate) or, for wrong drops, the maximum
    "exact_dup_removed": (">=", 1.0), "near_dup_removed": (">=", 0.95), "contamination_removed": (">=", 1.0),
    "pii_replaced": (">=", 1.0), "clean_wrongly_dropped": ("<=", 0.05), "language_correct": (">=", 0.98),
}


def check(scores: dict) -> dict[str, bool]:
    ok = {}
    for name, (op, bar) in BARS.items():
        rate = scores[name]["rate"]
        ok[name] = rate is not None and (rate >= bar if op == ">=" else rate <= bar)
    return ok
