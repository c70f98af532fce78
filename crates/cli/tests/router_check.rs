//! The golden copy of `scripts/router_check.sh` (issue 21): 4 `serve` replicas behind the real
//! `vllm-router` 0.1.17, `bench` replaying the first 40 turns of `data/test_data.csv` through it,
//! per policy. The fixture keeps the replicas' logs merged in the client's order, which replica
//! the router chose for each request, and the router's worker order; this test runs
//! `simulate --replicas 4 --router P` on the log again and checks the agreement and the
//! simulated per-replica hits the script recorded, and the bars that were met.

mod common;

use std::collections::HashMap;

use serde_json::Value;

/// What the script recorded for one router: its fixture directory, the real router's worker
/// order, each request's real replica (URL) and the script's figures.
struct Recorded {
    dir: std::path::PathBuf,
    order: Vec<String>,
    actual: HashMap<String, String>,
    golden: Value,
}

fn recorded(policy: &str) -> Recorded {
    let dir = common::fixture(&format!("router_check/{policy}"));
    let order = std::fs::read_to_string(dir.join("worker_order.txt"))
        .unwrap()
        .trim()
        .split(',')
        .map(String::from)
        .collect();
    let actual =
        serde_json::from_str(&std::fs::read_to_string(dir.join("actual.json")).unwrap()).unwrap();
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("router_check/summary.json")).unwrap(),
    )
    .unwrap();
    Recorded {
        dir,
        order,
        actual,
        golden: summary[policy].clone(),
    }
}

fn check(policy: &str) -> (u64, u64) {
    let Recorded {
        dir,
        order,
        actual,
        golden,
    } = recorded(policy);
    let tmp = tempfile::tempdir().unwrap();
    let per = tmp.path().join("per.jsonl");
    let mut cmd = common::bin();
    cmd.args(["simulate", "-i"]).arg(dir.join("merged.log.gz"));
    simulate_fleet(cmd, policy, &order, &per, &tmp.path().join("sim.json"));
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

/// The request id in a log line (`cmpl-bench-...` or `chatcmpl-bench-...`), if any.
fn line_id(line: &str) -> Option<&str> {
    let at = line.find("cmpl-bench-")?;
    let start = if line[..at].ends_with("chat") {
        at - 4
    } else {
        at
    };
    let end = line[at..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .map_or(line.len(), |i| at + i);
    Some(&line[start..end])
}

/// `simulate --replica-logs` on the golden run's logs split back per replica (by the router's
/// real assignment; the startup lines go to every log): the simulation merges them itself and
/// finds the agreement and the per-replica hits the script measured on its own merge.
#[test]
fn simulate_merges_the_replicas_logs_itself_and_reports_the_real_assignment() {
    use std::io::{Read, Write};
    for policy in ["round_robin", "consistent_hash", "cache_aware"] {
        let Recorded {
            dir,
            order,
            actual,
            golden,
        } = recorded(policy);
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(dir.join("merged.log.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        // named as `serve --replicas` and the experiment runner name them
        let logs = tmp.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let paths: Vec<_> = (0..4)
            .map(|k| match k {
                0 => tmp.path().join("replica.log"),
                k => logs.join(format!("replica.replica{k}.log")),
            })
            .collect();
        let mut files: Vec<_> = paths
            .iter()
            .map(|p| std::fs::File::create(p).unwrap())
            .collect();
        for line in text.lines() {
            let owner = line_id(line)
                .and_then(|id| actual.get(id))
                .map(|url| order.iter().position(|u| u == url).unwrap());
            for (k, f) in files.iter_mut().enumerate() {
                if owner.is_none_or(|o| o == k) {
                    writeln!(f, "{line}").unwrap();
                }
            }
        }
        drop(files);
        let per = tmp.path().join("per.jsonl");
        let summary = tmp.path().join("sim.json");
        let mut cmd = common::bin();
        cmd.args(["simulate", "-i"])
            .arg(&paths[0])
            .arg("--replica-logs")
            .args(&paths[1..]);
        simulate_fleet(cmd, policy, &order, &per, &summary);
        let doc: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        // the directory holding replica.replicaK.log is the same list
        let mut by_dir = common::bin();
        by_dir
            .args(["simulate", "-i"])
            .arg(&paths[0])
            .arg("--replica-logs")
            .arg(&logs);
        let dir_summary = tmp.path().join("sim_dir.json");
        let dir_per = tmp.path().join("per_dir.jsonl");
        simulate_fleet(by_dir, policy, &order, &dir_per, &dir_summary);
        let by_dir: Value = serde_json::from_slice(&std::fs::read(&dir_summary).unwrap()).unwrap();
        let figures = |d: &Value| {
            let mut p = d["points"].clone();
            p[0]["result"]["sim_seconds"] = Value::Null; // wall time
            p
        };
        assert_eq!(figures(&by_dir), figures(&doc), "{policy}");
        let a = &doc["points"][0]["actual"];
        assert_eq!(a["requests"], golden["requests"], "{policy}");
        assert_eq!(a["same_replica"], golden["same_replica"], "{policy}");
        let real: Vec<u64> = order
            .iter()
            .map(|u| golden["requests_per_replica_real"][u].as_u64().unwrap())
            .collect();
        assert_eq!(
            a["requests_per_replica_actual"],
            serde_json::json!(real),
            "{policy}"
        );
        let mut hits = [0u64; 4];
        for l in std::fs::read_to_string(&per).unwrap().lines() {
            let r: Value = serde_json::from_str(l).unwrap();
            hits[r["replica"].as_u64().unwrap() as usize] += r["gpu_hit_tokens"].as_u64().unwrap();
            assert!(r["actual_replica"].is_u64());
        }
        for (k, url) in order.iter().enumerate() {
            assert_eq!(
                hits[k],
                golden["hit_tokens_simulated"][url].as_u64().unwrap(),
                "{policy} {url}"
            );
        }
    }
}

/// Run `cmd` (`simulate` on the fleet's logs) as the script does: 600 GPU blocks per replica,
/// no LMCache tier, 4 replicas behind `policy` with the real router's worker order; the
/// per-request rows to `per`, the summary to `summary`.
fn simulate_fleet(
    mut cmd: assert_cmd::Command,
    policy: &str,
    order: &[String],
    per: &std::path::Path,
    summary: &std::path::Path,
) {
    let out = cmd
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
        .arg(per)
        .arg("-o")
        .arg(summary)
        .output()
        .unwrap();
    common::assert_ok(&out);
}

/// `--replica-logs DIR` names what is wrong: no STEM.replicaK.log, a gap in K, or a count
/// that is not `--replicas`.
#[test]
fn a_replica_log_directory_names_what_it_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("point.log");
    std::fs::copy(repo_log(), &first).unwrap();
    let run = || {
        let out = common::bin()
            .args([
                "simulate",
                "-q",
                "--replicas",
                "3",
                "--gpu-blocks",
                "600",
                "-i",
            ])
            .arg(&first)
            .arg("--replica-logs")
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run();
    assert!(err.contains("no point.replicaK.log in it"), "{err}");
    std::fs::copy(repo_log(), tmp.path().join("point.replica2.log")).unwrap();
    let err = run();
    assert!(err.contains("point.replica1.log is missing"), "{err}");
    // four logs for three replicas: refused before any is read
    std::fs::copy(repo_log(), tmp.path().join("point.replica1.log")).unwrap();
    std::fs::copy(repo_log(), tmp.path().join("point.replica3.log")).unwrap();
    let err = run();
    assert!(
        err.contains("--replicas 3 with 4 replica logs") && err.contains("one log per replica"),
        "{err}"
    );
}

fn repo_log() -> std::path::PathBuf {
    common::repo("data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log")
}
