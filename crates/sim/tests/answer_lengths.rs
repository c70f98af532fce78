//! Every GPU-tier replay tells the policy when a request finishes and how many tokens it
//! generated (`EvictionPolicy::on_finish`), before its blocks' unpins: `conversation_aware`'s
//! `use_output_length` must change what it does under the trace schedule, vLLM's schedule and
//! the abstract model alike, on a workload where the answer's length says whether the
//! conversation goes on.

use inferencelab_cache::policy::conversation_aware::ScorerConfig;
use inferencelab_cache::PolicyConfig;
use inferencelab_sim::config::{Schedule, SimConfig};
use inferencelab_sim::driver::{run_observed, Prepared};
use inferencelab_trace::{Content, Request, Trace};

/// 400 conversations, one starting every 2 s, each with a first request of 8 blocks of 16
/// tokens. Every third one is answered in 4 tokens and followed 30 s later by a second
/// request repeating its prompt plus 2 blocks; the others are answered in 60 tokens and never
/// followed.
fn trace() -> Trace {
    let mut requests = Vec::new();
    let mut next_id = 0u64;
    for c in 0..400u64 {
        let t = c as f64 * 2.0;
        let ids: Vec<u64> = (0..8).map(|k| next_id + k).collect();
        next_id += 8;
        let short = c % 3 == 0;
        let output = if short { 4 } else { 60 };
        requests.push(Request {
            id: format!("{c}-0"),
            timestamp: t,
            finish_time: Some(t + 0.5 + output as f64 * 0.002),
            conversation: Some(c),
            turn: 0,
            input_length: 8 * 16,
            output_length: output,
            kind: None,
            content: Content::HashIds(ids.clone()),
            output_tokens: None,
            output_times: None,
        });
        if short {
            let mut more = ids;
            more.extend([next_id, next_id + 1]);
            next_id += 2;
            requests.push(Request {
                id: format!("{c}-1"),
                timestamp: t + 30.0,
                finish_time: Some(t + 31.0),
                conversation: Some(c),
                turn: 1,
                input_length: 10 * 16,
                output_length: 8,
                kind: None,
                content: Content::HashIds(more),
                output_tokens: None,
                output_times: None,
            });
        }
    }
    requests.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    Trace {
        requests,
        block_size: Some(16),
        ..Default::default()
    }
}

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
    let trace = trace();
    for (rules, schedule) in [
        (true, Schedule::Trace),
        (true, Schedule::Vllm),
        (false, Schedule::Trace),
    ] {
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
