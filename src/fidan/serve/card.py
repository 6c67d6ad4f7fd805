"""The model card an export writes as ``README.md``, in the Hugging Face layout, from the run directory.

YAML front matter (``language``, ``license``, ``tags``, ``base_model`` when there is one,
``pipeline_tag``, ``library_name``), then: the data the run was trained on (``data/stats.json``
and the data stage's stamp), the tokenizer, the architecture, each training stage with its
settings (``config.toml``'s section plus the command-line overrides in its stamp) and compute
(steps, tokens, time, FLOPs, energy, device, from its stamp), the report card's scores
(``eval/<stage>.json``, the same table as ``report.md``), and the risks: the bias probe, the
hallucination measures (planted misconceptions, facts asked in chat form) and what the red team
found (attack success by category and jailbreak wrapper, refusals, example replies). Everything
is read from the run's files; what a run did not do is said to be missing, never invented.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fidan.eval.report import markdown_table, table
from fidan.model.gpt import GPT
from fidan.rundir import RunDir
from fidan.tokenizer.bpe import FidanTokenizer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TRAINING = {"pretrain": ("train", "model"), "sft": ("sft",), "classify": ("classify",), "reward": ("reward",),
            "rlhf": ("rlhf",)}
COMPUTE = (("steps", "steps", "{:,}"), ("tokens", "tokens", "{:,}"), ("train_seconds", "training time (s)", "{}"),
           ("flops", "FLOPs", "{:.3g}"), ("mfu", "MFU", "{:.1%}"), ("energy_kwh", "energy (kWh)", "{:.3g}"),
           ("device", "device", "{}"))


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _front_matter(path: Path) -> dict[str, str]:
    """``key: value`` lines of a README's YAML front matter (a base model's card)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    out = {}
    for line in text.split("---", 2)[1].splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip() and not line.startswith((" ", "-")):
            out[key.strip()] = value.strip().strip("'\"")
    return out


def _yaml(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON scalars and lists are YAML


def _settings(config: dict, sections: tuple[str, ...], overrides: list[str]) -> list[str]:
    """Each section's settings as the stage ran with them: the config, then the stage's overrides."""
    lines = []
    for name in sections:
        values = json.loads(json.dumps(config.get(name, {})))
        for item in overrides:
            key, _, value = item.partition("=")
            parts = key.split(".")
            if parts[0] == name and len(parts) >= 2:
                target = values
                for part in parts[1:-1]:
                    target = target.setdefault(part, {})
                target[parts[-1]] = value
        if name == "rlhf" and isinstance(values.get(values.get("algo")), dict):  # the chosen algorithm's table
            values = {**{k: v for k, v in values.items() if not isinstance(v, dict)},
                      **{f"{values['algo']}.{k}": v for k, v in values[values["algo"]].items()}}
        elif name == "sft" and isinstance(values.get(values.get("method")), dict):
            values = {**{k: v for k, v in values.items() if not isinstance(v, dict)},
                      **{f"{values['method']}.{k}": v for k, v in values[values["method"]].items()}}
        flat = ", ".join(f"`{k}={v}`" for k, v in values.items() if not isinstance(v, dict))
        if flat:
            lines.append(f"- settings [{name}]: {flat}")
    return lines


def model_card(run: RunDir, folder: Path, model: GPT, tok: FidanTokenizer, architecture: str,
               config: dict | None = None, where: str = "PATH") -> str:
    """The card of the model in ``folder`` (a model folder of ``run``), exported to ``where``.
    ``config``: the resolved settings (default: the run's ``config.toml``); each stage's own
    command-line overrides (in its stamp) are applied on top."""
    path = run.path
    info = _read(folder / "model.json")
    stamps = {p.stem: _read(p) for p in sorted((path / "stages").glob("*.json"))}
    if config is None:
        try:
            config = tomllib.loads((path / "config.toml").read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            config = {}
    imported = stamps.get("pretrain", {}).get("summary", {}).get("imported")
    source = Path(imported) if imported else None
    base_card = _front_matter(source / "README.md") if source else {}
    base = None
    if source is not None:
        base = _read(source / "config.json").get("_name_or_path") or base_card.get("base_model") or source.name
    embedded = config.get("data", {}).get("source", "embedded") == "embedded"
    licence = base_card.get("license") or ("apache-2.0" if embedded and not source else "other")
    tags = ["fidan", "text-generation", architecture, *[s for s in ("sft", "reward", "rlhf") if s in stamps]]
    algo = stamps.get("rlhf", {}).get("summary", {}).get("algo")
    tags += [algo] if algo else []
    method = stamps.get("sft", {}).get("summary", {}).get("method")
    tags += [method] if method and method != "full" else []
    front = ["---", f"language: {_yaml(['en', 'tr'])}", f"license: {licence}", f"tags: {_yaml(tags)}"]
    if base:
        front.append(f"base_model: {_yaml(str(base))}")
    front += ["pipeline_tag: text-generation", "library_name: transformers", "---", ""]

    md = front + [f"# {path.name}: the {folder.name} model", "",
                  f"Made with fidan from the run directory `{path.name}` "
                  f"({'fine-tuned from ' + str(base) if base else 'trained from scratch'}); this card is "
                  "generated from that run's files by `fidan export`.", ""]

    md += ["## Data", ""]
    stats = _read(path / "data" / "stats.json")
    data = stamps.get("data", {}).get("summary", {})
    if stats or data:
        train = stats.get("output", {}).get("train", {})
        md.append(f"- source: `{config.get('data', {}).get('source', stats.get('source', '?'))}`")
        md.append(f"- documents read: {data.get('in_docs', stats.get('input', {}).get('documents', '?'))}; kept for "
                  f"training: {data.get('train_docs', train.get('documents', '?'))}, for validation: "
                  f"{data.get('val_docs', '?')} ({data.get('kept_bytes', '?')} of bytes kept by cleaning)")
        if config.get("data", {}).get("steps"):
            md.append(f"- cleaning steps: {config['data']['steps']}")
    if source is not None:
        md.append(f"- pre-training: the base model's own (imported from `{source}`); fidan did not pre-train it")
    if not (stats or data or source):
        md.append("- no data stage in this run")
    sft_data = config.get("sft", {}).get("data")
    if "sft" in stamps:
        md.append(f"- instruction data: {('`' + sft_data + '`') if sft_data else 'the run`s generated conversations'}")
    md.append("")

    md += ["## Tokenizer", ""]
    if tok.native:
        md.append(f"fidan's byte-level BPE, {tok.vocab_size:,} tokens, trained on the run's data; chat format "
                  "`<|bos|><|user|>...<|end|><|assistant|>...<|end|>`.")
    else:
        md.append(f"The base model's own tokenizer ({tok.vocab_size:,} tokens), kept unchanged; end of turn "
                  f"`{tok.tok.id_to_token(tok.end_of_turn)}`, end of text `{tok.tok.id_to_token(tok.eos)}`. "
                  "Chat template (in `tokenizer_config.json`):")
        md += ["", "```jinja", tok.template, "```"]
    md.append("")

    c = model.cfg
    banded = [i for i in range(c.n_layer) if c.is_banded(i)]
    md += ["## Architecture", "",
           f"- {architecture} layout (`{type(model).__name__}` in fidan), {model.num_params():,} parameters",
           f"- {c.n_layer} layers, width {c.d_model}, {c.n_head} attention heads of {c.head_dim}, "
           f"{c.n_kv_head} key/value heads{' (grouped-query)' if c.n_kv_head < c.n_head else ''}, "
           f"SwiGLU width {c.hidden}, context {c.context}",
           f"- RoPE theta {c.rope_theta:g}" + (f", {c.rope_scaling} scaling x{c.rope_factor:g}"
                                                if c.rope_scaling != "default" else ""),
           f"- {'tied' if c.tie_embeddings else 'untied'} input and output embeddings; attention biases: "
           f"{c.attn_bias}; sliding-window layers: "
           + (f"{banded} (window {c.window})" if banded else "none"), ""]

    md += ["## Training", ""]
    for stage, sections in TRAINING.items():
        stamp = stamps.get(stage)
        if not stamp:
            continue
        summary = stamp.get("summary", {})
        md.append(f"### {stage}")
        md.append("")
        if stage == "pretrain" and summary.get("imported"):
            md += [f"- imported from `{summary['imported']}` (not trained by fidan)", ""]
            continue
        compute = [f"{label} {fmt.format(summary[key])}" for key, label, fmt in COMPUTE if key in summary]
        if compute:
            md.append("- compute: " + ", ".join(compute))
        md += _settings(config, sections, stamp.get("overrides") or [])
        if stamp.get("overrides"):
            md.append("- command-line overrides: " + ", ".join(f"`{o}`" for o in stamp["overrides"]))
        md.append("")

    md += ["## Evaluation", ""]
    header, rows = table(run)
    if rows:
        md += ["The run's report card (`fidan eval`, `fidan report`): every stage's model on the same tasks.", "",
               markdown_table(header, rows), ""]
    else:
        md += ["Not evaluated: run `fidan eval` and export again.", ""]

    scores = _read(path / "eval" / f"{folder.name}.json") or {}
    md += ["## Risks and limitations", "",
           "A small model trained briefly: it makes things up and repeats itself; do not rely on its answers.", ""]
    bias = scores.get("bias")
    md.append("- **Bias**: " + (f"on the stereotype probe it preferred the stereotyped sentence in "
                                f"{bias['stereotype_score']:.1%} of pairs (50% = no preference)"
                                if isinstance(bias, dict) and "stereotype_score" in bias else "not measured")
               + (" (its words never occur in the embedded world's text: noise on a model trained only on it)"
                  if isinstance(bias, dict) and "bias_planted" in scores else ""))
    planted = scores.get("bias_planted")
    if isinstance(planted, dict) and "planted" in planted:
        p, c = planted["planted"], planted["control"]
        md.append(f"- **Planted bias** (associations written at {planted['rate']:.0%} into the training text): it "
                  f"preferred the planted word in {p['share']:.1%} of {p['n']} pairs "
                  f"(95% CI {p['lo']:.1%}-{p['hi']:.1%}), and for never-skewed control subjects in "
                  f"{c['share']:.1%} (95% CI {c['lo']:.1%}-{c['hi']:.1%})")
    truthful, chat = scores.get("world_truthful"), scores.get("world_facts/chat")
    hall = []
    if isinstance(truthful, dict) and "misconception_preferred" in truthful:
        hall.append(f"it preferred a planted misconception over the fact in "
                    f"{truthful['misconception_preferred']:.1%} of questions")
    if isinstance(chat, dict) and "acc" in chat:
        hall.append(f"asked facts in chat form it answered {chat['acc']:.1%} correctly (the rest are wrong or "
                    f"invented)")
    md.append("- **Hallucination**: " + ("; ".join(hall) if hall else "not measured"))
    red = scores.get("redteam")
    if isinstance(red, dict) and "asr" in red:
        md.append(f"- **Red team**: {red['asr']:.1%} of {red.get('n', '?')} harmful requests (plain and wrapped in "
                  f"jailbreaks, English and Turkish) got compliance; {red.get('refusal_rate_harmful', 0):.1%} "
                  f"were refused; {red.get('over_refusal_benign', 0):.1%} of benign requests were refused"
                  " (graded by the refusal rule the RLHF judge also uses)")
        if "asr_grader" in red:
            md.append(f"  - by the evaluation's independent grader: attack success {red['asr_grader']:.1%} "
                      f"(95% CI {red['asr_grader_lo']:.1%}-{red['asr_grader_hi']:.1%}), refused "
                      f"{red['refusal_rate_harmful_grader']:.1%}, benign over-refusal "
                      f"{red['over_refusal_benign_grader']:.1%}; the two agree on {red['grader_agreement']:.1%} "
                      "of replies")
        for name in ("asr_by_category", "asr_by_wrapper"):
            if red.get(name):
                md.append(f"  - attack success by {name.split('_')[-1]}: "
                          + ", ".join(f"{k} {v:.0%}" for k, v in red[name].items()))
        for ex in red.get("examples", [])[:3]:
            reply = " ".join(str(ex.get("reply", "")).split())[:120]
            md.append(f"  - {ex.get('category')} / {ex.get('wrapper')} ({ex.get('lang')}): {ex.get('verdict')}: "
                      f"\"{reply}\"")
    else:
        md.append("- **Red team**: not run")
    md += ["", "## Use", "", "```python",
           "from transformers import AutoModelForCausalLM, AutoTokenizer",
           f"tok = AutoTokenizer.from_pretrained({where!r})",
           f"model = AutoModelForCausalLM.from_pretrained({where!r})",
           "messages = [{\"role\": \"user\", \"content\": \"Merhaba!\"}]",
           "ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")",
           "print(tok.decode(model.generate(ids, max_new_tokens=40)[0]))", "```", ""]
    if info.get("stage"):
        md.append(f"<!-- fidan model.json stage: {info['stage']} -->")
    return "\n".join(md) + "\n"
