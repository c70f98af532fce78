#!/usr/bin/env bash
# The fleet against vLLM's real router (issue 21; docs/replicas.md).
#
# Per policy: 4 fresh emulated replicas (`inferencelab serve --replicas 4`), `vllm-router
# --policy P` in front, `inferencelab bench` replaying a multi-turn trace through the router; then
# `simulate --replicas 4 --router P`
# on the replicas' logs (merged in the client's order) and a comparison: the share of requests the
# simulation sends to the replica the router chose, and each replica's prefix-cache hit tokens
# (its /metrics) against the simulated ones. Writes OUT/summary.json and, with --fixture DIR, a
# small copy (merged log, actual assignment, worker order, figures) for tests/router_check.rs.
#
#   scripts/router_check.sh [--router-venv DIR] [--bin PATH] [--out DIR] [--prompts N]
#                           [--time-scale X] [--policies "round_robin consistent_hash cache_aware"]
#                           [--fixture DIR]
#
# Needs: vllm-router in a venv (python3 -m venv DIR && DIR/bin/pip install vllm-router==0.1.17),
# curl, python3. Ports 8400 (router), 8409 (its Prometheus exporter), 8401-8404 (replicas).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=/work/venvs/router
BIN=$ROOT/target/release/inferencelab
OUT=/tmp/router_check
PROMPTS=120
SCALE=5
POLICIES="round_robin consistent_hash cache_aware"
FIXTURE=""
BLOCKS=600
while [ $# -gt 0 ]; do
  case $1 in
    --router-venv) VENV=$2; shift 2;;
    --bin) BIN=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --prompts) PROMPTS=$2; shift 2;;
    --time-scale) SCALE=$2; shift 2;;
    --policies) POLICIES=$2; shift 2;;
    --fixture) FIXTURE=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ -x "$VENV/bin/vllm-router" ] || { echo "no $VENV/bin/vllm-router: python3 -m venv $VENV && $VENV/bin/pip install vllm-router==0.1.17" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release (or --bin PATH)" >&2; exit 2; }
mkdir -p "$OUT"
PIDS=()
# every server runs in its own session (setsid): vllm-router's launcher leaves the router in a
# child process, so its whole process group is stopped
stop() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -- -"$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  PIDS=()
}
port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
wait_free() {
  for port in 8400 8401 8402 8403 8404 8409; do
    for _ in $(seq 1 50); do port_free $port && break; sleep 0.2; done
    port_free $port || { echo "port $port is in use: stop what listens there first" >&2; exit 1; }
  done
}
wait_free
trap stop EXIT
wait_http() { for _ in $(seq 1 100); do curl -s -m 1 "$1" >/dev/null && return 0; sleep 0.2; done; echo "no answer from $1" >&2; return 1; }

for P in $POLICIES; do
  D=$OUT/$P; rm -rf "$D"; mkdir -p "$D"
  wait_free
  # one process, 4 replicas on 8401-8404 (serve --replicas): replica 0 logs to replica.log,
  # replica j > 0 to replica.replicaJ.log
  setsid "$BIN" serve --replicas 4 --port 8401 --gpu-blocks $BLOCKS --no-cpu-tier \
    --enable-log-requests --time-scale "$SCALE" --log-file "$D/replica.log" >"$D/serve.out" 2>&1 &
  PIDS+=($!)
  for k in 1 2 3 4; do wait_http http://127.0.0.1:840$k/health; done
  setsid "$VENV/bin/vllm-router" --host 127.0.0.1 --port 8400 --prometheus-port 8409 --policy "$P" --worker-urls \
    http://127.0.0.1:8401 http://127.0.0.1:8402 http://127.0.0.1:8403 http://127.0.0.1:8404 \
    >"$D/router.out" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do grep -q "Router ready" "$D/router.out" && break; sleep 0.2; done
  grep -q "Router ready" "$D/router.out" || { echo "the router did not start: $D/router.out" >&2; exit 1; }
  # The router's own order of its workers (round_robin's cycle; the first-on-ties of the
  # load-aware policies) is neither the --worker-urls order nor the "Router ready" line's and
  # changes from start to start: probe this instance with 4 one-token requests (x-request-id
  # probe-I, distinct prompts shorter than a block, left out of the merged log). round_robin
  # sends them to its workers 0..3 (the bench then starts at counter 4: the same cycle);
  # cache_aware sends the first, all idle, to its worker 0; the next ones may find the previous
  # one still counted in flight, so the rest of its order is a guess (ties past worker 0 are
  # rare with this load).
  for i in 0 1 2 3; do
    curl -s -m 10 http://127.0.0.1:8400/v1/completions -H 'content-type: application/json' \
      -H "x-request-id: probe-$i" -d "{\"model\":\"qwen-8b\",\"prompt\":\"p$i\",\"max_tokens\":1}" >/dev/null
  done
  ORDER=$( {
    for i in 0 1 2 3; do
      f=$(grep -l "Received request cmpl-probe-$i:" "$D"/replica*.log)
      case $f in
        */replica.log) echo http://127.0.0.1:8401;;
        *) j=${f##*.replica}; j=${j%.log}; echo "http://127.0.0.1:840$((j + 1))";;
      esac
    done
    grep -o 'workers: \[[^]]*\]' "$D/router.out" | head -1 | grep -o 'http://[0-9.:]*'
  } | awk '!seen[$0]++' | paste -sd, - )
  echo "router worker order ($P): $ORDER"
  echo "$ORDER" > "$D/worker_order.txt"
  # --metrics-interval 0: the router routes /metrics scrapes with the policy too (round_robin's
  # counter would move)
  "$BIN" bench --base-url http://127.0.0.1:8400 --input-file "$ROOT/data/test_data.csv" \
    --num-prompts "$PROMPTS" --time-scale "$SCALE" --model qwen-8b --result-dir "$D/bench" \
    --metrics-interval 0 \
    >"$D/bench.out" 2>&1
  for k in 1 2 3 4; do curl -s http://127.0.0.1:840$k/metrics > "$D/metrics_$k.prom"; done
  stop
  python3 - "$D" <<'PY'
import json, re, sys
d = sys.argv[1]
lines, actual = [], {}
stamp = re.compile(r'(\d\d-\d\d \d\d:\d\d:\d\d)')
rid = re.compile(r'(?:chatcmpl|cmpl)-bench-[0-9a-f]+-(\d+)')
for k in range(1, 5):
    name = "replica.log" if k == 1 else f"replica.replica{k - 1}.log"
    for n, line in enumerate(open(f"{d}/{name}")):
        if "-probe-" in line:
            continue
        m = re.search(r'Received request ((?:chatcmpl|cmpl)-\S+?):', line)
        if m:
            actual[m.group(1)] = f"http://127.0.0.1:840{k}"
        s, i = stamp.search(line), rid.search(line)
        lines.append((s.group(1) if s else "", int(i.group(1)) if i else -1, k, n, line))
# one log in the client's order: by second, then the bench's request index
lines.sort(key=lambda x: (x[0], x[1], x[2], x[3]))
with open(f"{d}/merged.log", "w") as f:
    f.writelines(x[4] for x in lines)
json.dump(actual, open(f"{d}/actual.json", "w"), indent=0, sort_keys=True)
PY
  "$BIN" simulate -i "$D/merged.log" --gpu-blocks $BLOCKS --no-cpu-tier -q --replicas 4 \
    --router "$P" --router-worker-urls "$ORDER" --per-request "$D/sim.jsonl" -o "$D/sim.json" \
    > "$D/simulate.out"
done

python3 - "$OUT" "$POLICIES" "$FIXTURE" <<'PY'
import gzip, json, os, re, shutil, sys
out, policies, fixture = sys.argv[1], sys.argv[2].split(), sys.argv[3]
summary = {}
for p in policies:
    d = f"{out}/{p}"
    actual = json.load(open(f"{d}/actual.json"))
    order = open(f"{d}/worker_order.txt").read().strip().split(",")
    sim = [json.loads(l) for l in open(f"{d}/sim.jsonl")]
    same = sum(1 for r in sim if order[r["replica"]] == actual.get(r["request_id"]))
    hits_sim = {u: 0 for u in order}
    for r in sim:
        hits_sim[order[r["replica"]]] += r["gpu_hit_tokens"]
    hits_real = {}
    for k in range(1, 5):
        text = open(f"{d}/metrics_{k}.prom").read()
        m = re.search(r'^vllm:prefix_cache_hits_total\{[^}]*\} (\S+)', text, re.M)
        hits_real[f"http://127.0.0.1:840{k}"] = int(float(m.group(1))) if m else None
    per = {u: sum(1 for v in actual.values() if v == u) for u in sorted(hits_real)}
    summary[p] = {
        "requests": len(sim),
        "same_replica": same,
        "same_replica_share": round(same / len(sim), 4) if sim else None,
        "router_worker_order": order,
        "requests_per_replica_real": per,
        "hit_tokens_real": hits_real,
        "hit_tokens_simulated": hits_sim,
    }
    print(f"{p}: {same}/{len(sim)} requests on the same replica ({same / max(1, len(sim)):.2%}); "
          f"requests per replica {list(per.values())}; hit tokens real "
          f"{[hits_real[u] for u in sorted(hits_real)]} simulated "
          f"{[hits_sim.get(u, 0) for u in sorted(hits_real)]}")
    if fixture:
        f = f"{fixture}/{p}"
        os.makedirs(f, exist_ok=True)
        for name in ("actual.json", "worker_order.txt"):
            shutil.copy(f"{d}/{name}", f"{f}/{name}")
        with open(f"{d}/merged.log", "rb") as src, gzip.GzipFile(
                f"{f}/merged.log.gz", "wb", compresslevel=9, mtime=0) as dst:
            shutil.copyfileobj(src, dst)
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1, sort_keys=True)
if fixture:
    json.dump(summary, open(f"{fixture}/summary.json", "w"), indent=1, sort_keys=True)
print(f"wrote {out}/summary.json")
PY
