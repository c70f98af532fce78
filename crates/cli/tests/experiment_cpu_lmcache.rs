//! The golden copy of a real run of `configs/experiment_cpu_lmcache.yaml` (issue 24): the
//! experiment runner with `lmcache.mode: mp` started, per point, LMCache 0.5.6's `lmcache
//! server` and the CPU vLLM 0.32 (tiny random Qwen2, 193 blocks of 32) attached with
//! LMCacheMPConnector, replayed 40 chat requests of the bundled conversations, and saved both
//! servers' counters. `scripts/experiment_lmcache_vs_simulate.py DIR --fixture
//! tests/fixtures/experiment_cpu_lmcache` kept each point's request-logger lines (gzipped) and
//! `points.json`: the real counters (vLLM's `metrics_final.prom`, LMCache's
//! `lmcache_metrics_{start,final}.prom`), every request's `cached_tokens`, and what `simulate
//! --lmcache-mode mp` gave when the fixture was made. No venv needed.
//!
//! Asserted: simulate's figures as recorded (a moved number fails), and against the real
//! counters what holds: GPU hits and the total hit within 1 point of the prompt tokens, LMCache
//! hits within 1 point, and the requests whose `cached_tokens` we predict exactly, as counted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

mod common;

fn fixture_dir() -> PathBuf {
    common::fixture("experiment_cpu_lmcache")
}

fn cases() -> Vec<Value> {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("points.json")).unwrap())
            .unwrap();
    all["cases"].as_array().unwrap().clone()
}

/// simulate on one point's log, as the script ran it: its result row and per-request hits.
fn simulate(case: &Value) -> (Value, HashMap<String, u64>) {
    let log = fixture_dir().join(format!("{}.log.gz", case["stem"].as_str().unwrap()));
    let mut cmd = Command::new(common::BIN);
    cmd.arg("simulate")
        .arg("--input-file")
        .arg(&log)
        .arg("--model")
        .arg(fixture_dir().join("../real_lmcache/config.json"))
        .args(["--block-size", "32", "--chunk-size", "256"])
        .args(["--gpu-blocks", &case["num_gpu_blocks"].to_string()])
        .args(["--cpu-cache-gb", &case["l1_size_gb"].to_string()])
        .args([
            "--lmcache-mode",
            "mp",
            "--eviction-policy",
            "lru",
            "--schedule",
            "trace",
        ]);
    for key in ["max_num_batched_tokens", "max_num_seqs"] {
        if let Some(v) = case[key].as_str() {
            cmd.arg(format!("--{}", key.replace('_', "-"))).arg(v);
        }
    }
    let (v, rows) = common::simulate_per_request(cmd);
    (v["results"][0].clone(), common::hits_by_request(&rows))
}

#[test]
fn simulate_on_the_runners_real_lmcache_points_gives_the_recorded_figures() {
    let cases = cases();
    assert_eq!(cases.len(), 2, "the grid's two L1 sizes");
    for case in &cases {
        let stem = case["stem"].as_str().unwrap();
        let (row, hits) = simulate(case);
        let mp = &row["lmcache_mp"];
        let ours = &case["ours"];
        // the snapshot: simulate's figures when the fixture was made
        for (key, got) in [
            ("prompt_tokens", &row["prompt_tokens"]),
            ("gpu_hit_tokens", &row["gpu_hit_tokens"]),
            ("lmcache_hit_tokens", &row["cpu_hit_tokens"]),
            ("lookup_requested_tokens", &mp["lookup_requested_tokens"]),
            ("lookup_hit_tokens", &mp["lookup_hit_tokens"]),
            ("l1_write_chunks", &mp["l1_write_chunks"]),
            ("l1_read_chunks", &mp["l1_read_chunks"]),
            ("l1_evicted_chunks", &mp["l1_evicted_chunks"]),
        ] {
            assert_eq!(got, &ours[key], "{stem}: {key}");
        }
        // against the real counters
        let real = &case["real"];
        let q = case["prompt_tokens"].as_u64().unwrap() as f64;
        assert_eq!(row["prompt_tokens"].as_u64().unwrap() as f64, q, "{stem}");
        let pct = |x: &Value| 100.0 * x.as_u64().unwrap() as f64 / q;
        let (rg, og) = (pct(&real["gpu_hit_tokens"]), pct(&row["gpu_hit_tokens"]));
        let (rl, ol) = (
            pct(&real["lmcache_hit_tokens"]),
            pct(&row["cpu_hit_tokens"]),
        );
        assert!(
            (rl - ol).abs() <= 1.0,
            "{stem}: LMCache hits {rl:.2} % real, {ol:.2} % ours"
        );
        assert!(
            (rg + rl - og - ol).abs() <= 1.0,
            "{stem}: total hit {:.2} % real, {:.2} % ours",
            rg + rl,
            og + ol
        );
        let cached = case["cached_tokens"].as_object().unwrap();
        let exact = cached
            .iter()
            .filter(|(id, v)| hits.get(*id) == Some(&v.as_u64().unwrap()))
            .count();
        assert_eq!(
            exact as u64,
            case["exact_requests"].as_u64().unwrap(),
            "{stem}: requests whose cached_tokens we predict exactly"
        );
    }
}
