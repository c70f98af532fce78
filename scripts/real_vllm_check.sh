#!/usr/bin/env bash
# `simulate` against a real vLLM (issue 23, part 3): a multi-turn chat replay with
# `inferencelab bench` against the CPU vLLM of scripts/vllm_cpu_peer.sh at several KV-cache
# capacities (a fresh server per capacity), vLLM's /metrics scraped before and after each run,
# then `inferencelab simulate` on the server's own log. Per capacity it prints vLLM's prefix-cache
# counters (queries and hits over the run), the sum of the per-request `cached_tokens` bench
# recorded (usage.prompt_tokens_details.cached_tokens), our figure, and how many requests' GPU hit
# tokens equal vLLM's cached_tokens.
#
#   scripts/real_vllm_check.sh             workload, then every capacity: serve, bench, simulate
#   scripts/real_vllm_check.sh simulate    only simulate + compare, on the logs of an earlier run
#   scripts/real_vllm_check.sh fixture     copy an earlier run into crates/cli/tests/fixtures/real_vllm
#
# The workload (written once to $OUT/conversations.csv, seeded): $CONVERSATIONS conversations of
# $TURNS turns sharing one system prompt, words of the model's vocabulary; think times of 2-14 s
# (over vLLM's 5 s keep-alive on some turns). A random model's answers would not survive being
# re-tokenized in the next prompt, so every request carries `allowed_token_ids`: words that are
# one o200k token each with their leading space (" cache"); any sequence of them re-tokenizes to
# itself, as a real model's answer would, and EOS is not among them, so every answer is exactly
# `max_tokens` long (bench's estimate from the CSV's recorded answer).
#
# Settings (environment): OUT (/tmp/realcheck), CAPACITIES ("2049 385 97": vLLM's
# num_gpu_blocks, 32-token blocks, the null block included: no eviction, eviction, queueing and
# preemption), PORT (8000), INFERENCELAB (target/release/inferencelab), CONVERSATIONS (16),
# TURNS (6), SEED (23), HEALTH_WAIT_S (900), VENV and MODEL_DIR as in scripts/vllm_cpu_peer.sh.
# Needs: python3 (the comparison), curl; the server takes ~5 GB and ~60 s to start.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/realcheck}
CAPACITIES=${CAPACITIES:-"2049 385 97"}
PORT=${PORT:-8000}
INFERENCELAB=${INFERENCELAB:-$ROOT/target/release/inferencelab}
CONVERSATIONS=${CONVERSATIONS:-16}
TURNS=${TURNS:-6}
SEED=${SEED:-23}
VENV=${VENV:-/work/venvs/vllm-cpu}
MODEL_DIR=${MODEL_DIR:-/work/venvs/vllm-cpu-model}
BLOCK_SIZE=32
# the longest sequence the workload makes (system + turns + answers), checked by the generator
MAX_SEQ_TOKENS=3000
# a loaded 2-core machine has taken over 5 minutes to start the server
HEALTH_WAIT_S=${HEALTH_WAIT_S:-900}

step() { echo "real_vllm_check: $*" >&2; }

workload() {
    if [ -f "$OUT/conversations.csv" ] && [ -f "$OUT/extra_body.json" ]; then
        step "workload $OUT/conversations.csv is there"
        return
    fi
    mkdir -p "$OUT"
    "$VENV/bin/python" - "$MODEL_DIR/tokenizer.json" "$OUT" "$CONVERSATIONS" "$TURNS" "$SEED" \
        "$MAX_SEQ_TOKENS" <<'EOF'
import csv, json, random, sys
from tokenizers import Tokenizer

tok_path, out, n_conv, n_turns, seed, max_seq = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
tok = Tokenizer.from_file(tok_path)
words = """the cache block token prefix memory server client answer question time reuse recent
close keeps long quickly before after conversation seconds waits can few next and a so while
about model request load hit miss evict queue batch step store table value index page file line
word turn user system reply data fast slow small large first last new old good best more less
""".split()
# one token each, with the leading space: a sequence of them re-tokenizes to itself
allowed = {}
for w in words:
    ids = tok.encode(" " + w, add_special_tokens=False).ids
    if len(ids) == 1:
        allowed[w] = ids[0]
probe = "".join(" " + w for w in allowed)
assert tok.encode(probe, add_special_tokens=False).ids == list(allowed.values())
rng = random.Random(seed)
vocab = list(allowed)

def text(n_words):
    s = " ".join(rng.choice(vocab) for _ in range(n_words))
    return s[0].upper() + s[1:] + "."

system = "You are a terse assistant. " + text(220)
rows, longest = [], 0
for c in range(n_conv):
    t = rng.uniform(0, 50)  # conversations start over the first 50 s
    seq = len(tok.encode(system).ids) + 8
    for k in range(n_turns):
        user = text(rng.randint(80, 330))
        answer_tokens = rng.randint(24, 96)
        # bench's max_tokens is ceil(chars / 4.2) of the recorded answer
        answer = "x" * int(answer_tokens * 4.2)
        seq += len(tok.encode(user).ids) + 8 + answer_tokens + 2
        longest = max(longest, seq)
        rows.append((f"conv{c:02d}", round(t, 3), user, answer, system))
        # think time after the answer (bench subtracts answer_tokens / 100 tokens/s)
        t += answer_tokens / 100 + (rng.uniform(6, 14) if rng.random() < 0.4 else rng.uniform(2, 5))
assert longest <= max_seq, f"longest sequence {longest} > {max_seq}"
rows.sort(key=lambda r: r[1])
with open(f"{out}/conversations.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["conversation_id", "timestamp", "user_message", "assistant_response", "system_prompt"])
    w.writerows(rows)
json.dump({"allowed_token_ids": sorted(allowed.values())}, open(f"{out}/extra_body.json", "w"))
print(f"{len(rows)} turns in {n_conv} conversations, longest sequence {longest} tokens, "
      f"{len(allowed)} allowed answer tokens", file=sys.stderr)
EOF
}

metric_counters() {
    curl -sf -m 10 "http://127.0.0.1:$PORT/metrics" | grep -E '^vllm:(prefix_cache_(queries|hits)|num_preemptions|request_success|prompt_tokens)_total' || true
}

SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        # vllm_cpu_peer.sh starts it with setsid: the PID leads a process group (API server and
        # engine core)
        kill -- "-$SERVER_PID" 2> /dev/null || true
        for _ in $(seq 60); do kill -0 "$SERVER_PID" 2> /dev/null || break; sleep 1; done
        kill -9 -- "-$SERVER_PID" 2> /dev/null || true
        SERVER_PID=
    fi
}
trap stop_server EXIT

run_capacity() {
    local n=$1 dir=$OUT/blocks$1
    if curl -sf -m 2 "http://127.0.0.1:$PORT/health" > /dev/null; then
        echo "real_vllm_check: a server already answers on port $PORT; stop it first (each capacity needs a fresh cache)" >&2
        exit 1
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    # vLLM refuses a max_model_len whose sequence does not fit the KV cache
    local max_len=$(( (n - 1) * BLOCK_SIZE < 16384 ? (n - 1) * BLOCK_SIZE : 16384 ))
    step "capacity $n blocks: starting vLLM on port $PORT (log $dir/server.log, max_model_len $max_len)"
    if ! SERVER_PID=$(PORT=$PORT NUM_GPU_BLOCKS=$n MAX_MODEL_LEN=$max_len LOG=$dir/server.log \
        HEALTH_WAIT_S=$HEALTH_WAIT_S VENV=$VENV MODEL_DIR=$MODEL_DIR \
        "$ROOT/scripts/vllm_cpu_peer.sh" | tail -n1); then
        # not healthy in time: stop what it started
        SERVER_PID=$(cat "$dir/server.log.pid" 2> /dev/null || true)
        exit 1
    fi
    metric_counters > "$dir/metrics_before.txt"
    step "capacity $n blocks: bench (PID of vLLM $SERVER_PID)"
    "$INFERENCELAB" bench --base-url "http://127.0.0.1:$PORT" --model tiny-qwen2 \
        --input-file "$OUT/conversations.csv" --extra-body "$(cat "$OUT/extra_body.json")" \
        --metrics-interval 5 --quiet --output-dir "$dir/bench" > "$dir/bench.txt"
    metric_counters > "$dir/metrics_after.txt"
    stop_server
}

simulate_capacity() {
    local n=$1 dir=$OUT/blocks$1
    # the server's own scheduler limits, as its log states them ("Defaulting max_num_seqs to
    # 128 for OPENAI_API_SERVER usage context")
    local mbt mns
    mbt=$(grep -oE "max_num_batched_tokens(=| to )[0-9]+" "$dir/server.log" | head -n1 | grep -oE "[0-9]+$" || true)
    mns=$(grep -oE "max_num_seqs(=| to )[0-9]+" "$dir/server.log" | head -n1 | grep -oE "[0-9]+$" || true)
    "$INFERENCELAB" simulate --input-file "$dir/server.log" --block-size $BLOCK_SIZE \
        --gpu-blocks "$n" --no-cpu-tier --eviction-policy lru --schedule trace \
        ${mbt:+--max-num-batched-tokens "$mbt"} ${mns:+--max-num-seqs "$mns"} \
        --per-request "$dir/per_request.jsonl" --json -q -o "$dir/simulate.json" \
        > "$dir/simulate_stdout.json"
}

compare() {
    python3 - "$OUT" $CAPACITIES <<'EOF'
import json, re, sys

out, caps = sys.argv[1], sys.argv[2:]

def counters(path):
    c = {}
    for line in open(path):
        m = re.match(r'(vllm:[a-z_]+)\{[^}]*\} ([0-9.e+]+)', line)
        if m:
            c[m.group(1)] = c.get(m.group(1), 0) + float(m.group(2))
    return c

rows = []
for n in caps:
    d = f"{out}/blocks{n}"
    before, after = counters(f"{d}/metrics_before.txt"), counters(f"{d}/metrics_after.txt")
    delta = {k.removeprefix("vllm:").removesuffix("_total"): int(after.get(k, 0) - before.get(k, 0))
             for k in after}
    bench = [json.loads(l) for l in open(f"{d}/bench/requests.jsonl")]
    ours = {}
    for l in open(f"{d}/per_request.jsonl"):
        v = json.loads(l)
        ours[v["request_id"]] = v
    row = json.load(open(f"{d}/simulate_stdout.json"))["results"][0]
    exact, diffs = 0, []
    for r in bench:
        if not r["success"]:
            continue
        o = ours.get(r["response_id"])
        if o is None:  # completions ids carry a "-0" suffix per prompt
            o = next((v for k, v in ours.items() if k.startswith(r["response_id"] + "-")), None)
        g = None if o is None else o["gpu_hit_tokens"]
        if g == r["cached_tokens"]:
            exact += 1
        else:
            diffs.append({"request_id": r["response_id"], "conversation": r["conversation"],
                          "turn": r["turn"], "prompt_len": r["prompt_len"],
                          "vllm_cached_tokens": r["cached_tokens"], "ours_gpu_hit_tokens": g,
                          "ours_preemptions": None if o is None else o.get("preemptions")})
    ok = [r for r in bench if r["success"]]
    rec = {
        "num_gpu_blocks": int(n),
        "usable_gpu_blocks": row.get("usable_gpu_blocks"),
        "requests": len(ok),
        "failed": len(bench) - len(ok),
        "vllm_prefix_cache_queries": delta.get("prefix_cache_queries", 0),
        "vllm_prefix_cache_hits": delta.get("prefix_cache_hits", 0),
        "vllm_num_preemptions": delta.get("num_preemptions", 0),
        "vllm_sum_cached_tokens": sum(r["cached_tokens"] for r in ok),
        "vllm_sum_prompt_tokens": sum(r["prompt_len"] for r in ok),
        "ours_prompt_tokens": row["prompt_tokens"],
        "ours_gpu_hit_tokens": row["gpu_hit_tokens"],
        "ours_preemptions": row.get("preemptions"),
        "exact_requests": exact,
        "cached_tokens": {r["response_id"]: r["cached_tokens"] for r in ok},
    }
    q = rec["vllm_prefix_cache_queries"]
    rec["vllm_hit_ratio"] = rec["vllm_prefix_cache_hits"] / q if q else 0.0
    rec["ours_hit_ratio"] = rec["ours_gpu_hit_tokens"] / rec["ours_prompt_tokens"] if rec["ours_prompt_tokens"] else 0.0
    json.dump(rec, open(f"{d}/compare.json", "w"), indent=1)
    with open(f"{d}/diffs.jsonl", "w") as f:
        for x in diffs:
            f.write(json.dumps(x) + "\n")
    rows.append(rec)

print("| num_gpu_blocks (usable) | requests | vLLM queries | vLLM hits | vLLM hit % | sum cached_tokens "
      "| ours prompt | ours hits | ours hit % | ours - vLLM (points) | exact requests | preemptions vLLM / ours |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['num_gpu_blocks']} ({r['usable_gpu_blocks']}) | {r['requests']} "
          f"| {r['vllm_prefix_cache_queries']} | {r['vllm_prefix_cache_hits']} | {100 * r['vllm_hit_ratio']:.2f} "
          f"| {r['vllm_sum_cached_tokens']} | {r['ours_prompt_tokens']} | {r['ours_gpu_hit_tokens']} "
          f"| {100 * r['ours_hit_ratio']:.2f} | {100 * (r['ours_hit_ratio'] - r['vllm_hit_ratio']):+.2f} "
          f"| {r['exact_requests']} of {r['requests']} ({100 * r['exact_requests'] / max(r['requests'], 1):.1f} %) "
          f"| {r['vllm_num_preemptions']} / {r['ours_preemptions']} |")
EOF
}

# The golden copy for crates/cli/tests/real_vllm.rs: each capacity's request-logger lines
# (verbatim, in file order: every line the vLLM log reader takes an event from) and the
# worker's per-step "Running batch with ... num_tokens=N" lines (DEBUG), gzipped, and
# what vLLM reported, in crates/cli/tests/fixtures/real_vllm/vllm.json.
fixture() {
    local dest=$ROOT/crates/cli/tests/fixtures/real_vllm
    mkdir -p "$dest"
    for n in $CAPACITIES; do
        grep -E 'request_logger\.py:[0-9]+\]|Running batch with' "$OUT/blocks$n/server.log" \
            | gzip -9n > "$dest/blocks$n.log.gz"
    done
    python3 - "$OUT" "$dest" $CAPACITIES <<'EOF'
import json, re, sys
out, dest, caps = sys.argv[1], sys.argv[2], sys.argv[3:]
cases = []
for n in caps:
    c = json.load(open(f"{out}/blocks{n}/compare.json"))
    log = open(f"{out}/blocks{n}/server.log", errors="replace").read()
    limit = lambda k: int(re.search(k + r"(?:=| to )(\d+)", log).group(1))
    cases.append({
        "num_gpu_blocks": int(n),
        "log": f"blocks{n}.log.gz",
        "max_num_batched_tokens": limit("max_num_batched_tokens"),
        "max_num_seqs": limit("max_num_seqs"),
        "requests": c["requests"],
        "prefix_cache_queries": c["vllm_prefix_cache_queries"],
        "prefix_cache_hits": c["vllm_prefix_cache_hits"],
        "num_preemptions": c["vllm_num_preemptions"],
        "sum_cached_tokens": c["vllm_sum_cached_tokens"],
        "cached_tokens": c["cached_tokens"],
    })
json.dump({"made_by": "scripts/real_vllm_check.sh, then scripts/real_vllm_check.sh fixture",
           "server": "vllm-cpu 0.32.0, tiny random Qwen2 (o200k tokenizer), --block-size 32, sync scheduler",
           "counters": "vllm:prefix_cache_{queries,hits}_total and vllm:num_preemptions_total over the run (/metrics after - before)",
           "cached_tokens": "usage.prompt_tokens_details.cached_tokens per request, by the log's request id",
           "cases": cases}, open(f"{dest}/vllm.json", "w"), indent=1)
EOF
    ls -la "$dest"
}

case "${1:-all}" in
    all)
        workload
        for n in $CAPACITIES; do run_capacity "$n"; done
        for n in $CAPACITIES; do simulate_capacity "$n"; done
        compare | tee "$OUT/table.md"
        ;;
    simulate)
        for n in $CAPACITIES; do simulate_capacity "$n"; done
        compare | tee "$OUT/table.md"
        ;;
    fixture) fixture ;;
    *) echo "usage: $0 [all|simulate|fixture]" >&2; exit 2 ;;
esac
