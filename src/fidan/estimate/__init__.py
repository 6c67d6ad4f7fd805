"""Cost and scale planner: FLOPs, time, money, energy and carbon for a training run.

Formulas (every figure printed with the assumption behind it):

* training FLOPs  C = 6 N D                      (Kaplan et al. 2020: forward 2N, backward 4N per token)
                  + 12 L d T D  attention        (PaLM's accounting, Chowdhery et al. 2022, App. B:
                                                  QK^T and AV, no saving for the causal mask)
                  or, for a fidan config, D x ``model.gpt.flops_per_token`` (the count the
                  training loop reports: every matmul, attention over each layer's own span)
                  x 4/3 with full activation recomputation (one more forward pass: the
                  hardware FLOPs Megatron-LM reports, Narayanan et al. 2021, eq. 3)
* Chinchilla-optimal size for a budget C: D = 20 N, so N = sqrt(C / 120)
                                                 (Hoffmann et al. 2022: about 20 tokens per parameter)
* GPU time        C / (peak FLOP/s x MFU)
* energy          GPU power (TDP) x PUE x GPU-hours
* CO2             energy x grid carbon intensity
* inference       2 N FLOPs per generated token (forward only) at an assumed inference MFU of the
                  accelerator's peak; ``fidan.estimate.inference`` adds the memory-bandwidth bound
                  of decoding (every weight read once per step), latency and energy per token

``fidan.estimate.published`` checks these formulas against published training runs and
``fidan.estimate.project`` prices a whole project (data, labelling, evaluation, compute, power).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from fidan.errors import FidanError
from fidan.train.energy import (  # noqa: F401 (Accelerator, run_energy_kwh re-exported)
    ACCELERATORS,
    CPU_WATTS_PER_CORE,
    Accelerator,
    run_energy_kwh,
)
from fidan.train.perf import seconds_for

SECONDS_PER_YEAR = 365 * 24 * 3600


def this_cpu() -> Accelerator:
    """This machine's CPU, with its peak measured (an fp32 matmul) rather than looked up."""
    import os

    from fidan.train.perf import matmul_peak_flops
    cores = os.cpu_count() or 1
    return Accelerator("cpu", matmul_peak_flops("cpu"), CPU_WATTS_PER_CORE * cores, "fp32",
                       f"measured fp32 matmul peak; power assumed {CPU_WATTS_PER_CORE:g} W x {cores} cores")


def accelerator(name: str) -> Accelerator:
    key = name.upper() if name.lower() != "cpu" else "cpu"
    if key == "cpu":
        return this_cpu()
    if key not in ACCELERATORS:
        raise FidanError(f"unknown accelerator '{name}' (known: {', '.join(ACCELERATORS)}, cpu)")
    return ACCELERATORS[key]


@dataclass
class Plan:
    params: float                  # N, parameters (all of them, as in 6ND)
    tokens: float                  # D, training tokens
    n_layer: int = 0               # for the attention term (0 = leave it out)
    d_model: int = 0
    context: int = 0
    gpu: str = "H100"
    n_gpus: int = 1
    mfu: float = 0.4               # assumed model FLOPs utilisation during training
    price_per_gpu_hour: float = 2.0
    pue: float = 1.2               # data-centre power usage effectiveness
    grid_kg_per_kwh: float = 0.4   # carbon intensity of the electricity
    inference_mfu: float = 0.2
    peak_override: float = 0.0     # sustained training FLOP/s per GPU, replacing peak x MFU
    recompute: bool = False        # full activation recomputation: one more forward pass per step
    flops_per_token: float = 0.0   # the model's own training count (a fidan config), replacing 6N + attention
    watts: float = 0.0             # power per device, replacing the datasheet TDP (0 = TDP)


def check_positive(**values: float) -> None:
    for name, value in values.items():
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise FidanError(f"{name} must be a positive number (got {value!r})")


def training_flops(params: float, tokens: float, n_layer: int = 0, d_model: int = 0, context: int = 0,
                   recompute: bool = False, flops_per_token: float = 0.0) -> dict:
    """Training FLOPs: 6ND plus PaLM's attention term, or the model's own per-token count
    (``flops_per_token``, what the training loop reports), times 4/3 with recomputation."""
    dense = 6 * params * tokens
    attention = 0.0 if flops_per_token else 12 * n_layer * d_model * context * tokens
    total = flops_per_token * tokens if flops_per_token else dense + attention
    return {"flops_6nd": dense, "flops_attention": attention,
            "flops_total": total * (4 / 3 if recompute else 1.0)}


def chinchilla_optimal(compute: float, tokens_per_param: float = 20.0) -> dict:
    check_positive(compute=compute)
    params = math.sqrt(compute / (6 * tokens_per_param))
    return {"compute": compute, "params": params, "tokens": tokens_per_param * params,
            "rule": f"D = {tokens_per_param:g} N and C = 6 N D (Hoffmann et al. 2022)"}


def estimate(plan: Plan) -> dict:
    check_positive(params=plan.params, tokens=plan.tokens, n_gpus=plan.n_gpus, mfu=plan.mfu, pue=plan.pue,
                   inference_mfu=plan.inference_mfu)
    if plan.mfu > 1 or plan.inference_mfu > 1:
        raise FidanError("mfu must be a fraction between 0 and 1 (e.g. 0.4)")
    if plan.price_per_gpu_hour < 0 or plan.grid_kg_per_kwh < 0:
        raise FidanError("price and grid intensity cannot be negative")
    acc = accelerator(plan.gpu)
    flops = training_flops(plan.params, plan.tokens, plan.n_layer, plan.d_model, plan.context,
                           plan.recompute, plan.flops_per_token)
    gpu_seconds = (seconds_for(flops["flops_total"], plan.peak_override, 1.0) if plan.peak_override
                   else seconds_for(flops["flops_total"], acc.peak_flops, plan.mfu))
    gpu_hours = gpu_seconds / 3600
    watts = plan.watts or acc.tdp_watts
    energy_kwh = watts * plan.pue * gpu_hours / 1000
    # Inference runs at its own utilisation of the device's peak, never at the training throughput.
    infer_flops_per_m = 2 * plan.params * 1e6
    infer_hours_per_m = infer_flops_per_m / (acc.peak_flops * plan.inference_mfu) / 3600
    rule = ("D x the model's FLOPs per token (model.gpt.flops_per_token, as the training loop counts)"
            if plan.flops_per_token else f"6 N D{' + 12 L d T D (attention)' if flops['flops_attention'] else ''}")
    assumptions = [
        f"training FLOPs = {rule}{' x 4/3 (activation recomputation)' if plan.recompute else ''}",
        f"{acc.name}: {acc.peak_flops / 1e12:g} TFLOP/s peak {acc.precision}, {acc.tdp_watts:g} W ({acc.source})",
        (f"sustained throughput assumed {plan.peak_override / 1e12:g} TFLOP/s per GPU (given, replaces peak x MFU)"
         if plan.peak_override else f"MFU {plan.mfu:.0%} of peak during training"),
        (f"{plan.n_gpus} devices scale linearly (no communication overhead)" if plan.n_gpus > 1
         else "one device"),
        f"price ${plan.price_per_gpu_hour:g} per GPU-hour",
        f"energy = {f'{watts:g} W' if plan.watts else 'TDP'} x PUE {plan.pue:g} x GPU-hours; "
        f"CO2 at {plan.grid_kg_per_kwh:g} kg per kWh",
        f"inference: 2 N FLOPs per token at MFU {plan.inference_mfu:.0%} of peak (compute-bound; "
        f"`fidan estimate --inference` adds the memory-bandwidth bound)",
    ]
    return {
        "params": plan.params, "tokens": plan.tokens, "tokens_per_param": plan.tokens / plan.params,
        **flops,
        "pf_days": flops["flops_total"] / (1e15 * 86400),
        "accelerator": acc.name, "gpu_hours": gpu_hours, "gpu_years": gpu_seconds / SECONDS_PER_YEAR,
        "n_gpus": plan.n_gpus, "wall_days": gpu_seconds / plan.n_gpus / 86400,
        "cost_usd": gpu_hours * plan.price_per_gpu_hour,
        "energy_mwh": energy_kwh / 1000, "co2_tonnes": energy_kwh * plan.grid_kg_per_kwh / 1000,
        "inference_usd_per_million_tokens": infer_hours_per_m * plan.price_per_gpu_hour,
        "chinchilla_optimal_for_this_compute": chinchilla_optimal(flops["flops_total"]),
        "assumptions": assumptions,
        "plan": asdict(plan),
    }


def plan_from_config(cfg, **kw) -> Plan:
    """A plan for a fidan config: N from the model shape, D = steps x batch x accumulation x context,
    and the FLOPs the training loop will count (``model.gpt.flops_per_token``)."""
    import torch

    from fidan.model.gpt import GPT, flops_per_token
    model_cfg = cfg.model
    if not model_cfg.vocab_size:
        from dataclasses import replace
        model_cfg = replace(model_cfg, vocab_size=64 * math.ceil(cfg.tokenizer.vocab_size / 64))
    with torch.device("meta"):
        params = GPT(model_cfg).num_params()
    tokens = cfg.train.steps * cfg.train.batch_size * cfg.train.grad_accum * model_cfg.context
    return Plan(params=params, tokens=tokens, n_layer=model_cfg.n_layer, d_model=model_cfg.d_model,
                context=model_cfg.context, flops_per_token=flops_per_token(model_cfg), **kw)


def predicted_vs_actual(model_info: dict, actual: dict) -> str:
    """The planner's forecast for a finished pre-training run (its model shape and the tokens it
    saw) beside what the run really took."""
    from fidan.model.config import GPTConfig
    from fidan.model.gpt import flops_per_token
    shape = model_info.get("model", {})
    gpu = "cpu" if actual.get("device", "cpu") != "cuda" else "H100"
    try:
        per_token = flops_per_token(GPTConfig(**shape))
    except TypeError:   # an older model.json
        per_token = 0.0
    plan = Plan(params=actual.get("params", 0), tokens=actual.get("tokens", 0), n_layer=shape.get("n_layer", 0),
                d_model=shape.get("d_model", 0), context=shape.get("context", 0), gpu=gpu,
                flops_per_token=per_token)
    forecast = estimate(plan)
    seconds = forecast["gpu_hours"] * 3600
    return (f"predicted {forecast['flops_total']:.3g} FLOPs in {seconds:.0f} s at 40% MFU "
            f"({forecast['accelerator']}); actual {actual.get('flops', 0):.3g} FLOPs in "
            f"{actual.get('train_seconds', 0):.0f} s at {actual.get('mfu', 0):.0%} MFU, about "
            f"{actual.get('energy_kwh', 0) * 1000:.2g} Wh")


def _si(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"


def format_table(result: dict) -> str:
    rows = [
        ("parameters (N)", _si(result["params"])),
        ("training tokens (D)", f"{_si(result['tokens'])}  ({result['tokens_per_param']:.1f} per parameter)"),
        ("training FLOPs, 6ND", _si(result["flops_6nd"])),
        *([("  + attention", _si(result["flops_attention"]))] if result["flops_attention"] else []),
        ("  = total" if not result["plan"]["flops_per_token"] else "  model's own count",
         f"{_si(result['flops_total'])}  ({result['pf_days']:.4g} PF-days)"),
        (f"{result['accelerator']} device-hours",
         f"{_si(result['gpu_hours'])}  ({result['gpu_years']:.4g} device-years)"),
        (f"wall time on {result['n_gpus']} device{'s' if result['n_gpus'] > 1 else ''}",
         _human_days(result["wall_days"])),
        ("cost", _money(result["cost_usd"])),
        ("energy", _energy(result["energy_mwh"] * 1e6)),
        ("CO2", _mass(result["co2_tonnes"] * 1000)),
        ("inference per 1M tokens", _money(result["inference_usd_per_million_tokens"])),
    ]
    opt = result["chinchilla_optimal_for_this_compute"]
    rows.append(("Chinchilla-optimal here", f"N = {_si(opt['params'])}, D = {_si(opt['tokens'])}"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    lines.append("assumptions:")
    lines += [f"  - {a}" for a in result["assumptions"] + [opt["rule"]]]
    return "\n".join(lines)


def _money(usd: float) -> str:
    return f"${usd:,.0f}" if usd >= 100 else f"${usd:.3g}"


def _energy(wh: float) -> str:
    for unit, scale in (("MWh", 1e6), ("kWh", 1e3)):
        if wh >= scale:
            return f"{wh / scale:.4g} {unit}"
    return f"{wh:.3g} Wh"


def _mass(kg: float) -> str:
    return f"{kg / 1000:.4g} t" if kg >= 1000 else (f"{kg:.3g} kg" if kg >= 1 else f"{kg * 1000:.3g} g")


def _human_days(days: float) -> str:
    if days < 1 / 24:
        return f"{days * 86400:.3g} s"
    if days < 1:
        return f"{days * 24:.3g} hours"
    if days < 365:
        return f"{days:.3g} days"
    return f"{days / 365:.3g} years"
