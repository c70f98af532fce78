//! Issue 17: the engine model's queueing is reported (admission delay, arrival to first
//! scheduling), and a run whose engine falls behind its trace says so on stderr, naming the
//! flag that models a faster engine; a comfortably served trace gets no warning.

mod common;

use std::path::{Path, PathBuf};

/// A tiny Mooncake trace: 40 requests one second apart, each 5,120 prompt tokens (ten 512-token
/// blocks, the first shared by all) and one output token. At 10,000 prefill tokens/s (the
/// default) a prompt takes about half a second: the engine keeps up. At 1,000 tokens/s it takes
/// 5 s while one arrives every second: the queue grows by about 4 s a request, the median
/// request waits over a minute.
fn trace(dir: &Path) -> PathBuf {
    let path = dir.join("steady.jsonl");
    let lines: Vec<String> = (0..40u64)
        .map(|k| {
            let ids: Vec<String> = std::iter::once(0)
                .chain((1..10).map(|b| 1 + k * 10 + b))
                .map(|id| id.to_string())
                .collect();
            format!(
                "{{\"timestamp\": {}, \"input_length\": 5120, \"output_length\": 1, \
                 \"hash_ids\": [{}]}}",
                k * 1000,
                ids.join(", ")
            )
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `simulate` on the trace at `prefill` tokens/s: the summary's first row and stderr.
fn simulate(input: &Path, prefill: &str, json: bool) -> (serde_json::Value, String, String) {
    let out_dir = tempfile::tempdir().unwrap();
    let summary = out_dir.path().join("summary.json");
    let mut cmd = common::bin();
    cmd.arg("simulate")
        .arg("--input-file")
        .arg(input)
        .args(["--gpu-blocks", "1000", "--no-cpu-tier", "-q"])
        .args(["--prefill-tokens-per-s", prefill, "--output"])
        .arg(&summary);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    common::assert_ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    (
        doc["results"][0].clone(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_engine_that_falls_behind_the_trace_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let t = trace(dir.path());

    let (row, stdout, err) = simulate(&t, "1000", false);
    let p50 = row["queue_delay_p50_s"].as_f64().unwrap();
    let p90 = row["queue_delay_p90_s"].as_f64().unwrap();
    // about 4 s more per request: the 20th waits ~80 s, the 36th ~145 s
    assert!(p50 > 60.0 && p90 > p50, "{row}");
    assert!(
        err.contains("warning: the engine model falls behind the trace")
            && err.contains("--prefill-tokens-per-s N")
            && err.contains(&format!("median {p50:.0} s")),
        "{err}"
    );
    // 40 x 5120 tokens over 39 s: 5251 tokens/s arrive, 1000 are prefilled
    assert!(
        err.contains("arrive at 5251 tokens/s") && err.contains("prefills 1000 tokens/s"),
        "{err}"
    );
    // the table shows each point's queueing
    assert!(stdout.contains("queue_p50/p90_s"), "{stdout}");
    assert!(stdout.contains(&format!("{p50:.0}/{p90:.0}")), "{stdout}");

    // --json: the same warning on stderr, the figures in the document
    let (_, _, err) = simulate(&t, "1000", true);
    assert!(err.contains("falls behind the trace"), "{err}");

    let (row, _, err) = simulate(&t, "10000", true);
    let p50 = row["queue_delay_p50_s"].as_f64().unwrap();
    assert!(p50 < 1.0, "{row}");
    assert!(!err.contains("falls behind"), "{err}");
}

#[test]
fn sweep_reports_the_test_parts_queueing_and_warns_when_behind() {
    let dir = tempfile::tempdir().unwrap();
    let t = trace(dir.path());
    let sweep = |prefill: &str| {
        let out = common::bin()
            .arg("sweep")
            .arg("--input-file")
            .arg(&t)
            .args(["--capacities", "1000", "--budget", "1", "-q"])
            .args(["--prefill-tokens-per-s", prefill, "--output"])
            .arg(dir.path().join(format!("scorer_{prefill}.yaml")))
            .output()
            .unwrap();
        common::assert_ok(&out);
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("sweep_steady.json")).unwrap())
                .unwrap();
        (
            doc["queueing"][0]["queue_delay_p50_s"].as_f64().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (slow, stdout, err) = sweep("1000");
    assert!(slow > 10.0, "{slow}");
    assert!(
        stdout.contains("median admission delay on the test part"),
        "{stdout}"
    );
    assert!(
        err.contains("falls behind the trace") && err.contains("--prefill-tokens-per-s N"),
        "{err}"
    );
    // and the command it names gives the same engine
    assert!(err.contains("--prefill-tokens-per-s 1000"), "{err}");
    let (fast, _, err) = sweep("10000");
    assert!(fast < 1.0, "{fast}");
    assert!(!err.contains("falls behind"), "{err}");
}

#[test]
fn one_engine_and_a_fleet_of_one_queue_alike() {
    // the single-engine row and the fleet's `queue_delay_*` measure the same delays
    let dir = tempfile::tempdir().unwrap();
    let t = trace(dir.path());
    let (row, _, _) = simulate(&t, "1000", true);
    let out = common::bin()
        .arg("simulate")
        .arg("--input-file")
        .arg(&t)
        .args(["--gpu-blocks", "1000", "--no-cpu-tier", "-q", "--json"])
        .args([
            "--prefill-tokens-per-s",
            "1000",
            "--replicas",
            "1",
            "--output",
        ])
        .arg(dir.path().join("fleet.json"))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fleet = &doc["points"][0]["result"];
    for k in ["queue_delay_p50_s", "queue_delay_p90_s"] {
        assert_eq!(fleet[k], row[k], "{k}");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("falls behind the trace") && err.contains("--replicas"),
        "{err}"
    );
}

#[test]
fn batch_says_which_points_fall_behind() {
    let dir = tempfile::tempdir().unwrap();
    let t = trace(dir.path());
    let batch = |timing: &str| {
        let name = if timing.is_empty() { "fast" } else { "slow" };
        let yaml = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &yaml,
            format!(
                "name: {name}\noutput_dir: {}\ntraces:\n  - path: {}\n    name: steady\n\
                 gpu_blocks: [1000]\npolicies: [lru, fifo]\n{timing}",
                dir.path().join(name).display(),
                t.display()
            ),
        )
        .unwrap();
        let out = common::bin()
            .args(["batch", "--yaml"])
            .arg(&yaml)
            .args(["--no-plot", "-q"])
            .output()
            .unwrap();
        common::assert_ok(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = batch("timing: {prefill_tokens_per_s: 1000, decode_ms_per_token: 20}\n");
    assert!(
        err.contains("falls behind its trace at 2 of 2 points")
            && err.contains("steady with")
            && err.contains("prefill_tokens_per_s: N"),
        "{err}"
    );
    assert!(!batch("").contains("falls behind"));
}
