//! CLI tests of `inferencelab sweep`: the real binary on the bundled WEKA sessions.

use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn sweep_writes_the_best_config_and_reports_beside_lru_and_belady() {
    let dir = tempfile::tempdir().unwrap();
    let best = dir.path().join("scorer_best.yaml");
    let out = Command::cargo_bin("inferencelab")
        .unwrap()
        .args(["sweep", "--input-file"])
        .arg(repo("data/traces/weka-agentic"))
        .args([
            "--budget",
            "4",
            "--capacities",
            "1000,2000",
            "--no-pinning",
            "-q",
        ])
        .arg("--output")
        .arg(&best)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    for col in ["lru_hit", "belady_hit", "gap_closed", "train", "test"] {
        assert!(table.contains(col), "no {col} in:\n{table}");
    }
    // the best config is a valid scorer config that `sweep --scorer-config` reads back
    let yaml = std::fs::read_to_string(&best).unwrap();
    assert!(yaml.contains("overdue_factor"), "{yaml}");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("sweep_weka-agentic.json")).unwrap())
            .unwrap();
    assert_eq!(doc["trials"].as_array().unwrap().len(), 4);
    assert_eq!(doc["comparisons"].as_array().unwrap().len(), 2);
    let again = Command::cargo_bin("inferencelab")
        .unwrap()
        .args(["sweep", "--input-file"])
        .arg(repo("data/traces/weka-agentic"))
        .args([
            "--budget",
            "1",
            "--capacities",
            "1000",
            "--no-pinning",
            "-q",
        ])
        .arg("--scorer-config")
        .arg(&best)
        .arg("--output")
        .arg(dir.path().join("again.yaml"))
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn a_bad_scorer_config_names_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "scale: 1\nw_typo: 2\n").unwrap();
    let out = Command::cargo_bin("inferencelab")
        .unwrap()
        .args(["sweep", "--input-file"])
        .arg(repo("data/traces/weka-agentic"))
        .arg("--scorer-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml") && err.contains("w_typo"), "{err}");
}
