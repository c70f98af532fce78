//! CLI tests of `inferencelab batch`: resume after a kill, shards merged = one run, bad points.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::repo;

fn grid(dir: &Path, policies: &str, extra: &str) -> PathBuf {
    grid_sizes(dir, policies, "[500, 1000, 2000, 5000, 10000]", extra)
}

fn grid_sizes(dir: &Path, policies: &str, gpu_blocks: &str, extra: &str) -> PathBuf {
    let yaml = dir.join("grid.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: t\ntraces:\n  - path: {}\n    name: mooncake\ngpu_blocks: {gpu_blocks}\n\
             cpu_cache_gb: [0, 64]\npolicies: {policies}\n{extra}",
            repo("data/traces/mooncake/synthetic_trace.jsonl").display()
        ),
    )
    .unwrap();
    yaml
}

fn batch(yaml: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    common::bin()
        .args(["batch", "--no-plot", "-q", "--yaml"])
        .arg(yaml)
        .arg("--output-dir")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// The rows of a summary without the wall-clock fields (the only ones that differ run to run).
fn rows(summary: &Path) -> Vec<Value> {
    let doc: Value = serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap();
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let m = r.as_object_mut().unwrap();
            m.remove("sim_seconds");
            m.remove("block_refs_per_second");
            r
        })
        .collect()
}

#[test]
fn shards_merged_equal_one_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = grid(dir.path(), "[lru, ideal]", "");
    let whole = dir.path().join("whole");
    assert!(batch(&yaml, &whole, &[]).status.success());
    let sharded = dir.path().join("sharded");
    assert_eq!(rows(&whole.join("summary.json")).len(), 20);
    for i in 0..3 {
        let out = batch(&yaml, &sharded, &["--shard", &format!("{i}/3")]);
        common::assert_ok(&out);
    }
    let out = common::bin()
        .args(["batch", "merge", "--no-plot", "--yaml"])
        .arg(&yaml)
        .arg("--output-dir")
        .arg(&sharded)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let a = rows(&whole.join("summary.json"));
    let b = rows(&sharded.join("summary.json"));
    assert_eq!(a.len(), 20);
    assert_eq!(a, b);
}

#[test]
fn killed_midway_then_rerun_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let sizes: Vec<String> = (1..=40).map(|i| (i * 250).to_string()).collect();
    let yaml = grid_sizes(
        dir.path(),
        "[lru, ideal, lru]",
        &format!("[{}]", sizes.join(", ")),
        "window_seconds: 30\n",
    );
    let whole = dir.path().join("whole");
    assert!(batch(&yaml, &whole, &[]).status.success());

    let killed = dir.path().join("killed");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("inferencelab"))
        .args(["batch", "--no-plot", "-q", "--threads", "1", "--yaml"])
        .arg(&yaml)
        .arg("--output-dir")
        .arg(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let results = killed.join("results.jsonl");
    let started = Instant::now();
    // wait for the first finished rows, then kill -9 (no chance to clean up)
    loop {
        let n = std::fs::read_to_string(&results)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 2 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait().unwrap();
    let partial = std::fs::read_to_string(&results).unwrap().lines().count();
    // lru listed twice is one point: 2 policies x 40 sizes x 2 CPU sizes = 160 points
    assert!(
        partial < 160,
        "the kill came too late to test resuming ({partial} rows)"
    );

    let out = batch(&yaml, &killed, &[]);
    common::assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already done (resumed)"), "{stderr}");
    assert_eq!(
        rows(&whole.join("summary.json")),
        rows(&killed.join("summary.json"))
    );
}

#[test]
fn a_bad_point_is_reported_and_the_others_finish() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = grid(dir.path(), "[lru, {name: lru, bogus: 1}, nosuchpolicy]", "");
    let out_dir = dir.path().join("out");
    let out = batch(&yaml, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown parameter 'bogus'"), "{stderr}");
    assert!(stderr.contains("nosuchpolicy"), "{stderr}");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(doc["points"], 30);
    assert_eq!(doc["finished"], 10);
    assert_eq!(doc["failed"], 20);
}

#[test]
fn a_changed_grid_reuses_unchanged_points_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let yaml = grid(dir.path(), "[lru]", "");
    assert!(batch(&yaml, &out_dir, &[]).status.success());
    let yaml = grid(dir.path(), "[lru, ideal]", "");
    let out = batch(&yaml, &out_dir, &[]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("grid changed"), "{stderr}");
    assert!(
        stderr.contains("20 points: 10 already done (resumed), 10 run"),
        "{stderr}"
    );
}

#[test]
fn grid_file_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("bad.yaml");
    std::fs::write(
        &yaml,
        "traces: [a.jsonl]\npolicies: [lru]\ngpu_blokcs: [10]\n",
    )
    .unwrap();
    let out = batch(&yaml, &dir.path().join("o"), &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("gpu_blokcs"),
        "{stderr}"
    );
}

#[test]
fn the_slurm_array_script_runs_shards_that_merge_into_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let yaml = grid(
        dir.path(),
        "[lru, ideal]",
        &format!("output_dir: {}\n", out.display()),
    );
    let bin = assert_cmd::cargo::cargo_bin("inferencelab");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // what Slurm sets for tasks 0..=2 of `--array=0-2`
    for i in 0..3 {
        let status = std::process::Command::new("bash")
            .arg(repo("docs/slurm/batch-array.sh"))
            .arg(&yaml)
            .env("PATH", &path)
            .env("SLURM_ARRAY_TASK_ID", i.to_string())
            .env("SLURM_ARRAY_TASK_MIN", "0")
            .env("SLURM_ARRAY_TASK_MAX", "2")
            .env("SLURM_CPUS_PER_TASK", "1")
            .status()
            .unwrap();
        assert!(status.success());
    }
    for i in 0..3 {
        assert!(out.join(format!("shard-{i}-of-3/results.jsonl")).is_file());
    }
    let merged = common::bin()
        .args(["batch", "merge", "--no-plot", "--yaml"])
        .arg(&yaml)
        .output()
        .unwrap();
    common::assert_ok(&merged);
    let whole = dir.path().join("whole");
    assert!(batch(&yaml, &whole, &[]).status.success());
    assert_eq!(
        rows(&out.join("summary.json")),
        rows(&whole.join("summary.json"))
    );
}

#[test]
fn batch_draws_plots_and_the_report_at_the_end_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = grid(dir.path(), "[lru, belady]", "");
    let out = dir.path().join("out");
    let run = common::bin()
        .args(["batch", "-q", "--yaml"])
        .arg(&yaml)
        .arg("--output-dir")
        .arg(&out)
        .output()
        .unwrap();
    common::assert_ok(&run);
    let report = out.join("plots/report.html");
    let html = std::fs::read_to_string(&report).expect("batch writes plots/report.html");
    assert!(html.contains("<svg"), "the report inlines its charts");
    assert!(
        !html.contains("http://") && !html.contains("src=\"https://"),
        "no network fetches"
    );
    let pngs = walk(&out.join("plots"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .count();
    assert!(pngs >= 4, "expected charts, found {pngs} PNGs");

    let quiet = dir.path().join("quiet");
    let run = batch(&yaml, &quiet, &[]);
    assert!(run.status.success());
    assert!(!quiet.join("plots").exists(), "--no-plot draws nothing");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
