"""Serving cost: latency per token, time to answer, money, energy and CO2 per million tokens.

Decoding one step of a batch reads every weight once (and each sequence's KV cache), so a step
takes at least ``bytes / (devices x bandwidth)``; it also does ``2 N`` FLOPs per sequence, so it
takes at least ``2 N B / (devices x peak x MFU)``. The larger of the two bounds is the step time
(a roofline). The prompt is read in one compute-bound pass (prefill). At batch 1 decoding is
memory-bound on every accelerator listed; large batches amortise the weight reads until the
compute bound takes over.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from fidan.errors import FidanError


@dataclass
class Serving:
    params: float                    # N
    gpu: str = "H100"
    n_gpus: int = 1                  # tensor-parallel devices holding one copy of the model
    bytes_per_param: float = 2.0     # bf16 weights (1 for int8, 0.5 for 4-bit)
    batch: int = 1                   # sequences decoded together
    prompt_tokens: int = 500
    answer_tokens: int = 200
    kv_bytes_per_token: float = 0.0  # KV-cache bytes per token of context (0 = ignore)
    bandwidth_util: float = 0.7      # share of the datasheet bandwidth decoding reaches
    mfu: float = 0.5                 # share of peak for prefill and compute-bound decoding
    price_per_gpu_hour: float = 2.0
    pue: float = 1.2
    grid_kg_per_kwh: float = 0.4


def serve(s: Serving) -> dict:
    from fidan.estimate import accelerator, check_positive
    check_positive(params=s.params, n_gpus=s.n_gpus, bytes_per_param=s.bytes_per_param, batch=s.batch,
                   answer_tokens=s.answer_tokens, bandwidth_util=s.bandwidth_util, mfu=s.mfu, pue=s.pue)
    if s.bandwidth_util > 1 or s.mfu > 1:
        raise FidanError("bandwidth_util and mfu are fractions between 0 and 1")
    acc = accelerator(s.gpu)
    if not acc.bandwidth:
        raise FidanError(f"no memory bandwidth on record for '{acc.name}'; choose one of V100, A100, H100, H200")
    weights = s.params * s.bytes_per_param
    kv = s.kv_bytes_per_token * (s.prompt_tokens + s.answer_tokens / 2) * s.batch
    memory = s.n_gpus * acc.memory_gb * 1e9
    if weights + kv > memory:
        raise FidanError(f"{weights / 1e9:.0f} GB of weights{' and KV cache' if kv else ''} do not fit in "
                         f"{s.n_gpus} x {acc.memory_gb:g} GB; use more --gpus or fewer bytes per parameter")
    memory_bound = (weights + kv) / (s.n_gpus * acc.bandwidth * s.bandwidth_util)
    compute_bound = 2 * s.params * s.batch / (s.n_gpus * acc.peak_flops * s.mfu)
    step = max(memory_bound, compute_bound)
    prefill = 2 * s.params * s.prompt_tokens / (s.n_gpus * acc.peak_flops * s.mfu)
    seconds_per_million = step * 1e6 / s.batch
    gpu_hours_per_million = seconds_per_million * s.n_gpus / 3600
    kwh_per_million = gpu_hours_per_million * acc.tdp_watts * s.pue / 1000
    return {
        "accelerator": acc.name, "n_gpus": s.n_gpus, "weights_gb": weights / 1e9,
        "bound": "memory bandwidth" if memory_bound >= compute_bound else "compute",
        "seconds_per_token": step, "tokens_per_second_per_sequence": 1 / step,
        "tokens_per_second": s.batch / step,
        "prefill_seconds": prefill, "time_to_answer_s": prefill + s.answer_tokens * step,
        "usd_per_million_tokens": gpu_hours_per_million * s.price_per_gpu_hour,
        "kwh_per_million_tokens": kwh_per_million,
        "co2_kg_per_million_tokens": kwh_per_million * s.grid_kg_per_kwh,
        "assumptions": [
            f"{acc.name}: {acc.bandwidth / 1e12:.3g} TB/s, {acc.memory_gb:g} GB, {acc.peak_flops / 1e12:g} "
            f"TFLOP/s peak, {acc.tdp_watts:g} W ({acc.source})",
            f"weights {s.bytes_per_param:g} bytes per parameter, read once per decoding step at "
            f"{s.bandwidth_util:.0%} of the bandwidth",
            f"compute at {s.mfu:.0%} of peak (2 N FLOPs per token); prompt {s.prompt_tokens} tokens, "
            f"answer {s.answer_tokens} tokens, batch {s.batch}",
            f"${s.price_per_gpu_hour:g} per GPU-hour; TDP x PUE {s.pue:g}; {s.grid_kg_per_kwh:g} kg CO2 per kWh",
        ],
        "serving": asdict(s),
    }


def format_serving(r: dict) -> str:
    rows = [
        ("model weights", f"{r['weights_gb']:.3g} GB on {r['n_gpus']} x {r['accelerator']}"),
        ("decoding is bound by", r["bound"]),
        ("latency per token", f"{r['seconds_per_token'] * 1000:.3g} ms "
                              f"({r['tokens_per_second_per_sequence']:.3g} tokens/s per answer)"),
        ("throughput", f"{r['tokens_per_second']:.4g} tokens/s"),
        ("time to answer", f"{r['time_to_answer_s']:.3g} s (prompt read in {r['prefill_seconds'] * 1000:.3g} ms)"),
        ("cost per 1M tokens", f"${r['usd_per_million_tokens']:.3g}"),
        ("energy per 1M tokens", f"{r['kwh_per_million_tokens']:.3g} kWh"),
        ("CO2 per 1M tokens", f"{r['co2_kg_per_million_tokens']:.3g} kg"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join([f"{k:<{width}}  {v}" for k, v in rows] + ["", "assumptions:"] +
                     [f"  - {a}" for a in r["assumptions"]])
