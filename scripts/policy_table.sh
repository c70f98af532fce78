#!/usr/bin/env bash
# Regenerates the must-show table of docs/policies.md: conversation_aware tuned by `sweep` and
# lightgbm trained by `train` on the first half of each trace (by time), reported on the second
# half beside LRU and Belady. Choices (the sweep's winner, lightgbm's calibration) are made on
# the validation part, the second half of the train part (the whole train part where Belady
# cannot beat LRU there). Mooncake runs with and without --infer-conversations. Outputs in
# outputs/simulation/policies/ (a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p inferencelab
B=target/release/inferencelab
OUT=outputs/simulation/policies
mkdir -p "$OUT/seeds" "$OUT/no-pinning" "$OUT/pinning"
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
  $B sweep -i "$MOONCAKE" $flag --infer-conversations --budget 64 --capacities 1000,3000,10000 -q \
    --output "$OUT/$pin/scorer_mooncake_conv.yaml" | tee "$OUT/$pin/sweep_mooncake_conv.txt"
  $B train -i "$MOONCAKE" $flag --infer-conversations --capacities 1000,3000,10000 -q \
    --output "$OUT/$pin/lightgbm_mooncake_conv.txt" | tee "$OUT/$pin/train_mooncake_conv.txt"
done
# how much the sweep's winner depends on the random search's seed (test part, no pinning)
for seed in 1 2 3 4 5; do
  for t in "$WEKA 1000,2000,3000" "$MOONCAKE 1000,3000,10000"; do
    set -- $t
    echo "seed $seed $(basename "$1"): $($B sweep -i "$1" --no-pinning --budget 64 --seed "$seed" \
      --capacities "$2" -q --output "$OUT/seeds/scorer.yaml" 2>/dev/null \
      | awk '$3 == "test" {printf "%s %s vs LRU %s; ", $2, $4, $5}')"
  done
done | tee "$OUT/seeds.txt"
# the same tuned policies through `simulate` on the whole trace (no split), beside LRU and Belady
$B simulate -i "$WEKA" -p conversation_aware,lightgbm --no-pinning --no-cpu-tier -q \
  --scorer-config "$OUT/no-pinning/scorer_weka.yaml" --lightgbm-model "$OUT/no-pinning/lightgbm_weka.txt" \
  --gpu-blocks 1000,2000,3000 -o "$OUT/simulate_weka.json" | tee "$OUT/simulate_weka.txt"
$B simulate -i "$MOONCAKE" -p conversation_aware,lightgbm --no-pinning --no-cpu-tier -q \
  --scorer-config "$OUT/no-pinning/scorer_mooncake.yaml" --lightgbm-model "$OUT/no-pinning/lightgbm_mooncake.txt" \
  --gpu-blocks 1000,3000,10000 -o "$OUT/simulate_mooncake.json" | tee "$OUT/simulate_mooncake.txt"
