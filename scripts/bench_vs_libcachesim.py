#!/usr/bin/env python3
"""Throughput of our cache core against libCacheSim (its Python binding, C core) on the same
block stream, measured in one run on one machine.

The stream is the Mooncake synthetic trace flattened to one reference per block id (121,877
refs), exactly what `inferencelab simulate --hit-semantics any` and libCacheSim see. libCacheSim
runs `cache.process_trace(reader)` over an oracleGeneral binary file (its fastest path: the loop
is in C); we run the release binary and read `sim_seconds` (simulation only, parsing excluded).
Best of --repeat runs on each side. Also checks both sides give the same hit ratio.

    pip install libcachesim==0.3.5
    cargo build --release -p inferencelab
    python3 scripts/bench_vs_libcachesim.py [--policies lru,fifo,...] [--capacities 1000,10000]
"""
import argparse, json, os, struct, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACE = os.path.join(ROOT, "data/traces/mooncake/synthetic_trace.jsonl")
BIN = os.path.join(ROOT, "target/release/inferencelab")
LCS = {"lru": "LRU", "fifo": "FIFO", "lfu": "LFU", "arc": "ARC", "s3fifo": "S3FIFO",
       "sieve": "Sieve", "belady": "Belady"}


def flat_ids():
    ids = []
    with open(TRACE) as f:
        for line in f:
            if line.strip():
                ids.extend(json.loads(line)["hash_ids"])
    return ids


def write_oracle_general(ids, path):
    # oracleGeneral: <uint32 clock_time, uint64 obj_id, uint32 obj_size, int64 next_access_vtime>
    nxt = [-1] * len(ids)
    last = {}
    for i in range(len(ids) - 1, -1, -1):
        nxt[i] = last.get(ids[i], -1)
        last[ids[i]] = i
    with open(path, "wb") as f:
        for i, (o, n) in enumerate(zip(ids, nxt)):
            f.write(struct.pack("<IQIq", i, o, 1, n))


def lcs_run(lcs, name, cap, path, repeat):
    best, ratio = float("inf"), None
    for _ in range(repeat):
        reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
        # hashpower 17 (2^17 buckets) fits the 43,924 distinct objects; the default (24) spends
        # most of a short run allocating a 16M-bucket table, which would flatter us
        cache = getattr(lcs, LCS[name])(cache_size=cap, hashpower=17)
        t0 = time.perf_counter()
        miss_ratio, _ = cache.process_trace(reader)
        best = min(best, time.perf_counter() - t0)
        ratio = 1.0 - miss_ratio
    return best, ratio


def ours_run(name, cap, repeat):
    best, ratio = float("inf"), None
    for _ in range(repeat):
        out = subprocess.run(
            [BIN, "simulate", "--input-file", TRACE, "-p", name, "--gpu-blocks", str(cap),
             "--hit-semantics", "any", "--no-cpu-tier", "--no-pinning", "--json", "--threads", "1",
             "--output", os.devnull], check=True, capture_output=True, text=True)
        row = json.loads(out.stdout)["results"][0]
        best = min(best, row["sim_seconds"])
        ratio = row["block_hit_ratio"]
    return best, ratio


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--policies", default="lru,fifo,lfu,arc,s3fifo,sieve,belady")
    ap.add_argument("--capacities", default="1000,10000")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    try:
        import libcachesim as lcs
    except ImportError:
        sys.exit("pip install libcachesim==0.3.5 first")
    if not os.path.exists(BIN):
        sys.exit("cargo build --release -p inferencelab first")
    ids = flat_ids()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mooncake.oracleGeneral.bin")
        write_oracle_general(ids, path)
        print(f"{len(ids)} block refs; best of {a.repeat}; single thread on both sides")
        print(f"{'policy':8} {'cap':>6} {'ours Mref/s':>12} {'lcs Mref/s':>11} {'ratio':>6} "
              f"{'ours hit':>9} {'lcs hit':>8}")
        for name in a.policies.split(","):
            for cap in map(int, a.capacities.split(",")):
                ts, rs = ours_run(name, cap, a.repeat)
                tl, rl = lcs_run(lcs, name, cap, path, a.repeat)
                print(f"{name:8} {cap:>6} {len(ids)/ts/1e6:>12.1f} {len(ids)/tl/1e6:>11.1f} "
                      f"{tl/ts:>5.1f}x {rs:>9.4f} {rl:>8.4f}")


if __name__ == "__main__":
    main()
