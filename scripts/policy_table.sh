#!/usr/bin/env bash
# Regenerates the must-show table of docs/policies.md: conversation_aware tuned by `sweep` and
# lightgbm trained by `train` on the first half of each trace (by time), reported on the second
# half beside LRU and Belady. Outputs in outputs/simulation/policies/ (about a minute on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p inferencelab
B=target/release/inferencelab
OUT=outputs/simulation/policies
mkdir -p "$OUT"
WEKA=data/traces/weka-agentic
MOONCAKE=data/traces/mooncake/synthetic_trace.jsonl
for pin in no-pinning pinning; do
  flag=""; [ "$pin" = no-pinning ] && flag="--no-pinning"
  $B sweep -i "$WEKA" $flag --budget 64 --capacities 1000,2000,3000 -q \
    --output "$OUT/$pin/scorer_weka.yaml" | tee "$OUT/$pin/sweep_weka.txt"
  $B sweep -i "$MOONCAKE" $flag --budget 64 --capacities 1000,3000,10000 -q \
    --output "$OUT/$pin/scorer_mooncake.yaml" | tee "$OUT/$pin/sweep_mooncake.txt"
  $B train -i "$WEKA" $flag --capacities 1000,2000,3000 -q \
    --output "$OUT/$pin/lightgbm_weka.txt" | tee "$OUT/$pin/train_weka.txt"
  $B train -i "$MOONCAKE" $flag --capacities 1000,3000,10000 -q \
    --output "$OUT/$pin/lightgbm_mooncake.txt" | tee "$OUT/$pin/train_mooncake.txt"
done
# the same tuned policies through `simulate` on the whole trace (no split), beside LRU and Belady
$B simulate -i "$WEKA" -p conversation_aware,lightgbm --no-pinning --no-cpu-tier -q \
  --scorer-config "$OUT/no-pinning/scorer_weka.yaml" --lightgbm-model "$OUT/no-pinning/lightgbm_weka.txt" \
  --gpu-blocks 1000,2000,3000 -o "$OUT/simulate_weka.json" | tee "$OUT/simulate_weka.txt"
$B simulate -i "$MOONCAKE" -p conversation_aware,lightgbm --no-pinning --no-cpu-tier -q \
  --scorer-config "$OUT/no-pinning/scorer_mooncake.yaml" --lightgbm-model "$OUT/no-pinning/lightgbm_mooncake.txt" \
  --gpu-blocks 1000,3000,10000 -o "$OUT/simulate_mooncake.json" | tee "$OUT/simulate_mooncake.txt"
