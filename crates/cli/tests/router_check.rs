//! The golden copy of `scripts/router_check.sh` (issue 21): 4 `serve` replicas behind the real
//! `vllm-router` 0.1.17, `bench` replaying the first 40 turns of `data/test_data.csv` through it,
//! per policy. The fixture keeps the replicas' logs merged in the client's order, which replica
//! the router chose for each request, and the router's worker order; this test runs
//! `simulate --replicas 4 --router P` on the log again and checks the agreement and the
//! simulated per-replica hits the script recorded, and the bars that were met.

mod common;

use std::collections::HashMap;

use serde_json::Value;

fn check(policy: &str) -> (u64, u64) {
    let dir = common::fixture(&format!("router_check/{policy}"));
    let order: Vec<String> = std::fs::read_to_string(dir.join("worker_order.txt"))
        .unwrap()
        .trim()
        .split(',')
        .map(String::from)
        .collect();
    let actual: HashMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("actual.json")).unwrap()).unwrap();
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("router_check/summary.json")).unwrap(),
    )
    .unwrap();
    let golden = &golden[policy];
    let tmp = tempfile::tempdir().unwrap();
    let per = tmp.path().join("per.jsonl");
    let out = common::bin()
        .args(["simulate", "-i"])
        .arg(dir.join("merged.log.gz"))
        .args([
            "--gpu-blocks",
            "600",
            "--no-cpu-tier",
            "-q",
            "--replicas",
            "4",
        ])
        .args(["--router", policy, "--router-worker-urls", &order.join(",")])
        .arg("--per-request")
        .arg(&per)
        .arg("-o")
        .arg(tmp.path().join("sim.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = std::fs::read_to_string(&per)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut hits: HashMap<&str, u64> = HashMap::new();
    let mut same = 0;
    for r in &rows {
        let url = order[r["replica"].as_u64().unwrap() as usize].as_str();
        *hits.entry(url).or_default() += r["gpu_hit_tokens"].as_u64().unwrap();
        if actual
            .get(r["request_id"].as_str().unwrap())
            .map(String::as_str)
            == Some(url)
        {
            same += 1;
        }
    }
    assert_eq!(
        rows.len() as u64,
        golden["requests"].as_u64().unwrap(),
        "{policy}"
    );
    assert_eq!(same, golden["same_replica"].as_u64().unwrap(), "{policy}");
    for (url, h) in golden["hit_tokens_simulated"].as_object().unwrap() {
        assert_eq!(
            hits.get(url.as_str()).copied().unwrap_or(0),
            h.as_u64().unwrap(),
            "{policy} {url}"
        );
    }
    (same, rows.len() as u64)
}

#[test]
fn round_robin_and_consistent_hash_pick_the_real_routers_replica() {
    for policy in ["round_robin", "consistent_hash"] {
        let (same, n) = check(policy);
        // the bar of issue 21: >= 99 % (met: every request)
        assert!(same as f64 >= 0.99 * n as f64, "{policy}: {same}/{n}");
    }
}

#[test]
fn cache_aware_agreement_is_what_the_script_measured() {
    // the bar is 95 %; the recorded run's figure (docs/replicas.md) is pinned, met or not
    check("cache_aware");
}
