//! Hardening (issue 14): no panic, no hang, no lost result, on any input or flag. One test per
//! case: the binary exits with a clear message naming the flag, file or line and the fix, never
//! with a panic; a generous process timeout turns a hang into a failure (not a speed check).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

/// Far beyond what any case takes; only a hang reaches it.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn fixture(name: &str) -> PathBuf {
    repo("crates/trace/tests/fixtures").join(name)
}

fn bin() -> Command {
    let mut c = Command::cargo_bin("inferencelab").unwrap();
    c.timeout(HANG_GUARD);
    c
}

fn run(c: &mut Command) -> (Option<i32>, String, String) {
    let out: Output = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked at"),
        "a panic instead of an error:\n{stderr}"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// The command fails with exit code 2 and every piece of `want` in its message.
fn refused(c: &mut Command, want: &[&str]) -> String {
    let (code, _, stderr) = run(c);
    assert_eq!(
        code,
        Some(2),
        "expected exit 2 (an error), got {code:?}:\n{stderr}"
    );
    for w in want {
        assert!(stderr.contains(w), "missing {w:?} in:\n{stderr}");
    }
    assert!(
        stderr.len() < 4000,
        "the message is too long ({} bytes)",
        stderr.len()
    );
    stderr
}

fn simulate(input: &Path, extra: &[&str], out: &Path) -> Command {
    let mut c = bin();
    c.args(["simulate", "-q", "--input-file"])
        .arg(input)
        .args(extra)
        .arg("--output")
        .arg(out);
    c
}

// ---- typed flags: finite, positive, in range --------------------------------------------------

#[test]
fn simulate_refuses_negative_nan_and_infinite_capacities() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.json");
    let f = fixture("mooncake_small.jsonl");
    for (flag, value) in [
        ("--gpu-cache-gb", "-1"),
        ("--gpu-cache-gb", "nan"),
        ("--cpu-cache-gb", "nan"),
        ("--cpu-cache-gb", "-5"),
        ("--disk-cache-gb", "inf"),
    ] {
        let arg = format!("{flag}={value}");
        refused(
            &mut simulate(&f, &[&arg], &out),
            &[flag, "finite number, 0 or more"],
        );
    }
    assert!(!out.exists(), "no result for a refused run");
}

#[test]
fn simulate_refuses_zero_sizes_and_bad_time_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.json");
    let f = fixture("mooncake_small.jsonl");
    for args in [
        ["--chunk-size", "0"],
        ["--block-size", "0"],
        ["--max-num-seqs", "0"],
        ["--max-num-batched-tokens", "0"],
    ] {
        refused(&mut simulate(&f, &args, &out), &[args[0], "0"]);
    }
    for args in [
        ["--prefill-tokens-per-s", "0"],
        ["--prefill-tokens-per-s", "nan"],
        ["--decode-ms-per-token", "-1"],
        ["--window-seconds", "inf"],
        ["--window-seconds", "0"],
    ] {
        let arg = format!("{}={}", args[0], args[1]);
        refused(&mut simulate(&f, &[&arg], &out), &[args[0], "not allowed"]);
    }
}

#[test]
fn simulate_takes_the_largest_block_count_without_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.json");
    let (code, _, stderr) = run(&mut simulate(
        &fixture("mooncake_small.jsonl"),
        &["--gpu-blocks", "18446744073709551615", "--no-cpu-tier"],
        &out,
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.exists());
}

// ---- bounded derived sizes: time-series windows -------------------------------------------------

#[test]
fn a_tiny_window_is_refused_naming_the_override() {
    let dir = tempfile::tempdir().unwrap();
    refused(
        &mut simulate(
            &fixture("mooncake_small.jsonl"),
            &["--window-seconds", "1e-300", "--gpu-blocks", "100"],
            &dir.path().join("o.json"),
        ),
        &["limit of 100000", "raise --window-seconds"],
    );
}

#[test]
fn a_timestamp_of_1e308_is_refused_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("far.jsonl");
    std::fs::write(
        &trace,
        "{\"timestamp\": 0, \"input_length\": 512, \"output_length\": 1, \"hash_ids\": [1]}\n\
         {\"timestamp\": 1e308, \"input_length\": 512, \"output_length\": 1, \"hash_ids\": [1]}\n",
    )
    .unwrap();
    refused(
        &mut simulate(&trace, &["--gpu-blocks", "10"], &dir.path().join("o.json")),
        &["raise --window-seconds", "timestamps"],
    );
}

#[test]
fn azure_rows_two_thousand_years_apart_are_refused_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("far.csv");
    std::fs::write(
        &trace,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n\
         0023-11-16 18:15:46.0000000,34,6\n\
         2023-11-16 18:15:46.0000000,45,9\n",
    )
    .unwrap();
    refused(
        &mut simulate(&trace, &["--gpu-blocks", "10"], &dir.path().join("o.json")),
        &["raise --window-seconds"],
    );
    // and the override works
    let out = dir.path().join("o.json");
    let (code, _, stderr) = run(&mut simulate(
        &trace,
        &["--gpu-blocks", "10", "--window-seconds", "1e9"],
        &out,
    ));
    assert_eq!(code, Some(0), "{stderr}");
}

// ---- non-UTF-8 paths in result JSON -------------------------------------------------------------

#[cfg(unix)]
fn non_utf8(dir: &Path, name: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    dir.join(std::ffi::OsStr::from_bytes(name))
}

#[cfg(unix)]
#[test]
fn simulate_and_mrc_take_a_non_utf8_input_path() {
    let dir = tempfile::tempdir().unwrap();
    let input = non_utf8(dir.path(), b"bad\xff.jsonl");
    std::fs::copy(fixture("mooncake_small.jsonl"), &input).unwrap();
    let out = dir.path().join("o.json");
    let (code, _, stderr) = run(&mut simulate(&input, &["--gpu-blocks", "100"], &out));
    assert_eq!(code, Some(0), "{stderr}");
    let doc: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        doc["input"]["path"].as_str().unwrap(),
        input.to_string_lossy()
    );
    let mrc = dir.path().join("mrc.json");
    let (code, _, stderr) = run(bin()
        .args(["mrc", "--input-file"])
        .arg(&input)
        .arg("--output")
        .arg(&mrc));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(mrc.exists());
}

#[cfg(unix)]
#[test]
fn sweep_and_train_take_a_non_utf8_input_path() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = non_utf8(dir.path(), b"weka\xff");
    std::fs::create_dir(&sessions).unwrap();
    for f in ["a.json", "b.json"] {
        std::fs::copy(fixture("tiny_weka").join(f), sessions.join(f)).unwrap();
    }
    let (code, _, stderr) = run(bin()
        .current_dir(dir.path())
        .args([
            "sweep",
            "-q",
            "--budget",
            "2",
            "--capacities",
            "4",
            "--input-file",
        ])
        .arg(&sessions)
        .arg("--output")
        .arg(dir.path().join("best.yaml")));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = run(bin()
        .current_dir(dir.path())
        .args([
            "train",
            "-q",
            "--num-iterations",
            "2",
            "--capacities",
            "4",
            "--input-file",
        ])
        .arg(&sessions)
        .arg("--output")
        .arg(non_utf8(dir.path(), b"model\xfe.txt")));
    assert_eq!(code, Some(0), "{stderr}");
}

// ---- input files: regular files or `-` ----------------------------------------------------------

#[cfg(unix)]
#[test]
fn a_fifo_input_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("trace.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    refused(
        &mut simulate(&fifo, &[], &dir.path().join("o.json")),
        &["named pipe (FIFO)", "not a regular file", "`-`"],
    );
}

#[cfg(unix)]
#[test]
fn dev_zero_is_refused_not_read_until_memory_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    refused(
        &mut simulate(Path::new("/dev/zero"), &[], &dir.path().join("o.json")),
        &["/dev/zero", "character device"],
    );
}

#[test]
fn stdin_is_read_with_dash() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.json");
    let mut c = simulate(Path::new("-"), &["--gpu-blocks", "100"], &out);
    c.pipe_stdin(fixture("mooncake_small.jsonl")).unwrap();
    let (code, _, stderr) = run(&mut c);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.exists());
}

// ---- trace content ------------------------------------------------------------------------------

#[test]
fn a_native_prompt_length_that_disagrees_with_its_tokens_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("bad.native.jsonl");
    std::fs::write(
        &trace,
        "{\"inferencelab_trace\": 1, \"block_size\": null, \"partial_last_block\": false, \
         \"content\": \"tokens\", \"source\": \"x\"}\n\
         {\"t\":0.0,\"in\":4000000000,\"out\":1,\"tokens\":[1,2,3]}\n",
    )
    .unwrap();
    refused(
        &mut simulate(&trace, &[], &dir.path().join("o.json")),
        &["bad.native.jsonl:2", "in = 4000000000", "3 tokens"],
    );
}

#[test]
fn an_azure_bad_header_error_is_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("huge.csv");
    std::fs::write(&trace, format!("{}\n1,2,3\n", "x,".repeat(2_000_000))).unwrap();
    let stderr = refused(
        &mut simulate(
            &trace,
            &["--input-format", "azure"],
            &dir.path().join("o.json"),
        ),
        &["huge.csv:1", "no timestamp column", "(4000000 bytes)"],
    );
    assert!(stderr.len() < 1000, "{}", stderr.len());
}
