//! Issue 15, the newcomer's path: each numbered item the real binary (or the README) can show.
//! 1. the README states the first run's measured time and how to put the binary on PATH;
//! 2. the original workflow's map and its configs, and the outputs/{logs,simulation,plots} layout;
//! 3. `simulate` runs with other flags do not overwrite each other, and `plot` draws them together;
//! 4. `bench` exits 0 when every request succeeded but the server log has no request lines;
//! 5. the demo's figures each say what they divide by, and the same share has the same figure;
//! 6. help texts, single error messages, progress lines when stderr is not a terminal;
//! 7. a short README, with serve/bench/convert/experiment details under docs/.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

mod common;
use common::{bin, repo};

fn readme() -> String {
    std::fs::read_to_string(repo("README.md")).unwrap()
}

/// Run in `dir`; (status ok, stdout, stderr).
fn run_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let o = bin()
        .current_dir(dir)
        .args(args)
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A small conversation CSV (the demo generator's, seeded) in `dir`.
fn small_csv(dir: &Path, conversations: &str) -> PathBuf {
    let o = bin()
        .args(["convert", "--generate-demo", conversations, "--seed", "3"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let csv = dir.join("chats.csv");
    std::fs::write(&csv, o.stdout).unwrap();
    csv
}

#[test]
fn item1_readme_states_the_first_run_and_how_to_install() {
    let r = readme();
    assert!(r.contains("cargo run --release -- bench"));
    assert!(
        r.contains("cargo install --path crates/cli"),
        "the README says how to put `inferencelab` on PATH"
    );
    // the first run's time is stated as measured, with the machine it was measured on
    let quick = &r[r.find("## Quick start").unwrap()..];
    let quick = &quick[..quick[3..].find("\n## ").unwrap_or(quick.len())];
    assert!(
        quick.to_lowercase().contains("measured") && quick.contains("2 cores"),
        "{quick}"
    );
    // the CI runs the README's test command
    let ci = std::fs::read_to_string(repo(".ci/run")).unwrap();
    assert!(r.contains("cargo test --workspace") && ci.contains("cargo test --workspace"));
}

#[test]
fn item2_the_original_scripts_map_to_commands_and_the_configs_exist() {
    let r = readme();
    for script in [
        "benchmark_runner.py",
        "cache_simulator.py",
        "cache_replay.py",
        "csv_to_logs_converter.py",
        "scorer_sweep.py",
        "simulator_runner.py",
        "simulation_plotter.py",
    ] {
        assert!(r.contains(script), "the README maps {script}");
    }
    // every configs/*.yaml the README names exists
    let mut named = 0;
    for (i, _) in r.match_indices("configs/") {
        let rest = &r[i..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "/_-.".contains(c)))
            .unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches('.');
        // the prototype's own file is named in the map, not shipped
        if path.ends_with(".yaml") && !path.contains('*') && !path.contains("aws_offpeak") {
            named += 1;
            assert!(repo(path).exists(), "README names {path}, which is missing");
        }
    }
    assert!(named >= 3, "{named}");
    // the experiment YAML holds what the prototype's docs list: model, cache sizes, request
    // rates, dataset paths, eviction strategies
    let exp = std::fs::read_to_string(repo("configs/qwen-8b.yaml")).unwrap();
    for key in [
        "model:",
        "max_local_cpu_size:",
        "request_rates:",
        "path:",
        "cache_policy:",
    ] {
        assert!(exp.contains(key), "configs/qwen-8b.yaml lacks {key}");
    }
}

/// The original workflow, in a fresh working directory: convert into outputs/logs, simulate
/// into outputs/simulation, batch with the shipped config (results in outputs/simulation,
/// charts in outputs/plots).
#[test]
fn item2_the_original_workflow_lands_in_outputs_logs_simulation_plots() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = small_csv(d, "6");
    let (ok, _, err) = run_in(
        d,
        &[
            "convert",
            csv.to_str().unwrap(),
            "qwen-8b",
            "--tokens-per-second",
            "100",
            "--output-dir",
            "outputs/logs/",
        ],
    );
    assert!(ok, "{err}");
    assert!(d.join("outputs/logs/server_qwen-8b.log").is_file());
    std::fs::create_dir_all(d.join("configs")).unwrap();
    std::fs::copy(
        repo("configs/simulation_test_data.yaml"),
        d.join("configs/simulation_test_data.yaml"),
    )
    .unwrap();
    let (ok, _, err) = run_in(
        d,
        &[
            "batch",
            "--yaml",
            "configs/simulation_test_data.yaml",
            "--threads",
            "2",
        ],
    );
    assert!(ok, "{err}");
    assert!(d
        .join("outputs/simulation/test_data/summary.json")
        .is_file());
    assert!(
        d.join("outputs/plots/test_data/report.html").is_file(),
        "batch draws into outputs/plots/<name>: {err}"
    );
    assert!(!d.join("outputs/simulation/test_data/plots").exists());
}

#[test]
fn item3_simulate_runs_with_other_policies_do_not_overwrite_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trace = repo("data/traces/mooncake/synthetic_trace.jsonl");
    let mut written = Vec::new();
    for policy in ["lru", "fifo", "lru"] {
        let (ok, _, err) = run_in(
            d,
            &[
                "simulate",
                "-q",
                "--input-file",
                trace.to_str().unwrap(),
                "--eviction-policy",
                policy,
                "--gpu-blocks",
                "500",
                "--no-cpu-tier",
            ],
        );
        assert!(ok, "{err}");
        let line = err.lines().find(|l| l.starts_with("wrote ")).unwrap();
        let path = line["wrote ".len()..]
            .split(';')
            .next()
            .unwrap()
            .to_string();
        assert!(d.join(&path).is_file(), "{path}");
        written.push(path);
    }
    assert_ne!(written[0], written[1], "another policy, another file");
    assert_eq!(
        written[0], written[2],
        "the same command replaces its own file"
    );
    // another size of the same policy is another file too
    let (ok, _, err) = run_in(
        d,
        &[
            "simulate",
            "-q",
            "--input-file",
            trace.to_str().unwrap(),
            "--gpu-blocks",
            "900",
            "--no-cpu-tier",
        ],
    );
    assert!(ok, "{err}");
    assert!(!err.contains(&written[0]), "{err}");
    // plot takes them all: both policies in one chart set
    let (ok, _, err) = run_in(
        d,
        &[
            "plot",
            "--summary-file",
            &written[0],
            &written[1],
            "--output-dir",
            "plots",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("from 2 files"), "{err}");
    let html = std::fs::read_to_string(d.join("plots/report.html")).unwrap();
    assert!(html.contains("fifo") && html.contains("lru"));
}

/// The reproduction: `serve` without --enable-log-requests, then `bench --server-log`:
/// every request succeeds, the log has no request lines, bench exits 0 with a warning.
#[test]
fn item4_bench_succeeds_when_the_server_log_has_no_request_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("s.log");
    let mut child = StdCommand::new(common::BIN)
        .args([
            "serve",
            "--port",
            "0",
            "--enable-prompt-tokens-details",
            "--time-scale",
            "100",
            "--log-file",
        ])
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = format!(
        "http://{}",
        common::listening_addr(&mut stderr).expect("serve exited")
    );
    // keep draining serve's stderr so it never blocks on a full pipe
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let o = bin()
        .args([
            "bench",
            "-q",
            "--base-url",
            &addr,
            "--num-prompts",
            "5",
            "--random-input-len",
            "64",
            "--random-output-len",
            "4",
            "--metrics-interval",
            "0",
            "--output-dir",
        ])
        .arg(dir.path().join("out"))
        .arg("--server-log")
        .arg(&log)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Successful requests:                     5"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: --server-log") && err.contains("no per-request attribution"),
        "{err}"
    );
}

/// One definition per figure: every share on the demo's screen names what it divides by, and
/// the share of the prompt LMCache supplied is the same figure in the server section and in the
/// per-request attribution.
#[test]
fn item5_the_demo_labels_each_figure_and_agrees_with_itself() {
    let dir = tempfile::tempdir().unwrap();
    let csv = small_csv(dir.path(), "8");
    let o = bin()
        .args([
            "bench",
            "-q",
            "--demo-seconds",
            "2",
            "--demo-gpu-blocks",
            "300",
            "--metrics-interval",
            "0.2",
        ])
        .arg("--input-file")
        .arg(&csv)
        .arg("--output-dir")
        .arg(dir.path().join("out"))
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for label in [
        "Cached tokens (% of prompt):",
        "GPU prefix cache hits (% of prompt):",
        "LMCache loaded (% of prompt):",
        "LMCache loaded (% of GPU misses):",
        "GPU prefix cache tokens (% of prompt):",
        "LMCache loaded tokens (% of prompt):",
    ] {
        assert!(out.contains(label), "{label} missing:\n{out}");
    }
    assert!(!out.contains("External (LMCache) hit rate"), "{out}");
    let value_after = |label: &str| -> (f64, u64) {
        let line = out.lines().find(|l| l.starts_with(label)).unwrap();
        let rest = line[label.len()..].trim();
        // "33.12 (465488/1405529...)" or "465488 (33.1)"
        let nums: Vec<f64> = rest
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        if rest.starts_with(|c: char| c.is_ascii_digit()) && rest.contains('/') {
            (nums[0], nums[1] as u64)
        } else {
            (nums[1], nums[0] as u64)
        }
    };
    let (server_pct, server_tokens) = value_after("LMCache loaded (% of prompt):");
    let (attr_pct, attr_tokens) = value_after("LMCache loaded tokens (% of prompt):");
    assert_eq!(server_tokens, attr_tokens, "{out}");
    assert!((server_pct - attr_pct).abs() < 0.06, "{out}");
}

/// Every option of every subcommand has a help text.
/// Every subcommand, for the tests that read each one's `--help`.
const SUBCOMMANDS: [&str; 11] = [
    "simulate",
    "batch",
    "mrc",
    "experiment",
    "plot",
    "serve",
    "sweep",
    "train",
    "convert",
    "bench",
    "replay",
];

/// Every page a help text points to exists, and none points into the README by a section's
/// name (its details moved to docs/ in issue 15: `convert --help` sent readers to a README
/// section "inferencelab convert" that no longer existed).
#[test]
fn item6_help_texts_point_to_pages_that_exist() {
    let mut named = 0;
    for cmd in SUBCOMMANDS {
        let o = bin().args([cmd, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        for (i, _) in text.match_indices(".md") {
            let start = text[..i]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || "/_-.".contains(c)))
                .map_or(0, |j| j + 1);
            let path = &text[start..i + 3];
            named += 1;
            assert!(
                repo(path).is_file(),
                "`{cmd} --help` names {path}, which is missing"
            );
        }
        assert!(
            !text.contains("README,"),
            "`{cmd} --help` points to a README section: {text}"
        );
    }
    assert!(named >= 5, "{named}");
}

#[test]
fn item6_every_option_has_help() {
    for cmd in SUBCOMMANDS {
        let o = bin().args([cmd, "--help"]).output().unwrap();
        assert!(o.status.success());
        let text = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let is_option = l.starts_with("  ") && t.starts_with('-') && !l.starts_with("       ");
            if !is_option || t.starts_with("-h, --help") || t.starts_with("-V, --version") {
                continue;
            }
            // the text follows on the same line after two spaces, or (long help) on the
            // next, deeper-indented line
            let same_line = t
                .split_once("  ")
                .is_some_and(|(_, h)| !h.trim().is_empty());
            let next = lines.get(i + 1).copied().unwrap_or("");
            assert!(
                same_line || (next.starts_with("          ") && !next.trim().is_empty()),
                "`{cmd} --help`: {t} has no help text"
            );
        }
    }
    // replay needs a live server and a workload: no demo advertised
    let o = bin().args(["replay", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("the demo"), "{text}");
    assert!(text.contains("--base-url <BASE_URL>") && text.contains("Usage: inferencelab replay"));
    let o = bin()
        .args(["replay", "--input-file", "x.log", "--gpu-blocks", "10"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--base-url"));
}

#[test]
fn item6_a_missing_file_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let missing = missing.to_str().unwrap();
    let yaml = dir.path().join("nope.yaml");
    for args in [
        vec!["simulate", "--input-file", missing],
        vec!["mrc", "--input-file", missing],
        vec!["batch", "--yaml", yaml.to_str().unwrap()],
        vec!["plot", "--summary-file", missing],
    ] {
        let o = bin().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{args:?}: {err}"
        );
    }
}

/// stderr is a pipe here, not a terminal: long jobs still say how far they are.
#[test]
fn item6_progress_lines_when_stderr_is_not_a_terminal() {
    let trace = repo("data/traces/mooncake/synthetic_trace.jsonl");
    let o = bin()
        .args(["simulate", "--no-cpu-tier", "--gpu-blocks", "100,200,300"])
        .arg("--input-file")
        .arg(&trace)
        .arg("--output")
        .arg(tempfile::tempdir().unwrap().path().join("s.json"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("simulate: 0/3 points [0 s]"), "{err}");
    // --quiet silences it
    let o = bin()
        .args([
            "simulate",
            "-q",
            "--no-cpu-tier",
            "--gpu-blocks",
            "100",
            "--output",
        ])
        .arg(tempfile::tempdir().unwrap().path().join("s.json"))
        .arg("--input-file")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains("points ["));
}

#[test]
fn item7_the_readme_is_short_and_the_details_live_in_docs() {
    let r = readme();
    assert!(
        r.len() < 20_000,
        "README.md is {} bytes: move details to docs/",
        r.len()
    );
    for page in [
        "docs/serve.md",
        "docs/bench.md",
        "docs/convert.md",
        "docs/experiments.md",
        "docs/simulate.md",
        "docs/batch.md",
    ] {
        assert!(repo(page).is_file(), "{page}");
        assert!(r.contains(&format!("({page})")), "README links {page}");
    }
}
