//! Exact agreement with libCacheSim 0.3.5 (its Python binding, C core) on the Mooncake synthetic
//! trace flattened to one reference per block id (each line's `hash_ids` in order, every id an
//! object of size 1, the cache starts empty). The table is what
//! `python3 scripts/libcachesim_check.py` prints (and `shared/data/README.md` lists); this test
//! fails when any number moves in its 4th decimal. The exact hit counts
//! (`libcachesim_check.py --counts`) are asserted too: every policy, Belady included, agrees
//! with libCacheSim to the single hit.
//!
//! Debug builds take a few seconds; `cargo test -p inferencelab-cache --release` is faster.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use inferencelab_cache::{Access, BlockCache, EvictionPolicy, Outcome, PolicyConfig, NEVER};

/// Block hit ratios in units of 1e-4, per capacity:
/// LRU, FIFO, LFU, ARC, S3-FIFO, SIEVE, Belady.
const POLICIES: [&str; 7] = ["lru", "fifo", "lfu", "arc", "s3fifo", "sieve", "belady"];
const EXPECTED: [(u64, [i64; 7]); 3] = [
    (1_000, [825, 787, 401, 933, 891, 401, 2766]),
    (10_000, [4235, 3990, 3578, 4356, 4183, 3578, 6180]),
    (30_000, [6242, 5951, 6260, 6260, 6037, 6260, 6396]),
];

/// Hit counts from libCacheSim, same layout.
const EXPECTED_HITS: [[u64; 7]; 3] = [
    [10050, 9597, 4885, 11375, 10862, 4885, 33713],
    [51614, 48633, 43602, 53091, 50980, 43602, 75315],
    [76077, 72529, 76290, 76290, 73578, 76290, 77953],
];

fn trace_path() -> Option<PathBuf> {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/traces/mooncake/synthetic_trace.jsonl");
    let shared = PathBuf::from("/work/shared/data/mooncake/synthetic_trace.jsonl");
    [bundled, shared].into_iter().find(|p| p.exists())
}

/// The flattened block stream with ids interned densely (first appearance order).
fn flat_stream(path: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(path).expect("readable trace");
    let mut ids: HashMap<u64, u32> = HashMap::new();
    let mut stream = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
        for h in v["hash_ids"].as_array().expect("hash_ids array") {
            let h = h.as_u64().expect("integer hash id");
            let n = ids.len() as u32;
            stream.push(*ids.entry(h).or_insert(n));
        }
    }
    stream
}

/// For each position, the position of the next reference to the same object ([`NEVER`]).
fn next_positions(stream: &[u32]) -> Vec<u64> {
    let mut last = vec![NEVER; stream.iter().max().map_or(0, |&m| m as usize + 1)];
    let mut next = vec![NEVER; stream.len()];
    for (pos, &obj) in stream.iter().enumerate().rev() {
        next[pos] = last[obj as usize];
        last[obj as usize] = pos as u64;
    }
    next
}

fn hits(policy: &PolicyConfig, capacity: u64, stream: &[u32], next: &[u64]) -> u64 {
    let mut cache = BlockCache::new(capacity, policy.build(capacity));
    let oracle = cache.policy.needs_oracle();
    let mut hits = 0;
    for (pos, &obj) in stream.iter().enumerate() {
        let mut a = Access::at(obj, pos as u64);
        if oracle {
            a.next_use = next[pos];
        }
        if let Outcome::Hit(_) = cache.access(&a, false) {
            hits += 1;
        }
    }
    cache.validate().expect("valid at the end");
    hits
}

#[test]
fn mooncake_block_hit_ratios_match_libcachesim() {
    let Some(path) = trace_path() else {
        eprintln!(
            "skipped: no Mooncake trace at data/traces/mooncake/ or /work/shared/data/mooncake/"
        );
        return;
    };
    let stream = flat_stream(&path);
    assert_eq!(stream.len(), 121_877, "block refs in {}", path.display());
    let next = next_positions(&stream);
    let mut mismatches = Vec::new();
    for ((capacity, expected), expected_hits) in EXPECTED.into_iter().zip(EXPECTED_HITS) {
        for ((name, want), want_hits) in POLICIES.iter().zip(expected).zip(expected_hits) {
            let policy: PolicyConfig = name.parse().unwrap();
            let h = hits(&policy, capacity, &stream, &next);
            let ratio = h as f64 / stream.len() as f64;
            let got = (ratio * 1e4).round() as i64;
            eprintln!("{name:>7} {capacity:>6}: {ratio:.6} ({h} hits; libCacheSim .{want:04})");
            if got != want {
                mismatches.push(format!("{name} at {capacity}: .{got:04} != .{want:04}"));
            }
            if h != want_hits {
                mismatches.push(format!("{name} at {capacity}: {h} hits != {want_hits}"));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "differs from libCacheSim: {mismatches:?}"
    );
}
