"""Throughput accounting: a measured matmul peak to compute model FLOPs utilisation (MFU) against."""
from __future__ import annotations

import functools
import time

import torch


@functools.cache
def matmul_peak_flops(device: str = "cpu", n: int = 1024, repeats: int = 8) -> float:
    """Best observed FLOP/s of an n x n matmul in the training dtype: a practical ceiling.

    Vendor peaks are unreachable on a CPU, so MFU against them says little; against a measured
    matmul it tells how much of what this machine can actually do the training loop uses.
    """
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * n**3 / best
