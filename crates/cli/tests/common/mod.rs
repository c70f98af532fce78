//! Helpers shared by the CLI integration tests: every file in `tests/` does `mod common;`.
//! Each test binary uses a part of them, hence `dead_code` is allowed here.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Output, Stdio};

use assert_cmd::Command;
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_inferencelab");

/// A path in the repository (relative to the workspace root).
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A path under `crates/cli/tests/fixtures/`.
pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// Panic, with the command's stderr, unless it exited successfully.
#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `inferencelab` as an assert_cmd command.
pub fn bin() -> Command {
    Command::cargo_bin("inferencelab").unwrap()
}

/// `inferencelab simulate ARGS --json --output DIR/summary.json`: the JSON document on stdout,
/// checked to hold the same results as the file `--output` wrote.
pub fn simulate_json(args: &[&str]) -> Value {
    simulate_json_with(bin(), args)
}

/// [`simulate_json`] run in `dir` (relative paths, e.g. `outputs/models/`, resolve there).
pub fn simulate_json_in(dir: &Path, args: &[&str]) -> Value {
    let mut cmd = bin();
    cmd.current_dir(dir);
    simulate_json_with(cmd, args)
}

fn simulate_json_with(mut cmd: Command, args: &[&str]) -> Value {
    let out_dir = tempfile::tempdir().unwrap();
    let out = cmd
        .arg("simulate")
        .args(args)
        .arg("--json")
        .arg("--output")
        .arg(out_dir.path().join("summary.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "simulate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value =
        serde_json::from_slice(&out.stdout).expect("stdout is exactly one JSON document");
    let written: Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        doc["results"], written["results"],
        "--output holds the same results"
    );
    doc
}

/// Run `cmd`, an `inferencelab simulate ...` command, with `--per-request DIR/per.jsonl --json
/// -q -o DIR/sim.json`: the JSON document on stdout and the per-request rows.
pub fn simulate_per_request(mut cmd: std::process::Command) -> (Value, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let per = dir.path().join("per.jsonl");
    let out = cmd
        .arg("--per-request")
        .arg(&per)
        .args(["--json", "-q", "-o"])
        .arg(dir.path().join("sim.json"))
        .output()
        .unwrap();
    assert_ok(&out);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    (doc, jsonl(&per))
}

/// Per request id of `simulate --per-request` rows: its GPU + CPU hit tokens.
pub fn hits_by_request(rows: &[Value]) -> HashMap<String, u64> {
    rows.iter()
        .map(|r| {
            (
                r["request_id"].as_str().unwrap().to_string(),
                r["gpu_hit_tokens"].as_u64().unwrap() + r["cpu_hit_tokens"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The rows of a JSONL file.
pub fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Start `inferencelab serve --port 0 --no-cpu-tier ARGS` (2,000 GPU blocks unless ARGS say),
/// stdout discarded, and wait until it listens: the child and its `host:port`. The caller
/// stops and waits for the process.
#[allow(clippy::zombie_processes)]
pub fn spawn_serve(args: &[&str]) -> (Child, String) {
    let blocks: &[&str] = if args.contains(&"--gpu-blocks") {
        &[]
    } else {
        &["--gpu-blocks", "2000"]
    };
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--port", "0", "--no-cpu-tier"])
        .args(blocks)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    match listening_addr(&mut stderr) {
        Some(addr) => (child, addr),
        None => panic!("serve exited early: {:?}", child.wait()),
    }
}

/// Read `serve`'s stderr up to its `listening on http://HOST:PORT` line: `HOST:PORT`, or `None`
/// when stderr ends first (the server exited).
pub fn listening_addr(stderr: &mut BufReader<ChildStderr>) -> Option<String> {
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if let Some(a) = line
            .trim()
            .strip_prefix("inferencelab serve: listening on http://")
        {
            return Some(a.to_string());
        }
    }
}

/// A raw HTTP/1.1 POST (`Connection: close`), chunked bodies decoded; the status must be 200.
pub fn post_ok(addr: &str, path: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{rest}");
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return rest.to_string();
    }
    let mut out = String::new();
    let mut rest = rest;
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
}
