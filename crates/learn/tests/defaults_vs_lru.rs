//! The shipped defaults against LRU on a bundled trace, through the simulator's engine model
//! (vLLM's rules, pinning, GPU tier only: what `simulate --no-cpu-tier` gives): with LRU as a
//! second expert, judged by the shadow caches, neither `conversation_aware` nor `lightgbm`
//! may lose more than 0.5 points of token hit ratio to LRU, while `conversation_aware`'s
//! prediction alone does lose more than that here (so the judge is what keeps the defaults
//! there). Issue 17's protocol (`scripts/policy_protocol.sh`) checks every bundled trace.

use std::path::{Path, PathBuf};

use inferencelab_cache::policy::conversation_aware::ScorerConfig;
use inferencelab_cache::PolicyConfig;
use inferencelab_sim::{Prepared, SimConfig};
use inferencelab_trace::{read_trace, ReadOptions};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

/// Token hit ratio of `policy` on the whole trace at `capacity` GPU blocks.
fn hit_ratio(prepared: &Prepared, policy: PolicyConfig, capacity: u64) -> f64 {
    let sim = inferencelab_sim::run(
        prepared,
        &SimConfig {
            ..SimConfig::gpu_only(capacity, policy)
        },
    )
    .unwrap();
    sim.gpu_hit_tokens as f64 / sim.prompt_tokens as f64
}

#[test]
fn the_defaults_stay_within_half_a_point_of_lru() {
    let trace = read_trace(
        &repo("data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log"),
        &ReadOptions::default(),
    )
    .unwrap();
    let prepared = Prepared::new(&trace, 16, None).unwrap();
    let defaults: ScorerConfig = serde_norway::from_str(
        &std::fs::read_to_string(repo("configs/scorer_default.yaml")).unwrap(),
    )
    .unwrap();
    let alone = ScorerConfig {
        adaptive: false,
        ..defaults.clone()
    };
    let lightgbm = inferencelab_sim::resolve::bundled_lightgbm();
    let mut alone_loses = false;
    // the protocol's capacities for this trace (LRU below 80% of the ideal on its test part)
    for capacity in [222u64, 514, 1191] {
        let lru = hit_ratio(&prepared, PolicyConfig::Lru, capacity);
        let ca = hit_ratio(
            &prepared,
            PolicyConfig::ConversationAware(defaults.clone()),
            capacity,
        );
        let lg = hit_ratio(
            &prepared,
            PolicyConfig::Lightgbm(lightgbm.clone()),
            capacity,
        );
        let ca_alone = hit_ratio(
            &prepared,
            PolicyConfig::ConversationAware(alone.clone()),
            capacity,
        );
        eprintln!("{capacity}: lru {lru:.4} ca {ca:.4} lightgbm {lg:.4} ca alone {ca_alone:.4}");
        assert!(
            ca >= lru - 0.005,
            "conversation_aware {ca} vs LRU {lru} at {capacity}"
        );
        assert!(
            lg >= lru - 0.005,
            "lightgbm {lg} vs LRU {lru} at {capacity}"
        );
        alone_loses |= ca_alone < lru - 0.005;
    }
    assert!(
        alone_loses,
        "the prediction alone should lose somewhere here"
    );
}
