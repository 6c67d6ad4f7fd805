"""Runs the stages in order inside one run directory.

A stage is skipped when its stamp (``stages/<instance>.json``) carries the same hash and its
output exists, so re-running a finished pipeline does nothing and a killed one resumes at the
stage it was in (and a training stage at its last checkpoint). Each stage gets a
:class:`~fidan.context.StageContext` built from its declaration in ``stages.py``.
"""
from __future__ import annotations

import importlib
import json
import sys
import time

from fidan import atomic, dist, staging
from fidan.config import Config
from fidan.rundir import RunDir
from fidan.stages import BY_NAME, STAGES, TRAINING, context


def check(cfg: Config, names: list[str]) -> None:
    """Validation before work: every stage that is about to run checks its settings first
    (``check(cfg)`` in its module), so a bad value stops the command before anything is written."""
    for name in names:
        module = importlib.import_module(BY_NAME[name].module)
        if hasattr(module, "check"):
            module.check(cfg)


def run_stage(cfg: Config, run: RunDir, name: str, force: bool = True, overrides: tuple[str, ...] = (),
              quiet: bool = False) -> dict | None:
    """Run one stage (or skip it when ``force`` is off and it is up to date); returns its summary.

    The stage writes into its staging folder; its outputs and then its stamp replace the old
    ones only when it returns, so a stage that fails leaves the previous ones in place
    (``fidan/staging.py``). Under torchrun rank 0 alone prepares, commits and stamps."""
    spec = BY_NAME[name]
    with run.lock():
        if dist.is_main():
            for finished in staging.recover(run.path):
                print(f"  {finished:<10} finished moving its outputs into place (a crash had interrupted it)")
        dist.barrier()
        if force:
            check(cfg, [name])
        ctx = context(cfg, run, name, quiet=quiet, overrides=overrides)
        instance = spec.instance(cfg)
        folder = spec.out_folder(cfg)
        done = ctx.run.path / folder / spec.done
        stamp_hash = run.stage_hash(instance)
        # Under torchrun every rank follows rank 0's decision, and only rank 0 writes stamps.
        if dist.broadcast(not force and stamp_hash == ctx.hash and done.exists()):
            print(f"  {instance:<10} up to date, skipped")
            return None
        print(f"▶ {instance}: {spec.help}")
        t0 = time.perf_counter()
        if folder:
            final = run.path / folder
            if dist.is_main():
                staging.prepare(run.path, instance, final, ctx.hash, stamp_hash, spec.resume)
            dist.barrier()  # every rank writes into, and resumes from, the folder rank 0 prepared
            ctx = context(cfg, run, name, quiet=quiet, overrides=overrides,
                          staging=staging.folder(run.path, instance))
        elif dist.is_main():  # writes into the run directory itself, one atomic file at a time: no staging
            run.stamp(instance).unlink(missing_ok=True)
        if dist.is_main() or name in TRAINING:  # other stages run on rank 0 alone
            summary = importlib.import_module(spec.module).run(ctx)
        else:
            summary = {}
        summary = {"seconds": round(time.perf_counter() - t0, 1), **summary}
        if dist.is_main():
            record = run.stamp_record(instance, ctx.hash, summary, overrides)
            if folder:
                summary = staging.commit(run.path, instance, final, run.stamp(instance), record)["summary"]
            else:
                atomic.write_json(run.stamp(instance), record)
        dist.barrier()  # nobody reads the stage's outputs before rank 0 has moved them into place
    print(f"✓ {instance:<10} " + "  ".join(f"{k}={_fmt(v)}" for k, v in summary.items()))
    return summary


def run_pipeline(cfg: Config, until: str | None = None, overrides: tuple[str, ...] = (), launch=None) -> RunDir:
    """Every stage in order; ``launch`` (``commands.scale.Launch``): the training stages under torchrun."""
    from fidan.commands.scale import run_stage_torchrun, wants_torchrun
    run = RunDir.for_config(cfg)
    with run.lock():
        run.save_config(cfg)
        run.mark_latest()
        check(cfg, [s.name for s in STAGES])
        print(f"fidan pipeline → {run.path}/")
        t0 = time.perf_counter()
        for stage in STAGES:
            if wants_torchrun(launch, stage.name):
                run_stage_torchrun(cfg, run, stage.name, launch, overrides)
            else:
                run_stage(cfg, run, stage.name, force=False, overrides=overrides)
            if stage.name == until:
                break
    print(f"\ndone in {time.perf_counter() - t0:.0f} s. Run directory: {run.path}/")
    pre = run.path / "stages" / "pretrain.json"
    if pre.exists():
        from fidan.estimate import predicted_vs_actual
        s = json.loads(pre.read_text())["summary"]
        if "val_bpb" in s:
            print(f"validation: {s['val_bpb']:.3f} bits per byte (unigram baseline {s['unigram_bpb']:.3f})")
        print("cost: " + predicted_vs_actual(json.loads((run.path / "pretrain" / "model.json").read_text()), s))
    exe = sys.argv[0] if sys.argv and sys.argv[0].endswith("fidan") else "fidan"
    print(f"next: {exe} chat                                  talk to the chat model")
    print(f"      {exe} sample --sample.prompt='Bir sabah'     continue a text with the pre-trained model")
    print(f"      {exe} tokenize 'Merhaba dünya'               see the tokenizer at work")
    print(f"      {exe} methods                                compare fine-tuning methods (a few minutes)")
    return run


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
