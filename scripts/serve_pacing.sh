#!/usr/bin/env bash
# Token pacing and concurrency of `inferencelab serve` (issue 6's must-show), release build.
#
# 1. crates/emu/examples/pacing.rs: per streamed token, lateness against the time model's
#    schedule (the end of the engine step that produced it) where the engine core queued it,
#    where the server handed it to the connection and where a minimal raw-socket client read it;
#    p50/p90/p99/max at 100, 1,000 and 10,000 concurrent streams, plus the machine's floor (the
#    same sockets, period and bytes written by the cheapest possible sender) at 100 and 1,000.
# 2. The real binary as its own process, 10,000 concurrent streams from a second process
#    (crates/emu/examples/loadgen.rs): every stream must reach `data: [DONE]`.
#
# Output: outputs/serve_pacing/pacing.txt and concurrency.txt. About a minute on 2 cores.
# Usage: scripts/serve_pacing.sh [STREAMS_LIST (default 100,1000,10000)] [MAX_TOKENS (50)]
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMS=${1:-100,1000,10000}
TOKENS=${2:-50}
OUT=outputs/serve_pacing
mkdir -p "$OUT"
cargo build --release -p inferencelab -p inferencelab-emu --example pacing --example loadgen
# 10,000 streams: 10,000 client and 10,000 server sockets in one process
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "== pacing ($(nproc) CPUs, load average: $(cut -d' ' -f1-3 /proc/loadavg))" | tee "$OUT/pacing.txt"
target/release/examples/pacing --streams "$STREAMS" --max-tokens "$TOKENS" --floor \
  | tee -a "$OUT/pacing.txt"

echo "== 10,000 concurrent streams, server and client as two processes" | tee "$OUT/concurrency.txt"
ERR=$(mktemp)
target/release/inferencelab serve --port 0 --no-cpu-tier --gpu-blocks 4000000 \
  --max-num-seqs 10000 --max-num-batched-tokens 1048576 --log-file /dev/null 2>"$ERR" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -f "$ERR"' EXIT
ADDR=""
for _ in $(seq 100); do
  ADDR=$(sed -n 's|.*listening on \(http://[0-9.:]*\).*|\1|p' "$ERR")
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { cat "$ERR"; exit 1; }
target/release/examples/loadgen "$ADDR" 10000 20 | tee -a "$OUT/concurrency.txt"
kill -TERM $SERVER
wait $SERVER
echo "server exited cleanly on SIGTERM" | tee -a "$OUT/concurrency.txt"
