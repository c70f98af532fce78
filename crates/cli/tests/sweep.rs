//! CLI tests of `inferencelab sweep`: the real binary on the bundled WEKA sessions.

use serde_json::Value;

mod common;
use common::repo;

#[test]
fn sweep_writes_the_best_config_and_reports_beside_lru_and_belady() {
    let dir = tempfile::tempdir().unwrap();
    let best = dir.path().join("scorer_best.yaml");
    let out = common::bin()
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
    common::assert_ok(&out);
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
    let again = common::bin()
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
    common::assert_ok(&again);
}

#[test]
fn a_bad_scorer_config_names_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "scale: 1\nw_typo: 2\n").unwrap();
    let out = common::bin()
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

fn sweep(args: &[&str], input: &str, dir: &std::path::Path) -> (String, String, Value) {
    let out = common::bin()
        .args(["sweep", "--input-file"])
        .arg(repo(input))
        .args(args)
        .args(["--no-pinning", "-q", "--output"])
        .arg(dir.join("best.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let stem = std::path::Path::new(input)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("sweep_{stem}.json"))).unwrap())
            .unwrap();
    (String::from_utf8(out.stdout).unwrap(), err, doc)
}

#[test]
fn choices_are_made_on_the_validation_part_unless_it_cannot_separate_policies() {
    let dir = tempfile::tempdir().unwrap();
    // Mooncake: Belady beats LRU at the end of the train part, so choices are made there
    let (table, err, doc) = sweep(
        &["--budget", "3", "--capacities", "1000"],
        "data/traces/mooncake/synthetic_trace.jsonl",
        dir.path(),
    );
    assert!(table.contains(" valid "), "{table}");
    assert!(err.contains("choices made on the last 993"), "{err}");
    let split = doc["split_seconds"].as_f64().unwrap();
    let from = doc["validation_from_seconds"].as_f64().unwrap();
    assert!((from - split / 2.0).abs() < 1e-6, "{from} vs {split}");
    // the winner is the best on validation among the finalists (those with whole-trace runs)
    let trials: Vec<&Value> = doc["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["runs"].as_array().unwrap().is_empty())
        .collect();
    let valid = |t: &Value| {
        let r = &t["runs"][0]["validation"];
        r["hit_tokens"].as_f64().unwrap() / r["prompt_tokens"].as_f64().unwrap()
    };
    let best = valid(trials[0]);
    assert!(trials.len() >= 2 && trials.iter().all(|t| valid(t) <= best + 1e-12));

    // WEKA: at the end of its train part no policy can beat LRU (Belady = LRU), so the whole
    // train part is used, and the note says so
    let (_, err, doc) = sweep(
        &["--budget", "3", "--capacities", "1000,2000"],
        "data/traces/weka-agentic",
        dir.path(),
    );
    assert!(err.contains("choosing on the whole train part"), "{err}");
    assert_eq!(doc["validation_from_seconds"].as_f64(), Some(0.0));
}

#[test]
fn infer_conversations_gives_mooncake_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--budget",
        "2",
        "--capacities",
        "1000",
        "--infer-conversations",
    ];
    let (_, err, _) = sweep(
        &args,
        "data/traces/mooncake/synthetic_trace.jsonl",
        dir.path(),
    );
    // 3,993 requests: 2,212 conversations and 1,781 follow-ups (the same rule in Python:
    // docs/policies.md)
    assert!(
        err.contains("2212 conversations, 1781 follow-up requests"),
        "{err}"
    );
    // a trace that has ids keeps them
    let (_, err, _) = sweep(&args, "data/traces/weka-agentic", dir.path());
    assert!(err.contains("has conversation ids; kept them"), "{err}");
}
