"""What ``eval.steps_limit`` costs, and the two-step problems' figures at 200 items (issue 17, item 4).

For each model of a finished run (pretrain, sft, rlhf), the ``world_steps`` task (four prompting
modes) at each ``--limits`` value, decoded by ``complete_many`` (batched, the default) and, with
``--sequential``, one prompt at a time as before (``complete``), the two timed in turn so both see
the same load. Prints seconds per model and every mode's accuracy with its 95% Wilson interval.

    PYTHONPATH=src python benchmarks/world_steps_cost.py RUN_DIR --limits 40,200 --sequential 40

With ``--redteam``, the red team's 72 requests and 8 benign controls instead (chat form, 40
tokens), one at a time then batched, twice, asserting the same replies.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from fidan.eval.tasks import EvalInputs, steps
from fidan.infer import scoring
from fidan.model.io import load_model
from fidan.tokenizer.bpe import FidanTokenizer


def one_at_a_time(model, tok, prompts, limits, stop=(), chat=False):
    return [scoring.complete(model, tok, p, n, stop, chat) for p, n in zip(prompts, limits)]


def timed(model, tok, run: Path, limit: int, sequential: bool) -> tuple[float, dict]:
    steps.complete_many = one_at_a_time if sequential else scoring.complete_many
    settings = SimpleNamespace(steps_limit=limit, limit=0)
    t0 = time.perf_counter()
    out = steps.WorldSteps().evaluate(EvalInputs(model, tok, False, run / "data" / "eval", settings))
    return time.perf_counter() - t0, out


def redteam_cost(model, tok) -> None:
    from fidan.eval import redteam
    replies = []
    for _ in range(2):
        for seq in (True, False):
            redteam.complete_many = one_at_a_time if seq else scoring.complete_many
            t0 = time.perf_counter()
            out = redteam.run(model, tok, True, limit=120)
            print(f"  redteam {'one at a time' if seq else 'batched'}: {time.perf_counter() - t0:.1f} s "
                  f"({len(out['replies'])} replies)", flush=True)
            replies.append([r["reply"] for r in out["replies"]])
    assert all(r == replies[0] for r in replies)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--limits", default="40,200")
    ap.add_argument("--sequential", default="", help="limits to time one prompt at a time too")
    ap.add_argument("--stages", default="pretrain,sft,rlhf")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--redteam", action="store_true", help="time the red team instead")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = FidanTokenizer.load(a.run / "tokenizer" / "tokenizer.json")
    sequential = {int(x) for x in a.sequential.split(",") if x}
    for stage in a.stages.split(","):
        model, _ = load_model(a.run / stage, "cpu")
        model.eval()
        if a.redteam:
            print(stage, flush=True)
            redteam_cost(model, tok)
            continue
        for limit in (int(x) for x in a.limits.split(",")):
            runs = [False] + ([True] if limit in sequential else [])
            first: dict = {}
            for seq in runs:
                seconds, out = timed(model, tok, a.run, limit, seq)
                modes = ", ".join(f"{k.split('/')[1]} {v['acc']:.1%} [{v['acc_lo']:.1%}-{v['acc_hi']:.1%}] "
                                  f"n={v['n']}" + (f" too_long={v['too_long']}" if v.get("too_long") else "")
                                  for k, v in out.items())
                print(f"{stage} limit={limit} {'one at a time' if seq else 'batched'}: {seconds:.1f} s | {modes}",
                      flush=True)
                if seq:   # the same replies either way (greedy), so the same scores
                    assert {k: v["acc"] for k, v in out.items()} == {k: v["acc"] for k, v in first.items()}
                first = out


if __name__ == "__main__":
    main()
