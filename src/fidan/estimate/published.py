"""The planner checked against published training runs (``fidan estimate --check``).

Each row gives the planner what a first-principles estimate would start from (parameters,
tokens, the accelerator's datasheet, a utilisation taken from the literature) and compares its
answer with the figure the source reports, within a stated tolerance. Each row also says which
of its inputs came from the same source as the figure it is checked against: a row whose
throughput comes from that source checks the arithmetic around it (FLOP accounting, energy),
not the throughput; the Llama 2 and BLOOM rows take their utilisation from other papers, so
they check the whole estimate.

Sources (the figures were read from them; the values below cite table and page):

* Brown et al. 2020, "Language Models are Few-Shot Learners", Table D.1: GPT-3 175B has
  174.6B parameters, was trained on 300B tokens, 3.14e23 FLOPs (3.64e3 PF-days).
* Patterson et al. 2021, "Carbon Emissions and Large Neural Network Training", Table 4, GPT-3:
  10,000 V100s for 14.8 days, 24.6 TFLOP/s measured per processor, 330 W average system power
  per processor, PUE 1.10, 0.429 kg CO2e per kWh, 1,287 MWh, 552 tCO2e.
* Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using
  Megatron-LM", section 5.1: 175B parameters, 300B tokens, 1,024 A100s at 140 TFLOP/s per GPU:
  about 34 days, from time = 8 T P / (n X) (the 8 counts activation recomputation).
* Touvron et al. 2023a, "LLaMA: Open and Efficient Foundation Language Models", section 2.4:
  the 65B model (80 layers, width 8192, context 2048) processes about 380 tokens/s/GPU on
  2,048 A100-80GB.
* Touvron et al. 2023b, "Llama 2", Table 2 / model card: the 70B model (80 layers, width 8192,
  context 4096) took 1,720,320 A100-80GB GPU-hours for 2T tokens.
* BigScience 2022, BLOOM model card and Le Scao et al. 2022: 176,247,271,424 parameters, 366B
  training tokens, Megatron-DeepSpeed on A100-80GB.
* Luccioni et al. 2022, "Estimating the Carbon Footprint of BLOOM", Table 1: 1,082,990 GPU-hours,
  433,196 kWh dynamic energy (GPU-hours x 400 W, no PUE).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fidan.estimate import Plan, estimate

# Llama 1's measured training rate, as a utilisation of the A100's bf16 peak, counting the same
# FLOPs the planner counts (6N + attention): 380 tokens/s/GPU for the 65.2B model at context 2048.
LLAMA1_MFU = 380 * (6 * 65.2e9 + 12 * 80 * 8192 * 2048) / 312e12
# Megatron-LM's sustained rate on A100s for GPT-3-size models, hardware FLOPs with recomputation.
MEGATRON_A100_FLOPS = 140e12


@dataclass(frozen=True)
class Published:
    run: str
    quantity: str        # a key of estimate()'s result
    label: str
    published: float
    unit: str
    scale: float         # result value / scale is in ``unit``
    tolerance: float     # relative
    plan: Plan
    source: str
    same_source: str     # which inputs come from the figure's own source ("" = none)
    why_off: str = ""    # what the estimate leaves out, where it differs by more than a few percent
    extra: dict = field(default_factory=dict)


_GPT3_ENERGY = Plan(params=174.6e9, tokens=300e9, gpu="V100", n_gpus=10_000, peak_override=24.6e12,
                    watts=330, pue=1.10, grid_kg_per_kwh=0.429)
_BLOOM = Plan(params=176_247_271_424, tokens=366e9, gpu="A100", peak_override=MEGATRON_A100_FLOPS,
              recompute=True, pue=1.0)

RECORDS = [
    Published("GPT-3 175B", "flops_total", "training FLOPs", 3.14e23, "FLOPs", 1, 0.02,
              Plan(params=174.6e9, tokens=300e9), "Brown et al. 2020, Table D.1",
              same_source="N and D"),
    Published("GPT-3 175B", "wall_days", "days on 10,000 V100s", 14.8, "days", 1, 0.03, _GPT3_ENERGY,
              "Patterson et al. 2021, Table 4", same_source="measured 24.6 TFLOP/s per V100"),
    Published("GPT-3 175B", "energy_mwh", "energy", 1287, "MWh", 1, 0.03, _GPT3_ENERGY,
              "Patterson et al. 2021, Table 4", same_source="throughput, 330 W per processor, PUE 1.10"),
    Published("GPT-3 175B", "co2_tonnes", "CO2", 552, "t", 1, 0.03, _GPT3_ENERGY,
              "Patterson et al. 2021, Table 4", same_source="throughput, power, PUE, 0.429 kg/kWh"),
    Published("Megatron-LM 175B", "wall_days", "days on 1,024 A100s", 34, "days", 1, 0.03,
              Plan(params=175e9, tokens=300e9, gpu="A100", n_gpus=1024, peak_override=140e12, recompute=True),
              "Narayanan et al. 2021, section 5.1", same_source="140 TFLOP/s per GPU"),
    Published("Llama 2 70B", "gpu_hours", "A100 GPU-hours", 1_720_320, "GPU-hours", 1, 0.15,
              Plan(params=70e9, tokens=2e12, n_layer=80, d_model=8192, context=4096, gpu="A100", mfu=LLAMA1_MFU),
              "Touvron et al. 2023b (Llama 2), Table 2", same_source="",
              why_off="utilisation from Llama 1's 65B run at context 2048; grouped-query attention and "
                      "context 4096 change the real rate"),
    Published("BLOOM 176B", "gpu_hours", "A100 GPU-hours", 1_082_990, "GPU-hours", 1, 0.15, _BLOOM,
              "Luccioni et al. 2022, Table 1", same_source="",
              why_off="throughput from Megatron-LM's GPT-3 runs; the published hours are the cluster's "
                      "allocation over 3.5 months, restarts and stalls included"),
    Published("BLOOM 176B", "energy_mwh", "GPU energy (no PUE)", 433.196, "MWh", 1, 0.15, _BLOOM,
              "Luccioni et al. 2022, Table 1", same_source="400 W per GPU (the A100's TDP, as the paper)",
              why_off="follows the GPU-hours"),
]


def check() -> list[dict]:
    """Every published figure beside the planner's estimate."""
    rows = []
    for rec in RECORDS:
        value = estimate(rec.plan)[rec.quantity] / rec.scale
        error = value / rec.published - 1
        rows.append({"run": rec.run, "what": rec.label, "published": rec.published, "estimate": value,
                     "unit": rec.unit, "error": error, "tolerance": rec.tolerance,
                     "within": abs(error) <= rec.tolerance, "source": rec.source,
                     "same_source": rec.same_source or "none (independent)", "why_off": rec.why_off})
    return rows


def format_check(rows: list[dict]) -> str:
    head = f"{'run':<17} {'figure':<22} {'published':>12} {'fidan':>12} {'error':>7} {'tol':>5}  ok"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['run']:<17} {r['what']:<22} {_num(r['published']):>12} {_num(r['estimate']):>12} "
                     f"{r['error']:>+7.1%} {r['tolerance']:>5.0%}  {'yes' if r['within'] else 'NO'}")
    lines.append("")
    lines.append("inputs taken from the figure's own source (the rest: parameters, tokens, datasheets):")
    for r in rows:
        note = f"; {r['why_off']}" if r["why_off"] else ""
        lines.append(f"  - {r['run']}, {r['what']}: {r['same_source']} [{r['source']}]{note}")
    lines.append(f"  Llama 2 uses Llama 1's measured utilisation ({LLAMA1_MFU:.1%} of the A100's peak); BLOOM uses "
                 f"Megatron-LM's {MEGATRON_A100_FLOPS / 1e12:g} TFLOP/s per A100 with recomputation.")
    return "\n".join(lines)


def _num(x: float) -> str:
    if abs(x) >= 1e7:
        return f"{x:.3e}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
