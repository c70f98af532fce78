//! Throughput of `BlockCache` with each policy, in block references per second, on a seeded
//! synthetic stream (no pins): 1M references, one in ten to a fresh object, the rest skewed over
//! 200k popular objects. The same stream for every policy; Belady gets next uses.
//!
//! `cargo bench -p inferencelab-cache --bench policies`
//! (the Mooncake stream through the whole driver: `cargo bench -p inferencelab-sim`)

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inferencelab_cache::{Access, BlockCache, EvictionPolicy, Outcome, PolicyConfig, NEVER};
use inferencelab_trace::rng::skewed_ids;

fn flat_stream(c: &mut Criterion) {
    let refs = skewed_ids(42, 200_000, 1_000_000);
    let mut next = vec![NEVER; refs.len()];
    let mut last = vec![NEVER; refs.iter().max().map_or(0, |&m| m as usize + 1)];
    for (pos, &obj) in refs.iter().enumerate().rev() {
        next[pos] = last[obj as usize];
        last[obj as usize] = pos as u64;
    }
    let mut group = c.benchmark_group("flat_stream");
    group.sample_size(10);
    group.throughput(Throughput::Elements(refs.len() as u64));
    for name in [
        "lru", "fifo", "sieve", "mru", "lfu", "arc", "s3fifo", "belady",
    ] {
        let policy: PolicyConfig = name.parse().unwrap();
        for capacity in [10_000u64, 100_000] {
            group.bench_with_input(BenchmarkId::new(name, capacity), &capacity, |b, &cap| {
                b.iter(|| {
                    let mut cache = BlockCache::new(cap, policy.build(cap));
                    let oracle = cache.policy.needs_oracle();
                    let mut hits = 0u64;
                    for (pos, &obj) in refs.iter().enumerate() {
                        let mut a = Access::at(obj, pos as u64);
                        if oracle {
                            a.next_use = next[pos];
                        }
                        hits += matches!(cache.access(&a, false), Outcome::Hit(_)) as u64;
                    }
                    hits
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, flat_stream);
criterion_main!(benches);
