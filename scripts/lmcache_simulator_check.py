#!/usr/bin/env python3
"""InferenceLab's `--lmcache-rules simulator` next to LMCache's own lookup-log simulator (issue 16).

LMCache 0.5.x ships `lmcache tool cache-simulator simulate`, module
`lmcache/tools/cache_simulator/simulator.py`, driven by the lookup-hash logs its
`LookupHashLoggingSubscriber` writes. This script runs that module (imported from the wheel in a
venv, nothing patched) and `inferencelab simulate --lmcache-rules simulator` on the same log at the
same capacities, prints both side by side (token hit rate, hit and total tokens, evictions, capacity
in chunks) and the time each took, measured in this one run.

LMCache's side is timed as its `simulate` command runs it: `load_lookup_events` (read, parse, sort)
plus `simulate(..., fast=False)` (its default LRUCache with per-chunk statistics), without the text
report and the PNG; `simulate(..., fast=True)` (LRUCacheFast, what its `sweep` uses) is timed too.
Ours is the wall time of the whole `inferencelab simulate` process (reading the log included), one
process per capacity, and the `sim_seconds` it reports (simulation only).

Make a >= 100k-lookup log from the bundled Mooncake trace (26 copies of its 3,993 requests, each
copy with its own hashes, chunk 512 = its block size, qwen-8b's KV shape):
    target/release/inferencelab convert --lmcache-lookup-from \
        data/traces/mooncake/synthetic_trace.jsonl --copies 26 --output-dir outputs/lookup/mooncake26
then
    /work/venvs/lmcache/bin/python scripts/lmcache_simulator_check.py \
        --input outputs/lookup/mooncake26 --bin target/release/inferencelab \
        --capacity-gib 5,20,80,320 [--strict]
--strict exits 1 unless every capacity's hit tokens, total tokens and eviction count are equal.

Golden fixture (crates/cli/tests/fixtures/lmcache_lookup/): --golden FILE writes LMCache's figures
per capacity as JSON (no InferenceLab run needed):
    /work/venvs/lmcache/bin/python scripts/lmcache_simulator_check.py \
        --input crates/cli/tests/fixtures/lmcache_lookup/log --capacity-gib 0.5,1,2,4,8 \
        --golden crates/cli/tests/fixtures/lmcache_lookup/lmcache_simulator.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path


def lmcache_side(paths: list[Path], capacities: list[float], kv_bytes: int | None, model: str | None):
    from lmcache.tools.cache_simulator.simulator import (
        _GIB,
        compute_kv_bytes_per_chunk,
        load_lookup_events,
        simulate,
    )

    import lmcache

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = load_lookup_events(paths, model=model)
    load_s = time.perf_counter() - t0
    kv = kv_bytes or compute_kv_bytes_per_chunk(events[0])
    out = []
    for gib in capacities:
        cap = int(gib * _GIB)
        t = time.perf_counter()
        r = simulate(events, cap, kv, fast=False)
        full_s = time.perf_counter() - t
        t = time.perf_counter()
        fast = simulate(events, cap, kv, fast=True)
        fast_s = time.perf_counter() - t
        assert fast["total_hit_tokens"] == r["total_hit_tokens"]
        out.append(
            {
                "capacity_gib": gib,
                "cache_capacity_chunks": r["cache_capacity_chunks"],
                "kv_bytes_per_chunk": r["kv_bytes_per_chunk"],
                "total_requests": r["total_requests"],
                "total_tokens": r["total_tokens"],
                "total_hit_tokens": r["total_hit_tokens"],
                "token_hit_rate": r["token_hit_rate"],
                "eviction_count": r["eviction_count"],
                "cache_size_at_end_chunks": r["cache_size_at_end_chunks"],
                "seconds_load": load_s,
                "seconds_simulate": full_s,
                "seconds_simulate_fast": fast_s,
            }
        )
    return {"lmcache_version": getattr(lmcache, "__version__", "?"), "events": len(events), "cells": out}


def ours(binary: str, path: Path, gib: float, kv_bytes: int | None, model: str | None):
    cmd = [
        binary, "simulate", "--input-file", str(path), "--lmcache-rules", "simulator",
        "--cpu-cache-gb", str(gib), "--json", "-q", "--output", "/dev/null",
    ]
    if kv_bytes:
        cmd += ["--kv-bytes-per-chunk", str(kv_bytes)]
    if model:
        cmd += ["--lookup-model", model]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    doc = json.loads(p.stdout)
    row = doc["results"][0]
    return {
        "cpu_chunks": row["cpu_chunks"],
        "prompt_tokens": row["prompt_tokens"],
        "hit_tokens": row["cpu_hit_tokens"],
        "token_hit_ratio": row["cpu_token_hit_ratio"],
        "evictions": row["cpu_evictions"],
        "requests": row["requests"],
        "wall_seconds": wall,
        "sim_seconds": row["sim_seconds"],
        "read_seconds": doc["input"]["read_seconds"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, type=Path, help="lookup-hash JSONL file or directory")
    ap.add_argument("--capacity-gib", default="5,20,80,320")
    ap.add_argument("--kv-bytes-per-chunk", type=int)
    ap.add_argument("--model", help="model_name filter (both sides)")
    ap.add_argument("--bin", default="target/release/inferencelab")
    ap.add_argument("--golden", type=Path, help="write LMCache's figures here and stop")
    ap.add_argument("--strict", action="store_true")
    a = ap.parse_args()
    caps = [float(x) for x in a.capacity_gib.split(",")]
    lm = lmcache_side([a.input], caps, a.kv_bytes_per_chunk, a.model)
    if a.golden:
        golden = {
            "lmcache_version": lm["lmcache_version"],
            "events": lm["events"],
            "cells": [
                {k: v for k, v in c.items() if not k.startswith("seconds")} for c in lm["cells"]
            ],
        }
        a.golden.write_text(json.dumps(golden, indent=1) + "\n")
        print(f"wrote {a.golden} ({lm['events']} lookups, {len(caps)} capacities)")
        return 0
    print(f"{a.input}: {lm['events']:,} lookups; LMCache {lm['lmcache_version']} "
          f"lookup_hashes simulator vs inferencelab --lmcache-rules simulator")
    print(f"{'GiB':>7} {'chunks':>9} {'LMCache hit':>12} {'ours':>12} {'hit tokens':>14} "
          f"{'evictions':>10} {'ours':>10} {'equal':>5} {'LMCache s':>10} {'(fast)':>7} "
          f"{'ours s':>7} {'(sim)':>6} {'ratio':>6}")
    all_equal = True
    tot_lm = tot_fast = tot_ours = 0.0
    for c in lm["cells"]:
        o = ours(a.bin, a.input, c["capacity_gib"], a.kv_bytes_per_chunk, a.model)
        equal = (
            o["hit_tokens"] == c["total_hit_tokens"]
            and o["prompt_tokens"] == c["total_tokens"]
            and o["evictions"] == c["eviction_count"]
            and o["cpu_chunks"] == c["cache_capacity_chunks"]
            and o["requests"] == c["total_requests"]
        )
        all_equal &= equal
        lm_s = c["seconds_load"] + c["seconds_simulate"]
        fast_s = c["seconds_load"] + c["seconds_simulate_fast"]
        tot_lm += lm_s
        tot_fast += fast_s
        tot_ours += o["wall_seconds"]
        print(f"{c['capacity_gib']:>7g} {c['cache_capacity_chunks']:>9,} "
              f"{100 * c['token_hit_rate']:>11.4f}% {100 * o['token_hit_ratio']:>11.4f}% "
              f"{c['total_hit_tokens']:>14,} {c['eviction_count']:>10,} {o['evictions']:>10,} "
              f"{'yes' if equal else 'NO':>5} {lm_s:>10.2f} {fast_s:>7.2f} {o['wall_seconds']:>7.2f} "
              f"{o['sim_seconds']:>6.2f} {lm_s / o['wall_seconds']:>5.1f}x")
    print(f"total: LMCache {tot_lm:.2f} s (fast LRU {tot_fast:.2f} s; its log loading counted once "
          f"per capacity, as one `simulate` command per capacity does), inferencelab {tot_ours:.2f} s "
          f"(whole processes): {tot_lm / tot_ours:.1f}x ({tot_fast / tot_ours:.1f}x against the fast LRU)")
    print("all equal" if all_equal else "DIFFERENCES")
    return 1 if a.strict and not all_equal else 0


if __name__ == "__main__":
    sys.exit(main())
