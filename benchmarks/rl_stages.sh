#!/bin/bash
# The demo's stages after pre-training (sft, reward, rlhf, eval), timed one by one on a copy of a
# finished tiny-demo run, with the code of one source tree (issue 21, item 5). Run two of these at
# once, one per tree, for a paired before/after under the same load:
#   benchmarks/rl_stages.sh /work/main/src RUN_DIR ROOT A & benchmarks/rl_stages.sh $PWD/src RUN_DIR ROOT B & wait
#   python benchmarks/rl_stages_card.py ROOT/A ROOT/B
# The copy drops what a fresh demo would not have (reward/samples.json, the base model's chat
# scores, the checkpoints a stage would resume from), so every stage does the work it does in
# `make demo`. Writes ROOT/NAME.times.
# STAGES (default "sft reward rlhf eval") picks the stages; RLHF_ARGS adds settings to the rlhf one.
src=$1; from=$2; root=$3; name=$4; threads=${5:-1}
rm -rf "$root/$name"; mkdir -p "$root"; cp -r "$from" "$root/$name"
rm -rf "$root/$name/reward/samples.json" "$root/$name"/pretrain/chat_scores_*.json "$root/$name"/{sft,reward,rlhf}/ckpt
log=$root/$name.times; : > "$log"
for s in ${STAGES:-sft reward rlhf eval}; do
  extra=(); [ "$s" = rlhf ] && extra=($RLHF_ARGS)
  t0=$(date +%s.%N); l0=$(cut -d' ' -f1 /proc/loadavg)
  PYTHONPATH=$src python -m fidan $s --run.root="$root" --run.name="$name" --run.threads="$threads" "${extra[@]}" \
    > "$root/$name.$s.log" 2>&1
  rc=$?
  t1=$(date +%s.%N); l1=$(cut -d' ' -f1 /proc/loadavg)
  echo "$s rc=$rc seconds=$(echo "$t1 - $t0" | bc) load_start=$l0 load_end=$l1" >> "$log"
  [ $rc = 0 ] || break
done
