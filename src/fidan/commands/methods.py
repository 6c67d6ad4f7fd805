"""``fidan methods``: every fine-tuning method on the same data and budget, compared in one table.

Each method runs in its own process, so its peak memory (the process's maximum resident set,
from ``os.wait4``) is its own. Results go to ``sft/methods/<method>/`` and the table to
``sft/methods.json``: trainable parameters, wall time, peak memory, and the held-out score
(chat accuracy on held-out facts and word problems; test accuracy for the classifier head).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from fidan import atomic
from fidan.config import Config, build_config, to_toml
from fidan.finetune import methods
from fidan.rundir import RunDir

CONTEXT_QUESTIONS = 1000   # with-context questions the gate row and its baseline add to the SFT data

# name -> the settings that make it (None: the classifier head, the `classify` stage)
# every registered fine-tuning method (finetune/methods/), the options that combine with any of
# them, and transfer learning to a classifier head
METHODS: dict[str, list[str] | None] = {
    **{name: [f"sft.method={name}"] for name in methods.names()},
    "loss_reweight": ["sft.method=full", "sft.loss_reweight=1.0"],
    "igbi": ["sft.method=full", "sft.igbi=true"],
    "adversarial": ["sft.method=full", "sft.adversarial=0.05"],
    "context": ["sft.method=full", f"sft.context_questions={CONTEXT_QUESTIONS}"],   # GATE's baseline
    "gate": ["sft.method=full", f"sft.context_questions={CONTEXT_QUESTIONS}", "sft.gate=1.0"],
    "lamb": ["sft.method=full", "sft.optimizer=lamb"],
    "classify": None,
}


def _one(name: str, config_file: str, overrides: list[str]) -> None:
    """Child process: run one method quietly and leave its summary as JSON. The parent holds
    the run's lock; a child writes only into its own ``sft/methods/<name>/`` folder."""
    import importlib

    from fidan.stages import BY_NAME, context
    extra = METHODS[name]
    stage = "classify" if extra is None else "sft"
    cfg = build_config(None, config_file, overrides + (extra or []) + [f"sft.out=sft/methods/{name}"])
    run = RunDir.for_config(cfg, create=False)
    result = importlib.import_module(BY_NAME[stage].module).run(context(cfg, run, stage, quiet=True))
    atomic.write_json(run.path / "sft" / "methods" / name / "result.json", result)


def compare(cfg: Config, run: RunDir, names: list[str]) -> list[dict]:
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        from fidan.errors import FidanError
        raise FidanError(f"unknown method(s) {unknown} (known: {', '.join(METHODS)})")
    rows = []
    resolved = run.path / "sft" / "methods" / "config.toml"  # this command's overrides reach every child
    atomic.write_text(resolved, to_toml(cfg))
    for name in names:
        print(f"▶ {name} ...", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "fidan.commands.methods", name, str(resolved)])
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            print(f"  {name} failed (exit {os.waitstatus_to_exitcode(status)}); see the output above")
            continue
        result = json.loads((run.path / "sft" / "methods" / name / "result.json").read_text())
        score = result.get("test_accuracy", result.get("sft_heldout_score"))
        rows.append({"method": name, "trainable_params": result["trainable_params"],
                     "wall_seconds": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                     "heldout_score": score, "facts_acc": result.get("sft_facts_acc"),
                     "math_acc": result.get("sft_math_acc"), "test_accuracy": result.get("test_accuracy"),
                     **{k: result[k] for k in EXTRA if k in result}})
    base = json.loads(next((run.path / "pretrain").glob("chat_scores_*.json")).read_text()) \
        if list((run.path / "pretrain").glob("chat_scores_*.json")) else {}
    atomic.write_json(run.path / "sft" / "methods.json", {"base_model": base, "methods": rows})
    print(format_table(rows, base))
    return rows


EXTRA = ("context_acc", "context_attention_mass", "igbi_mean_weight_corrupted", "igbi_mean_weight_clean",
         "corrupted", "optimizer", "lr")


def _detail(r: dict) -> str:
    if r["test_accuracy"] is not None:
        return f"sentiment test accuracy {r['test_accuracy']:.1%}"
    out = f"facts {r['facts_acc']:.1%}, problems {r['math_acc']:.1%}"
    if "context_acc" in r:
        out += (f"; with context {r['context_acc']:.1%}, "
                f"attention on the answer's sentence {r['context_attention_mass']:.3f}")
    if "igbi_mean_weight_corrupted" in r:
        out += (f"; IGBI weight corrupted {r['igbi_mean_weight_corrupted']:.2f} "
                f"vs clean {r.get('igbi_mean_weight_clean', 0):.2f}")
    if r.get("optimizer") == "lamb":
        out += f"; LAMB, lr {r['lr']:g}"
    return out


def format_table(rows: list[dict], base: dict) -> str:
    head = f"{'method':<13} {'trainable':>10} {'wall s':>7} {'peak MB':>8} {'held-out':>9}  detail"
    lines = [head, "-" * len(head)]
    if base:
        lines.append(f"{'(base)':<13} {'-':>10} {'-':>7} {'-':>8} {base.get('heldout_score', 0):>9.3f}  "
                     f"facts {base.get('facts_acc', 0):.1%}, problems {base.get('math_acc', 0):.1%}")
    for r in rows:
        detail = _detail(r)
        lines.append(f"{r['method']:<13} {r['trainable_params']:>10,} {r['wall_seconds']:>7.1f} "
                     f"{r['peak_rss_mb']:>8.0f} {r['heldout_score']:>9.3f}  {detail}")
    return "\n".join(lines)


if __name__ == "__main__":
    _one(sys.argv[1], sys.argv[2], sys.argv[3:])
