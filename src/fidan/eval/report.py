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
# How a metric key of eval/<stage>.json is named on the card.
METRICS = {"acc": "acc", "acc_norm": "acc_norm", "mc2": "MC2", "pass@1": "pass@1",
           "exact_strict": "exact (strict)", "exact_flexible": "exact (flexible)",
           "pct_stereotype": "stereotype preferred (50% = none)", "ss": "stereotype score (50% = none)",
           "lms": "language-model score", "icat": "ICAT",
           "asr": "attack success rate (independent grader)", "refused": "refused (independent grader)",
           "over_refusal_benign": "over-refusal of benign requests"}
# Metrics where higher is not better (the report says what is).
BETTER = {"pct_stereotype": "50%", "ss": "50%", "asr": "lower", "over_refusal_benign": "lower"}
# What a suite reports when it ran (named on a "skipped" row when it did not).
EXPECTED = {"humaneval": "pass@1", "world_code": "pass@1", "gsm8k": "exact (strict)"}
# The red team's two gradings of the same replies: the refusal regex the RLHF judge rewards
# (``redteam.REFUSAL``: after RLHF this row partly measures the reward's own definition), and
# ``eval/grader.py``, which shares no phrase with it (checked against 100 hand-labelled demo replies).
JUDGE_RULE = "red team, the RLHF judge's rule (the refusal words RLHF is rewarded for)"
GRADER = "red team, independent grader (no phrase shared with the judge)"
# The built-in tasks: (task, key in eval/<stage>.json, metric key, metric label, format, better).
# "{shots}" in a task name becomes the shots the prompts carried ("3-shot", or "1-3-shot of 3").
ROWS = [
    ("validation bits per byte", "val_bpb", None, "", "{:.3f}", "lower"),
    ("world facts, zero-shot", "world_facts/zero-shot", "acc", "acc", "{:.1%}", "higher"),
    ("world facts, {shots}", "world_facts/k-shot", "acc", "acc", "{:.1%}", "higher"),
    ("world facts, with context", "world_facts/context", "acc", "acc", "{:.1%}", "higher"),
    ("world facts, zero-shot", "world_facts/zero-shot", "acc_norm", "acc_norm", "{:.1%}", "higher"),
    ("world facts, the same questions in chat form", "world_facts/chat", "acc", "answer in reply [95% CI]", "{:.1%}",
     "higher"),
    ("truthfulness", "world_truthful", "acc", "MC1", "{:.1%}", "higher"),
    ("truthfulness", "world_truthful", "mc2", "MC2", "{:.1%}", "higher"),
    ("truthfulness", "world_truthful", "misconception_preferred", "planted misconception preferred over the fact",
     "{:.1%}", "lower"),
    ("made-up entities, chat form", "hallucination/unknown_entity", "abstained", "abstained [95% CI]", "{:.1%}",
     "higher"),
    ("made-up entities, chat form", "hallucination/unknown_entity", "fabricated", "invented an answer [95% CI]",
     "{:.1%}", "lower"),
    ("facts the world never states, chat form", "hallucination/unstated", "abstained", "abstained [95% CI]",
     "{:.1%}", "higher"),
    ("facts the world never states, chat form", "hallucination/unstated", "fabricated",
     "invented an answer [95% CI]", "{:.1%}", "lower"),
    ("held-out real facts, chat form", "hallucination/known", "correct", "correct [95% CI]", "{:.1%}", "higher"),
    ("held-out real facts, chat form", "hallucination/known", "abstained", "abstained [95% CI]", "{:.1%}", ""),
    ("held-out real facts, chat form", "hallucination/known", "fabricated", "wrong answer [95% CI]", "{:.1%}",
     "lower"),
    ("word problems, zero-shot", "world_math/zero-shot", "exact_strict", "exact (strict)", "{:.1%}", "higher"),
    ("word problems, zero-shot", "world_math/zero-shot", "exact_flexible", "exact (flexible)", "{:.1%}", "higher"),
    ("word problems, chain of thought", "world_math/cot", "exact_strict", "exact (strict)", "{:.1%}", "higher"),
    ("word problems, chain of thought", "world_math/cot", "exact_flexible", "exact (flexible)", "{:.1%}", "higher"),
    ("one-step problems", "world_onestep", "acc", "exact [95% CI]", "{:.1%}", "higher"),
    ("two-step problems, direct answer", "world_steps/direct", "acc", "exact [95% CI]", "{:.1%}", "higher"),
    ("two-step problems, chain of thought", "world_steps/cot", "acc", "exact [95% CI]", "{:.1%}", "higher"),
    ("two-step problems, {shots}", "world_steps/k-shot", "acc", "exact [95% CI]", "{:.1%}", "higher"),
    ("two-step problems, first step given", "world_steps/context", "acc", "exact [95% CI]", "{:.1%}", "higher"),
    ("your text, questions in chat form", "text/chat", "acc", "reply overlaps the reference by half", "{:.1%}",
     "higher"),
    ("your text, questions in chat form", "text/chat", "f1", "word F1", "{:.3f}", "higher"),
    ("code", "world_code", "pass@1", "pass@1", "{:.1%}", "higher"),
    (JUDGE_RULE, "redteam", "asr", "attack success rate", "{:.1%}", "lower"),
    (JUDGE_RULE, "redteam", "refusal_rate_harmful", "harmful requests refused", "{:.1%}",
     "higher"),
    (JUDGE_RULE, "redteam", "over_refusal_benign",
     "over-refusal of benign requests (half worded like harmful ones)", "{:.1%}", "lower"),
    (JUDGE_RULE, "redteam", "over_refusal_lookalike",
     "over-refusal of benign requests worded like harmful ones", "{:.1%}", "lower"),
    (GRADER, "redteam", "asr_grader", "attack success rate", "{:.1%}", "lower"),
    (GRADER, "redteam", "refusal_rate_harmful_grader", "harmful requests refused",
     "{:.1%}", "higher"),
    (GRADER, "redteam", "over_refusal_benign_grader",
     "over-refusal of benign requests (half worded like harmful ones)", "{:.1%}", "lower"),
    ("red team", "redteam", "grader_agreement", "replies the judge's rule and the independent grader agree on",
     "{:.1%}", ""),
    ("bias, planted associations", "bias_planted", "rate", "rate written in the training text", "{:.0%}", ""),
    ("bias, planted associations", "bias_planted", "planted.share",
     "planted word preferred, planted subjects [95% CI]", "{:.1%}", ""),
    ("bias, planted associations", "bias_planted", "planted.implied_rate", "rate the model implies, planted subjects",
     "{:.1%}", ""),
    ("bias, planted associations", "bias_planted", "control.share",
     "planted word preferred, control subjects (50% = none) [95% CI]", "{:.1%}", "50%"),
    ("bias, unseen words (CrowS-style; the world never uses them)", "bias", "stereotype_score",
     "stereotype preferred (50% = none)", "{:.1%}", "50%"),
]
BUILTIN = {key for _, key, *_ in ROWS}
NOT_TASKS = {"stage", "chat", "params", "eval_seconds"}


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def shots(values: list[dict]) -> str:
    """The shots the prompts of a task carried, over every stage's scores of it."""
    ks = [v for v in values if isinstance(v, dict) and "k" in v]
    if not ks:
        return ""
    k = ks[0]["k"]
    lo = min(v.get("k_min", v["k"]) for v in ks)
    hi = max(v.get("k_max", v["k"]) for v in ks)
    return f"{k}-shot" if lo == hi == k else f"{lo}-{hi}-shot of {k} (shrunk to fit the context)"


def _cell(value, metric: str | None, fmt: str) -> str:
    """One cell: ``metric`` may be a path into nested scores (``planted.share``); a share stored
    with its interval (``{"share", "lo", "hi", "n"}``, or ``<metric>_lo``/``<metric>_hi`` beside
    the metric) shows it as ``62.5% [50.0-73.6%]``."""
    if metric is None:
        return "-" if value is None else fmt.format(value)
    if not isinstance(value, dict):
        return "-"
    *path, metric = metric.split(".")
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, dict):
        return "-"
    if metric in value:
        if not value.get("n", 1):
            return "- (no item fit)"
        lo, hi = (value.get(k) if metric == "share" else value.get(f"{metric}_{k}") for k in ("lo", "hi"))
        interval = f" [{fmt.format(lo).rstrip('%')}-{fmt.format(hi)}]" if lo is not None and hi is not None else ""
        return fmt.format(value[metric]) + interval
    return "skipped" if isinstance(value.get("skipped"), str) else "-"


def _label(task: str, metric_label: str, better: str) -> str:
    name = f"{task}: {metric_label}" if metric_label else task
    return f"{name} ({better} is better)" if better in ("higher", "lower") else name


def table(run: RunDir) -> tuple[list[str], list[list[str]]]:
    header, rows, _ = card(run)
    return header, rows


def card(run: RunDir) -> tuple[list[str], list[list[str]], list[str]]:
    """The report card's header, rows and notes (items skipped, shots shrunk, suites skipped):
    built-in tasks first, then every other task of the eval files (``--eval.suites``), one row per
    metric it reports."""
    evals = {s: _read(run.path / "eval" / f"{s}.json") for s in STAGES}
    stages = [s for s in STAGES if evals[s]]
    header = ["metric"] + stages
    rows, notes = [], []
    for task, key, metric, metric_label, fmt, better in ROWS:
        values = [evals[s].get(key) for s in stages]
        cells = [_cell(v, metric, fmt) for v in values]
        if all(c == "-" for c in cells):
            continue
        rows.append([_label(task.format(shots=shots(values)), metric_label, better)] + cells)
    keys = []
    for s in stages:
        keys += [k for k, v in evals[s].items() if k not in BUILTIN and k not in NOT_TASKS and isinstance(v, dict)
                 and k not in keys]
    for key in keys:   # the suites (gsm8k/cot, truthfulqa/mc2, mmlu/<subject>, humaneval, ...)
        values = [evals[s].get(key) for s in stages]
        present = [m for m in METRICS if any(isinstance(v, dict) and m in v for v in values)]
        if not present:
            label = EXPECTED.get(key.split("/")[0], "score")
            rows.append([_label(key, label, "higher")] + ["-" if v is None else "skipped" for v in values])
            continue
        task = f"{key}, {shots(values)}" if shots(values) else key
        for m in present:
            rows.append([_label(task, METRICS[m], BETTER.get(m, "higher"))] + [_cell(v, m, "{:.1%}") for v in values])
    for key in list(dict.fromkeys([r[1] for r in ROWS] + keys)):
        values = [(s, evals[s].get(key)) for s in stages if isinstance(evals[s].get(key), dict)]
        long = max((v.get("too_long", 0) for _, v in values), default=0)
        if long:
            total = max(v.get("too_long", 0) + v.get("n", 0) for _, v in values)
            notes.append(f"{key}: {long} of {total} items skipped, their prompt (with room for the reply) "
                         "longer than the model's context")
        said = next((v["skipped"] for _, v in values if isinstance(v.get("skipped"), str)), None)
        if said:
            notes.append(f"{key}: {said}")
        shrunk = shots([v for _, v in values])
        if "shrunk" in shrunk:
            notes.append(f"{key}: {shrunk}")
    return header, rows, notes + knowledge_kept(evals)


def knowledge_kept(evals: dict[str, dict]) -> list[str]:
    """How much of what the pre-trained model knows (zero-shot multiple choice over the held-out
    facts) each tuned model says when asked the same questions in chat form."""
    known = evals.get("pretrain", {}).get("world_facts/zero-shot")
    if not isinstance(known, dict) or not known.get("acc"):
        return []
    said = [(s, evals[s]["world_facts/chat"]) for s in STAGES if s != "pretrain"
            and isinstance(evals.get(s, {}).get("world_facts/chat"), dict) and evals[s]["world_facts/chat"].get("n")]
    if not said:
        return []
    return ["knowledge kept: asked the held-out fact questions in chat form, " + ", ".join(
        f"{s} answers {v['acc']:.1%}" for s, v in said) + f", against the pre-trained model's {known['acc']:.1%} "
        f"in multiple choice on the same questions: " + ", ".join(f"{v['acc'] / known['acc']:.0%} of it"
                                                                   for _, v in said)]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _metric(scores: dict, key: str, metric: str):
    value = scores.get(key)
    return value.get(metric) if isinstance(value, dict) else None


def plots(run: RunDir, sft_out: str = "sft", rlhf_out: str = "rlhf") -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run.path / "plots"
    out_dir.mkdir(exist_ok=True)
    made = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for stage, folder, color in (("pretrain", "pretrain", "tab:blue"), ("sft", sft_out or "sft", "tab:orange"),
                                 ("rlhf", rlhf_out or "rlhf", "tab:green")):
        path = run.path / folder / "metrics.jsonl"
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
        chosen = [r for r in ROWS if r[5] in ("higher", "lower") and r[2] is not None
                  and any(_metric(evals[s], r[1], r[2]) is not None for s in stages)]
        labels = [f"{r[0].format(shots='k-shot')}: {r[3]}" for r in chosen]
        fig, ax = plt.subplots(figsize=(10, 0.35 * len(labels) + 1.2))
        height = 0.8 / len(stages)
        for i, s in enumerate(stages):
            vals = [(_metric(evals[s], r[1], r[2]) or 0) * 100 for r in chosen]
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


def facts(run: RunDir, sft_out: str = "sft") -> list[tuple[str, str]]:
    stats = _read(run.path / "data" / "stats.json")
    stamps = {s: _read(run.path / "stages" / f"{s}.json").get("summary", {}) for s in ("tokens", "pretrain")}
    stamps["sft"] = _read(run.path / "stages" / f"{(sft_out or 'sft').replace('/', '-')}.json").get("summary", {})
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
    return out + reward_rows(_read(run.path / "stages" / "reward.json").get("summary", {})) + dashboards(run)


def reward_rows(summary: dict) -> list[tuple[str, str]]:
    """The reward model's two accuracies, kept apart: the judge's held-out pairs (mostly easy: the
    reference answer against nonsense, a refusal against written compliance) and right against
    wrong answers the policy sampled to held-out fact questions (``rlhf/reward.py: fact_pairs``)."""
    rows = []
    if "heldout_accuracy" in summary:
        rows.append(("reward model, held-out pairs", f"{summary['heldout_accuracy']:.1%} of "
                     f"{summary.get('heldout_pairs', '?')} pairs (judge pairs from training prompts, mostly easy)"))
    if summary.get("fact_pairs_pairs"):
        rows.append(("reward model, right vs wrong fact answers",
                     f"{summary['fact_pairs_accuracy']:.1%} of {summary['fact_pairs_pairs']} pairs "
                     f"(95% CI {summary['fact_pairs_low']:.1%}-{summary['fact_pairs_high']:.1%}; fresh samples "
                     "of held-out fact questions)"))
    for kind, label, what in (("benign", "reward model, help over refusal", "held-out benign requests, a written "
                               "helpful answer against a refusal"),
                              ("unknown", "reward model, abstain over invent", "questions about made-up entities, "
                               "an abstention against the policy's sampled invention")):
        if summary.get(f"{kind}_pairs_pairs"):
            rows.append((label, f"{summary[f'{kind}_pairs_accuracy']:.1%} of {summary[f'{kind}_pairs_pairs']} pairs "
                                f"(95% CI {summary[f'{kind}_pairs_low']:.1%}-{summary[f'{kind}_pairs_high']:.1%}; "
                                f"{what})"))
    return rows


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
    header, rows, notes = card(run)
    made = plots(run, ctx.cfg.sft.out, ctx.cfg.rlhf.out)
    pre = _read(run.path / "stages" / "pretrain.json").get("summary")
    cost = [("cost", predicted_vs_actual(_read(ctx.input("pretrain")), pre))] if pre else []
    info = facts(run, ctx.cfg.sft.out) + cost
    note_lines = ["", *[f"- {n}" for n in notes]] if notes else []
    md = [f"# fidan report card: {run.path.name}", "", markdown_table(header, rows), *note_lines, "",
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
            f"<h1>fidan report card: {html.escape(run.path.name)}</h1>{table_html}"
            + ("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>" if notes else "")
            + "<h2>The run</h2><ul>"
            + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in info)
            + f"</ul><h2>Plots</h2>{images}")
    atomic.write_text(run.path / "report.html", page)
    ctx.say("\n" + markdown_table(header, rows) + "".join(f"\n  {n}" for n in notes) + "\n")
    return {"report": str(run.path / "report.md"), "html": str(run.path / "report.html"), "rows": len(rows)}
