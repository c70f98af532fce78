//! Hardening (issue 14): no panic, no hang, no lost result, on any input or flag. One test per
//! case: the binary exits with a clear message naming the flag, file or line and the fix, never
//! with a panic; a generous process timeout turns a hang into a failure (not a speed check).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

mod common;
use common::{repo, spawn_serve};

/// Far beyond what any case takes; only a hang reaches it.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn fixture(name: &str) -> PathBuf {
    repo("crates/trace/tests/fixtures").join(name)
}

fn bin() -> Command {
    let mut c = common::bin();
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
fn sweep_and_train_refuse_a_bad_prefill_rate() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture("mooncake_small.jsonl");
    for cmd in ["sweep", "train"] {
        for value in ["0", "nan", "-5"] {
            let arg = format!("--prefill-tokens-per-s={value}");
            let mut c = bin();
            c.args([cmd, "-q", "--input-file"])
                .arg(&f)
                .arg(&arg)
                .arg("--output")
                .arg(dir.path().join("out.yaml"));
            refused(&mut c, &["--prefill-tokens-per-s", "not allowed"]);
        }
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

// ---- bench: durations, concurrency, a server that goes away -------------------------------------

#[test]
fn bench_refuses_infinite_and_tiny_durations_and_zero_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, want) in [
        ("--request-timeout", "inf", "seconds from 0 to"),
        ("--connect-timeout", "inf", "seconds from 0 to"),
        ("--duration", "1e30", "seconds from 0 to"),
        ("--metrics-interval", "inf", "seconds from 0 to"),
        ("--metrics-interval", "1e-12", "at least 0.01"),
        ("--max-concurrency", "0", "1 or more"),
        ("--time-scale", "1e-300", "factor from 1e-6 to 1e6"),
        ("--request-rate", "nan", "greater than 0"),
        ("--warmup-connections", "100000", "0..=4096"),
    ] {
        let arg = format!("{flag}={value}");
        refused(
            bin()
                .args(["bench", "--base-url", "http://127.0.0.1:9", "-q", &arg])
                .arg("--output-dir")
                .arg(dir.path()),
            &[flag, want],
        );
    }
}

#[test]
fn bench_survives_a_server_that_rejects_mid_upload_and_writes_its_results() {
    // serve answers 413 once 1,000 bytes of a 14 MB body are in, and closes: the client's next
    // write meets a closed socket (SIGPIPE killed bench here: exit 141, nothing written)
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = spawn_serve(&["--max-request-bytes", "1000"]);
    let (code, _, stderr) = run(bin()
        .args(["bench", "-q", "--base-url"])
        .arg(format!("http://{addr}"))
        .args([
            "--num-prompts",
            "3",
            "--random-input-len",
            "2000000",
            "--random-output-len",
            "1",
            "--output-dir",
        ])
        .arg(dir.path()));
    server.kill().unwrap();
    server.wait().unwrap();
    // every request failed: an error exit, not a SIGPIPE death (code None)
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no request succeeded"), "{stderr}");
    let records = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap();
    assert_eq!(records.lines().count(), 3, "{records}");
    assert!(dir.path().join("result.json").exists());
}

/// Wait for `child` at most `HANG_GUARD` (a hang detector, not a speed check).
fn wait_guarded(child: &mut std::process::Child) -> std::process::ExitStatus {
    let until = std::time::Instant::now() + HANG_GUARD;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("still running after {HANG_GUARD:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bench_against_a_killed_server_fails_fast_instead_of_waiting_the_request_timeout() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = spawn_serve(&[]);
    let mut bench = std::process::Command::new(env!("CARGO_BIN_EXE_inferencelab"))
        .args(["bench", "--base-url"])
        .arg(format!("http://{addr}"))
        .args([
            "--num-prompts",
            "400",
            "--max-concurrency",
            "8",
            "--random-input-len",
            "64",
            "--random-output-len",
            "400",
            "--request-timeout",
            "600",
            "-q",
            "--output-dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // the run has begun once bench names its workload
    let mut err = BufReader::new(bench.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("bench:"), "{line}");
    server.kill().unwrap(); // SIGKILL: no goodbye on any connection
    server.wait().unwrap();
    let status = wait_guarded(&mut bench);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(!rest.contains("panicked at"), "{rest}");
    assert!(
        status.code().is_some(),
        "killed by a signal: {status:?}\n{rest}"
    );
    let records = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap();
    assert_eq!(records.lines().count(), 400, "every request has its record");
    assert!(records.contains("connection_refused"), "{rest}");
    assert!(dir.path().join("result.json").exists());
}

// ---- serve ---------------------------------------------------------------------------------------

#[test]
fn serve_refuses_a_vanishing_time_scale_and_an_infinite_grace() {
    for (flag, value, want) in [
        ("--time-scale", "1e-300", "factor from 1e-6 to 1e6"),
        ("--time-scale", "nan", "factor from 1e-6 to 1e6"),
        ("--shutdown-grace-s", "inf", "seconds from 0 to"),
        ("--gpu-cache-gb", "-1", "finite number, 0 or more"),
        ("--gpu-memory-utilization", "1.5", "at most 1"),
        ("--http-timeout-keep-alive", "nan", "seconds from 0 to"),
    ] {
        let arg = format!("{flag}={value}");
        refused(bin().args(["serve", "--port", "0", &arg]), &[flag, want]);
    }
    refused(
        bin()
            .args(["serve", "--port", "0"])
            .env("LMCACHE_MAX_LOCAL_CPU_SIZE", "nan"),
        &["LMCACHE_MAX_LOCAL_CPU_SIZE=nan", "finite number, 0 or more"],
    );
}

#[test]
fn serve_with_the_smallest_time_scale_stays_healthy() {
    let (mut server, addr) = spawn_serve(&["--time-scale", "1e-6"]);
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    server.kill().unwrap();
    server.wait().unwrap();
}

// ---- closed stdout: quiet exit, results written --------------------------------------------------

#[cfg(unix)]
#[test]
fn simulate_into_a_closed_pipe_dies_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.json");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inferencelab"))
        .args([
            "simulate",
            "-q",
            "--gpu-blocks",
            "100,200,300",
            "--input-file",
        ])
        .arg(fixture("mooncake_small.jsonl"))
        .arg("--output")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader went away (`| head -0`)
    let status = wait_guarded(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!err.contains("panicked at"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(13),
        "SIGPIPE, as other Unix tools: {status:?}"
    );
    assert!(out.exists(), "the results were written before the table");
}

// ---- convert: CSV quoting and times --------------------------------------------------------------

fn convert_refused(csv_text: &str, want: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("chats.csv");
    std::fs::write(&csv, csv_text).unwrap();
    refused(
        bin()
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", dir.path())
            .arg("convert")
            .arg(&csv)
            .arg("qwen-8b")
            .arg("--output-dir")
            .arg(dir.path().join("out")),
        want,
    );
    assert!(!dir.path().join("out").join("chats.log").exists());
}

#[test]
fn convert_refuses_a_stray_quote_inside_a_quoted_field() {
    convert_refused(
        "conversation_id,timestamp,user_message,assistant_response\n\
         c1,0,\"say \"hi\" now\",fine\n",
        &["chats.csv:2", "stray quote", "(\"\")"],
    );
}

#[test]
fn convert_refuses_negative_seconds() {
    convert_refused(
        "conversation_id,timestamp,user_message,assistant_response\n\
         c1,-5,hello,fine\n",
        &["chats.csv:2", "negative time"],
    );
}

// ---- YAML values: a model file ------------------------------------------------------------------

#[test]
fn a_model_yaml_with_absurd_sizes_is_refused_not_overflowed() {
    let dir = tempfile::tempdir().unwrap();
    for (body, want) in [
        (
            "num_layers: 4000000000\nnum_kv_heads: 4000000000",
            "beyond 4 GiB",
        ),
        ("num_layers: 0\nnum_kv_heads: 8", "num_layers is 0"),
    ] {
        let model = dir.path().join("m.yaml");
        std::fs::write(
            &model,
            format!(
                "name: m\nnum_params: 8.0e9\n{body}\nnum_attention_heads: 32\nhead_dim: 128\n\
                 dtype_bytes: 2\n"
            ),
        )
        .unwrap();
        let m = model.to_str().unwrap();
        refused(
            &mut simulate(
                &fixture("mooncake_small.jsonl"),
                &["--model", m, "--gpu-cache-gb", "1"],
                &dir.path().join("o.json"),
            ),
            &["m.yaml", want],
        );
    }
}

#[test]
fn bench_refuses_a_trace_whose_replay_would_take_years() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("far.jsonl");
    std::fs::write(
        &trace,
        "{\"timestamp\": 0, \"input_length\": 512, \"output_length\": 1, \"hash_ids\": [1]}\n\
         {\"timestamp\": 1e308, \"input_length\": 512, \"output_length\": 1, \"hash_ids\": [1]}\n",
    )
    .unwrap();
    refused(
        bin()
            .args([
                "bench",
                "-q",
                "--base-url",
                "http://127.0.0.1:9",
                "--model",
                "m",
            ])
            .arg("--input-file")
            .arg(&trace)
            .arg("--output-dir")
            .arg(dir.path().join("out")),
        &["far.jsonl", "raise --time-scale, give --duration"],
    );
}

#[cfg(unix)]
#[test]
fn fifo_side_inputs_are_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("side.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let f = fixture("mooncake_small.jsonl");
    let out = dir.path().join("o.json");
    let side = fifo.to_str().unwrap();
    for args in [
        ["-p", "conversation_aware", "--scorer-config", side],
        ["-p", "lightgbm", "--lightgbm-model", side],
        ["-p", "lru", "--model", &format!("{side}.yaml")],
    ] {
        if args[3].ends_with(".yaml") {
            let _ = std::process::Command::new("mkfifo").arg(args[3]).status();
        }
        refused(&mut simulate(&f, &args, &out), &["named pipe (FIFO)"]);
    }
    refused(
        bin().args(["plot", "--summary-file", side]),
        &["--summary-file", "named pipe (FIFO)"],
    );
}

#[test]
fn thread_counts_and_training_knobs_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.json");
    refused(
        &mut simulate(
            &fixture("mooncake_small.jsonl"),
            &["--threads", "100000"],
            &out,
        ),
        &["--threads", "1 to 1024"],
    );
    refused(
        bin().args([
            "bench",
            "--threads",
            "100000",
            "--base-url",
            "http://127.0.0.1:9",
        ]),
        &["--threads", "1 to 1024"],
    );
    for (flag, value, want) in [
        ("--learning-rate", "nan", "greater than 0"),
        ("--num-leaves", "0", "2 or more"),
        ("--threads", "0", "1 to 1024"),
    ] {
        let arg = format!("{flag}={value}");
        refused(
            bin()
                .args(["train", "-q", &arg, "--input-file"])
                .arg(fixture("tiny_weka"))
                .arg("--output")
                .arg(dir.path().join("m.txt")),
            &[flag, want],
        );
    }
    assert!(!dir.path().join("m.txt").exists());
}

// ---- grids: batch and experiment YAML -----------------------------------------------------------

fn write_yaml(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn batch_refuses_a_huge_grid_before_allocating_and_max_points_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let trace = fixture("mooncake_small.jsonl");
    let blocks: Vec<String> = (1..=10_000).map(|n| n.to_string()).collect();
    let chunks: Vec<String> = (1..=1_000).map(|n| (n * 16).to_string()).collect();
    let big = write_yaml(
        dir.path(),
        "big.yaml",
        &format!(
            "traces: [{}]\npolicies: [lru]\ngpu_blocks: [{}]\nchunk_sizes: [{}]\noutput_dir: {}\n",
            trace.display(),
            blocks.join(", "),
            chunks.join(", "),
            out.display()
        ),
    );
    refused(
        bin().args(["batch", "-q", "--no-plot", "--yaml"]).arg(&big),
        &[
            "big.yaml",
            "10000000 points",
            "chunk_sizes 1000 x gpu_blocks 10000",
            "limit of 100000",
            "--max-points 10000000",
        ],
    );
    assert!(!out.exists(), "nothing written for a refused grid");
    let small = write_yaml(
        dir.path(),
        "small.yaml",
        &format!(
            "traces: [{}]\npolicies: [lru, fifo]\ngpu_blocks: [50]\noutput_dir: {}\n",
            trace.display(),
            out.display()
        ),
    );
    refused(
        bin()
            .args(["batch", "-q", "--no-plot", "--max-points", "1", "--yaml"])
            .arg(&small),
        &["2 points (policies 2)", "limit of 1", "--max-points 2"],
    );
    let (code, _, stderr) = run(bin()
        .args(["batch", "-q", "--no-plot", "--max-points", "2", "--yaml"])
        .arg(&small));
    assert_eq!(code, Some(0), "{stderr}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["results"].as_array().unwrap().len(), 2);
    assert_eq!(summary["finished"], 2);
}

#[test]
fn batch_yaml_refuses_negative_and_nan_sizes_instead_of_turning_a_tier_off() {
    let dir = tempfile::tempdir().unwrap();
    let trace = fixture("mooncake_small.jsonl");
    for (key, value) in [
        ("gpu_cache_gb", "-1"),
        ("gpu_cache_gb", ".nan"),
        ("cpu_cache_gb", "-1"),
        ("cpu_cache_gb", ".nan"),
        ("disk_cache_gb", "-1"),
        ("disk_cache_gb", ".inf"),
    ] {
        let gpu = if key == "gpu_cache_gb" {
            ""
        } else {
            "gpu_cache_gb: [1]\n"
        };
        let yaml = write_yaml(
            dir.path(),
            "sizes.yaml",
            &format!(
                "traces: [{}]\npolicies: [lru]\n{gpu}{key}: [{value}]\noutput_dir: {}\n",
                trace.display(),
                dir.path().join("out").display()
            ),
        );
        refused(
            bin()
                .args(["batch", "-q", "--no-plot", "--yaml"])
                .arg(&yaml),
            &["sizes.yaml", key, "finite number, 0 or more"],
        );
    }
    assert!(!dir.path().join("out").exists());
}

/// An experiment file with one existing trace; `vllm`, `lmcache` and `workload` are the insides
/// of those maps (`workload` continues after `request_rates`).
fn experiment_yaml(dir: &Path, vllm: &str, lmcache: &str, workload: &str) -> PathBuf {
    write_yaml(
        dir,
        "exp.yaml",
        &format!(
            "name: h\nmodel: {{hf_id: a/b, registry: qwen-8b}}\nvllm: {{{vllm}}}\n\
             lmcache: {{{lmcache}}}\nworkload: {{traces: [{{path: {}}}], request_rates: [1]\
             {workload}}}\noutput_dir: {}\n",
            fixture("mooncake_small.jsonl").display(),
            dir.join("out").display()
        ),
    )
}

#[test]
fn experiment_yaml_checks_refuse_bad_ports_sizes_times_and_traces_in_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let missing = "traces: [{path: no/such.jsonl}]";
    for (vllm, lmcache, workload, want) in [
        (
            "port_base: 65535",
            "",
            "",
            &["vllm.port_base 65535", "65536", "at most 65534"][..],
        ),
        (
            "",
            "max_local_cpu_size: [.nan]",
            "",
            &["lmcache.max_local_cpu_size", "NaN", "finite"],
        ),
        (
            "",
            "chunk_size: 0",
            "",
            &["lmcache.chunk_size", "at least 1"],
        ),
        (
            "",
            "",
            ", time_limit_s: -5",
            &["workload.time_limit_s", "-5", "above 0"],
        ),
        (
            "",
            "",
            ", repetitions: 20000000",
            &["workload.repetitions 20000000", "--max-points 20000000"],
        ),
    ] {
        let yaml = experiment_yaml(dir.path(), vllm, lmcache, workload);
        refused(
            bin()
                .args(["experiment", "--dry-run", "--gpus", "2", "--yaml"])
                .arg(&yaml),
            want,
        );
    }
    let yaml = experiment_yaml(dir.path(), "", "", "");
    let text = std::fs::read_to_string(&yaml).unwrap();
    let text = text.replace(
        &format!(
            "traces: [{{path: {}}}]",
            fixture("mooncake_small.jsonl").display()
        ),
        missing,
    );
    std::fs::write(&yaml, text).unwrap();
    refused(
        bin().args(["experiment", "--dry-run", "--yaml"]).arg(&yaml),
        &[
            "exp.yaml",
            "workload.traces[0].path",
            "no/such.jsonl",
            "fix the path",
        ],
    );
    assert!(!dir.path().join("out").exists());
}

#[cfg(unix)]
#[test]
fn experiment_dry_run_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // 300 points print far more than a pipe holds, so the runner is still printing when the
    // reader is gone (`experiment --dry-run ... | head -1`)
    let rates: Vec<String> = (1..=300).map(|r| r.to_string()).collect();
    let yaml = experiment_yaml(dir.path(), "", "", "");
    let text = std::fs::read_to_string(&yaml).unwrap().replace(
        "request_rates: [1]",
        &format!("request_rates: [{}]", rates.join(", ")),
    );
    std::fs::write(&yaml, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inferencelab"))
        .args(["experiment", "--dry-run", "--yaml"])
        .arg(&yaml)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = wait_guarded(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!err.contains("panicked at"), "{err}");
    assert_eq!(
        status.code(),
        Some(141),
        "ends as a SIGPIPE death would: {status:?}\n{err}"
    );
}
