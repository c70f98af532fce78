//! The waiting queue (`waiting_queue`, both predicted-next-use policies): the engine tells the
//! policy which cached blocks the requests waiting to be admitted will look up
//! (`EvictionPolicy::on_wanted`), under vLLM's schedule and the trace schedule. It must change
//! what the policy keeps where requests wait, and it must tell only of requests that have
//! arrived: a trace cut at time t gives every request admitted before t the same hits.

use std::path::{Path, PathBuf};

use inferencelab_cache::policy::conversation_aware::ScorerConfig;
use inferencelab_cache::PolicyConfig;
use inferencelab_sim::config::{Schedule, SimConfig};
use inferencelab_sim::driver::RequestHits;
use inferencelab_sim::driver::{run_observed, Prepared};
use inferencelab_trace::{read_trace, ReadOptions, Trace};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

fn trace(path: &str, head: usize) -> Trace {
    let mut t = read_trace(&repo(path), &ReadOptions::default()).unwrap();
    t.requests.truncate(head);
    t
}

/// Each request's hits (by its index in `trace`) under `conversation_aware`'s defaults.
fn replay(
    trace: &Trace,
    capacity: u64,
    schedule: Schedule,
    waiting_queue: bool,
) -> Vec<Option<RequestHits>> {
    let prepared = Prepared::new(trace, trace.block_size.unwrap_or(16), None).unwrap();
    let scorer = ScorerConfig {
        waiting_queue,
        ..Default::default()
    };
    let mut config = SimConfig::gpu_only(capacity, PolicyConfig::ConversationAware(scorer));
    config.engine.schedule = schedule;
    let mut hits = vec![None; trace.requests.len()];
    run_observed(&prepared, &config, |i, h| hits[i] = Some(h)).unwrap();
    hits
}

fn total(hits: &[Option<RequestHits>]) -> u64 {
    hits.iter().flatten().map(|h| h.gpu_hit_tokens).sum()
}

/// (trace, requests, GPU blocks, schedule, cuts): Mooncake's head under vLLM's schedule, an
/// engine that falls behind (the default 10,000 prefill tokens/s against ~60,000 arriving), and
/// a vLLM log under its own schedule, where a few requests wait for blocks. (A version that
/// told the policy of requests 20 places ahead of each arrival fails the cut test on the log;
/// on Mooncake's backlog those had mostly arrived already.)
fn cases() -> [(&'static str, usize, u64, Schedule, [f64; 2]); 2] {
    [
        (
            "data/traces/mooncake/synthetic_trace.jsonl",
            600,
            300,
            Schedule::Vllm,
            [60.0, 120.0],
        ),
        (
            "data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log",
            200,
            222,
            Schedule::Trace,
            [40.0, 80.0],
        ),
    ]
}

#[test]
fn blocks_waiting_requests_want_are_kept_for_them() {
    for (path, head, capacity, schedule, _) in cases() {
        let t = trace(path, head);
        let queued = replay(&t, capacity, schedule, true);
        let waited = queued
            .iter()
            .zip(&t.requests)
            .filter(|(h, r)| h.as_ref().is_some_and(|h| h.admitted_s > r.timestamp))
            .count();
        assert!(waited > 0, "{path}: no request waited");
        let (on, off) = (
            total(&queued),
            total(&replay(&t, capacity, schedule, false)),
        );
        assert!(
            on > off,
            "{path} at {capacity} blocks: {on} hit tokens with the waiting queue, {off} without"
        );
    }
}

#[test]
fn the_queue_holds_only_requests_that_have_arrived() {
    for (path, head, capacity, schedule, cuts) in cases() {
        let full = trace(path, head);
        let all = replay(&full, capacity, schedule, true);
        for t in cuts {
            let mut cut = full.clone();
            cut.requests.retain(|r| r.timestamp < t);
            let part = replay(&cut, capacity, schedule, true);
            // every request admitted before t was served by an engine that had seen only
            // arrivals before t, in both runs
            let mut compared = 0;
            for (i, h) in all.iter().enumerate().take(cut.requests.len()) {
                let Some(h) = h.filter(|h| h.admitted_s < t) else {
                    continue;
                };
                let p = part[i].expect("served in the cut trace too");
                assert_eq!(
                    (h.gpu_hit_tokens, h.admitted_s),
                    (p.gpu_hit_tokens, p.admitted_s),
                    "{path}, cut at {t}: request {i}"
                );
                compared += 1;
            }
            assert!(
                compared > 10,
                "{path}, cut at {t}: {compared} requests compared"
            );
        }
    }
}
