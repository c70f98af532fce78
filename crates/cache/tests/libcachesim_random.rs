//! Exact hit counts against libCacheSim 0.3.5 on seeded synthetic streams: small capacities,
//! skewed popularity and one-hit wonders, so every path of every policy runs (ARC's four cases,
//! S3-FIFO's ghost and promotions, SIEVE's wrap-around). Counts, not rounded ratios: a single
//! different eviction anywhere almost always shows.
//!
//! Regenerate the table with `python3 scripts/libcachesim_check.py --random` (same generator,
//! integer-only, so both sides see the same stream).

use inferencelab_cache::{Access, BlockCache, EvictionPolicy, Outcome, PolicyConfig, NEVER};
use inferencelab_trace::rng::skewed_ids;

const POLICIES: [&str; 7] = ["lru", "fifo", "lfu", "arc", "s3fifo", "sieve", "belady"];
/// (seed, distinct popular objects, references), as `RANDOM_STREAMS` in the script.
const STREAMS: [(u64, u64, usize); 3] = [(1, 300, 20_000), (2, 1000, 20_000), (3, 100, 20_000)];
/// (seed, capacity, hits for LRU, FIFO, LFU, ARC, S3-FIFO, SIEVE, Belady) from libCacheSim.
const EXPECTED: [(u64, u64, [u64; 7]); 9] = [
    (1, 20, [1413, 1410, 1867, 1628, 1824, 1794, 6296]),
    (1, 50, [3580, 3490, 4624, 4079, 4372, 4392, 9917]),
    (1, 200, [12397, 11188, 15164, 14487, 14587, 15000, 16726]),
    (2, 20, [418, 420, 497, 476, 560, 509, 3499]),
    (2, 50, [1064, 1053, 1307, 1284, 1339, 1324, 5701]),
    (2, 200, [4086, 3980, 5188, 4975, 5133, 5268, 10841]),
    (3, 20, [4154, 4051, 5334, 4973, 5442, 5208, 10427]),
    (3, 50, [9905, 9110, 12147, 11457, 11804, 12377, 15337]),
    (3, 200, [17802, 16475, 17881, 17883, 17881, 17881, 17892]),
];

fn hits(policy: &PolicyConfig, capacity: u64, stream: &[u32]) -> u64 {
    let mut next = vec![NEVER; stream.len()];
    let mut last = vec![NEVER; stream.iter().max().map_or(0, |&m| m as usize + 1)];
    for (pos, &obj) in stream.iter().enumerate().rev() {
        next[pos] = last[obj as usize];
        last[obj as usize] = pos as u64;
    }
    let mut cache = BlockCache::new(capacity, policy.build(capacity));
    let oracle = cache.policy.needs_oracle();
    let mut hits = 0;
    for (pos, &obj) in stream.iter().enumerate() {
        let mut a = Access::at(obj, pos as u64);
        if oracle {
            a.next_use = next[pos];
        }
        hits += matches!(cache.access(&a, false), Outcome::Hit(_)) as u64;
    }
    cache.validate().expect("valid at the end");
    hits
}

#[test]
fn hit_counts_match_libcachesim_on_seeded_streams() {
    let mut mismatches = Vec::new();
    for (seed, capacity, expected) in EXPECTED {
        let &(_, n, len) = STREAMS.iter().find(|s| s.0 == seed).unwrap();
        let s = skewed_ids(seed, n, len);
        for (name, want) in POLICIES.iter().zip(expected) {
            let got = hits(&name.parse().unwrap(), capacity, &s);
            if got != want {
                mismatches.push(format!(
                    "{name}, seed {seed}, capacity {capacity}: {got} != {want}"
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "differs from libCacheSim: {mismatches:#?}"
    );
}
