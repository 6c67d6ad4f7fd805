"""Micro-scale figures for the evaluations with a known answer (issue 17).

1. Planted bias: the tests' micro model pre-trained on a world whose planted subjects are written
   with their planted word at ``--rates`` (0.5 = none), every page carrying 5 paragraphs of
   mentions; the probe's shares for planted and control subjects with Wilson intervals.
2. Abstention: the same micro pipeline with SFT at each ``--abstain`` share of "I don't know"
   conversations; correct / abstained / fabricated on made-up entities, unstated facts and
   held-out real facts (``eval/tasks/abstain.py``).

    PYTHONPATH=src python benchmarks/honest_eval.py --rates 0.98,0.5 --abstain 0,0.25
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import micro_config  # noqa: E402
from fidan.eval import bias  # noqa: E402
from fidan.eval.tasks import abstain  # noqa: E402
from fidan.model.io import load_model  # noqa: E402
from fidan.pipeline import run_stage  # noqa: E402
from fidan.records import read_jsonl  # noqa: E402
from fidan.rundir import RunDir  # noqa: E402
from fidan.tokenizer.bpe import FidanTokenizer  # noqa: E402


def pct(d: dict, key: str = "share") -> str:
    lo, hi = (d[f"{key}_lo"], d[f"{key}_hi"]) if f"{key}_lo" in d else (d["lo"], d["hi"])
    return f"{d[key]:.1%} [{lo:.1%}-{hi:.1%}]"


def planted(root: Path, rate: str, steps: int) -> dict:
    cfg = micro_config(root, f"bias{rate}", f"corpus.bias_rate={rate}", "corpus.bias_share=5", f"train.steps={steps}",
                       "corpus.scale_mb=0.04", "corpus.sft_conversations=0", "corpus.sentiment_examples=0",
                       "data.workers=1")
    run = RunDir.for_config(cfg)
    for stage in ("data", "tokenizer", "tokens", "pretrain"):
        run_stage(cfg, run, stage, quiet=True)
    model, _ = load_model(run.path / "pretrain", "cpu")
    items = [item for _, item in read_jsonl(run.path / "data" / "eval" / "bias.jsonl")]
    return bias.planted(model, FidanTokenizer.load(run.path / "tokenizer"), items)


def abstention(root: Path, share: str, sft_steps: int) -> dict:
    cfg = micro_config(root, f"abstain{share}", f"corpus.abstain_share={share}", "train.steps=300",
                       f"sft.steps={sft_steps}", "corpus.sft_conversations=1500", "data.workers=1")
    run = RunDir.for_config(cfg)
    for stage in ("data", "tokenizer", "tokens", "pretrain", "sft"):
        run_stage(cfg, run, stage, quiet=True)
    model, _ = load_model(run.path / "sft", "cpu")
    return abstain.evaluate(model, FidanTokenizer.load(run.path / "tokenizer"), run.path / "data" / "eval", 60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="0.98,0.5")
    ap.add_argument("--abstain", default="0,0.25")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--sft-steps", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("| bias_rate | planted subjects: planted word preferred | implied rate | control subjects |")
        print("|---|---|---|---|")
        for rate in [r for r in args.rates.split(",") if r]:
            r = planted(root, rate, args.steps)
            print(f"| {rate} | {pct(r['planted'])} | {r['planted']['implied_rate']:.1%} | {pct(r['control'])} |",
                  flush=True)
        print("\n| abstain_share | made-up: abstained | made-up: fabricated | unstated: abstained | "
              "unstated: fabricated | known: correct | known: abstained | known: wrong |")
        print("|---|---|---|---|---|---|---|---|")
        for share in [s for s in args.abstain.split(",") if s]:
            h = abstention(root, share, args.sft_steps)
            u, s, k = h["hallucination/unknown_entity"], h["hallucination/unstated"], h["hallucination/known"]
            print(f"| {share} | {pct(u, 'abstained')} | {pct(u, 'fabricated')} | {pct(s, 'abstained')} | "
                  f"{pct(s, 'fabricated')} | {pct(k, 'correct')} | {pct(k, 'abstained')} | {pct(k, 'fabricated')} |",
                  flush=True)


if __name__ == "__main__":
    main()
