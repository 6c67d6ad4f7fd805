"""A whole project priced, not only its compute (``fidan estimate --project``).

The seed texts put a GPT-4-class assistant at 10,000-25,000 GPUs for 3-6 months, megawatts of
power and $50-100M+. This module prices the parts such a project is made of: data preparation,
human labelling (demonstrations for SFT, comparisons for the reward model), evaluation and red
teaming, pre-training compute, and the facility's power draw. Every input is an assumption
printed with the result; the defaults describe a GPT-4-scale scenario from public estimates
(OpenAI has not published GPT-4's size, data or cost), and each can be changed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from fidan.estimate import Plan, check_positive, estimate


@dataclass
class Project:
    params: float = 280e9               # parameters active per token (public estimates for GPT-4's scale)
    tokens: float = 13e12               # training tokens (ditto)
    gpu: str = "A100"
    n_gpus: int = 25_000
    mfu: float = 0.35
    price_per_gpu_hour: float = 2.0
    system_watts_per_gpu: float = 812.5  # a DGX A100 is rated 6.5 kW for 8 GPUs (NVIDIA DGX A100 datasheet)
    pue: float = 1.2
    grid_kg_per_kwh: float = 0.4
    raw_text_tb: float = 100.0          # crawl text to clean (before the 80-90% a crawl drops)
    cpu_core_hours_per_tb: float = 5000.0   # extraction, dedup, filters, language ID
    price_per_cpu_core_hour: float = 0.04
    demonstrations: int = 50_000        # written SFT answers
    price_per_demonstration: float = 20.0
    comparisons: int = 500_000          # "which answer is better" labels for the reward model
    price_per_comparison: float = 2.0
    red_team_hours: float = 50_000.0    # experts probing the model
    price_per_red_team_hour: float = 100.0
    eval_compute_share: float = 0.02    # evaluation runs, as a share of the training compute
    rlhf_compute_share: float = 0.05    # SFT, reward model and RL, as a share of pre-training


def breakdown(p: Project) -> dict:
    check_positive(params=p.params, tokens=p.tokens, n_gpus=p.n_gpus, mfu=p.mfu, pue=p.pue)
    train = estimate(Plan(params=p.params, tokens=p.tokens, gpu=p.gpu, n_gpus=p.n_gpus, mfu=p.mfu,
                          price_per_gpu_hour=p.price_per_gpu_hour, pue=p.pue, grid_kg_per_kwh=p.grid_kg_per_kwh,
                          watts=p.system_watts_per_gpu))
    compute = train["cost_usd"]
    parts = {
        "data preparation": p.raw_text_tb * p.cpu_core_hours_per_tb * p.price_per_cpu_core_hour,
        "human demonstrations (SFT)": p.demonstrations * p.price_per_demonstration,
        "human comparisons (reward model)": p.comparisons * p.price_per_comparison,
        "red teaming": p.red_team_hours * p.price_per_red_team_hour,
        "evaluation compute": compute * p.eval_compute_share,
        "fine-tuning and RLHF compute": compute * p.rlhf_compute_share,
        "pre-training compute": compute,
    }
    facility_mw = p.n_gpus * p.system_watts_per_gpu * p.pue / 1e6
    return {
        "parts_usd": parts, "total_usd": sum(parts.values()),
        "wall_days": train["wall_days"], "months": train["wall_days"] / 30.4, "gpu_hours": train["gpu_hours"],
        "flops": train["flops_total"], "facility_mw": facility_mw,
        "energy_gwh": train["energy_mwh"] / 1000, "co2_tonnes": train["co2_tonnes"],
        "assumptions": [
            f"{p.params:.3g} parameters active per token, {p.tokens:.3g} tokens: C = 6ND = {train['flops_total']:.3g} "
            f"FLOPs (public estimates of GPT-4's scale; OpenAI has not published them)",
            f"{p.n_gpus:,} x {p.gpu} at {p.mfu:.0%} MFU, ${p.price_per_gpu_hour:g} per GPU-hour",
            f"facility power = GPUs x {p.system_watts_per_gpu:g} W per GPU (whole server) x PUE {p.pue:g}",
            f"data: {p.raw_text_tb:g} TB of crawl text x {p.cpu_core_hours_per_tb:g} core-hours per TB x "
            f"${p.price_per_cpu_core_hour:g}",
            f"labelling: {p.demonstrations:,} demonstrations x ${p.price_per_demonstration:g}, {p.comparisons:,} "
            f"comparisons x ${p.price_per_comparison:g}; red team {p.red_team_hours:,.0f} h x "
            f"${p.price_per_red_team_hour:g}",
            f"evaluation {p.eval_compute_share:.0%} and fine-tuning/RLHF {p.rlhf_compute_share:.0%} of the "
            f"pre-training compute; salaries, failed runs and experiments not included",
        ],
        "project": asdict(p),
    }


def format_breakdown(r: dict) -> str:
    width = max(len(k) for k in r["parts_usd"]) + 2
    lines = [f"{k:<{width}} ${v:>14,.0f}" for k, v in r["parts_usd"].items()]
    lines.append(f"{'total':<{width}} ${r['total_usd']:>14,.0f}")
    lines += ["", f"pre-training: {r['gpu_hours']:.3g} GPU-hours, {r['wall_days']:.0f} days "
                  f"({r['months']:.1f} months), facility draw {r['facility_mw']:.1f} MW, "
                  f"{r['energy_gwh']:.3g} GWh, {r['co2_tonnes']:,.0f} t CO2", "", "assumptions:"]
    lines += [f"  - {a}" for a in r["assumptions"]]
    return "\n".join(lines)
