"""What ``sft.pretrain_mix`` costs per SFT step: forward, backward and AdamW step of the run's
pre-trained model on plain conversation batches against mixed ones (the same number of rows, the
windows as wide as the conversations), in alternating blocks of steps so both see the same load.

    python benchmarks/sft_mix_cost.py --run runs/demo [--mix 0.25] [--steps 10] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    from fidan.config import build_config
    from fidan.data.shards import load_meta, load_tokens
    from fidan.finetune.data import ChatBatches, MixedBatches, encode_conversations
    from fidan.finetune.sft import make_loss
    from fidan.model.io import load_model
    from fidan.records import read_jsonl
    from fidan.tokenizer.bpe import FidanTokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--mix", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    tok = FidanTokenizer.load(run / "tokenizer" / "tokenizer.json")
    model, _ = load_model(run / "pretrain", "cpu")
    conversations = [obj["messages"] for _, obj in read_jsonl(run / "data" / "sft" / "train.jsonl")]
    examples = encode_conversations(tok, conversations, model.cfg.context + 1)
    meta = run / "data" / "tokens" / "meta.json"
    tokens = load_tokens(meta.parent / "train.bin", load_meta(meta))
    s = build_config(None, None, [f"sft.pretrain_mix={args.mix}"]).sft
    sides = {"plain": (ChatBatches(examples, args.batch, tok.pad, 1), make_loss(s, None)),
             f"mix {args.mix}": (m := MixedBatches(examples, args.batch, tok.pad, 1, tokens, args.mix),
                                 make_loss(s, None, mix_rows=m.rows))}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times: dict[str, list[float]] = {k: [] for k in sides}
    print(f"load average before {os.getloadavg()[0]:.1f}")
    step = 0
    for _ in range(args.repeats):
        for name, (batches, loss) in sides.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                value, _ = loss(model, batches(step, 0))
                value.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
            times[name].append((time.perf_counter() - t) / args.steps * 1000)
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):.0f} ms/step (blocks: {', '.join(f'{x:.0f}' for x in ts)})")
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
