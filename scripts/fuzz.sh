#!/usr/bin/env bash
# Fuzz every trace reader and the flag/YAML value checks (fuzz/fuzz_targets/*) for a while, one
# target after the other.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 60 (a real session: 300 or more)
#   TARGET              default all: mooncake bailian weka azure vllm_log native detect config
# Environment:
#   FUZZ_SANITIZER      address (default) or none (faster, catches panics only)
#   FUZZ_JOBS           libFuzzer -fork jobs per target, default 1 (the CI machine has 2 cores)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain (`rustup toolchain
# install nightly`); without nightly it uses RUSTC_BOOTSTRAP=1 on stable. Each target's corpus
# (fuzz/corpus/TARGET, git-ignored) is seeded from crates/trace/tests/fixtures; crashes land in
# fuzz/artifacts/TARGET (git-ignored): reproduce one with
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...
# and turn it into a unit test of the reader before fixing it. A summary line per target (time,
# executions, crashes) goes to fuzz/logs/summary.txt.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(mooncake bailian weka azure vllm_log native detect config)
fi
sanitizer="${FUZZ_SANITIZER:-address}"
jobs="${FUZZ_JOBS:-1}"
fixtures="$root/crates/trace/tests/fixtures"

if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    cargo_fuzz=(cargo +nightly fuzz)
else
    echo "no nightly toolchain: using RUSTC_BOOTSTRAP=1 on stable" >&2
    export RUSTC_BOOTSTRAP=1
    cargo_fuzz=(cargo fuzz)
fi

seeds() {
    case "$1" in
        mooncake) echo "$fixtures"/mooncake_small.jsonl ;;
        bailian) echo "$fixtures"/bailian_small.jsonl "$fixtures"/tiny_bailian.jsonl ;;
        weka) echo "$fixtures"/weka_small.json "$fixtures"/tiny_weka/*.json ;;
        azure) echo "$fixtures"/*.csv ;;
        vllm_log) echo "$fixtures"/*.log ;;
        native) echo "$fixtures"/*.native.jsonl ;;
        detect) echo "$fixtures"/*.jsonl "$fixtures"/*.json "$fixtures"/*.csv "$fixtures"/*.log ;;
        config) echo "$root"/configs/models/*.yaml "$root"/configs/scorer_*.yaml ;;
        *) echo "unknown target $1" >&2; exit 2 ;;
    esac
}

dict() {
    case "$1" in
        vllm_log) echo "$root/fuzz/dicts/vllm_log.dict" ;;
        azure) echo "$root/fuzz/dicts/azure.dict" ;;
        detect) echo "" ;;
        config) echo "" ;;
        *) echo "$root/fuzz/dicts/json.dict" ;;
    esac
}

cd "$root/fuzz"
mkdir -p logs
status=0
for t in "${targets[@]}"; do
    corpus="corpus/$t"
    mkdir -p "$corpus"
    for f in $(seeds "$t"); do
        cp "$f" "$corpus/seed-$(basename "$(dirname "$f")")-$(basename "$f")"
    done
    extra=(-max_total_time="$secs" -print_final_stats=1)
    d="$(dict "$t")"
    [ -n "$d" ] && extra+=(-dict="$d")
    [ "$jobs" -gt 1 ] && extra+=(-fork="$jobs")
    echo "== $t: ${secs}s, sanitizer $sanitizer" >&2
    start=$(date +%s)
    set +e
    "${cargo_fuzz[@]}" run --sanitizer "$sanitizer" "$t" "$corpus" -- "${extra[@]}" 2>&1 | tee "logs/$t.log"
    rc=${PIPESTATUS[0]}
    set -e
    took=$(( $(date +%s) - start ))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    crashes=$(ls "artifacts/$t" 2>/dev/null | grep -c -E '^(crash|oom|timeout|leak)-' || true)
    echo "$(date -u +%FT%TZ) $t: exit $rc, ${took}s wall, ${execs:-?} execs, $crashes artifacts" | tee -a logs/summary.txt
    [ "$rc" -ne 0 ] && status=1
done
exit $status
