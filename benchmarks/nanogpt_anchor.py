"""Tiny Shakespeare, time to 2.72 bits per byte: fidan against nanoGPT's CPU configuration, paired.

The anchor (issue 21, item 1) is nanoGPT's documented CPU run for character-level Tiny Shakespeare
(its README: ``train.py config/train_shakespeare_char.py --device=cpu --compile=False
--eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
--n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0``), which reaches the reference
validation loss of 1.886 nats per character (= 2.72 bits per byte: the text is ASCII) at step 2000.
nanoGPT is not part of fidan: give a checkout of it (``git clone https://github.com/karpathy/nanoGPT``;
measured at commit 3adf61e) with ``--nanogpt``. The script copies it into a scratch folder, puts
``../shared/data/tinyshakespeare.txt`` where its ``prepare.py`` looks (so nothing downloads), and runs
``prepare.py`` then ``train.py`` as they are, timestamping every line of their output.

Each pair runs the two sides one after the other (the order alternating from pair to pair), one
thread each (``OMP_NUM_THREADS=1``; fidan also ``--run.threads=1``), and prints the load average
before and after every run. fidan's side is ``benchmarks/shakespeare_bpb.py`` with ``--fidan``'s
overrides and the pair's seed (nanoGPT's seed is fixed in its train.py: its repeats are the same
run again).

    python benchmarks/nanogpt_anchor.py --nanogpt /path/to/nanoGPT [--seeds 1337 1 2]
        [--fidan "--train.steps=160 ..."]

Measures, per side:
  training wall: from the model being built to the first evaluation at or below the target,
    evaluations included (nanoGPT: from its optimizer line to its ``step N: ... val loss`` line;
    fidan: the pre-training stage's wall clock at that evaluation);
  whole script: from the side's first process start to that evaluation (nanoGPT: ``prepare.py``
    + ``train.py``; fidan: data, tokenizer, encoding, model, training), and to the process's end;
  CPU seconds: user + system time of the side's processes to their end (with one thread each, what
    the load average does not stretch; nanoGPT's crossing is its last evaluation, fidan's is earlier).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NANOGPT_ARGS = ("config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1 "
                "--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 "
                "--lr_decay_iters=2000 --dropout=0.0").split()


def children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def timed_lines(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[list[tuple[float, str]], float, float, int]:
    """Run ``cmd``; every output line with the seconds since the start, the total, the CPU seconds
    the process used (user + system), the exit status."""
    t0, c0 = time.perf_counter(), children_cpu()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [(time.perf_counter() - t0, line.rstrip("\n")) for line in proc.stdout]
    rc = proc.wait()
    return lines, time.perf_counter() - t0, children_cpu() - c0, rc


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_nanogpt(checkout: Path, env: dict[str, str], target_loss: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="nanogpt-") as tmp:
        work = Path(tmp) / "nanoGPT"
        shutil.copytree(checkout, work, ignore=shutil.ignore_patterns(".git", "out-*"))
        data = work / "data" / "shakespeare_char"
        shutil.copyfile(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt", data / "input.txt")
        _, prep_s, prep_cpu, rc = timed_lines([sys.executable, "data/shakespeare_char/prepare.py"], work, env)
        if rc:
            raise SystemExit(f"nanoGPT's prepare.py failed (exit {rc})")
        lines, train_py_s, train_cpu, rc = timed_lines([sys.executable, "train.py", *NANOGPT_ARGS], work, env)
    if rc:
        raise SystemExit("nanoGPT's train.py failed:\n" + "\n".join(text for _, text in lines[-20:]))
    start = next(t for t, text in lines if text.startswith("using fused AdamW"))
    evals = [(t, int(m[1]), float(m[2])) for t, text in lines
             if (m := re.match(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", text))]
    hit = next(((t, step, loss) for t, step, loss in evals if loss <= target_loss), None)
    t_hit, step, loss = hit or evals[-1]
    return {"reached": hit is not None, "step": step, "val_loss": loss, "bpb": loss / math.log(2),
            "train_wall": t_hit - start, "script_to_hit": prep_s + t_hit, "script_end": prep_s + train_py_s,
            "cpu_end": prep_cpu + train_cpu}


def run_fidan(seed: int, extra: list[str], env: dict[str, str], target: float) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "shakespeare_bpb.py"), f"--target={target}",
           f"--run.seed={seed}", "--run.threads=1", "--run=bench-anchor", *extra]
    lines, total, cpu, rc = timed_lines(cmd, ROOT, env)
    text = "\n".join(t for _, t in lines)
    if rc:
        raise SystemExit("fidan's shakespeare_bpb.py failed:\n" + "\n".join(text.splitlines()[-20:]))
    hit = re.search(r"reached [\d.]+ bpb at step (\d+) after ([\d.]+) s of training \(([\d.]+) s of pre-training "
                    r"wall time, evaluations included; ([\d.]+) s from the script's start\)", text)
    final = re.search(r"final: ([\d.]+) bpb", text)
    out = {"reached": hit is not None, "final_bpb": float(final[1]), "script_end": total, "cpu_end": cpu}
    if hit:
        out.update(step=int(hit[1]), train_s=float(hit[2]), train_wall=float(hit[3]), script_to_hit=float(hit[4]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanogpt", type=Path, required=True, help="a checkout of karpathy/nanoGPT")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2], help="fidan's seed per pair")
    ap.add_argument("--fidan", default="", help="overrides for fidan's side, as shakespeare_bpb.py takes them")
    ap.add_argument("--target", type=float, default=2.72, help="bits per byte")
    ap.add_argument("--target-loss", type=float, default=1.886,
                    help="nanoGPT's side: the reference's validation loss (nats per character)")
    args = ap.parse_args()
    if not (args.nanogpt / "train.py").is_file():
        raise SystemExit(f"--nanogpt {args.nanogpt}: no train.py there (give a checkout of karpathy/nanoGPT)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))}
    extra = shlex.split(args.fidan)
    rows = []
    for i, seed in enumerate(args.seeds):
        order = ("nanogpt", "fidan") if i % 2 == 0 else ("fidan", "nanogpt")
        pair = {}
        for side in order:
            before = load()
            pair[side] = (run_nanogpt(args.nanogpt, env, args.target_loss) if side == "nanogpt"
                          else run_fidan(seed, extra, env, args.target))
            pair[side]["load"] = f"{before} -> {load()}"
            print(f"pair {i} {side}: {pair[side]}", flush=True)
        rows.append((seed, pair))
    print(f"\nfidan overrides: {args.fidan or '(the preset)'}; one thread each side")
    print("seed | nanoGPT: step, val loss, training wall, whole script to it | fidan: step, final bpb, training "
          "wall, whole script to it, to its end | ratio training wall | ratio whole script (to the crossing; "
          "fidan to its end) | CPU seconds of the whole scripts (nanoGPT / fidan to its end) and ratio | load")
    for seed, p in rows:
        n, f = p["nanogpt"], p["fidan"]
        if not f["reached"]:
            print(f"{seed} | fidan did not reach {args.target} bpb (final {f['final_bpb']:.4f})")
            continue
        print(f"{seed} | {n['step']}{'' if n['reached'] else ' (not reached)'}, {n['val_loss']:.4f}, "
              f"{n['train_wall']:.1f} s, {n['script_to_hit']:.1f} s | {f['step']}, {f['final_bpb']:.4f}, "
              f"{f['train_wall']:.1f} s, {f['script_to_hit']:.1f} s, {f['script_end']:.1f} s | "
              f"{n['train_wall'] / f['train_wall']:.1f}x | {n['script_to_hit'] / f['script_to_hit']:.1f}x "
              f"({n['script_to_hit'] / f['script_end']:.1f}x) | {n['cpu_end']:.1f} / {f['cpu_end']:.1f} s = "
              f"{n['cpu_end'] / f['cpu_end']:.1f}x | nanoGPT {n['load']}, fidan {f['load']}")


if __name__ == "__main__":
    main()
