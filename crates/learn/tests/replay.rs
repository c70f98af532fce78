//! The split replay against the simulator's driver, and the no-peeking property of the learned
//! policies: a trace truncated after time t gives the same eviction decisions up to t.

use std::path::{Path, PathBuf};

use inferencelab_cache::policy::conversation_aware::{ConversationAware, ScorerConfig};
use inferencelab_cache::policy::lightgbm::{LightGbm, LightGbmConfig};
use inferencelab_cache::{EvictionPolicy, PolicyConfig};
use inferencelab_learn::replay::{replay, Recording, ReplayConfig};
use inferencelab_sim::{HitSemantics, Prepared, SimConfig, TierConfig, TimingModel};
use inferencelab_trace::{read_trace, ReadOptions, Trace};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

fn weka() -> Trace {
    read_trace(&repo("data/traces/weka-agentic"), &ReadOptions::default()).unwrap()
}

fn mooncake_head(n: usize) -> Trace {
    let mut t = read_trace(
        &repo("data/traces/mooncake/synthetic_trace.jsonl"),
        &ReadOptions::default(),
    )
    .unwrap();
    t.requests.truncate(n);
    t
}

fn cfg(capacity: u64, pinning: bool) -> ReplayConfig {
    ReplayConfig {
        capacity,
        pinning,
        timing: TimingModel::default(),
        split: f64::INFINITY,
        until: f64::INFINITY,
    }
}

#[test]
fn replay_totals_equal_the_driver() {
    let trace = weka();
    let prepared = Prepared::new(&trace, 64, None).unwrap();
    let oracle = prepared.gpu.next_use_by_request();
    for policy in [
        PolicyConfig::Lru,
        PolicyConfig::Belady,
        PolicyConfig::ConversationAware(ScorerConfig::default()),
    ] {
        for pinning in [false, true] {
            for capacity in [1_000u64, 3_000] {
                let sim = inferencelab_sim::run(
                    &prepared,
                    &SimConfig {
                        gpu: TierConfig {
                            capacity,
                            policy: policy.clone(),
                        },
                        cpu: None,
                        disk: None,
                        hit_semantics: HitSemantics::Prefix,
                        pinning,
                        timing: TimingModel::default(),
                        window_seconds: 60.0,
                        model: None,
                    },
                )
                .unwrap();
                let built = policy.build(capacity);
                let o = built.needs_oracle().then_some(oracle.as_slice());
                let (counts, _) = replay(&prepared, built, &cfg(capacity, pinning), o);
                let what = format!("{policy} at {capacity}, pinning {pinning}");
                assert_eq!(counts.train.hit_tokens, sim.gpu_hit_tokens, "{what}");
                assert_eq!(counts.train.hit_blocks, sim.gpu_hit_blocks, "{what}");
                assert_eq!(counts.train.prompt_tokens, sim.prompt_tokens, "{what}");
            }
        }
    }
}

/// The victims of a replay of `trace`'s requests before `until`, with the trace itself cut
/// there (so nothing after it exists at all).
fn victims<P: EvictionPolicy>(
    trace: &Trace,
    until: f64,
    policy: P,
    pinning: bool,
) -> Vec<(u32, u32)> {
    let mut cut = trace.clone();
    cut.requests.retain(|r| r.timestamp < until);
    let bs = trace.block_size.unwrap();
    let prepared = Prepared::new(&cut, bs, None).unwrap();
    let (_, rec) = replay(&prepared, Recording::new(policy), &cfg(600, pinning), None);
    rec.victims
}

#[test]
fn no_peeking_truncated_traces_make_the_same_decisions() {
    let model = LightGbmConfig::load(&repo(
        "crates/cache/tests/fixtures/lightgbm/model_regression.txt",
    ))
    .unwrap();
    for (trace, cuts) in [
        (weka(), [600.0, 2_000.0]),
        (mooncake_head(600), [60_000.0 / 1000.0, 120.0]),
    ] {
        let end = f64::INFINITY;
        for pinning in [false, true] {
            let full_ca = victims(
                &trace,
                end,
                ConversationAware::new(&ScorerConfig::default()),
                pinning,
            );
            let full_lg = victims(&trace, end, LightGbm::new(&model), pinning);
            assert!(!full_ca.is_empty() && !full_lg.is_empty());
            for t in cuts {
                let n = trace.requests.iter().filter(|r| r.timestamp < t).count() as u32;
                // decisions made while serving the requests before t
                let upto = |v: &[(u32, u32)]| -> Vec<(u32, u32)> {
                    v.iter().copied().filter(|&(r, _)| r < n).collect()
                };
                let cut_ca = victims(
                    &trace,
                    t,
                    ConversationAware::new(&ScorerConfig::default()),
                    pinning,
                );
                let cut_lg = victims(&trace, t, LightGbm::new(&model), pinning);
                assert_eq!(upto(&full_ca), cut_ca, "conversation_aware cut at {t}");
                assert_eq!(upto(&full_lg), cut_lg, "lightgbm cut at {t}");
                assert!(!cut_ca.is_empty(), "the cut at {t} must already evict");
            }
        }
    }
}
