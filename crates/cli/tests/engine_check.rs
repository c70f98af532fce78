//! `simulate` against golden output of the engines' own code (issue 13): vLLM 0.33's real V1
//! scheduler, written by `scripts/vllm_engine_check.py` into tests/fixtures/vllm_engine (see its
//! README). Every request's GPU hit tokens must equal vLLM's `num_cached_tokens`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::jsonl;

fn fixture(case: &str) -> PathBuf {
    common::fixture("vllm_engine/reuse-sync").join(case)
}

/// Run `simulate` on `input` and return (per-request outcomes by id, the summary's first row).
fn simulate(input: &Path, blocks: u64, extra: &[&str]) -> (HashMap<String, Value>, Value) {
    let mut cmd = Command::new(common::BIN);
    cmd.arg("simulate")
        .arg("--input-file")
        .arg(input)
        .args(["--block-size", "16", "--gpu-blocks", &blocks.to_string()])
        .args(["--no-cpu-tier", "--eviction-policy", "lru"])
        .args(["--max-num-batched-tokens", "2048", "--max-num-seqs", "256"])
        .args([
            "--prefill-tokens-per-s",
            "10000",
            "--decode-ms-per-token",
            "20",
        ])
        .args(extra);
    let (doc, rows) = common::simulate_per_request(cmd);
    let by_id = rows
        .into_iter()
        .map(|v| (v["request_id"].as_str().unwrap().to_string(), v))
        .collect();
    (by_id, doc["results"][0].clone())
}

fn check_case(case: &str, blocks: u64) {
    let dir = fixture(case);
    let vllm = jsonl(&dir.join("vllm.jsonl"));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let (ours, row) = simulate(&dir.join("trace.jsonl"), blocks, &["--schedule", "vllm"]);
    assert_eq!(ours.len(), vllm.len());
    for v in &vllm {
        let id = v["request_id"].as_str().unwrap();
        let o = &ours[id];
        assert_eq!(
            o["gpu_hit_tokens"], v["gpu_hit_tokens"],
            "{case}: request {id}: ours {o}, vLLM {v}"
        );
        assert_eq!(o["preemptions"], v["preemptions"], "{case}: request {id}");
    }
    let stats = &summary["prefix_cache_stats"];
    assert_eq!(row["gpu_hit_tokens"], stats["hits"], "{case}");
    assert_eq!(row["prompt_tokens"], stats["queries"], "{case}");
    assert_eq!(
        row["preemptions"].as_u64().unwrap(),
        vllm.iter()
            .map(|v| v["preemptions"].as_u64().unwrap())
            .sum::<u64>()
    );
}

#[test]
fn scheduler_mode_equals_vllms_scheduler_without_eviction() {
    check_case("blocks50000", 50000);
}

#[test]
fn scheduler_mode_equals_vllms_scheduler_with_eviction_and_preemption() {
    check_case("blocks24", 24);
}

#[test]
fn answer_blocks_are_the_whole_gap_without_eviction() {
    // prompt blocks only (the model before issue 13) misses what vLLM hits on the answers
    let dir = fixture("blocks50000");
    let (_, with) = simulate(&dir.join("trace.jsonl"), 50000, &["--schedule", "vllm"]);
    let (_, without) = simulate(
        &dir.join("trace.jsonl"),
        50000,
        &["--schedule", "vllm", "--answer-blocks", "off"],
    );
    assert!(with["gpu_hit_tokens"].as_u64().unwrap() > without["gpu_hit_tokens"].as_u64().unwrap());
    // vLLM's own log (output ids logged) read in trace mode: no eviction, every request exact
    let vllm = jsonl(&dir.join("vllm.jsonl"));
    let (ours, _) = simulate(&dir.join("server.log"), 50000, &["--schedule", "trace"]);
    for v in &vllm {
        let id = v["request_id"].as_str().unwrap();
        assert_eq!(ours[id]["gpu_hit_tokens"], v["gpu_hit_tokens"], "{id}");
    }
}

/// LMCache 0.5.6's own storage classes (`scripts/lmcache_engine_check.py --preset small`, see
/// tests/fixtures/lmcache_engine/README.md): every request's LMCache hit tokens, for LMCache's
/// four policies at a size smaller than the longest prompt and a larger one, and with a disk.
#[test]
fn lmcache_tier_equals_lmcaches_own_storage_classes() {
    let dir = common::fixture("lmcache_engine");
    let cells: Vec<(&str, &str, Option<&str>)> = vec![
        ("lru", "0.25", None),
        ("lru", "1", None),
        ("lfu", "0.25", None),
        ("lfu", "1", None),
        ("fifo", "0.25", None),
        ("fifo", "1", None),
        ("mru", "0.25", None),
        ("mru", "1", None),
        ("lru", "1", Some("2")),
    ];
    for (policy, gib, disk) in cells {
        let name = match disk {
            Some(d) => format!("lmcache-{policy}-{gib}-disk-{d}"),
            None => format!("lmcache-{policy}-{gib}"),
        };
        let truth = jsonl(&dir.join(format!("{name}.jsonl")));
        let tmp = tempfile::tempdir().unwrap();
        let per = tmp.path().join("per.jsonl");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_inferencelab"));
        cmd.arg("simulate")
            .arg("--input-file")
            .arg(dir.join("trace.jsonl"))
            .args(["--gpu-blocks", "0", "--no-pinning", "--chunk-size", "256"])
            .args(["-m", "qwen-8b", "--cpu-eviction-policy", policy])
            .args(["--cpu-cache-gb", gib])
            .arg("--per-request")
            .arg(&per)
            .args(["--json", "-q", "-o"])
            .arg(tmp.path().join("sim.json"));
        if let Some(d) = disk {
            cmd.args(["--disk-cache-gb", d]);
        }
        let out = cmd.output().unwrap();
        common::assert_ok(&out);
        let ours = jsonl(&per);
        assert_eq!(ours.len(), truth.len(), "{name}");
        let mut hits = 0;
        for (o, t) in ours.iter().zip(&truth) {
            assert_eq!(o["request_id"], t["request_id"], "{name}");
            assert_eq!(
                o["lmcache_hit_tokens"], t["lmcache_hit_tokens"],
                "{name}: request {}",
                t["request_id"]
            );
            hits += t["lmcache_hit_tokens"].as_u64().unwrap();
        }
        assert!(hits > 0, "{name}: LMCache hits something");
    }
}

#[test]
fn contradictory_engine_flags_are_refused_with_the_fix() {
    let dir = fixture("blocks24");
    let out = Command::new(env!("CARGO_BIN_EXE_inferencelab"))
        .arg("simulate")
        .arg("--input-file")
        .arg(dir.join("trace.jsonl"))
        .args(["--gpu-blocks", "24", "--no-cpu-tier", "-q"])
        .args(["--schedule", "vllm", "--no-pinning"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--schedule trace"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_inferencelab"))
        .arg("simulate")
        .arg("--input-file")
        .arg(dir.join("trace.jsonl"))
        .args(["--answer-blocks", "sometimes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auto, next-prompt, fresh or off"), "{err}");
}
