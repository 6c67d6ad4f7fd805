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


def mfu(flops_per_s: float, peak_flops: float, devices: int = 1) -> float:
    """Model FLOPs utilisation: the model's FLOPs per second (``flops_per_token`` x tokens/s)
    over the peak of ``devices`` devices. The training loop reports it; the cost planner uses
    the same relation the other way round (``seconds_for``)."""
    return flops_per_s / (peak_flops * devices) if flops_per_s and peak_flops else 0.0


def seconds_for(flops: float, peak_flops: float, utilisation: float, devices: int = 1) -> float:
    """Seconds that ``flops`` take on ``devices`` devices of ``peak_flops`` at MFU ``utilisation``:
    the inverse of ``mfu`` (``mfu(flops / seconds_for(flops, p, u), p) == u``)."""
    return flops / (peak_flops * utilisation * devices)
