"""The issue-18 SFT options side by side: read each SFT output folder's summary (held-out chat
scores, IGBI's mean weights, wall time) and measure every model on the held-out with-context
questions (attention mass of the top dense block's heads on the answer's sentence, greedy accuracy),
all with the same code, so models trained with and without GATE are measured alike.

    python benchmarks/sft_options.py --run runs/demo18 sft-plain30 sft-igbi30 sft-context sft-gate

Prints a markdown table (BENCHMARKS.md, "SFT options of issue 18").
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    from fidan.finetune.gate import AttentionGuide, context_items, measure
    from fidan.model.io import load_model
    from fidan.tokenizer.bpe import FidanTokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="the run directory")
    ap.add_argument("folders", nargs="+", help="SFT output folders inside the run")
    ap.add_argument("--items", type=int, default=60, help="held-out with-context questions")
    ap.add_argument("--layers", default="dense", help="blocks whose attention is measured (sft.gate_layers)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    tok = FidanTokenizer.load(run / "tokenizer" / "tokenizer.json")
    items = context_items(run / "data" / "eval", args.items)
    print("| SFT folder | optimizer, lr | facts (chat) | held-out score | with context: acc | attention on the "
          "answer's sentence | IGBI weight corrupted / clean | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.folders:
        summary = json.loads((run / name / "summary.json").read_text())
        model, _ = load_model(run / name, "cpu")
        guide = AttentionGuide(args.layers, "all", 0.9, model.cfg)
        got = measure(model, tok, items, guide)
        weights = (f"{summary['igbi_mean_weight_corrupted']:.3f} / {summary['igbi_mean_weight_clean']:.3f}"
                   if "igbi_mean_weight_corrupted" in summary else "-")
        print(f"| {name} | {summary.get('optimizer', 'adamw')}, {summary.get('lr', 0):.3g} | "
              f"{summary.get('sft_facts_acc', 0):.1%} | {summary.get('sft_heldout_score', 0):.3f} | "
              f"{got['context_acc']:.1%} ({got['context_n']}) | {got['context_attention_mass']:.3f} | {weights} | "
              f"{summary.get('wall_seconds', 0):.0f} |")


if __name__ == "__main__":
    main()
