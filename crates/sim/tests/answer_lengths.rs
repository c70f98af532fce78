//! Every GPU-tier replay tells the policy when a request finishes and how many tokens it
//! generated (`EvictionPolicy::on_finish`), before its blocks' unpins: `conversation_aware`'s
//! `use_output_length` must change what it does under the trace schedule, vLLM's schedule and
//! the abstract model alike, on a workload where the answer's length says whether the
//! conversation goes on.

use inferencelab_cache::policy::conversation_aware::ScorerConfig;
use inferencelab_cache::PolicyConfig;
use inferencelab_sim::config::{Schedule, SimConfig};
use inferencelab_sim::driver::{run_observed, Prepared};
use inferencelab_trace::Trace;

mod common;

/// GPU hit tokens of `conversation_aware` (the prediction alone) with and without answer
/// lengths.
fn hits(trace: &Trace, rules: bool, schedule: Schedule, use_output_length: bool) -> u64 {
    let prepared = Prepared::new(trace, 16, None).unwrap();
    let scorer = ScorerConfig {
        use_output_length,
        adaptive: false,
        ..Default::default()
    };
    let mut config = SimConfig {
        ..SimConfig::gpu_only(120, PolicyConfig::ConversationAware(scorer))
    };
    config.engine.rules = rules;
    config.engine.schedule = schedule;
    let mut total = 0;
    run_observed(&prepared, &config, |_, h| total += h.gpu_hit_tokens).unwrap();
    total
}

#[test]
fn answer_lengths_reach_the_policy_in_every_replay() {
    let trace = common::answer_length_workload();
    for (rules, schedule) in common::REPLAYS {
        let (off, on) = (
            hits(&trace, rules, schedule, false),
            hits(&trace, rules, schedule, true),
        );
        // the cache holds 12 conversations' first requests, the 30 s gap spans 15 of them:
        // keeping the short-answered ones (followed) over the long ones (never) hits more
        assert!(
            on > off,
            "rules {rules}, {schedule:?}: {on} hit tokens with answer lengths, {off} without"
        );
    }
}
