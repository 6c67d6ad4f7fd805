"""The printed account of the data stage: what each cleaning step kept, dropped and why."""
from __future__ import annotations


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


# What to change when a step removes most of the text.
RELAX = {"normalize": "leave normalize out of --data.steps",
         "language": "--data.languages (the kept languages) or a lower --data.lang_threshold",
         "decontam": "--data.decontam_mode=cut, or fewer --data.decontam_files",
         "exact_dedup": "nothing: these are copies (leave exact_dedup out of --data.steps to keep them)",
         "near_dedup": "--data.minhash_bands / --data.minhash_rows, or leave near_dedup out of --data.steps"}
QUALITY = ("c4", "gopher_repetition", "gopher_quality", "fineweb")


def _short(text: str, n: int = 70) -> str:
    text = " ".join(text.replace(" / ", " ").split())
    return text if len(text) <= n else text[:n - 3] + "..."


def examples(c: dict, top: int = 3) -> list[str]:
    """One example for each of a step's top reasons (documents dropped, then lines removed)."""
    out = []
    for reason, _n in sorted(c["dropped"].items(), key=lambda kv: -kv[1])[:top]:
        ex = (c.get("examples", {}).get(reason) or [{}])[0]
        if ex:
            detail = f" ({ex['detail']})" if ex.get("detail") else ""
            out.append(f"{reason.split(':')[-1]}: {ex['id']}: \"{_short(ex.get('text', ''))}\"{detail}")
    for reason, (n, line) in sorted(c.get("line_reasons", {}).items(), key=lambda kv: -kv[1][0])[:top]:
        out.append(f"line {reason} ({n:,} lines): \"{_short(line)}\"")
    return out


def heavy_steps(stats: dict) -> list[str]:
    """A closing line for each step that removed more than half of the bytes it was given."""
    out = []
    profiles = next((c.get("profiles") for c in stats["steps"].values() if c.get("profiles")), {}) or {}
    for name, c in stats["steps"].items():
        if not c["bytes_in"] or c["bytes_in"] - c["bytes_out"] <= c["bytes_in"] / 2:
            continue
        share = 1 - c["bytes_out"] / c["bytes_in"]
        if name in QUALITY:
            used = ", ".join(f"{p} {n:,}" for p, n in sorted(profiles.items())) or "web"
            if profiles and "web" not in profiles:
                fix = f"leave {name} out of --data.steps (the documents were already cleaned as {used})"
            else:
                fix = (f"the documents were cleaned as: {used}; for text that is not from the web use "
                       f"--data.profile=books or notes, or leave {name} out of --data.steps")
        else:
            fix = RELAX.get(name, f"leave {name} out of --data.steps")
        out.append(f"  {name} removed {share:.0%} of the bytes it was given; to keep more: {fix}")
    return out


def print_table(stats: dict) -> None:
    inp = stats["input"]
    print(f"  read {inp['documents']:,} documents ({_mb(inp['bytes'])} MB) from {stats['source']}")
    steps = stats["steps"]
    if steps:
        print(f"  {'step':<18}{'docs in':>9}{'docs out':>10}{'kept':>7}{'MB out':>8}  top reasons")
        for name, c in steps.items():
            kept = c["docs_out"] / c["docs_in"] if c["docs_in"] else 1.0
            reasons = sorted(c["dropped"].items(), key=lambda kv: -kv[1])[:3]
            extra = ", ".join(f"{r.split(':')[-1]} {n}" for r, n in reasons)
            if c.get("changed"):
                extra = (extra + ", " if extra else "") + f"{c['changed']} changed"
            if c.get("found_pii"):
                extra += " (" + ", ".join(f"{k} {v}" for k, v in sorted(c["found_pii"].items())) + ")"
            if c.get("lines_removed"):
                extra = (extra + ", " if extra else "") + f"{c['lines_removed']:,} lines removed"
            print(f"  {name:<18}{c['docs_in']:>9,}{c['docs_out']:>10,}{kept:>7.1%}{_mb(c['bytes_out']):>8}  {extra}")
            for line in examples(c):
                print(f"      e.g. {line}")
    for line in heavy_steps(stats) if steps else []:
        print(line)
    out = stats.get("output")
    if out is None:  # the run failed: nothing (or too little) survived the steps above
        print(f"  kept {stats.get('kept_documents', 0):,} documents: too few for a train and a validation split")
        return
    print(f"  kept {stats['kept']['documents']:.1%} of documents and {stats['kept']['bytes']:.1%} of bytes: "
          f"train {out['train']['documents']:,} docs ({_mb(out['train']['bytes'])} MB), "
          f"val {out['val']['documents']:,} docs ({_mb(out['val']['bytes'])} MB)")
    truth = stats.get("ground_truth")
    if truth:
        parts = []
        for name, ok in truth["bars_met"].items():
            r = truth["scores"][name]
            if r["rate"] is None:  # nothing of this kind was planted (corpus.noise=0)
                parts.append(f"{name} n/a (none planted)")
                continue
            parts.append(f"{name} {r['rate']:.1%} ({r['hits']}/{r['total']}){'' if ok else ' MISSED'}")
        print("  against the hidden ground truth: " + "; ".join(parts))


def drops_line(steps: dict) -> str:
    """``language 170, c4 9``: how many documents each step dropped (for a one-line error)."""
    parts = [f"{name} {c['docs_in'] - c['docs_out']}" for name, c in steps.items() if c["docs_in"] - c["docs_out"]]
    return ", ".join(parts) if parts else "none"
