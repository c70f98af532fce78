//! Speed of the predicted-next-use policies in block references per second (one core), on the
//! bundled Mooncake stream (121,877 block refs) through `BlockCache`, each reference carrying its
//! trace time and depth as the driver passes them; LRU on the same stream for scale.
//!
//! `cargo bench -p inferencelab-learn --bench learned_policies`

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inferencelab_cache::policy::conversation_aware::{ConversationAware, ScorerConfig};
use inferencelab_cache::policy::lightgbm::{LightGbm, LightGbmConfig};
use inferencelab_cache::policy::lru::Lru;
use inferencelab_cache::{Access, BlockCache, EvictionPolicy, Outcome};
use inferencelab_trace::{read_trace, BlockedTrace, Blocking, ReadOptions};

fn stream() -> Vec<Access> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let trace = read_trace(
        &root.join("data/traces/mooncake/synthetic_trace.jsonl"),
        &ReadOptions::default(),
    )
    .expect("bundled Mooncake trace");
    let blocked = BlockedTrace::build(
        &trace,
        Blocking {
            block_size: 512,
            include_partial: true,
        },
    )
    .unwrap();
    let mut out = Vec::with_capacity(blocked.keys.len());
    for (i, r) in trace.requests.iter().enumerate() {
        for (d, &k) in blocked.request(i).iter().enumerate() {
            out.push(Access {
                timestamp: r.timestamp,
                request: i as u32,
                depth: d as u32,
                ..Access::at(k, out.len() as u64)
            });
        }
    }
    out
}

fn run<P: EvictionPolicy>(policy: P, capacity: u64, refs: &[Access]) -> u64 {
    let mut cache = BlockCache::new(capacity, policy);
    refs.iter()
        .filter(|a| matches!(cache.access(a, false), Outcome::Hit(_)))
        .count() as u64
}

fn policies(c: &mut Criterion) {
    let refs = stream();
    let model = LightGbmConfig::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../cache/tests/fixtures/lightgbm/model_regression.txt"),
    )
    .expect("fixture model");
    let mut group = c.benchmark_group("learned_policies");
    group.throughput(Throughput::Elements(refs.len() as u64));
    for capacity in [1_000u64, 10_000] {
        group.bench_with_input(BenchmarkId::new("lru", capacity), &capacity, |b, &cap| {
            b.iter(|| run(Lru::default(), cap, &refs))
        });
        group.bench_with_input(
            BenchmarkId::new("conversation_aware", capacity),
            &capacity,
            |b, &cap| b.iter(|| run(ConversationAware::new(&ScorerConfig::default()), cap, &refs)),
        );
        group.bench_with_input(
            BenchmarkId::new("lightgbm", capacity),
            &capacity,
            |b, &cap| b.iter(|| run(LightGbm::new(&model), cap, &refs)),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = policies
}
criterion_main!(benches);
