//! Throughput of the cache core in block references per second, on the bundled Mooncake
//! synthetic trace (121,877 block refs, 43,924 distinct blocks). Seeded and deterministic.
//!
//! `cargo bench -p inferencelab-sim --bench policies`
//! The peer figure (libCacheSim's Python binding on the same stream, same run) comes from
//! `scripts/bench_vs_libcachesim.py`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inferencelab_cache::{Access, BlockCache, EvictionPolicy, PolicyConfig};
use inferencelab_sim::{EngineModel, Prepared, Schedule, SimConfig, TierConfig};
use inferencelab_trace::{read_trace, BlockedTrace, Blocking, ReadOptions, Trace};

fn mooncake() -> Trace {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/traces/mooncake/synthetic_trace.jsonl");
    read_trace(&path, &ReadOptions::default()).expect("bundled Mooncake trace")
}

/// The flattened block stream: exactly what `--hit-semantics any` and libCacheSim see.
fn flat_stream(c: &mut Criterion) {
    let trace = mooncake();
    let blocked = BlockedTrace::build(
        &trace,
        Blocking {
            block_size: 512,
            include_partial: true,
        },
    )
    .unwrap();
    let next = blocked.next_use_flat();
    let mut group = c.benchmark_group("flat_stream");
    group.throughput(Throughput::Elements(blocked.keys.len() as u64));
    for name in ["lru", "fifo", "lfu", "arc", "s3fifo", "sieve", "belady"] {
        let policy: PolicyConfig = name.parse().unwrap();
        for capacity in [1_000u64, 10_000] {
            group.bench_with_input(BenchmarkId::new(name, capacity), &capacity, |b, &cap| {
                b.iter(|| {
                    let mut cache = BlockCache::new(cap, policy.build(cap));
                    let oracle = cache.policy.needs_oracle();
                    let mut hits = 0u64;
                    for (pos, &k) in blocked.keys.iter().enumerate() {
                        let mut a = Access::at(k, pos as u64);
                        if oracle {
                            a.next_use = next[pos];
                        }
                        if matches!(cache.access(&a, false), inferencelab_cache::Outcome::Hit(_)) {
                            hits += 1;
                        }
                    }
                    hits
                })
            });
        }
    }
    group.finish();
}

/// The whole driver with vLLM semantics (prefix hits, pinning, LMCache tier): the abstract
/// prefix model (the figures before the engine rules), and vLLM's engine rules under both
/// schedules.
fn driver(c: &mut Criterion) {
    let trace = mooncake();
    let prepared = Prepared::new(&trace, 512, Some(512)).unwrap();
    let mut group = c.benchmark_group("driver");
    group.throughput(Throughput::Elements(prepared.gpu.keys.len() as u64));
    let abstract_model = EngineModel {
        rules: false,
        ..Default::default()
    };
    let with = |schedule| EngineModel {
        schedule,
        ..Default::default()
    };
    for (label, cpu, pinning, engine) in [
        ("gpu_only_no_pinning", false, false, abstract_model),
        ("two_tier_pinning", true, true, abstract_model),
        (
            "engine_gpu_only_no_pinning",
            false,
            false,
            with(Schedule::Trace),
        ),
        ("engine_two_tier_trace", true, true, with(Schedule::Trace)),
        ("engine_two_tier_vllm", true, true, with(Schedule::Vllm)),
    ] {
        let config = SimConfig {
            cpu: cpu.then_some(TierConfig {
                capacity: 20_000,
                policy: PolicyConfig::Lru,
            }),
            pinning,
            engine,
            ..SimConfig::gpu_only(10_000, PolicyConfig::Lru)
        };
        group.bench_function(label, |b| {
            b.iter(|| {
                inferencelab_sim::run(&prepared, &config)
                    .unwrap()
                    .gpu_hit_blocks
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = flat_stream, driver
}
criterion_main!(benches);
