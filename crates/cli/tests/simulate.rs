//! CLI tests of `inferencelab simulate`: the real binary on real files.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{repo, simulate_json};

const MOONCAKE: &str = "data/traces/mooncake/synthetic_trace.jsonl";

fn ratios(doc: &Value, key: &str) -> Vec<(String, u64, f64)> {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["policy"].as_str().unwrap().to_string(),
                r["gpu_blocks"].as_u64().unwrap(),
                r[key].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn prefix_lru_on_mooncake_matches_the_reference() {
    // ../shared/data/README.md: with vLLM's prefix semantics LRU gives .0841 / .4239 / .6242
    let mooncake = repo(MOONCAKE);
    let doc = simulate_json(&[
        "--input-file",
        mooncake.to_str().unwrap(),
        "--eviction-policy",
        "lru",
        "--gpu-blocks",
        "1000,10000,30000",
        "--no-cpu-tier",
        "--no-pinning",
        "--gpu-model",
        "abstract",
    ]);
    let got: Vec<f64> = ratios(&doc, "block_hit_ratio")
        .iter()
        .map(|r| r.2)
        .collect();
    let want: [f64; 3] = [0.0841, 0.4239, 0.6242];
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (g * 1e4).round(),
            (w * 1e4).round(),
            "got {got:?}, want {want:?}"
        );
    }
    let r0 = &doc["results"][0];
    for key in [
        "policy",
        "gpu_blocks",
        "block_hit_ratio",
        "token_hit_ratio",
        "block_refs",
        "sim_seconds",
    ] {
        assert!(!r0[key].is_null(), "result lacks {key}");
    }
    assert_eq!(r0["block_refs"], 121_877);
}

#[test]
fn any_semantics_on_mooncake_matches_libcachesim_for_lru_and_ideal() {
    let mooncake = repo(MOONCAKE);
    let doc = simulate_json(&[
        "--input-file",
        mooncake.to_str().unwrap(),
        "--eviction-policy",
        "lru,ideal",
        "--gpu-blocks",
        "1000,10000,30000",
        "--no-cpu-tier",
        "--no-pinning",
        "--hit-semantics",
        "any",
    ]);
    let got = ratios(&doc, "block_hit_ratio");
    let want: [f64; 6] = [0.0825, 0.4235, 0.6242, 0.6396, 0.6396, 0.6396];
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.2 * 1e4).round(), (w * 1e4).round(), "{g:?} vs {w}");
    }
}

fn simulate_err(input: &std::path::Path, extra: &[&str]) -> String {
    let out = common::bin()
        .arg("simulate")
        .arg("--input-file")
        .arg(input)
        .args(["--gpu-blocks", "100", "--output"])
        .arg(input.with_extension("out.json"))
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "should fail cleanly");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_inputs_give_clear_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    assert!(simulate_err(&empty, &[]).contains("empty"));

    // gzip is read since issue 19: a broken one says so
    let broken_gz = dir.path().join("trace.jsonl.gz");
    std::fs::write(&broken_gz, [0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe, 0x00, 0x01]).unwrap();
    assert!(simulate_err(&broken_gz, &[]).contains("corrupt or truncated gzip"));
    let binary = dir.path().join("trace.bin");
    std::fs::write(&binary, [0x7f, b'E', b'L', b'F', 0xff, 0xfe, 0x00, 0x01]).unwrap();
    assert!(simulate_err(&binary, &[]).contains("binary"));

    let truncated = dir.path().join("cut.jsonl");
    std::fs::write(
        &truncated,
        "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [0]}\n\
         {\"timestamp\": 1, \"input_length\": 10, \"output_le",
    )
    .unwrap();
    let err = simulate_err(&truncated, &["--input-format", "mooncake"]);
    assert!(err.contains("cut.jsonl:2"), "{err}");

    let backwards = dir.path().join("back.jsonl");
    std::fs::write(
        &backwards,
        "{\"timestamp\": 5, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [0]}\n\
         {\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [0]}\n",
    )
    .unwrap();
    let err = simulate_err(&backwards, &[]);
    assert!(
        err.contains("back.jsonl:2") && err.contains("back in time"),
        "{err}"
    );
}

#[test]
fn refining_an_id_trace_is_refused_with_the_fix() {
    let err = simulate_err(&repo(MOONCAKE), &["--block-size", "16", "--no-cpu-tier"]);
    assert!(
        err.contains("never refined") && err.contains("512"),
        "{err}"
    );
}

#[test]
fn skip_invalid_counts_skipped_records() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.jsonl");
    std::fs::write(
        &f,
        "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 1, \"hash_ids\": [0, 1]}\n\
         garbage\n\
         {\"timestamp\": 1, \"input_length\": 600, \"output_length\": 1, \"hash_ids\": [0, 1]}\n",
    )
    .unwrap();
    let doc = simulate_json(&[
        "--input-file",
        f.to_str().unwrap(),
        "--gpu-blocks",
        "10",
        "--no-cpu-tier",
        "--skip-invalid",
    ]);
    assert_eq!(doc["input"]["skipped_records"], 1);
    assert_eq!(doc["input"]["requests"], 2);
    // both blocks are cached, but vLLM looks up at most floor(599/512) = 1 block
    assert_eq!(doc["results"][0]["gpu_hit_blocks"], 1);
    assert_eq!(doc["results"][0]["gpu_hit_tokens"], 512);
}

#[test]
fn without_a_gpu_size_fractions_of_the_working_set_are_simulated_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::bin()
        .current_dir(dir.path())
        .args([
            "simulate",
            "--json",
            "-p",
            "lru",
            "--no-cpu-tier",
            "--input-file",
        ])
        .arg(repo(MOONCAKE))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no --gpu-blocks/--gpu-cache-gb given"),
        "{stderr}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let caps: Vec<u64> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["gpu_blocks"].as_u64().unwrap())
        .collect();
    assert_eq!(caps.len(), 4, "{caps:?}");
    assert!(caps.windows(2).all(|w| w[0] < w[1]), "{caps:?}");
    // The largest holds every distinct block: LRU then reaches the ideal.
    let last = doc["results"].as_array().unwrap().last().unwrap();
    let ideal = common::bin()
        .current_dir(dir.path())
        .args([
            "simulate",
            "--json",
            "-p",
            "ideal",
            "--no-cpu-tier",
            "--gpu-blocks",
            "1",
            "--input-file",
        ])
        .arg(repo(MOONCAKE))
        .output()
        .unwrap();
    let ideal: Value = serde_json::from_slice(&ideal.stdout).unwrap();
    assert_eq!(
        last["token_hit_ratio"],
        ideal["results"][0]["token_hit_ratio"]
    );
}

#[test]
fn table_output_names_policies_and_capacities() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::bin()
        .args(["simulate", "--input-file"])
        .arg(repo(MOONCAKE))
        .args([
            "-p",
            "lru,ideal",
            "--gpu-cache-gb",
            "8",
            "--cpu-cache-gb",
            "16",
            "-q",
            "--output",
        ])
        .arg(dir.path().join("s.json"))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 8 GiB of Qwen3-8B KV at 512-token blocks = 8 * 2^30 / (147456 * 512) = 113 blocks
    assert!(stdout.contains("lru") && stdout.contains("113"), "{stdout}");
    assert!(stdout.contains("ideal (inf)"), "{stdout}");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("s.json")).unwrap()).unwrap();
    let lru = &doc["results"][0];
    assert!(
        lru["cpu_hit_tokens"].as_u64().unwrap() > 0,
        "the CPU tier serves hits at 16 GiB"
    );
    assert!(
        lru["bytes_loaded_from_cpu"].as_u64().unwrap()
            == lru["cpu_hit_tokens"].as_u64().unwrap() * 147_456
    );
}

#[test]
fn mrc_one_pass_curve_agrees_with_point_simulations() {
    for semantics in ["prefix", "any"] {
        let out = common::bin()
            .args(["mrc", "--input-file"])
            .arg(repo(MOONCAKE))
            .args([
                "--gpu-blocks",
                "1000,10000,30000",
                "--check",
                "--json",
                "--hit-semantics",
                semantics,
            ])
            .output()
            .unwrap();
        common::assert_ok(&out);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: Vec<f64> = doc["curve"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["block_hit_ratio"].as_f64().unwrap() * 1e4).round())
            .collect();
        let want = if semantics == "prefix" {
            [841.0, 4239.0, 6242.0]
        } else {
            [825.0, 4235.0, 6242.0]
        };
        assert_eq!(got, want, "{semantics}");
    }
}

// --- the smart policies: --scorer-config, --lightgbm-model, LRU and Belady on the same run

const WEKA: &str = "data/traces/weka-agentic";

/// Every comparison row's gap closed is (P - LRU) / (Belady - LRU) of the result rows of the
/// same run.
fn check_comparisons(doc: &Value, policy: &str, capacities: &[u64]) {
    let rows = ratios(doc, "token_hit_ratio");
    let hit = |p: &str, cap: u64| {
        rows.iter()
            .find(|(q, c, _)| q == p && *c == cap)
            .unwrap_or_else(|| panic!("{p} at {cap} blocks missing from the run"))
            .2
    };
    let cmp = doc["comparisons"].as_array().expect("comparisons");
    assert_eq!(cmp.len(), capacities.len());
    for &cap in capacities {
        let c = cmp
            .iter()
            .find(|c| c["policy"] == policy && c["gpu_blocks"] == cap)
            .unwrap();
        let (p, lru, belady) = (hit(policy, cap), hit("lru", cap), hit("belady", cap));
        assert_eq!(c["token_hit_ratio"].as_f64().unwrap(), p);
        assert_eq!(c["lru_token_hit_ratio"].as_f64().unwrap(), lru);
        assert_eq!(c["belady_token_hit_ratio"].as_f64().unwrap(), belady);
        assert!(belady > lru, "Belady beats LRU at {cap} blocks on WEKA");
        let want = (p - lru) / (belady - lru);
        assert!((c["gap_closed"].as_f64().unwrap() - want).abs() < 1e-12);
        // the judge's share is the result row's: of the disagreements, those the prediction
        // decided (an adaptive policy always has a judge)
        let row = doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["policy"] == policy && r["gpu_blocks"] == cap)
            .unwrap();
        let j = &row["eviction_judge"];
        let (by_prediction, by_lru) = (
            j["decided_by_prediction"].as_u64().expect("a judge"),
            j["decided_by_lru"].as_u64().unwrap(),
        );
        assert_eq!(c["disagreements"].as_u64(), Some(by_prediction + by_lru));
        assert!(
            by_prediction + by_lru > 0,
            "{policy} at {cap}: the experts never disagreed"
        );
        let share = by_prediction as f64 / (by_prediction + by_lru) as f64;
        assert!((c["prediction_decided"].as_f64().unwrap() - share).abs() < 1e-12);
    }
}

#[test]
fn conversation_aware_takes_a_scorer_config_and_runs_beside_lru_and_belady() {
    let doc = simulate_json(&[
        "-i",
        repo(WEKA).to_str().unwrap(),
        "-p",
        "conversation_aware",
        "--scorer-config",
        repo("configs/scorer_weka.yaml").to_str().unwrap(),
        "--gpu-blocks",
        "1000,3000",
        "--no-cpu-tier",
        "--no-pinning",
        "--gpu-model",
        "abstract",
        "-q",
    ]);
    check_comparisons(&doc, "conversation_aware", &[1000, 3000]);
    // the scorer file changes the decisions: the defaults give other numbers
    let defaults = simulate_json(&[
        "-i",
        repo(WEKA).to_str().unwrap(),
        "-p",
        "conversation-aware",
        "--gpu-blocks",
        "1000,3000",
        "--no-cpu-tier",
        "--no-pinning",
        "--gpu-model",
        "abstract",
        "-q",
    ]);
    assert_ne!(
        doc["comparisons"], defaults["comparisons"],
        "--scorer-config is used"
    );
}

#[test]
fn lightgbm_takes_a_python_trained_model() {
    let doc = simulate_json(&[
        "-i",
        repo(WEKA).to_str().unwrap(),
        "-p",
        "lightgbm,lru",
        "--lightgbm-model",
        repo("crates/cache/tests/fixtures/lightgbm/model_regression.txt")
            .to_str()
            .unwrap(),
        "--gpu-blocks",
        "1000",
        "--no-cpu-tier",
        "--no-pinning",
        "--gpu-model",
        "abstract",
        "-q",
    ]);
    check_comparisons(&doc, "lightgbm", &[1000]);
    // lru was asked for: it runs once
    let lru_rows = ratios(&doc, "token_hit_ratio")
        .into_iter()
        .filter(|(p, _, _)| p == "lru")
        .count();
    assert_eq!(lru_rows, 1);
}

#[test]
fn scorer_config_errors_name_the_file_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad_scorer.yaml");
    std::fs::write(&bad, "scale: 1.0\nw_bogus: 2\n").unwrap();
    let out = common::bin()
        .args(["simulate", "-i"])
        .arg(repo(WEKA))
        .args([
            "-p",
            "conversation_aware",
            "--gpu-blocks",
            "1000",
            "--scorer-config",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad_scorer.yaml") && err.contains("w_bogus"),
        "{err}"
    );
    // a scorer for a run without conversation_aware is a mistake, not ignored
    let out = common::bin()
        .args(["simulate", "-i"])
        .arg(repo(WEKA))
        .args(["-p", "lru", "--gpu-blocks", "1000", "--scorer-config"])
        .arg(repo("configs/scorer_default.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("conversation_aware"));
}

/// `simulate` of `conversation_aware` (beside LRU and Belady) on a bundled trace at one GPU size,
/// GPU tier only, with a scorer file or the defaults; its stdout (the summary goes to `dir`).
fn simulate_conversation_aware(
    trace: &str,
    gpu_blocks: &str,
    scorer: Option<&Path>,
    dir: &Path,
) -> String {
    let mut cmd = common::bin();
    cmd.args(["simulate", "-i"]).arg(repo(trace)).args([
        "-p",
        "conversation_aware",
        "--gpu-blocks",
        gpu_blocks,
        "--no-cpu-tier",
        "-q",
        "--output",
    ]);
    cmd.arg(dir.join("s.json"));
    if let Some(s) = scorer {
        cmd.arg("--scorer-config").arg(s);
    }
    let out = cmd.output().unwrap();
    common::assert_ok(&out);
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn the_comparison_table_says_how_often_the_judge_let_the_prediction_decide() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("alone.yaml");
    std::fs::write(&alone, "adaptive: false\n").unwrap();
    let run = |scorer: Option<&Path>| {
        let stdout = simulate_conversation_aware(WEKA, "1000", scorer, dir.path());
        let row = stdout
            .lines()
            .rfind(|l| l.starts_with("conversation_aware"))
            .unwrap_or_else(|| panic!("no comparison row: {stdout}"))
            .to_string();
        assert!(stdout.contains("prediction_decided"), "{stdout}");
        row
    };
    // the defaults judge: "<share>% of <disagreements>"
    let judged = run(None);
    let cell = judged.split_whitespace().rev().take(3).collect::<Vec<_>>();
    assert!(
        cell[1] == "of" && cell[2].ends_with('%') && cell[0].parse::<u64>().unwrap() > 0,
        "{judged}"
    );
    // the prediction alone has no judge
    let alone_row = run(Some(&alone));
    assert!(alone_row.ends_with(" -"), "{alone_row}");
}

#[test]
fn simulate_says_when_the_waiting_queue_had_a_part_in_the_gain() {
    // Mooncake's engine falls behind at the default prefill rate: requests wait, and the
    // defaults keep the blocks they will look up; without the queue nothing is said
    let dir = tempfile::tempdir().unwrap();
    let no_queue = dir.path().join("no_queue.yaml");
    std::fs::write(&no_queue, "waiting_queue: false\n").unwrap();
    let run =
        |scorer: Option<&Path>| simulate_conversation_aware(MOONCAKE, "2234", scorer, dir.path());
    let with = run(None);
    let note = with
        .lines()
        .find(|l| l.starts_with("waiting queue: conversation_aware"))
        .unwrap_or_else(|| panic!("no waiting-queue note: {with}"));
    assert!(
        note.contains("requests waited here") && note.contains("waiting_queue: false"),
        "{note}"
    );
    let without = run(Some(&no_queue));
    assert!(!without.contains("waiting queue:"), "{without}");
}
