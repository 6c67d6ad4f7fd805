"""Accelerators' rated peak and power, and the energy a finished run used (no torch needed)."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    name: str
    peak_flops: float       # dense peak in the training precision, FLOP/s
    tdp_watts: float
    precision: str
    source: str
    memory_gb: float = 0.0          # on-device memory
    bandwidth: float = 0.0          # memory bandwidth, bytes/s (what bounds decoding one token)


ACCELERATORS = {
    # NVIDIA Tesla V100 SXM2 datasheet: 125 TFLOPS fp16 tensor-core peak, 300 W, 32 GB HBM2 at 900 GB/s.
    "V100": Accelerator("V100", 125e12, 300, "fp16", "NVIDIA V100 datasheet (SXM2)", 32, 900e9),
    # NVIDIA A100 datasheet: 312 TFLOPS bf16 dense (624 with sparsity), 400 W (SXM), 80 GB at 2,039 GB/s.
    "A100": Accelerator("A100", 312e12, 400, "bf16", "NVIDIA A100 datasheet (SXM 80 GB, dense)", 80, 2039e9),
    # NVIDIA H100 datasheet: 989 TFLOPS bf16 dense (1979 with sparsity), up to 700 W (SXM), 80 GB at 3.35 TB/s.
    "H100": Accelerator("H100", 989e12, 700, "bf16", "NVIDIA H100 datasheet (SXM, dense)", 80, 3.35e12),
    # NVIDIA H200 datasheet: same compute as the H100 SXM (989 TFLOPS bf16 dense), up to 700 W, 141 GB at 4.8 TB/s.
    "H200": Accelerator("H200", 989e12, 700, "bf16", "NVIDIA H200 datasheet (SXM, dense)", 141, 4.8e12),
}
CPU_WATTS_PER_CORE = 10.0   # assumption for "this CPU": a desktop/server core under full load


def run_energy_kwh(device_type: str, seconds: float, pue: float = 1.0) -> float:
    """Energy a finished training run used, estimated from its device's rated power."""
    if device_type == "cuda":
        import torch
        name = torch.cuda.get_device_name().upper()
        watts = next((a.tdp_watts for k, a in ACCELERATORS.items() if k in name), 400.0)
        watts *= max(1, torch.cuda.device_count())
    else:
        watts = CPU_WATTS_PER_CORE * (os.cpu_count() or 1)
    return watts * pue * seconds / 3.6e6
