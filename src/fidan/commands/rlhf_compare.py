"""``fidan rlhf-compare``: PPO, PPO without its KL penalty, DPO and GRPO from the same SFT model
and reward stage, evaluated the same way (``stage.evaluate``), on one table.

Each variant is the ``rlhf`` stage with a few settings changed and its own output folder
(``rlhf-<variant>/``), so the default ``rlhf/`` model is left alone. The table goes to
``rlhf-compare.json`` and ``rlhf-compare.md`` in the run directory.
"""
from __future__ import annotations

import copy
import time

from fidan import atomic
from fidan.config import Config, apply_override
from fidan.errors import FidanError
from fidan.rundir import RunDir

# variant -> the settings that make it, on top of the run's
VARIANTS: dict[str, list[str]] = {
    "ppo": ["rlhf.algo=ppo"],
    "ppo-kl0": ["rlhf.algo=ppo", "rlhf.ppo.kl_coef=0", "rlhf.ppo.target_kl=0"],   # the reward-hacking control
    "dpo": ["rlhf.algo=dpo"],                   # DPO's own settings (rlhf.dpo.*)
    "grpo": ["rlhf.algo=grpo", "rlhf.steps=20", "rlhf.lr=1e-5"],
}


def variant_config(cfg: Config, name: str) -> Config:
    out = copy.deepcopy(cfg)
    for item in VARIANTS[name] + [f"rlhf.out=rlhf-{name}"]:
        apply_override(out, item)
    return out


def compare(cfg: Config, run: RunDir, names: list[str]) -> list[dict]:
    from fidan.pipeline import run_stage

    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise FidanError(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    run.require("reward/model.safetensors", "reward")
    rows = []
    for name in names:
        print(f"▶ {name} ...", flush=True)
        t0 = time.perf_counter()
        result = run_stage(variant_config(cfg, name), run, "rlhf")
        rows.append({"variant": name, **result, "wall_seconds": round(time.perf_counter() - t0, 1)})
    atomic.write_json(run.path / "rlhf-compare.json", rows)
    table = format_table(rows)
    atomic.write_text(run.path / "rlhf-compare.md", table + "\n")
    print(table)
    return rows


def format_table(rows: list[dict]) -> str:
    def pct(v):
        return "-" if v is None else f"{v:.1%}"

    def num(v, fmt="+.3f"):
        return "-" if v is None else format(v, fmt)

    head = ("| variant | wall s | RM score, held-out (SFT -> aligned) | KL to SFT | judge win rate, sampled "
            "| facts | red team | greedy | chat facts | word problems |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        kinds = r.get("judge_by_kind_sampled", {})
        chat = r.get("chat_scores", {})
        rm = f"{num(r.get('rm_score_sft'))} -> {num(r.get('rm_score'))}" if "rm_score" in r else "-"
        lines.append(f"| {r['variant']} | {r['wall_seconds']:.0f} | {rm} | {num(r.get('kl_to_sft'), '.3f')} "
                     f"| {pct(r.get('judge_win_rate_sampled'))} | {pct(kinds.get('fact', {}).get('win_rate'))} "
                     f"| {pct(kinds.get('harmful', {}).get('win_rate'))} | {pct(r.get('judge_win_rate'))} "
                     f"| {pct(chat.get('facts_acc'))} | {pct(chat.get('math_acc'))} |")
    return "\n".join(lines)
