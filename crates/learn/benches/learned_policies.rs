//! Speed of the predicted-next-use policies in block references per second (one core), through
//! `BlockCache`, each reference carrying its trace time, depth and conversation as the driver
//! passes them; LRU on the same stream for scale. Streams: the bundled Mooncake trace (121,877
//! block refs of 512 tokens, no conversations) and the WEKA sessions (273,866 refs of 64 tokens,
//! one conversation per session). Policies: `conversation_aware` with the defaults and with the
//! tuned `configs/scorer_weka.yaml` (every weight on: four `powf` per reference), `lightgbm` with
//! the Python fixture model (30 trees of 15 leaves) and with a model of `inferencelab train`'s
//! default size (40 trees of 16 leaves, trained here on the Mooncake stream's first half).
//!
//! `cargo bench -p inferencelab-learn --bench learned_policies [-- FILTER]`
//!
//! On a shared machine wall time measures the neighbours too: with `LEARNED_POLICIES_CPU_TIME=1`
//! the same runs are timed in this thread's CPU time instead (`/proc/thread-self/stat`, Linux,
//! 10 ms ticks; each figure sums at least 2 s of CPU) and printed as a table, without criterion.
//! With `LEARNED_POLICIES_ONCE=1` each case runs once and prints its hits and a fingerprint of
//! every decision (for `valgrind --tool=callgrind`, whose instruction counts do not depend on
//! the load, and to check that a faster version evicts exactly as before).

use std::path::Path;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use inferencelab_cache::learned::features::{FEATURE_NAMES, PREFIX_MONOTONE};
use inferencelab_cache::policy::conversation_aware::{ConversationAware, ScorerConfig};
use inferencelab_cache::policy::lightgbm::{LightGbm, LightGbmConfig};
use inferencelab_cache::policy::lru::Lru;
use inferencelab_cache::{Access, BlockCache, EvictionPolicy, Outcome};
use inferencelab_learn::boost::{self, BoostParams};
use inferencelab_learn::dataset;
use inferencelab_trace::{read_trace, BlockedTrace, Blocking, ReadOptions, Trace};

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(path: &str, block_size: u32) -> (Trace, BlockedTrace) {
    let trace = read_trace(&root().join(path), &ReadOptions::default()).expect("bundled trace");
    let blocked = BlockedTrace::build(
        &trace,
        Blocking {
            block_size,
            include_partial: path.ends_with(".jsonl"),
        },
    )
    .unwrap();
    (trace, blocked)
}

fn stream(trace: &Trace, blocked: &BlockedTrace) -> Vec<Access> {
    let mut out = Vec::with_capacity(blocked.keys.len());
    let kinds = trace.kind_ids();
    for (i, r) in trace.requests.iter().enumerate() {
        for (d, &k) in blocked.request(i).iter().enumerate() {
            out.push(Access {
                timestamp: r.timestamp,
                request: i as u32,
                conversation: r.conversation.unwrap_or(u64::MAX),
                turn: r.turn,
                kind: kinds[i],
                depth: d as u32,
                ..Access::at(k, out.len() as u64)
            });
        }
    }
    out
}

/// A model of `inferencelab train`'s default size, trained on the first half of the trace.
fn trained_model(trace: &Trace, blocked: &BlockedTrace) -> LightGbmConfig {
    let t1 = trace.requests.last().map_or(0.0, |r| r.timestamp);
    let data = dataset::build(trace, blocked, t1 / 2.0, 50_000, 1);
    let rows: Vec<Vec<f64>> = data.rows.iter().map(|r| r.to_vec()).collect();
    let names: Vec<String> = FEATURE_NAMES.iter().map(|s| s.to_string()).collect();
    let params = BoostParams {
        monotone: PREFIX_MONOTONE.to_vec(),
        ..Default::default()
    };
    let model = boost::train(&rows, &data.labels, &names, &params);
    let path = std::env::temp_dir().join("inferencelab_bench_lightgbm.txt");
    std::fs::write(&path, model.to_text()).unwrap();
    let config = LightGbmConfig::load(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    config
}

fn run<P: EvictionPolicy>(policy: P, capacity: u64, refs: &[Access]) -> u64 {
    if fingerprinting() {
        return run_fingerprint(policy, capacity, refs);
    }
    let mut cache = BlockCache::new(capacity, policy);
    refs.iter()
        .filter(|a| matches!(cache.access(a, false), Outcome::Hit(_)))
        .count() as u64
}

/// `LEARNED_POLICIES_ONCE=1`: every case runs once and reports a fingerprint of its decisions.
fn fingerprinting() -> bool {
    std::env::var_os("LEARNED_POLICIES_ONCE").is_some()
}

/// One run whose result is an FNV-1a hash of every outcome (hit or insert, and the entry: a
/// new block takes its victim's entry, so the hash changes with any eviction), with the hits in
/// the top 20 bits: two versions of a policy that decide alike give the same number.
#[inline(never)]
fn run_fingerprint<P: EvictionPolicy>(policy: P, capacity: u64, refs: &[Access]) -> u64 {
    let mut cache = BlockCache::new(capacity, policy);
    let (mut hash, mut hits) = (0xcbf2_9ce4_8422_2325u64, 0u64);
    for a in refs {
        let code = match cache.access(a, false) {
            Outcome::Hit(e) => {
                hits += 1;
                (e as u64) << 2
            }
            Outcome::Inserted(e) => (e as u64) << 2 | 1,
            Outcome::Rejected => 2,
        };
        hash = (hash ^ code).wrapping_mul(0x0100_0000_01b3);
    }
    (hits << 44) | (hash >> 20)
}

/// This thread's CPU time (user + system) in seconds, from `/proc/thread-self/stat` (Linux).
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("Linux /proc");
    // fields after the command name (which is in parentheses and may hold spaces)
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 11 and 12 after the name
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

/// Block refs per CPU-second of `run`, repeated until it has used at least 2 s of CPU, and
/// its hits (a policy that misses more evicts more, which costs more per reference).
fn refs_per_cpu_second(mut run: impl FnMut() -> u64, refs: usize) -> (f64, u64) {
    let hits = std::hint::black_box(run()); // warm up
    let start = thread_cpu_seconds();
    let mut n = 0u64;
    loop {
        std::hint::black_box(run());
        n += 1;
        let used = thread_cpu_seconds() - start;
        if used >= 2.0 {
            return (n as f64 * refs as f64 / used, hits);
        }
    }
}

/// Every data set, capacity and policy of [`policies`], setup included.
type Case = (String, Box<dyn Fn() -> u64>, usize);

fn cases() -> Vec<Case> {
    let fixture = LightGbmConfig::load(
        &root().join("crates/cache/tests/fixtures/lightgbm/model_regression.txt"),
    )
    .expect("fixture model");
    let tuned: ScorerConfig = serde_norway::from_str(
        &std::fs::read_to_string(root().join("configs/scorer_weka.yaml")).unwrap(),
    )
    .unwrap();
    let (m_trace, m_blocked) = load("data/traces/mooncake/synthetic_trace.jsonl", 512);
    let trained = trained_model(&m_trace, &m_blocked);
    let (w_trace, w_blocked) = load("data/traces/weka-agentic", 64);
    let mut out: Vec<Case> = Vec::new();
    for (name, refs, capacities) in [
        ("mooncake", stream(&m_trace, &m_blocked), [1_000u64, 10_000]),
        ("weka", stream(&w_trace, &w_blocked), [1_000u64, 3_000]),
    ] {
        let refs = std::rc::Rc::new(refs);
        let n = refs.len();
        for cap in capacities {
            let r = refs.clone();
            out.push((
                format!("{name}/lru/{cap}"),
                Box::new(move || run(Lru::default(), cap, &r)),
                n,
            ));
            for (label, scorer) in [
                ("conversation_aware", ScorerConfig::default()),
                ("conversation_aware_tuned", tuned.clone()),
                (
                    "conversation_aware_alone",
                    ScorerConfig {
                        adaptive: false,
                        ..Default::default()
                    },
                ),
                (
                    "conversation_aware_hit_density",
                    ScorerConfig {
                        hit_density: true,
                        idle_in_horizons: true,
                        ..Default::default()
                    },
                ),
            ] {
                let r = refs.clone();
                out.push((
                    format!("{name}/{label}/{cap}"),
                    Box::new(move || run(ConversationAware::new(&scorer), cap, &r)),
                    n,
                ));
            }
            for (label, model) in [
                ("lightgbm_fixture", fixture.clone()),
                ("lightgbm_trained", trained.clone()),
                (
                    "lightgbm_trained_alone",
                    LightGbmConfig {
                        adaptive: false,
                        ..trained.clone()
                    },
                ),
            ] {
                let r = refs.clone();
                out.push((
                    format!("{name}/{label}/{cap}"),
                    Box::new(move || run(LightGbm::new(&model), cap, &r)),
                    n,
                ));
            }
        }
    }
    out
}

fn cpu_time_table() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if fingerprinting() {
        // for callgrind and for checking that a change keeps every decision
        println!("| case | hits | decisions' fingerprint |\n|---|---:|---|");
        for (name, run, _) in cases() {
            if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let f = run();
            println!("| {name} | {} | {:011x} |", f >> 44, f & ((1 << 44) - 1));
        }
        return;
    }
    println!("| case | M block refs per CPU-second | hits |\n|---|---:|---:|");
    for (name, run, refs) in cases() {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let (rate, hits) = refs_per_cpu_second(run, refs);
        println!("| {name} | {:.2} | {hits} |", rate / 1e6);
    }
}

fn policies(c: &mut Criterion) {
    let fixture = LightGbmConfig::load(
        &root().join("crates/cache/tests/fixtures/lightgbm/model_regression.txt"),
    )
    .expect("fixture model");
    let tuned: ScorerConfig = serde_norway::from_str(
        &std::fs::read_to_string(root().join("configs/scorer_weka.yaml")).unwrap(),
    )
    .unwrap();
    let (m_trace, m_blocked) = load("data/traces/mooncake/synthetic_trace.jsonl", 512);
    let trained = trained_model(&m_trace, &m_blocked);
    let (w_trace, w_blocked) = load("data/traces/weka-agentic", 64);
    for (name, refs, capacities) in [
        ("mooncake", stream(&m_trace, &m_blocked), [1_000u64, 10_000]),
        ("weka", stream(&w_trace, &w_blocked), [1_000u64, 3_000]),
    ] {
        let mut group = c.benchmark_group(format!("learned_policies/{name}"));
        group.throughput(Throughput::Elements(refs.len() as u64));
        for capacity in capacities {
            let id = |p: &str| BenchmarkId::new(p, capacity);
            group.bench_with_input(id("lru"), &capacity, |b, &cap| {
                b.iter(|| run(Lru::default(), cap, &refs))
            });
            for (label, scorer) in [
                ("conversation_aware", ScorerConfig::default()),
                ("conversation_aware_tuned", tuned.clone()),
                (
                    "conversation_aware_hit_density",
                    ScorerConfig {
                        hit_density: true,
                        idle_in_horizons: true,
                        ..Default::default()
                    },
                ),
            ] {
                group.bench_with_input(id(label), &capacity, |b, &cap| {
                    b.iter(|| run(ConversationAware::new(&scorer), cap, &refs))
                });
            }
            for (label, model) in [
                ("lightgbm_fixture", &fixture),
                ("lightgbm_trained", &trained),
            ] {
                group.bench_with_input(id(label), &capacity, |b, &cap| {
                    b.iter(|| run(LightGbm::new(model), cap, &refs))
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = policies
}
fn main() {
    if std::env::var_os("LEARNED_POLICIES_CPU_TIME").is_some() || fingerprinting() {
        cpu_time_table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
