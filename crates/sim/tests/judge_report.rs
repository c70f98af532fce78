//! Every GPU-tier replay reports what an adaptive policy's judge decided (`ResultRow::
//! eviction_judge`): on a workload where the prediction clearly beats LRU, the judge's shadows
//! say so and the prediction decides most disagreements; a policy without a judge reports none.

use inferencelab_cache::policy::conversation_aware::ScorerConfig;
use inferencelab_cache::PolicyConfig;
use inferencelab_sim::config::{Schedule, SimConfig};
use inferencelab_sim::driver::{run_observed, Prepared};
use inferencelab_sim::ResultRow;
use inferencelab_trace::Trace;

mod common;

fn row(trace: &Trace, rules: bool, schedule: Schedule, policy: PolicyConfig) -> ResultRow {
    let prepared = Prepared::new(trace, 16, None).unwrap();
    let mut config = SimConfig::gpu_only(120, policy);
    config.engine.rules = rules;
    config.engine.schedule = schedule;
    run_observed(&prepared, &config, |_, _| {}).unwrap()
}

#[test]
fn every_replay_reports_the_judge_of_an_adaptive_policy() {
    let trace = common::answer_length_workload();
    for (rules, schedule) in common::REPLAYS {
        let adaptive = row(
            &trace,
            rules,
            schedule,
            PolicyConfig::ConversationAware(ScorerConfig::default()),
        );
        let j = adaptive
            .eviction_judge
            .unwrap_or_else(|| panic!("rules {rules}, {schedule:?}: no judge reported"));
        // LRU keeps the 12 latest conversations and every follow-up comes 15 later: its shadow
        // hits almost nothing the prediction's does not
        assert!(
            j.prediction_shadow_hits > j.lru_shadow_hits
                && j.decided_by_prediction > j.decided_by_lru,
            "rules {rules}, {schedule:?}: {j:?}"
        );
        for policy in [
            PolicyConfig::Lru,
            PolicyConfig::ConversationAware(ScorerConfig {
                adaptive: false,
                ..Default::default()
            }),
        ] {
            let r = row(&trace, rules, schedule, policy);
            assert_eq!(
                r.eviction_judge, None,
                "rules {rules}, {schedule:?}: {}",
                r.policy
            );
        }
        // the shadows (every block: a cache of 120) earn what each expert earns alone, within
        // a few percent (the real cache mixes the two, which moves pins and times a little)
        let alone = row(
            &trace,
            rules,
            schedule,
            PolicyConfig::ConversationAware(ScorerConfig {
                adaptive: false,
                ..Default::default()
            }),
        );
        let lru = row(&trace, rules, schedule, PolicyConfig::Lru);
        for (shadow, real, what) in [
            (j.prediction_shadow_hits, alone.gpu_hit_blocks, "prediction"),
            (j.lru_shadow_hits, lru.gpu_hit_blocks, "LRU"),
        ] {
            eprintln!("rules {rules}, {schedule:?}: {what} shadow {shadow}, alone {real}");
            assert!(
                shadow.abs_diff(real) * 20 <= real,
                "rules {rules}, {schedule:?}: {what}'s shadow {shadow} hits, alone {real}"
            );
        }
    }
}
