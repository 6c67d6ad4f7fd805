"""Can the reward model judge facts? Its accuracy on right-vs-wrong answers to held-out fact questions.

The reward stage's held-out pairwise accuracy comes mostly from easy pairs (the reference answer
against nonsense, a refusal against written compliance). This probe asks the harder question:
take fresh answers the policy samples to the evaluation set's fact questions (whose question form
neither pre-training nor SFT used), let the world's ground truth (``judge.score``) say which are
right (the true value named) and which wrong (another value), and count how often the reward
model scores a right answer above a wrong answer to the same question. Refusals make no pair.
Prints the figure with its 95% Wilson interval; the reward stage reports the same row
(``fact_pairs_accuracy``) with its own fresh samples.

    PYTHONPATH=src python benchmarks/reward_facts.py --run runs/demo
    PYTHONPATH=src python benchmarks/reward_facts.py --run runs/demo --policy rlhf --samples 8 --seed 7
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from fidan.config import build_config
    from fidan.model.io import load_model
    from fidan.rlhf import judge
    from fidan.rlhf.reward import fact_accuracy, fact_pairs, load_reward_model
    from fidan.tokenizer.bpe import FidanTokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a run directory with data, sft and reward done")
    ap.add_argument("--policy", default="sft", help="the folder of the model whose answers are sampled")
    ap.add_argument("--reward", default="reward", help="the reward model's folder")
    ap.add_argument("--samples", type=int, default=4, help="answers sampled per question")
    ap.add_argument("--seed", type=int, default=101, help="sampling seed (the stage uses run.seed + 23)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", help="write the pairs with both scores to this jsonl file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfg = build_config(config_file=str(run / "config.toml"))
    tok = FidanTokenizer.load(run / "tokenizer" / "tokenizer.json")
    policy, _ = load_model(run / args.policy, "cpu")
    policy.eval()
    rm = load_reward_model(run / args.reward, "cpu")
    prompts = judge.held_out(run / "data" / "eval", 0)
    records, counts = fact_pairs(cfg, policy, tok, prompts, args.samples, args.seed)
    result = fact_accuracy(rm, tok, records, policy.cfg.context)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(json.dumps({"run": str(run), "policy": args.policy, "reward": args.reward, "samples": args.samples,
                      "seed": args.seed, **counts, **result}))
    if result["pairs"]:
        print(f"right above wrong: {result['accuracy']:.1%} of {result['pairs']} pairs from {counts['questions']} "
              f"questions (95% CI {result['low']:.1%}-{result['high']:.1%}); answers right {counts['right']}, "
              f"wrong {counts['wrong']}, refused {counts['refused']}")
    else:
        print("no right-vs-wrong pair: every question's answers were all right, all wrong or refusals")
    return 0


if __name__ == "__main__":
    sys.exit(main())
