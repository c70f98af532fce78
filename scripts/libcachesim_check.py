#!/usr/bin/env python3
"""Reference block hit ratios from libCacheSim (its Python binding, C core) on the Mooncake
synthetic trace, flattened: each line's `hash_ids` in order, one access per id, every id an
object of size 1, cache starts empty. Prints the table that
`crates/cache/tests/libcachesim_parity.rs` asserts (and `shared/data/README.md` lists).

Belady needs the next access of every request, so the stream is written to an oracleGeneral
binary file (`<uint32 clock_time, uint64 obj_id, uint32 obj_size, int64 next_access_vtime>`,
-1 = never again) and replayed with `cache.process_trace(reader)`; every policy uses that path.

    pip install libcachesim==0.3.5
    python3 scripts/libcachesim_check.py [--trace PATH] [--capacities 1000,10000,30000] [--counts]
    python3 scripts/libcachesim_check.py --random

`--counts` prints hit counts instead of ratios (the parity test asserts both).

`--compare` recomputes the hit counts with the installed libCacheSim and checks them against
`EXPECTED_HITS` in `crates/cache/tests/libcachesim_parity.rs` (the numbers our Rust test asserts),
exiting 1 on any difference: CI runs it so the checked-in expectations stay tied to the
independent implementation, not to a copy of our own output.

`--random` prints instead the hit counts on the seeded synthetic streams that
`crates/cache/tests/libcachesim_random.rs` generates with the same integer-only generator
(splitmix64): stricter than ratios rounded to 4 decimals, and they exercise every path (small
capacities, one-hit wonders, ghost hits).
"""
import argparse, json, os, struct, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_TRACE = os.path.join(ROOT, "data/traces/mooncake/synthetic_trace.jsonl")
SHARED_TRACE = "/work/shared/data/mooncake/synthetic_trace.jsonl"
DEFAULT_TRACE = BUNDLED_TRACE if os.path.exists(BUNDLED_TRACE) else SHARED_TRACE
# column title -> libCacheSim class (S3FIFO with the binding's defaults: small 10 %, ghost 90 %,
# move to main after 2 hits)
POLICIES = [("LRU", "LRU"), ("FIFO", "FIFO"), ("LFU", "LFU"), ("ARC", "ARC"),
            ("S3-FIFO", "S3FIFO"), ("SIEVE", "Sieve"), ("Belady", "Belady")]


def flat_ids(path):
    ids = []
    with open(path) as f:
        for line in f:
            if line.strip():
                ids.extend(json.loads(line)["hash_ids"])
    return ids


def write_oracle_general(ids, path):
    nxt = [-1] * len(ids)
    last = {}
    for i in range(len(ids) - 1, -1, -1):
        nxt[i] = last.get(ids[i], -1)
        last[ids[i]] = i
    with open(path, "wb") as f:
        for i, (o, n) in enumerate(zip(ids, nxt)):
            f.write(struct.pack("<IQIq", i, o, 1, n))


M64 = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


# (seed, distinct popular objects, references); keep in sync with libcachesim_random.rs
RANDOM_STREAMS = [(1, 300, 20000), (2, 1000, 20000), (3, 100, 20000)]
RANDOM_CAPACITIES = [20, 50, 200]


def random_stream(seed, n, length):
    """One reference in 10 is a fresh object (a one-hit wonder); the others are the smaller of
    two uniform draws among `n` popular objects (a skewed popularity)."""
    state, fresh, out = seed, n, []
    for _ in range(length):
        state, x = splitmix64(state)
        if x % 10 == 0:
            out.append(fresh)
            fresh += 1
        else:
            state, a = splitmix64(state)
            state, b = splitmix64(state)
            out.append(min(a % n, b % n))
    return out


def hit_count(lcs, cls, cap, path, n_refs):
    reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
    miss_ratio, _ = getattr(lcs, cls)(cache_size=cap).process_trace(reader)
    return round((1.0 - miss_ratio) * n_refs)


def print_random(lcs):
    print("// (seed, capacity, hits for LRU, FIFO, LFU, ARC, S3-FIFO, SIEVE, Belady)")
    with tempfile.TemporaryDirectory() as d:
        for seed, n, length in RANDOM_STREAMS:
            path = os.path.join(d, f"random{seed}.oracleGeneral.bin")
            write_oracle_general(random_stream(seed, n, length), path)
            for cap in RANDOM_CAPACITIES:
                counts = [hit_count(lcs, cls, cap, path, length) for _, cls in POLICIES]
                print(f"    ({seed}, {cap}, {counts}),")


def expected_hits():
    """The EXPECTED_HITS table of the Rust parity test, parsed from its source."""
    import re
    here = os.path.dirname(os.path.abspath(__file__))
    src = open(os.path.join(here, "..", "crates", "cache", "tests", "libcachesim_parity.rs")).read()
    body = src.split("const EXPECTED_HITS", 1)[1].split("=", 1)[1].split("];", 1)[0]
    rows = re.findall(r"\[([0-9_,\s]+)\]", body)
    return [[int(x.replace("_", "")) for x in r.split(",") if x.strip()] for r in rows]


def compare(lcs, trace):
    ids = flat_ids(trace)
    caps = [1000, 10000, 30000]
    want = expected_hits()
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mooncake.oracleGeneral.bin")
        write_oracle_general(ids, path)
        for cap, row in zip(caps, want):
            for (name, cls), exp in zip(POLICIES, row):
                reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
                cache = getattr(lcs, cls)(cache_size=cap)
                miss_ratio, _ = cache.process_trace(reader)
                got = round((1.0 - miss_ratio) * len(ids))
                status = "ok" if got == exp else "DIFFERS"
                bad += got != exp
                print(f"{name:>8} @ {cap:>6}: libCacheSim {got:>6}  test expects {exp:>6}  {status}")
    print("libCacheSim agrees with every expected count" if bad == 0
          else f"{bad} cells differ from libCacheSim")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default=DEFAULT_TRACE)
    ap.add_argument("--capacities", default="1000,10000,30000")
    ap.add_argument("--counts", action="store_true", help="print hit counts, not ratios")
    ap.add_argument("--random", action="store_true",
                    help="print hit counts on the seeded synthetic streams instead")
    ap.add_argument("--compare", action="store_true",
                    help="check the Rust parity test's expected hit counts against libCacheSim")
    a = ap.parse_args()
    try:
        import libcachesim as lcs
    except ImportError:
        sys.exit("pip install libcachesim==0.3.5 first")
    if a.random:
        print_random(lcs)
        return
    if a.compare:
        sys.exit(compare(lcs, a.trace))
    ids = flat_ids(a.trace)
    print(f"libcachesim {getattr(lcs, '__version__', '?')}: {len(ids)} block refs, "
          f"{len(set(ids))} distinct objects")
    print("| capacity | " + " | ".join(t for t, _ in POLICIES) + " |")
    print("|---:|" + "---|" * len(POLICIES))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mooncake.oracleGeneral.bin")
        write_oracle_general(ids, path)
        for cap in map(int, a.capacities.split(",")):
            cells = []
            for _, cls in POLICIES:
                reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
                cache = getattr(lcs, cls)(cache_size=cap)
                miss_ratio, _byte_miss_ratio = cache.process_trace(reader)
                ratio = 1.0 - miss_ratio
                cells.append(str(round(ratio * len(ids))) if a.counts
                             else f"{ratio:.4f}".lstrip("0"))
            print(f"| {cap:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
