//! `inferencelab serve` as a real process: it prints its address (`--port 0`), streams a chat
//! completion over SSE to a plain HTTP/1.1 client, accepts unknown vLLM flags with a warning,
//! and exits cleanly on SIGTERM with its log flushed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod common;

/// A raw HTTP/1.1 exchange (`Connection: close`), with chunked bodies decoded.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String, String) {
    http_with(addr, method, path, "", body)
}

/// `http` with extra header lines (each ending in `\r\n`).
fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

#[test]
fn serve_streams_over_sse_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut child = Command::new(common::BIN)
        .args([
            "serve",
            "Qwen/Qwen3-8B",
            "--port",
            "0",
            "--swap-space",
            "4",
            "--enable-log-requests",
            "--enable-prompt-tokens-details",
            "--kv-transfer-config",
            r#"{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}"#,
            "--time-scale",
            "20",
            "--gpu-blocks",
            "2000",
            "--log-file",
        ])
        .arg(&log)
        .env("LMCACHE_CHUNK_SIZE", "64")
        .env("LMCACHE_MAX_LOCAL_CPU_SIZE", "1.0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut warned = false;
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve exited early"
        );
        warned |= line.contains("ignores these vLLM arguments: --swap-space 4");
        if let Some(a) = line
            .trim()
            .strip_prefix("inferencelab serve: listening on http://")
        {
            break a.to_string();
        }
    };
    assert!(warned, "unknown vLLM flags are reported");
    assert!(addr.starts_with("127.0.0.1:"));

    let body = r#"{"model":"Qwen/Qwen3-8B","messages":[{"role":"user","content":"what is the cache of the model"}],"max_tokens":6,"stream":true,"stream_options":{"include_usage":true}}"#;
    let (status, head, sse) = http(&addr, "POST", "/v1/chat/completions", body);
    assert_eq!(status, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    let events: Vec<&str> = sse.split_terminator("\n\n").collect();
    assert!(events.iter().all(|e| e.starts_with("data: ")));
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    // role chunk + 6 tokens + usage
    assert_eq!(events.len(), 1 + 6 + 1 + 1);
    let usage: serde_json::Value =
        serde_json::from_str(events[events.len() - 2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    assert!(usage["usage"]["prompt_tokens_details"]["cached_tokens"].is_u64());

    let (status, _, metrics) = http(&addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(metrics.contains("vllm:prefix_cache_queries_total{model_name=\"Qwen/Qwen3-8B\""));
    assert!(metrics.contains("lmcache:num_requested_tokens_total"));

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("details: prompt: '<|im_start|>user\\nwhat is the cache of the model"));
    assert!(text.contains("(streaming complete): output: "));
    assert!(text.contains("LMCache INFO: Reqid: chatcmpl-"));
    // the simulator reads the server's log
    let trace = inferencelab_trace::read_trace(&log, &Default::default()).unwrap();
    assert_eq!(trace.requests.len(), 1);
    assert_eq!(trace.requests[0].output_length, 6);
}

#[test]
fn serve_help_lists_the_flags() {
    let out = Command::new(common::BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--time-scale",
        "--gpu-blocks",
        "--kv-transfer-config",
        "--api-key",
    ] {
        assert!(text.contains(flag), "{flag} missing from help");
    }
}

/// `common::spawn_serve` writing its log to `log`.
fn spawn_serve(args: &[&str], log: &std::path::Path) -> (std::process::Child, String) {
    common::spawn_serve(&[args, &["--log-file", log.to_str().unwrap()]].concat())
}

/// Send a streaming completion, wait for its first token, SIGTERM the server, then read the
/// rest of the stream: (the whole SSE text, the server's exit status).
fn sigterm_mid_stream(
    child: &mut std::process::Child,
    addr: &str,
    max_tokens: u32,
) -> (String, std::process::ExitStatus) {
    let body =
        format!(r#"{{"prompt":"the cache of the model","max_tokens":{max_tokens},"stream":true}}"#);
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("\"text\":") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before its first token");
        raw.extend_from_slice(&buf[..n]);
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    s.read_to_end(&mut raw).unwrap();
    let status = child.wait().unwrap();
    (String::from_utf8(raw).unwrap(), status)
}

#[test]
fn sigterm_lets_in_flight_streams_finish_within_the_grace_period_then_cuts_them() {
    let dir = tempfile::tempdir().unwrap();
    // a generous grace period: the stream that was running when SIGTERM came ends normally
    let log = dir.path().join("finish.log");
    let (mut child, addr) =
        spawn_serve(&["--enable-log-requests", "--shutdown-grace-s", "60"], &log);
    let (sse, status) = sigterm_mid_stream(&mut child, &addr, 100);
    assert!(status.success(), "{status:?}");
    assert!(sse.contains("data: [DONE]"), "the stream was cut: {sse}");
    assert_eq!(sse.matches("\"text\":").count(), 100);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Received request cmpl-"));
    assert!(text.contains("Generated response cmpl-"));

    // no grace: a 5,000-token stream (35 s at real time) is cut, the server still exits cleanly
    // and its log is flushed
    let log = dir.path().join("cut.log");
    let (mut child, addr) =
        spawn_serve(&["--enable-log-requests", "--shutdown-grace-s", "0"], &log);
    let (sse, status) = sigterm_mid_stream(&mut child, &addr, 5000);
    assert!(status.success(), "{status:?}");
    assert!(!sse.contains("data: [DONE]"));
    assert!(sse.matches("\"text\":").count() < 5000);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Received request cmpl-"), "{text}");
}

/// `replay` against a fresh `serve` with the same cache (1,500 GPU blocks: evictions happen),
/// predicting from the client's times or, `server_log`, from the server's log of the run
/// (`replay --server-log`): (predicted hit tokens per request, measured `cached_tokens` per
/// request, `replay.json`).
fn replay_against_a_fresh_server(server_log: bool) -> (Vec<(u64, u64)>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let serve_log = dir.path().join("serve.log");
    let logging: &[&str] = if server_log {
        &[
            "--enable-log-requests",
            "--enable-log-outputs",
            "--log-time-decimals",
            "6",
        ]
    } else {
        &[]
    };
    let (mut child, addr) = spawn_serve(
        &[
            &[
                "--gpu-blocks",
                "1500",
                "--enable-prompt-tokens-details",
                "--time-scale",
                "100",
            ],
            logging,
        ]
        .concat(),
        &serve_log,
    );
    let log = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log"
    );
    let out = Command::new(common::BIN)
        .args(["replay", "-q", "--base-url", &format!("http://{addr}")])
        .args(["--input-file", log, "--gpu-blocks", "1500", "--no-cpu-tier"])
        .args(["--time-scale", "20", "--metrics-interval", "0"])
        .args(server_log.then_some("--server-log"))
        .args(server_log.then_some(&serve_log))
        .arg("-o")
        .arg(dir.path().join("replay"))
        .output()
        .unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    child.wait().unwrap();
    common::assert_ok(&out);
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("replay/replay.json")).unwrap(),
    )
    .unwrap();
    let source = if server_log { "server_log" } else { "client" };
    assert_eq!(r["times"]["source"], source);
    let reqs = r["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 200);
    // not a vacuous agreement: most requests hit, and the cache was too small for all of it
    let hit = reqs
        .iter()
        .filter(|q| q["measured_cached_tokens"].as_u64().unwrap() > 0)
        .count();
    assert!(hit > 150, "{hit}");
    assert!(r["simulation"]["gpu_evictions"].as_u64().unwrap() > 0);
    let pairs = reqs
        .iter()
        .map(|q| {
            (
                q["predicted_hit_tokens"].as_u64().unwrap(),
                q["measured_cached_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    (pairs, r)
}

/// The prediction follows the replay as it ran (its send, token and finish times; the server's
/// own answers, which the replayed prompts do not repeat): at least 98% of the requests exact
/// and the hit tokens within a block per request on average, in every run (199 or 200 of 200
/// exact on 2026-12-04; before, with the recorded answers and times, 67 of 200).
#[test]
fn replay_predicts_a_fresh_server_per_request() {
    let (pairs, r) = replay_against_a_fresh_server(false);
    let exact = pairs.iter().filter(|(p, m)| p == m).count();
    assert!(exact >= 196, "{exact} of 200 exact: {r}");
    assert_eq!(r["per_request"]["exact"], exact);
    let (predicted, measured): (u64, u64) =
        pairs.iter().fold((0, 0), |(a, b), (p, m)| (a + p, b + m));
    assert!(
        predicted.abs_diff(measured) <= 16 * 200,
        "predicted {predicted}, measured {measured}"
    );
}

/// The issue's bar: every request to the token. From the client's times alone a token or an
/// arrival can land on the other side of a server step (199 or 200 of 200 exact); from the
/// times the server logged (its engine's arrival, each token's step, each finish, microsecond
/// stamps) the prediction is the closed loop of `serve` and `simulate`, exact by construction.
#[test]
fn replay_predicts_every_request_of_a_fresh_server_to_the_token() {
    let (pairs, r) = replay_against_a_fresh_server(true);
    for (k, (p, m)) in pairs.iter().enumerate() {
        assert_eq!(p, m, "request {k}: predicted {p}, measured {m}");
    }
    assert_eq!(r["per_request"]["exact"], 200);
}

/// `--server-log` must be the log of the server the replay ran against: a log that does not
/// name the replayed requests (here the recorded input, another server's) stops the replay with
/// the first missing id and the fix, rather than predicting from the wrong requests.
#[test]
fn replay_refuses_a_server_log_without_its_requests() {
    let dir = tempfile::tempdir().unwrap();
    let log = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log"
    );
    // no such file: refused before a request is sent (no server at this address)
    let out = Command::new(common::BIN)
        .args(["replay", "-q", "--base-url", "http://127.0.0.1:9"])
        .args(["--input-file", log, "--gpu-blocks", "2000"])
        .arg("--server-log")
        .arg(dir.path().join("missing.log"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("missing.log: no such file"), "{err}");
    let (mut child, addr) = spawn_serve(
        &["--enable-log-requests", "--enable-log-outputs"],
        &dir.path().join("serve.log"),
    );
    let out = Command::new(common::BIN)
        .args(["replay", "-q", "--base-url", &format!("http://{addr}")])
        .args(["--input-file", log, "--gpu-blocks", "2000", "--no-cpu-tier"])
        .args(["--num-prompts", "5", "--time-scale", "1000"])
        .args(["--metrics-interval", "0", "--server-log", log, "-o"])
        .arg(dir.path().join("replay"))
        .output()
        .unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    child.wait().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("5 of the 5 answered requests are not in it") && err.contains("cmpl-"),
        "{err}"
    );
    assert!(!dir.path().join("replay/replay.json").exists());
}

/// As vLLM (`_base_request_id`), the client's X-Request-Id is the base of the request id: in the
/// response (`cmpl-<id>`) and in the server log; without the header the id is the server's own.
#[test]
fn the_client_request_id_names_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let (mut child, addr) = spawn_serve(&["--enable-log-requests"], &log);
    let body = r#"{"prompt":"hello there","max_tokens":2}"#;
    let (status, _, text) = http_with(
        &addr,
        "POST",
        "/v1/completions",
        "X-Request-Id: bench-7-12\r\n",
        body,
    );
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["id"], "cmpl-bench-7-12");
    let (_, _, text) = http(&addr, "POST", "/v1/completions", body);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let own = v["id"].as_str().unwrap().to_string();
    assert!(
        own.starts_with("cmpl-") && own != "cmpl-bench-7-12",
        "{own}"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    child.wait().unwrap();
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.contains("cmpl-bench-7-12"), "{written}");
}

/// `--tensor-parallel-size` sizes one rank's share, as vLLM and LMCache do: qwen-8b's 8 KV heads
/// over 2 GPUs give each 4, so 1 GiB holds twice the blocks and LMCache chunks (LMCache 0.5.6:
/// 56 chunks of 256 tokens per GiB at TP 2).
#[test]
fn tensor_parallel_size_sizes_one_ranks_share() {
    let dir = tempfile::tempdir().unwrap();
    let startup = |tp: &str| {
        let log = dir.path().join(format!("tp{tp}.log"));
        let mut child = Command::new(common::BIN)
            .args([
                "serve",
                "--port",
                "0",
                "--gpu-cache-gb",
                "1",
                "--cpu-cache-gb",
                "1",
            ])
            .args(["--tensor-parallel-size", tp, "--log-file"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "serve exited early"
            );
        }
        // the start-up lines reach the log file shortly after the address is printed
        let mut text = String::new();
        for _ in 0..200 {
            text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Starting vLLM API server") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        child.wait().unwrap();
        text
    };
    // 2^30 / (36 layers * 8 heads * 128 * 2 (K, V) * 2 B * 16 tokens) = 455 blocks
    let one = startup("1");
    assert!(one.contains("(455 blocks of 16;"), "{one}");
    assert!(one.contains("28 CPU chunks"), "{one}");
    let two = startup("2");
    assert!(two.contains("(910 blocks of 16;"), "{two}");
    assert!(two.contains("56 CPU chunks"), "{two}");
}
