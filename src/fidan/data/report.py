"""The printed account of the data stage: what each cleaning step kept, dropped and why."""
from __future__ import annotations


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


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
            print(f"  {name:<18}{c['docs_in']:>9,}{c['docs_out']:>10,}{kept:>7.1%}{_mb(c['bytes_out']):>8}  {extra}")
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
