"""How much GRPO's sharpening can give: pass@k of a model on the curriculum's held-out problems.

GRPO reinforces right answers it samples, so on a problem whose greedy answer is wrong it can
only help when some sample is right. For each model folder this samples ``--k`` answers per
held-out problem at ``--temperature`` (the rollouts' sampler, ``rlhf.rollout.sample_seeds``) and
answers it greedily, then prints as markdown, per stage: greedy accuracy, the mean sampled
success (pass@1), the unbiased pass@j of Chen et al. (2021) for j = 1, 2, 4, ..., k, the
majority answer of the k samples (maj@k), and the problems greedy gets wrong but some sample gets
right: the room a perfect sharpening of the sampled distribution would have (95% Wilson intervals
for the shares of problems).

    python benchmarks/grpo_passk.py RUN_DIR --models sft-os20 [rlhf-grpo] --k 8 --temperature 1.0 \
        --stages one_step,word --n 600 [--json counts.json]
    python benchmarks/grpo_passk.py RUN_DIR --by-kind counts.json   # the one-step rows by kind, no sampling
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from math import comb
from pathlib import Path


def pass_at(n: int, c: int, j: int) -> float:
    """The chance that ``j`` of ``n`` samples, ``c`` of them right, hold a right one (Chen et al.)."""
    return 1.0 if n - c < j else 1.0 - comb(n - c, j) / comb(n, j)


def kind(question: str) -> str:
    """A one-step problem's kind, from its wording in either language (``corpus.stories.one_step_problem``)."""
    return "legs" if "legs" in question or "bacak" in question else \
        "more" if " more" in question or " daha" in question else "less"


def by_kind(run: Path, dump: Path) -> None:
    """Greedy, pass@1 and pass@k of each one-step kind, from a ``--json`` dump of this script."""
    from fidan.config import build_config
    from fidan.corpus.world import build_world
    from fidan.rlhf import curriculum
    cfg = build_config(None, str(run / "config.toml"))
    c = cfg.corpus
    got = json.loads(dump.read_text())
    k = got["k"]
    print(f"| model | kind | n | greedy | pass@1 | pass@{k} |")
    print("|---|---|---|---|---|---|")
    for name, r in got["runs"].items():
        if not name.endswith("/one_step"):
            continue
        items = {it["id"]: it for it in curriculum.held_out(build_world(cfg.run.seed, c.n_places, c.n_people,
                                                                        c.n_creatures), cfg.run.seed,
                                                            one_step=len(r["ids"]))["one_step"]}
        rows: dict[str, list[int]] = {}
        for i, g, cnt in zip(r["ids"], r["greedy"], r["right_of_k"]):
            row = rows.setdefault(kind(items[i]["question"]), [0, 0, 0, 0])
            row[0] += 1
            row[1] += g
            row[2] += cnt
            row[3] += cnt > 0
        for name_, (n, g, cnt, anyk) in sorted(rows.items()):
            print(f"| {name.split('/')[0]} | {name_} | {n} | {g / n:.1%} | {cnt / n / k:.1%} | {anyk / n:.1%} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--models", nargs="+", default=["sft"])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--stages", default="one_step,word")
    ap.add_argument("--n", type=int, default=600, help="held-out problems per stage (one-step: from GRPO's reserve "
                                                        "beyond the task's 180)")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-problem counts here")
    ap.add_argument("--by-kind", type=Path, default=None, help="a --json dump: print its one-step rows by kind")
    a = ap.parse_args()
    if a.by_kind:
        by_kind(a.run, a.by_kind)
        return

    import torch

    from fidan.config import build_config
    from fidan.corpus.world import build_world
    from fidan.eval import tasks as eval_tasks
    from fidan.infer.answers import final_number, same_number
    from fidan.model.io import load_model
    from fidan.rlhf import curriculum
    from fidan.rlhf.grpo import MATH_TOKENS
    from fidan.rlhf.rollout import answer_tokens, prompt_ids, sample, sample_seeds
    from fidan.stats import wilson
    from fidan.tokenizer.bpe import FidanTokenizer
    torch.set_num_threads(1)
    cfg = build_config(None, str(a.run / "config.toml"))
    c = cfg.corpus
    tok = FidanTokenizer.load(a.run / "tokenizer" / "tokenizer.json")
    sets = curriculum.held_out(build_world(cfg.run.seed, c.n_places, c.n_people, c.n_creatures), cfg.run.seed,
                               one_step=a.n)
    ks = [j for j in (1, 2, 4, 8, 16, 32, 64) if j <= a.k]
    dump = {}
    print(f"k = {a.k} samples at T = {a.temperature}; greedy; {a.run}")
    print()
    print("| model | stage | n | greedy [95% CI] | " + " | ".join(f"pass@{j}" for j in ks)
          + f" | maj@{a.k} | greedy wrong, a sample right [95% CI] | seconds |")
    print("|---|---|---|---|" + "---|" * len(ks) + "---|---|---|")
    for folder in a.models:
        model, _ = load_model(a.run / folder, "cpu")
        model.eval()
        tokens = answer_tokens(model.cfg.context, MATH_TOKENS)
        room = model.cfg.context - tokens - 1
        for stage in a.stages.split(","):
            items = sets[stage][:a.n]
            reward = eval_tasks.get(curriculum.TASKS[stage]).reward
            prompts = [prompt_ids(tok, it["question"], room) for it in items]
            t0 = time.time()
            greedy = [reward({"answer": it["answer"]}, tok.decode(g.ids))
                      for it, g in zip(items, sample(model, tok, prompts, tokens, 0.0, cfg.run.seed))]
            runs = sample_seeds(model, tok, prompts, tokens, a.temperature, list(range(a.k)))
            right = [[reward({"answer": it["answer"]}, tok.decode(runs[s][i].ids)) for s in range(a.k)]
                     for i, it in enumerate(items)]
            votes = []
            for i, it in enumerate(items):
                numbers = Counter(x for x in (final_number(tok.decode(runs[s][i].ids)) for s in range(a.k))
                                  if x is not None)
                votes.append(bool(numbers) and same_number(str(numbers.most_common(1)[0][0]), it["answer"]))
            seconds = time.time() - t0
            n = len(items)
            g = int(sum(greedy))
            counts = [int(sum(r)) for r in right]
            room_ = sum(1 for gr, cnt in zip(greedy, counts) if not gr and cnt)
            lo, hi = wilson(g, n)
            rlo, rhi = wilson(room_, n)
            passes = " | ".join(f"{sum(pass_at(a.k, cnt, j) for cnt in counts) / n:.1%}" for j in ks)
            print(f"| {folder} | {stage} | {n} | {g / n:.1%} [{lo:.1%}, {hi:.1%}] | {passes} | "
                  f"{sum(votes) / n:.1%} | {room_ / n:.1%} [{rlo:.1%}, {rhi:.1%}] | {seconds:.0f} |")
            sys.stdout.flush()
            dump[f"{folder}/{stage}"] = {"greedy": [int(x) for x in greedy], "right_of_k": counts,
                                         "ids": [it["id"] for it in items]}
    if a.json:
        a.json.write_text(json.dumps({"k": a.k, "temperature": a.temperature, "runs": dump}))


if __name__ == "__main__":
    main()
