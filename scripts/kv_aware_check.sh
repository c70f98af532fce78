#!/usr/bin/env bash
# vllm-router's kv_aware fed by `serve`'s KV events (issue 21; docs/replicas.md).
#
# N emulated replicas (`inferencelab serve --replicas N --kv-events-config`, each publishing vLLM's
# KV cache events on its own port), the real `vllm-router --policy kv_aware` subscribed to them,
# a subscriber of our own recording the same events, and `inferencelab bench` replaying a
# multi-turn trace through the router. Then, per request: did it land on the replica whose
# emulated GPU cache held its longest prefix when it arrived? The exceptions are counted and
# each is explained (scripts/kv_aware_check.py). Writes OUT/summary.json, OUT/requests.jsonl;
# with --fixture DIR a small copy (events, logs, router decisions) for tests/kv_aware_check.rs.
#
#   scripts/kv_aware_check.sh [--router-venv DIR] [--python PY] [--bin PATH] [--out DIR]
#                             [--replicas N] [--prompts N] [--time-scale X] [--bench-time-scale Y]
#                             [--max-concurrency C] [--blocks B] [--input FILE] [--fixture DIR]
#
# --time-scale paces both the replicas and the client; --bench-time-scale Y (default X) paces the
# client alone: Y < X sends the trace's requests more slowly than the replicas serve them (less
# load); --max-concurrency C: bench's, at most C requests in flight (1: one at a time, the
# router always decides on an idle fleet).
#
# Needs: vllm-router 0.1.17 in a venv (python3 -m venv DIR && DIR/bin/pip install
# vllm-router==0.1.17), a Python with pyzmq and msgspec for the subscriber (default
# /work/venvs/vllm/bin/python), curl. Ports: 19000 (router), 19009 (its Prometheus exporter),
# 19001.. (replicas), 19011.. (their KV events).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=/work/venvs/router
PY=/work/venvs/vllm/bin/python
BIN=$ROOT/target/release/inferencelab
OUT=/tmp/kv_aware_check
N=4
PROMPTS=120
SCALE=10
BSCALE=""
CONC=()
BLOCKS=600
INPUT=$ROOT/data/test_data.csv
FIXTURE=""
while [ $# -gt 0 ]; do
  case $1 in
    --router-venv) VENV=$2; shift 2;;
    --python) PY=$2; shift 2;;
    --bin) BIN=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --replicas) N=$2; shift 2;;
    --prompts) PROMPTS=$2; shift 2;;
    --time-scale) SCALE=$2; shift 2;;
    --bench-time-scale) BSCALE=$2; shift 2;;
    --max-concurrency) CONC=(--max-concurrency "$2"); shift 2;;
    --blocks) BLOCKS=$2; shift 2;;
    --input) INPUT=$2; shift 2;;
    --fixture) FIXTURE=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$VENV/bin/vllm-router" ] || { echo "no $VENV/bin/vllm-router: python3 -m venv $VENV && $VENV/bin/pip install vllm-router==0.1.17" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release (or --bin PATH)" >&2; exit 2; }
"$PY" -c "import zmq, msgspec" 2>/dev/null || { echo "$PY lacks pyzmq or msgspec (give --python PY)" >&2; exit 2; }
[ "$N" -ge 2 ] && [ "$N" -le 8 ] || { echo "--replicas must be 2..8 (ports 19001-19008)" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$OUT"; mkdir -p "$OUT"
PIDS=()
# every server runs in its own session; vllm-router's launcher starts the router in a child that
# makes its own session, so that child is found by the port it listens on and stopped by its PID
stop() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -- -"$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap stop EXIT
port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
for port in 19000 19009 $(seq 19001 $((19000 + N))) $(seq 19011 $((19010 + N))); do
  port_free $port || { echo "port $port is in use: stop what listens there first" >&2; exit 1; }
done
wait_http() { for _ in $(seq 1 100); do curl -s -m 1 "$1" >/dev/null && return 0; sleep 0.2; done; echo "no answer from $1" >&2; return 1; }

URLS=(); SOURCES=(); ENDPOINTS=()
for k in $(seq 0 $((N - 1))); do
  URLS+=("http://127.0.0.1:$((19001 + k))")
  SOURCES+=(--kv-event-source "http://127.0.0.1:$((19001 + k))=tcp://127.0.0.1:$((19011 + k))")
  ENDPOINTS+=("tcp://127.0.0.1:$((19011 + k))")
done
printf '%s\n' "${URLS[@]}" > "$OUT/worker_urls.txt"

# replica k on 19001+k publishes on 19011+k; no topic: a static --kv-event-source has topic "" and
# the router skips frames of any other topic. Log stamps to the microsecond: the check replays
# the events (stamped on the same emulated clock) up to each request's arrival.
setsid "$BIN" serve --replicas "$N" --port 19001 --gpu-blocks "$BLOCKS" --no-cpu-tier \
  --enable-log-requests --log-time-decimals 6 --time-scale "$SCALE" --log-file "$OUT/replica.log" \
  --kv-events-config '{"enable_kv_cache_events": true, "endpoint": "tcp://*:19011"}' \
  >"$OUT/serve.out" 2>&1 &
PIDS+=($!)
for u in "${URLS[@]}"; do wait_http "$u/health"; done

setsid "$PY" "$HERE/kv_aware_check.py" capture "${ENDPOINTS[@]}" --out "$OUT/events.jsonl" \
  >"$OUT/capture.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do grep -q subscribed "$OUT/capture.out" && break; sleep 0.2; done
grep -q subscribed "$OUT/capture.out" || { echo "the subscriber did not start: $OUT/capture.out" >&2; exit 1; }

setsid "$VENV/bin/vllm-router" --host 127.0.0.1 --port 19000 --prometheus-port 19009 \
  --policy kv_aware --worker-urls "${URLS[@]}" "${SOURCES[@]}" --kv-event-model qwen-8b \
  --log-level debug >"$OUT/router.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q "Router ready" "$OUT/router.out" && break; sleep 0.2; done
grep -q "Router ready" "$OUT/router.out" || { echo "the router did not start: $OUT/router.out" >&2; exit 1; }
# the router's child (its own session): stopped by PID
RPID=$(ss -ltnpH "sport = :19000" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
[ -n "$RPID" ] && PIDS+=("$RPID")
# ZMQ subscriptions settle before the first event
sleep 1

"$BIN" bench --base-url http://127.0.0.1:19000 --input-file "$INPUT" --num-prompts "$PROMPTS" \
  --time-scale "${BSCALE:-$SCALE}" --model qwen-8b --result-dir "$OUT/bench" --metrics-interval 0 "${CONC[@]}" \
  >"$OUT/bench.out" 2>&1
sleep 1
curl -s http://127.0.0.1:19009/metrics > "$OUT/router_metrics.prom" || true
stop
trap - EXIT

python3 "$HERE/kv_aware_check.py" analyze "$OUT" | tee "$OUT/analyze.out"

if [ -n "$FIXTURE" ]; then
  mkdir -p "$FIXTURE"
  cp "$OUT/worker_urls.txt" "$OUT/summary.json" "$FIXTURE/"
  grep "KV prefix decision" "$OUT/router.out" | sed 's/\x1b\[[0-9;]*m//g' > "$FIXTURE/router.out"
  # the replicas' logs: only the lines the check reads
  for f in "$OUT"/replica*.log; do
    grep -E "Received request|details: prompt|Generated response .*: output" "$f" | gzip -9 -n > "$FIXTURE/$(basename "$f").gz" || true
  done
  for f in "$OUT/events.jsonl" "$OUT/requests.jsonl"; do
    gzip -9 -n -c "$f" > "$FIXTURE/$(basename "$f").gz"
  done
  echo "wrote $FIXTURE"
fi
