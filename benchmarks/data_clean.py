"""Throughput and memory of the full cleaning chain (`fidan data`) on noisy web text.

Writes a jsonl crawl of the requested sizes (the embedded noisy web generator, a new world every
10 MB so the copies are only the planted ones), then runs `fidan data` on each as a subprocess
and samples the resident memory of the whole process tree (the stage and its workers) from /proc.

    python benchmarks/data_clean.py --sizes 25,100 --workers 2
    python benchmarks/data_clean.py --sizes 20,200 --workers 2 --tokens   # then the tokenizer and tokens stages

With ``--tokens`` the same run goes on through `fidan tokenizer` and `fidan tokens` (encoding in
``--workers`` processes), each timed and measured the same way; ``--pretrain N`` then trains N
steps on the shards (memory-mapped: the training process never holds the corpus). ``--steps``
passes ``--data.steps`` to `fidan data`, for example ``--steps normalize,exact_dedup`` to measure
the memory of the later stages at sizes where the full cleaning chain would take an hour:

    python benchmarks/data_clean.py --sizes 20,200 --tokens --pretrain 30 --steps normalize,exact_dedup
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHUNK_MB = 10.0


def write_crawl(path: Path, megabytes: float) -> int:
    from fidan.config import CorpusConfig
    from fidan.corpus.generate import generate
    from fidan.corpus.web import noisy_web
    written, seed = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < megabytes * 1e6:
            scale = min(CHUNK_MB, megabytes - written / 1e6) / 1.25  # the noise adds about a quarter
            pages, sets = generate(CorpusConfig(scale_mb=max(scale, 0.05)), 1000 + seed)
            stream, _ = noisy_web(pages, sets, 1000 + seed)
            for d in stream:
                f.write(json.dumps({"id": f"{seed}-{d.id}", "text": d.text}, ensure_ascii=False) + "\n")
                written += len(d.text.encode("utf-8"))
            seed += 1
    return written


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def timed(cmd: list[str]) -> dict:
    """Run ``cmd``: wall seconds, peak resident memory of its process tree (sampled every 0.2 s),
    load averages before and after, and its output."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - start
    thread.join()
    if proc.returncode:
        raise SystemExit(out[-4000:])
    return {"seconds": round(seconds, 1), "peak_rss_MB": round(peak[0] / 1e6),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
            "log": out}


def run(source: Path, root: Path, name: str, workers: int, steps: str | None) -> dict:
    cmd = [sys.executable, "-m", "fidan.cli", "data", f"--run.root={root}", f"--run.name={name}",
           f"--data.source={source}", f"--data.workers={workers}"]
    if steps is not None:
        cmd.append(f"--data.steps={steps}")
    r = timed(cmd)
    stats = json.loads((root / name / "data" / "stats.json").read_text())
    return {**r, "documents": stats["input"]["documents"], "MB_in": round(stats["input"]["bytes"] / 1e6, 1),
            "kept_bytes": stats["kept"]["bytes"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="25,100", help="input sizes in MB")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tokens", action="store_true", help="also run the tokenizer and tokens stages")
    ap.add_argument("--pretrain", type=int, default=0, help="then pre-train this many steps (after --tokens)")
    ap.add_argument("--steps", default=None, help="--data.steps for `fidan data` (default: the full chain)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in (float(s) for s in args.sizes.split(",")):
            source = tmp / f"crawl-{size:g}MB.jsonl"
            t0 = time.perf_counter()
            write_crawl(source, size)
            gen = time.perf_counter() - t0
            r = run(source, tmp, f"bench-{size:g}", args.workers, args.steps)
            print(r.pop("log").rstrip())
            r["docs_per_s"] = round(r["documents"] / r["seconds"])
            r["MB_per_s"] = round(r["MB_in"] / r["seconds"], 2)
            print(json.dumps({"size_MB": size, "workers": args.workers, "generate_s": round(gen, 1), **r}))
            sys.stdout.flush()
            stages = [[s, f"--data.workers={args.workers}"] for s in ("tokenizer", "tokens")] if args.tokens else []
            if args.tokens and args.pretrain:
                # a small model: what is measured is whether the loader holds the corpus, not the model
                stages.append(["pretrain", f"--train.steps={args.pretrain}", f"--train.eval_every={args.pretrain}",
                               "--train.eval_tokens=65536", "--model.n_layer=2", "--model.d_model=64",
                               "--model.n_head=2", "--model.n_kv_head=2", "--train.min_tokens_per_param=0"])
            for stage, *options in stages:
                t = timed([sys.executable, "-m", "fidan.cli", stage, f"--run.root={tmp}",
                           f"--run.name=bench-{size:g}", *options])
                print(t.pop("log").rstrip().splitlines()[-1])
                print(json.dumps({"size_MB": size, "stage": stage, **t}), flush=True)


if __name__ == "__main__":
    main()
