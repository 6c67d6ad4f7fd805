"""Banded (sliding-window) attention: the chunked path against dense attention with a band mask.

At context 1024 and window 128 (issue 21, item 3), forward + backward, on this machine's CPU:

- ``op``: the attention product alone, ``scaled_dot_product_attention`` with a ``[t, t]`` band
  mask (what a banded layer ran before) against ``fidan.model.gpt.banded_attention``;
- ``layer``: a whole banded ``Attention`` layer of the GPT (projections, RoPE, attention), made
  to take the dense-masked path by handing it the mask, against its own chunked path.

The two sides run interleaved (ABAB...), so both see the same load; the median and the best of
``--repeats`` timings are printed with the load average before and after. ``--flex`` also times
``torch.nn.attention.flex_attention`` with a block mask (forward only: torch refuses its backward
on the CPU).

    python benchmarks/banded_attention.py [--batch 4] [--context 1024] [--window 128]
        [--d-model 192] [--heads 4] [--repeats 7] [--threads N] [--flex]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from fidan.model.config import GPTConfig
from fidan.model.gpt import Attention, banded_attention, rope_tables


def band_mask(t: int, window: int) -> torch.Tensor:
    pos = torch.arange(t)
    return (pos[None, :] <= pos[:, None]) & (pos[:, None] - pos[None, :] < window)


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def compare(name: str, sides: dict, repeats: int) -> None:
    for fn in sides.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(repeats):
        for k, fn in sides.items():
            times[k] += timed(fn, 1)
    (a, ta), (b, tb) = times.items()
    ma, mb = statistics.median(ta), statistics.median(tb)
    print(f"{name:>6}: {a} {ma * 1e3:7.1f} ms (best {min(ta) * 1e3:.1f}), {b} {mb * 1e3:7.1f} ms "
          f"(best {min(tb) * 1e3:.1f})  ->  {ma / mb:.2f}x median, {min(ta) / min(tb):.2f}x best")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--d-model", type=int, default=192)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--flex", action="store_true", help="also time flex_attention's forward")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, t, w, hd = args.batch, args.context, args.window, args.d_model // args.heads
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"batch {b}, context {t}, window {w}, d_model {args.d_model}, {args.heads} heads of {hd}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    mask = band_mask(t, w)
    q, k, v = (torch.randn(b, args.heads, t, hd, requires_grad=True) for _ in range(3))
    grad = torch.randn(b, args.heads, t, hd)
    err = (F.scaled_dot_product_attention(q, k, v, attn_mask=mask) - banded_attention(q, k, v, w)).abs().max()
    print(f"max |dense - banded| forward: {err.item():.2e}")
    compare("op", {
        "dense-masked": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask).backward(grad),
        "banded": lambda: banded_attention(q, k, v, w).backward(grad),
    }, args.repeats)

    cfg = GPTConfig(vocab_size=256, context=t, n_layer=1, n_head=args.heads, n_kv_head=args.heads,
                    d_model=args.d_model, sparse_every=1, window=w)
    layer = Attention(cfg, 0)
    cos, sin = rope_tables(cfg, t)
    x = torch.randn(b, t, args.d_model, requires_grad=True)
    x_grad = torch.randn(b, t, args.d_model)
    compare("layer", {
        "dense-masked": lambda: layer(x, cos, sin, mask, None).backward(x_grad),
        "banded": lambda: layer(x, cos, sin, None, None).backward(x_grad),
    }, args.repeats)

    if args.flex:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def in_band(batch, head, qi, ki):
            return (ki <= qi) & (qi - ki < w)
        block_mask = create_block_mask(in_band, None, None, t, t, device="cpu", BLOCK_SIZE=w)
        qd, kd, vd = q.detach(), k.detach(), v.detach()
        with torch.no_grad():
            compare("fwd", {
                "flex_attention": lambda: flex_attention(qd, kd, vd, block_mask=block_mask),
                "banded": lambda: banded_attention(qd, kd, vd, w),
            }, args.repeats)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
