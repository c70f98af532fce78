#!/usr/bin/env bash
# Issue 19's scale benchmark: a synthetic vLLM server log of GB gigabytes (default 20), made on
# the fly by crates/trace/examples/vllm_log_generator.rs and piped into
# `inferencelab simulate --input-file -` (nothing is stored), timed by /usr/bin/time -v.
#
#   scripts/scale_bench.sh [GB] [extra simulate flags...]
#   scripts/scale_bench.sh 20 --eviction-policy belady
#
# Prints simulate's own figures line (MB read, MB/s, peak RSS), /usr/bin/time's wall clock and
# maximum RSS, and the result table. The default point is LRU at 10,000 GPU blocks with
# LMCache's default CPU tier. docs/scale.md has the figures measured on this project's VM.
set -euo pipefail
GB=${1:-20}
[ $# -gt 0 ] && shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --release --quiet -p inferencelab-trace --example vllm_log_generator
cargo build --release --quiet
GEN=$ROOT/target/release/examples/vllm_log_generator
BIN=$ROOT/target/release/inferencelab
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK" # simulate's summary JSON goes to ./outputs/simulation: thrown away with $WORK
POLICY=(--eviction-policy lru)
for a in "$@"; do [ "$a" = --eviction-policy ] && POLICY=(); done
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
set +e
"$GEN" --gb "$GB" --seed 7 |
  /usr/bin/time -v "$BIN" simulate --input-file - "${POLICY[@]}" --gpu-blocks 10000 "$@" \
    >table.txt 2>stderr.txt
status=$?
set -e
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -E '^read |^note|^warning|Elapsed \(wall|Maximum resident|User time|System time|Exit status' stderr.txt
cat table.txt
exit $status
