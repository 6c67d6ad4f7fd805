"""Runs the stages in order inside one run directory.

A stage is skipped when its stamp (``stages/<name>.json``) carries the same config hash and its
output exists, so re-running a finished pipeline does nothing and a killed one resumes at the
stage it was in (and pre-training at its last checkpoint).
"""
from __future__ import annotations

import json
import sys
import time

from fidan.config import Config
from fidan.rundir import RunDir
from fidan.stages import BY_NAME, STAGES, stage_hash


def run_stage(cfg: Config, run: RunDir, name: str, force: bool = True) -> dict | None:
    """Run one stage (or skip it when ``force`` is off and it is up to date); returns its summary."""
    stage = BY_NAME[name]
    h = stage_hash(cfg, name)
    if not force and run.stage_hash(name) == h and (run.path / stage.output).exists():
        print(f"  {name:<10} up to date, skipped")
        return None
    print(f"▶ {name}: {stage.help}")
    t0 = time.perf_counter()
    summary = stage.run(cfg, run)
    summary = {"seconds": round(time.perf_counter() - t0, 1), **summary}
    run.mark_done(name, h, summary)
    print(f"✓ {name:<10} " + "  ".join(f"{k}={_fmt(v)}" for k, v in summary.items()))
    return summary


def run_pipeline(cfg: Config, until: str | None = None) -> RunDir:
    run = RunDir.for_config(cfg)
    print(f"fidan pipeline → {run.path}/")
    t0 = time.perf_counter()
    for stage in STAGES:
        run_stage(cfg, run, stage.name, force=False)
        if stage.name == until:
            break
    print(f"\ndone in {time.perf_counter() - t0:.0f} s. Run directory: {run.path}/")
    pre = run.path / "stages" / "pretrain.json"
    if pre.exists():
        s = json.loads(pre.read_text())["summary"]
        if "val_bpb" in s:
            print(f"validation: {s['val_bpb']:.3f} bits per byte (unigram baseline {s['unigram_bpb']:.3f})")
        print(predicted_vs_actual(cfg, s))
    exe = sys.argv[0] if sys.argv and sys.argv[0].endswith("fidan") else "fidan"
    print(f"next: {exe} chat                                  talk to the chat model")
    print(f"      {exe} sample --sample.prompt='Bir sabah'     continue a text with the pre-trained model")
    print(f"      {exe} tokenize 'Merhaba dünya'               see the tokenizer at work")
    print(f"      {exe} methods                                compare fine-tuning methods (a few minutes)")
    return run


def predicted_vs_actual(cfg: Config, actual: dict) -> str:
    """The cost planner's forecast for this config beside what pre-training really took."""
    from fidan.estimate import estimate, plan_from_config
    device = actual.get("device", "cpu")
    gpu = "cpu" if device != "cuda" else "H100"
    forecast = estimate(plan_from_config(cfg, gpu=gpu))
    seconds = forecast["gpu_hours"] * 3600
    return (f"cost: predicted {forecast['flops_total']:.3g} FLOPs in {seconds:.0f} s at 40% MFU "
            f"({forecast['accelerator']}); actual {actual['flops']:.3g} FLOPs in {actual['train_seconds']:.0f} s "
            f"at {actual['mfu']:.0%} MFU, about {actual.get('energy_kwh', 0) * 1000:.2g} Wh")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
