//! CLI tests of LMCache lookup-hash logs (issue 16): `simulate` on them under LMCache's own
//! simulator's rules against a golden copy of that simulator's output, and under LMCache's
//! engine rules (the default), which differ.
//!
//! Fixtures (`tests/fixtures/lmcache_lookup/`, README.md there): two logs written by
//! `convert --lmcache-lookup-from` (the first 150 requests of the bundled Mooncake trace, chunk
//! 512, qwen-8b; the bundled vLLM 0.33 log, chunk 256, llama-8b), and per log the figures of
//! LMCache 0.5.6's `lmcache/tools/cache_simulator/simulator.py::simulate` at several capacities,
//! written by `scripts/lmcache_simulator_check.py --golden`.

use std::path::PathBuf;

use serde_json::Value;

mod common;

fn fixture(path: &str) -> PathBuf {
    common::fixture("lmcache_lookup").join(path)
}

fn simulate(args: &[&str]) -> Value {
    common::simulate_json(&[args, &["-q"]].concat())
}

fn golden(log: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture(&format!("{log}.lmcache_simulator.json"))).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["cells"].as_array().unwrap().clone()
}

#[test]
fn simulator_rules_give_lmcache_simulators_figures_exactly() {
    for log in ["mooncake", "vllm"] {
        let dir = fixture(log);
        let dir = dir.to_str().unwrap();
        for cell in golden(log) {
            let gib = cell["capacity_gib"].as_f64().unwrap().to_string();
            let doc = simulate(&[
                "--input-file",
                dir,
                "--lmcache-rules",
                "simulator",
                "--cpu-cache-gb",
                &gib,
            ]);
            assert_eq!(doc["input"]["format"], "lmcache-lookup");
            let row = &doc["results"][0];
            let got = (
                &row["cpu_chunks"],
                &row["requests"],
                &row["prompt_tokens"],
                &row["cpu_hit_tokens"],
                &row["cpu_evictions"],
            );
            let want = (
                &cell["cache_capacity_chunks"],
                &cell["total_requests"],
                &cell["total_tokens"],
                &cell["total_hit_tokens"],
                &cell["eviction_count"],
            );
            assert_eq!(got, want, "{log} at {gib} GiB");
            assert_eq!(row["cpu_token_hit_ratio"], cell["token_hit_rate"]);
            assert_eq!(row["lmcache_rules"], "simulator");
        }
    }
}

#[test]
fn engine_rules_are_the_default_and_differ_from_the_simulators() {
    let dir = fixture("vllm");
    let dir = dir.to_str().unwrap();
    // 0.5 GiB: 16 chunks of 256 tokens, smaller than the longest prompts
    let cell = &golden("vllm")[2];
    assert_eq!(cell["capacity_gib"], 0.5);
    let doc = simulate(&["--input-file", dir, "--cpu-cache-gb", "0.5"]);
    assert_eq!(doc["input"]["lmcache_rules"], "engine");
    let row = &doc["results"][0];
    assert!(row.get("lmcache_rules").is_none());
    assert_eq!(row["gpu_blocks"], 0, "no GPU tier unless asked");
    assert_eq!(row["cpu_chunks"], cell["cache_capacity_chunks"]);
    assert_eq!(row["prompt_tokens"], cell["total_tokens"]);
    // the engine keeps a long prompt's head and recomputes one token of a full hit: other
    // figures than the simulator's
    assert_ne!(row["cpu_hit_tokens"], cell["total_hit_tokens"]);
}

#[test]
fn every_policy_runs_on_a_lookup_log_and_a_gpu_tier_can_go_on_top() {
    let dir = fixture("vllm");
    let dir = dir.to_str().unwrap();
    let doc = simulate(&[
        "--input-file",
        dir,
        "--lmcache-rules",
        "simulator",
        "--cpu-cache-gb",
        "0.5",
        "-p",
        "lru,fifo,lfu,s3fifo,belady,ideal",
    ]);
    let rows = doc["results"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    let hit = |p: &str| {
        rows.iter()
            .find(|r| r["cpu_policy"] == p)
            .unwrap_or_else(|| panic!("no {p} row"))["cpu_hit_tokens"]
            .as_u64()
            .unwrap()
    };
    assert!(hit("belady") >= hit("lru"), "Belady bounds LRU");
    assert!(hit("ideal") >= hit("belady"), "an infinite tier bounds all");
    // a vLLM GPU tier on top of LMCache's engine: the GPU tier needs block ids of the log's
    // chunk size, and the simulator's rules refuse it
    let doc = simulate(&[
        "--input-file",
        dir,
        "--gpu-blocks",
        "64",
        "--cpu-cache-gb",
        "0.5",
    ]);
    let row = &doc["results"][0];
    assert_eq!(row["block_size"], 256);
    assert!(row["token_hit_ratio"].as_f64().unwrap() > 0.0);
    let out = common::bin()
        .args(["simulate", "--input-file", dir, "--gpu-blocks", "64"])
        .args([
            "--lmcache-rules",
            "simulator",
            "-q",
            "--output",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no GPU tier"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
