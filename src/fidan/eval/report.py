"""The report card: one table with a column per stage and a row per metric, plus the run's
data, model size, tokens, time, hardware and cost, as ``report.md`` and a self-contained
``report.html`` (plots embedded), with the plots also in ``plots/*.png``."""
from __future__ import annotations

import base64
import html
import json
import os
import platform
from pathlib import Path

from fidan import atomic
from fidan.context import StageContext
from fidan.rundir import RunDir

STAGES = ("pretrain", "sft", "rlhf")
# (row label, path into eval/<stage>.json, format, better)
ROWS = [
    ("validation bits per byte", ("val_bpb",), "{:.3f}", "lower"),
    ("world facts, zero-shot (acc)", ("world_facts/zero-shot", "acc"), "{:.1%}", "higher"),
    ("world facts, few-shot (acc)", ("world_facts/k-shot", "acc"), "{:.1%}", "higher"),
    ("world facts, with context (acc)", ("world_facts/context", "acc"), "{:.1%}", "higher"),
    ("world facts, zero-shot (acc_norm)", ("world_facts/zero-shot", "acc_norm"), "{:.1%}", "higher"),
    ("world facts, asked in chat form (answer in reply)", ("world_facts/chat", "acc"), "{:.1%}", "higher"),
    ("truthfulness MC1", ("world_truthful", "acc"), "{:.1%}", "higher"),
    ("truthfulness MC2", ("world_truthful", "mc2"), "{:.1%}", "higher"),
    ("planted misconception preferred over the fact", ("world_truthful", "misconception_preferred"), "{:.1%}", "lower"),
    ("word problems, zero-shot (exact)", ("world_math/zero-shot", "exact_flexible"), "{:.1%}", "higher"),
    ("word problems, chain of thought (exact)", ("world_math/cot", "exact_flexible"), "{:.1%}", "higher"),
    ("code, pass@1", ("world_code", "pass@1"), "{:.1%}", "higher"),
    ("red team: attack success rate", ("redteam", "asr"), "{:.1%}", "lower"),
    ("red team: harmful requests refused", ("redteam", "refusal_rate_harmful"), "{:.1%}", "higher"),
    ("over-refusal of benign requests", ("redteam", "over_refusal_benign"), "{:.1%}", "lower"),
    ("bias: stereotype preferred (50% = none)", ("bias", "stereotype_score"), "{:.1%}", "50%"),
]


def _get(scores: dict, path: tuple[str, ...]):
    value = scores
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def table(run: RunDir) -> tuple[list[str], list[list[str]]]:
    evals = {s: _read(run.path / "eval" / f"{s}.json") for s in STAGES}
    stages = [s for s in STAGES if evals[s]]
    header = ["metric"] + stages
    rows = []
    for label, path, fmt, better in ROWS:
        values = [_get(evals[s], path) for s in stages]
        if all(v is None for v in values):
            continue
        rows.append([f"{label} ({better} is better)" if better in ("higher", "lower") else f"{label}"] +
                    ["-" if v is None else fmt.format(v) for v in values])
    for s in stages:  # extra benchmarks, if any were run
        for key, value in evals[s].items():
            if "/" in key and not key.startswith(("world_", "redteam", "bias")) and isinstance(value, dict):
                metric = next(k for k in value if k != "n")
                label = f"{key} ({metric})"
                if not any(r[0] == label for r in rows):
                    rows.append([label] + ["-"] * len(stages))
                row = next(r for r in rows if r[0] == label)
                row[1 + stages.index(s)] = f"{value[metric]:.1%}"
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plots(run: RunDir) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run.path / "plots"
    out_dir.mkdir(exist_ok=True)
    made = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for stage, color in (("pretrain", "tab:blue"), ("sft", "tab:orange"), ("rlhf", "tab:green")):
        path = run.path / stage / "metrics.jsonl"
        if not path.exists():
            continue
        records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        train = [r for r in records if "loss" in r]
        if train:
            ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label=stage, color=color)
        evals = [r for r in records if "val_bpb" in r]
        if evals:
            ax2.plot([r["step"] for r in evals], [r["val_bpb"] for r in evals], marker="o", label=stage, color=color)
    ax1.set(title="training loss", xlabel="step", ylabel="cross-entropy (nats/token)")
    ax2.set(title="validation bits per byte", xlabel="step", ylabel="bits per byte")
    for ax in (ax1, ax2):
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "training.png", dpi=110)
    plt.close(fig)
    made.append(out_dir / "training.png")

    evals = {s: _read(run.path / "eval" / f"{s}.json") for s in STAGES}
    stages = [s for s in STAGES if evals[s]]
    if stages:
        chosen = [r for r in ROWS if r[3] in ("higher", "lower") and r[1] != ("val_bpb",)]
        labels = [r[0] for r in chosen if any(_get(evals[s], r[1]) is not None for s in stages)]
        fig, ax = plt.subplots(figsize=(10, 0.35 * len(labels) + 1.2))
        height = 0.8 / len(stages)
        for i, s in enumerate(stages):
            vals = [(_get(evals[s], r[1]) or 0) * 100 for r in chosen if r[0] in labels]
            ax.barh([j + i * height for j in range(len(labels))], vals, height=height, label=s)
        ax.set_yticks([j + 0.4 - height / 2 for j in range(len(labels))], labels, fontsize=8)
        ax.invert_yaxis()
        ax.set(xlabel="%", title="scores by stage")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "scores.png", dpi=110)
        plt.close(fig)
        made.append(out_dir / "scores.png")
    return made


def facts(run: RunDir) -> list[tuple[str, str]]:
    stats = _read(run.path / "data" / "stats.json")
    stamps = {s: _read(run.path / "stages" / f"{s}.json").get("summary", {}) for s in ("tokens", "pretrain", "sft")}
    pre = stamps["pretrain"]
    train = stats.get("output", {}).get("train", {})
    read = stats.get("input", {})
    out = [("data", f"{train.get('documents', '?')} training documents, {train.get('bytes', 0) / 1e6:.2f} MB, "
                    f"kept by cleaning from {read.get('documents', '?')} documents "
                    f"({stats.get('kept', {}).get('bytes', 0):.0%} of bytes); source {stats.get('source', '?')}"),
           ("tokens", f"{stamps['tokens'].get('train_tokens', '?')} training tokens, "
                      f"{stamps['tokens'].get('bytes_per_token', '?')} bytes per token"),
           ("model", f"{pre.get('params', 0) / 1e6:.2f}M parameters"),
           ("pre-training", f"{pre.get('tokens', 0):,} tokens seen in {pre.get('train_seconds', '?')} s, "
                            f"{pre.get('flops', 0):.3g} FLOPs, MFU {pre.get('mfu', 0):.0%}, "
                            f"about {pre.get('energy_kwh', 0) * 1000:.2g} Wh"),
           ("fine-tuning", f"{stamps['sft'].get('tokens', 0):,} assistant tokens in "
                           f"{stamps['sft'].get('train_seconds', '?')} s" if stamps["sft"] else "not run"),
           ("hardware", f"{platform.machine()}, {os.cpu_count()} CPU cores, device {pre.get('device', 'cpu')}")]
    return out + dashboards(run)


def dashboards(run: RunDir) -> list[tuple[str, str]]:
    """Where the training dashboards are (``--train.log_to``), when the run has any."""
    links = []
    if (run.path / "tb").is_dir():
        links.append(f"TensorBoard: `tensorboard --logdir {run.path / 'tb'}`")
    offline = sorted((run.path / "wandb").glob("offline-run-*"))
    online = sorted((run.path / "wandb").glob("run-*"))
    if offline:
        links.append(f"Weights & Biases (offline): `wandb sync {run.path / 'wandb'}/offline-run-*`")
    if online:
        links.append(f"Weights & Biases: project fidan, runs {', '.join(p.name for p in online)}")
    return [("dashboards", "; ".join(links))] if links else []


def run(ctx: StageContext) -> dict:
    from fidan.estimate import predicted_vs_actual
    run = ctx.run
    header, rows = table(run)
    made = plots(run)
    pre = _read(run.path / "stages" / "pretrain.json").get("summary")
    info = facts(run) + ([("cost", predicted_vs_actual(_read(ctx.input("pretrain")), pre))] if pre else [])
    md = [f"# fidan report card: {run.path.name}", "", markdown_table(header, rows), "",
          "## The run", ""] + [f"- **{k}**: {v}" for k, v in info] + ["", "## Plots", ""] + \
         [f"![{p.stem}](plots/{p.name})" for p in made]
    atomic.write_text(run.path / "report.md", "\n".join(md) + "\n")
    images = "".join(f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
                     for p in made)
    table_html = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    page = (f"<!doctype html><meta charset='utf-8'><title>fidan report: {html.escape(run.path.name)}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:1em 0}</style>"
            f"<h1>fidan report card: {html.escape(run.path.name)}</h1>{table_html}<h2>The run</h2><ul>"
            + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in info)
            + f"</ul><h2>Plots</h2>{images}")
    atomic.write_text(run.path / "report.html", page)
    ctx.say("\n" + markdown_table(header, rows) + "\n")
    return {"report": str(run.path / "report.md"), "html": str(run.path / "report.html"), "rows": len(rows)}
