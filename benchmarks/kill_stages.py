"""Kill stages at random moments and check that the run directory stays consistent.

For each trial a stage (data, tokenizer, tokens, pretrain or sft) is started with settings that
change its hash, then SIGKILLed (with its whole process group) after a random delay. After every
kill the run must be consistent: each stamp describes what its folder holds (the model's
``config_hash`` equals its stamp's, the model's checksum verifies, the data's kept counts equal
its stamp's), and running the five stages again must then finish. Prints one line per
trial and a summary.

    .venv/bin/python benchmarks/kill_stages.py --trials 30 --seed 0
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MICRO = [
    "corpus.scale_mb=0.15", "corpus.n_places=8", "corpus.n_people=12", "corpus.n_creatures=6",
    "corpus.sft_conversations=400", "corpus.sentiment_examples=400", "sft.steps=30", "sft.batch_size=8",
    "sft.eval_items=6", "tokenizer.vocab_size=512", "model.context=64", "model.n_layer=2", "model.n_head=2",
    "model.n_kv_head=2", "model.d_model=64", "model.sparse_every=2", "model.window=16", "train.steps=60",
    "train.batch_size=8", "train.lr=3e-3", "train.warmup_steps=5", "train.eval_every=20", "train.ckpt_every=10",
    "train.log_every=5", "run.threads=1",
]
# stage -> a setting that changes its hash, and values to draw from
CHANGES = {"data": ("data.lang_threshold", [0.6, 0.65, 0.7]), "tokenizer": ("tokenizer.vocab_size", [448, 512, 576]),
           "tokens": ("run.seed", [0, 1, 2]), "pretrain": ("train.lr", [2e-3, 3e-3, 4e-3]),
           "sft": ("sft.lr", [1e-4, 2e-4, 3e-4])}


def fidan(*args: str, root: Path) -> list[str]:
    return [sys.executable, "-m", "fidan", *args, *[f"--{o}" for o in MICRO], f"--run.root={root}", "--run.name=k"]


def consistent(run: Path) -> list[str]:
    """What is wrong with the run directory (empty: nothing)."""
    sys.path.insert(0, str(ROOT / "src"))
    from fidan.errors import FidanError
    from fidan.model.io import load_model
    wrong = []
    for stamp in sorted((run / "stages").glob("*.json")):
        record = json.loads(stamp.read_text())
        name, h = stamp.stem, record["config_hash"]
        if name in ("pretrain", "sft"):
            try:
                _, info = load_model(run / name, "cpu")   # verifies the checksum
            except FidanError as e:
                wrong.append(f"{name}: {e}")
                continue
            if info.get("config_hash") != h:
                wrong.append(f"{name}: model made with {info.get('config_hash')}, stamp says {h}")
        if name == "data":
            stats = json.loads((run / "data" / "stats.json").read_text())
            if stats["output"]["train"]["documents"] != record["summary"].get("train_docs"):
                wrong.append("data: stats.json and the stamp disagree")
    return wrong


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="fidan-kill-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for stage in CHANGES:
        subprocess.run(fidan(stage, root=root), check=True, capture_output=True, env=env, cwd=ROOT)
    run = root / "k"
    killed = finished = bad = kept = 0
    for trial in range(args.trials):
        stage = rng.choice(list(CHANGES))
        key, values = CHANGES[stage]
        value = rng.choice(values)
        delay = rng.uniform(0.5, 6.0)
        proc = subprocess.Popen(fidan(stage, f"--{key}={value}", root=root), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, cwd=ROOT, start_new_session=True)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed += 1
            how = f"killed after {delay:.1f} s"
        else:
            finished += 1
            how = "finished before the kill"
        proc.wait()
        wrong = consistent(run)
        bad += bool(wrong)
        usable = all((run / "stages" / f"{name}.json").exists() for name in CHANGES)  # outputs still usable
        kept += usable and how.startswith("killed")
        print(f"trial {trial:2d}: {stage:<9} {key}={value:<6} {how:<26} "
              f"{'consistent' if not wrong else 'INCONSISTENT: ' + '; '.join(wrong)}"
              f"{'' if usable else ', a stage lost its outputs'}", flush=True)
    codes = [subprocess.run(fidan(stage, root=root), capture_output=True, env=env, cwd=ROOT).returncode
             for stage in CHANGES]
    done = subprocess.CompletedProcess([], max(codes))
    wrong = consistent(run)
    print(f"\n{args.trials} trials: {killed} killed mid-stage, {finished} finished first; "
          f"{args.trials - bad} of {args.trials} left a consistent run; {kept} of {killed} kills left every "
          f"stage's previous outputs and stamp in place; the five stages afterwards "
          f"{'finished' if done.returncode == 0 else 'FAILED'}{' and is consistent' if not wrong else ''}")
    return 0 if bad == 0 and done.returncode == 0 and not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
