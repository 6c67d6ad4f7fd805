#!/usr/bin/env bash
# The GPU path end to end, in under 10 minutes on one GPU: pre-training for a few hundred steps at
# the `gpu` preset's shape (bf16 autocast, torch.compile, fused AdamW, pinned batches, flash SDPA),
# then SFT, the reward model, DPO and a brief evaluation. Prints tokens/s, MFU against the device's
# bf16 peak (datasheet), peak GPU memory and each stage's result.
#
#   benchmarks/gpu_check.sh                 one GPU
#   benchmarks/gpu_check.sh --nproc=8       the training stages under torchrun on 8 GPUs
#   benchmarks/gpu_check.sh --cpu-smoke     the same stages at the tests' micro size on the CPU
#                                           (checks the script and the stages, not the speed)
# Options: --root=DIR (default runs-gpu-check), --name=NAME (default gpu-check or cpu-smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
SMOKE=0; NPROC=1; ROOT=runs-gpu-check; NAME=""
for arg in "$@"; do
  case $arg in
    --cpu-smoke) SMOKE=1 ;;
    --nproc=*) NPROC=${arg#*=} ;;
    --root=*) ROOT=${arg#*=} ;;
    --name=*) NAME=${arg#*=} ;;
    *) echo "gpu_check.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

if [ "$SMOKE" = 1 ]; then
  NAME=${NAME:-cpu-smoke}
  SETTINGS=(--preset tiny --run.device=cpu --run.compile=false --run.threads=1
            --corpus.scale_mb=0.15 --corpus.n_places=8 --corpus.n_people=12 --corpus.n_creatures=6
            --corpus.sft_conversations=400 --corpus.sentiment_examples=400 --tokenizer.vocab_size=512
            --model.context=64 --model.n_layer=2 --model.n_head=2 --model.n_kv_head=2 --model.d_model=64
            --train.steps=20 --train.batch_size=8 --train.grad_accum=2 --train.eval_every=10
            --train.ckpt_every=10 --train.eval_tokens=0 --sample.num_samples=1 --sample.max_tokens=16
            --sft.steps=10 --sft.batch_size=8 --sft.grad_accum=2 --sft.eval_items=4
            --reward.steps=6 --reward.samples=2 --reward.grad_accum=2
            --rlhf.algo=dpo --rlhf.steps=4 --rlhf.dpo.batch=4 --rlhf.dpo.grad_accum=2 --rlhf.eval_prompts=8
            --eval.limit=8 --eval.math_limit=2)
else
  NAME=${NAME:-gpu-check}
  SETTINGS=(--preset gpu --corpus.scale_mb=20 --train.steps=300 --train.warmup_steps=30
            --train.eval_every=100 --train.ckpt_every=300 --train.eval_tokens=262144
            --sft.steps=100 --reward.steps=40 --rlhf.algo=dpo --rlhf.steps=40
            --rlhf.eval_prompts=32 --eval.limit=40 --eval.math_limit=4)
fi

start=$(date +%s)
$PY -m fidan pipeline "${SETTINGS[@]}" --run.root="$ROOT" --run.name="$NAME" --nproc="$NPROC" --until=eval
echo "wall time: $(( $(date +%s) - start )) s"

$PY - "$ROOT/$NAME" <<'PYEOF'
import json, sys
from pathlib import Path

import torch

from fidan.train.energy import ACCELERATORS

run = Path(sys.argv[1])
stamps = {p.stem: json.loads(p.read_text())["summary"] for p in sorted((run / "stages").glob("*.json"))}
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
peak = next((a.peak_flops for key, a in ACCELERATORS.items() if key in name.upper()), 0.0)
print(f"\ndevice: {name}" + (f" (bf16 peak {peak / 1e12:.0f} TFLOP/s, datasheet)" if peak else
                            " (no datasheet bf16 peak known: MFU against the measured matmul peak)"))
keys = {"pretrain": ("val_bpb", "unigram_bpb", "params"), "sft": ("sft_facts_acc", "sft_math_acc"),
        "reward": ("heldout_accuracy",), "rlhf": ("algo", "judge_win_rate", "kl_to_sft"),
        "eval": ()}
for stage, s in stamps.items():
    line = f"{stage:<10} {s.get('seconds', 0):>7.1f} s"
    if "tokens_per_s" in s:
        world = s.get("world_size", 1)
        flops_per_token = s["flops"] / max(s["tokens"], 1)
        mfu = s["tokens_per_s"] * flops_per_token / (peak * world) if peak else s.get("mfu", 0.0)
        line += (f"  {s['tokens_per_s']:>10,} tok/s  MFU {mfu:6.1%}  peak memory {s.get('peak_memory_mb', 0):,} MB"
                 f"  ({world} process{'es' if world > 1 else ''}, {s.get('parallel', 'none')})")
    shown = [f"{k}={s[k]:.4g}" if isinstance(s[k], float) else f"{k}={s[k]}"
             for k in keys.get(stage.split("-")[0], ()) if k in s]
    print(line + ("  " + "  ".join(shown) if shown else ""))
PYEOF
