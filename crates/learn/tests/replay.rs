//! The split replay against the simulator's driver, and the no-peeking property of the learned
//! policies: a trace truncated after time t gives the same eviction decisions up to t.

use std::path::{Path, PathBuf};

use inferencelab_cache::learned::order::Ranking;
use inferencelab_cache::policy::conversation_aware::{ConversationAware, ScorerConfig};
use inferencelab_cache::policy::lightgbm::{LightGbm, LightGbmConfig, Retrain};
use inferencelab_cache::{EvictionPolicy, PolicyConfig};
use inferencelab_learn::online;
use inferencelab_learn::replay::{replay, Recording, ReplayConfig};
use inferencelab_sim::{Prepared, SimConfig, TimingModel};
use inferencelab_trace::{infer_conversations, read_trace, ReadOptions, Trace};

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
        validation_from: f64::INFINITY,
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
                        pinning,
                        // learn::replay is the abstract prefix model (docs/semantics.md)
                        engine: inferencelab_sim::EngineModel {
                            rules: false,
                            ..Default::default()
                        },
                        ..SimConfig::gpu_only(capacity, policy.clone())
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
                // the validation part counts the train requests from `validation_from` on
                let c = ReplayConfig {
                    validation_from: 3_000.0,
                    ..cfg(capacity, pinning)
                };
                let (split, _) = replay(&prepared, policy.build(capacity), &c, o);
                assert_eq!(split.train, counts.train, "{what}");
                let late = trace.requests.iter().filter(|r| r.timestamp >= 3_000.0);
                assert_eq!(split.validation.requests, late.clone().count() as u64);
                assert_eq!(
                    split.validation.prompt_tokens,
                    late.map(|r| r.input_length as u64).sum::<u64>()
                );
                assert!(split.validation.hit_tokens <= split.train.hit_tokens);
            }
        }
    }
}

/// The victims of a replay of `trace`'s requests before `until`, with the trace itself cut
/// there (so nothing after it exists at all). With `infer`, conversations are inferred from
/// the cut trace (`--infer-conversations`).
fn victims<P: EvictionPolicy>(
    trace: &Trace,
    until: f64,
    policy: P,
    pinning: bool,
    infer: bool,
) -> Vec<(u32, u32)> {
    let mut cut = trace.clone();
    cut.requests.retain(|r| r.timestamp < until);
    if infer {
        infer_conversations(&mut cut).expect("a trace without conversation ids");
    }
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
    // WEKA has session ids; Mooncake has none, so it runs with inferred conversations too
    let mut inference_mattered = false;
    for (trace, cuts, infer) in [
        (weka(), [600.0, 2_000.0], false),
        (mooncake_head(600), [60.0, 120.0], false),
        (mooncake_head(600), [60.0, 120.0], true),
    ] {
        let end = f64::INFINITY;
        for (pinning, ranking) in [
            (false, Ranking::NextUse),
            (true, Ranking::NextUse),
            (false, Ranking::ExpectedWait),
            (true, Ranking::ExpectedWait),
        ] {
            // with LRU as a second expert (its shadows see only the past too) and, so that the
            // predictions themselves decide, without
            let adaptive = ranking == Ranking::NextUse;
            // conversations inferred online where the trace has no ids (Mooncake uncut by
            // `--infer-conversations`): settled from each request's own blocks, when it ends
            let scorer = ScorerConfig {
                ranking,
                adaptive,
                infer_conversations: true,
                ..Default::default()
            };
            let lgbm = LightGbmConfig {
                ranking,
                adaptive,
                ..model.clone()
            };
            let ca = || ConversationAware::new(&scorer);
            let lg = || LightGbm::new(&lgbm);
            let full_ca = victims(&trace, end, ca(), pinning, infer);
            if !infer && pinning && trace.requests[0].conversation.is_none() {
                let without = ScorerConfig {
                    infer_conversations: false,
                    ..scorer.clone()
                };
                let plain = victims(&trace, end, ConversationAware::new(&without), true, false);
                inference_mattered |= plain != full_ca;
            }
            let full_lg = victims(&trace, end, lg(), pinning, infer);
            assert!(!full_ca.is_empty() && !full_lg.is_empty());
            for t in cuts {
                let n = trace.requests.iter().filter(|r| r.timestamp < t).count() as u32;
                // decisions made while serving the requests before t
                let upto = |v: &[(u32, u32)]| -> Vec<(u32, u32)> {
                    v.iter().copied().filter(|&(r, _)| r < n).collect()
                };
                let what = format!("cut at {t}, {ranking:?}, pinning {pinning}, infer {infer}");
                let cut_ca = victims(&trace, t, ca(), pinning, infer);
                let cut_lg = victims(&trace, t, lg(), pinning, infer);
                assert_eq!(upto(&full_ca), cut_ca, "conversation_aware {what}");
                assert_eq!(upto(&full_lg), cut_lg, "lightgbm {what}");
                assert!(!cut_ca.is_empty(), "the cut at {t} must already evict");
            }
        }
    }
    assert!(
        inference_mattered,
        "conversations inferred online must change some victim on Mooncake"
    );
}

/// `victims` for `lightgbm` retraining online: the schedule is computed from the cut trace, so
/// a model trained on anything after the cut cannot exist.
fn victims_online(
    trace: &Trace,
    until: f64,
    config: &LightGbmConfig,
    pinning: bool,
) -> Vec<(u32, u32)> {
    let mut cut = trace.clone();
    cut.requests.retain(|r| r.timestamp < until);
    let bs = trace.block_size.unwrap();
    let prepared = Prepared::new(&cut, bs, None).unwrap();
    let mut c = config.clone();
    assert!(online::attach(&mut c, &cut, &prepared.gpu));
    let (_, rec) = replay(
        &prepared,
        Recording::new(LightGbm::new(&c)),
        &cfg(600, pinning),
        None,
    );
    rec.victims
}

#[test]
fn no_peeking_with_online_retraining() {
    let mut config = LightGbmConfig::load(&repo(
        "crates/cache/tests/fixtures/lightgbm/model_regression.txt",
    ))
    .unwrap();
    config.retrain = Some(Retrain::new(15.0, 40.0));
    let trace = mooncake_head(600);
    // the schedule really switches models before the cuts
    let prepared = Prepared::new(&trace, trace.block_size.unwrap(), None).unwrap();
    let mut full = config.clone();
    online::attach(&mut full, &trace, &prepared.gpu);
    let sched = full.schedule.clone().unwrap();
    assert!(
        sched.iter().filter(|(t, _)| *t < 60.0).count() >= 2,
        "{}",
        sched.len()
    );
    for pinning in [false, true] {
        let all = victims_online(&trace, f64::INFINITY, &config, pinning);
        for t in [60.0, 120.0] {
            let n = trace.requests.iter().filter(|r| r.timestamp < t).count() as u32;
            let upto: Vec<(u32, u32)> = all.iter().copied().filter(|&(r, _)| r < n).collect();
            assert_eq!(
                upto,
                victims_online(&trace, t, &config, pinning),
                "cut at {t}"
            );
        }
    }
    // and retraining changes decisions (the models are used at all; the models alone, as with
    // LRU as a second expert LRU may decide everything here)
    let alone = LightGbmConfig {
        adaptive: false,
        ..config.clone()
    };
    let static_victims = victims(&trace, f64::INFINITY, LightGbm::new(&alone), false, false);
    assert_ne!(
        static_victims,
        victims_online(&trace, f64::INFINITY, &alone, false)
    );
}
