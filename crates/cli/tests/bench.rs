//! CLI tests of `inferencelab bench`: the real binary, against the embedded emulator (the
//! demo path) or tiny hand-written servers in this process (bound once on port 0).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{bin, repo};

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Read one HTTP request (headers + Content-Length body) and its x-request-id header; `None`
/// at EOF.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<(Option<String>, String)> {
    let mut len = 0usize;
    let mut id = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            } else if k.eq_ignore_ascii_case("x-request-id") {
                id = Some(v.trim().to_string());
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some((id, String::from_utf8_lossy(&body).into_owned()))
}

/// A server that answers every POST with a 3-token stream (or never answers, `stall`), and
/// sends each request body to `bodies`.
fn spawn_server(stall: bool) -> (String, mpsc::Receiver<String>) {
    let (base, rx) = spawn_server_with_ids(stall);
    let (tx, bodies) = mpsc::channel();
    std::thread::spawn(move || {
        for (_, body) in rx {
            if tx.send(body).is_err() {
                return;
            }
        }
    });
    (base, bodies)
}

/// `spawn_server`, sending each request's x-request-id header with its body.
fn spawn_server_with_ids(stall: bool) -> (String, mpsc::Receiver<(Option<String>, String)>) {
    spawn_server_closing_idle(stall, None)
}

/// `spawn_server_with_ids` that closes a keep-alive connection once it has waited `idle` for a
/// request (uvicorn's `timeout_keep_alive`; vLLM sets it from `VLLM_HTTP_TIMEOUT_KEEP_ALIVE`).
fn spawn_server_closing_idle(
    stall: bool,
    idle: Option<Duration>,
) -> (String, mpsc::Receiver<(Option<String>, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                // a read that waits longer fails: the connection is dropped (closed)
                s.set_read_timeout(idle).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                while let Some(request) = read_request(&mut r) {
                    let _ = tx.send(request);
                    if stall {
                        std::thread::sleep(Duration::from_secs(60));
                        return;
                    }
                    let mut sse = String::new();
                    for t in ["a", "b", "c"] {
                        sse.push_str(&format!(
                            "data: {{\"id\":\"cmpl-t\",\"choices\":[{{\"text\":\"{t}\"}}]}}\n\n"
                        ));
                    }
                    sse.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{sse}",
                        sse.len()
                    );
                    if w.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), rx)
}

#[test]
fn demo_replays_conversations_on_the_embedded_server_and_compares_with_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("chats.csv");
    std::fs::write(
        &csv,
        "conversation_id,timestamp,user_message,assistant_response\n\
         a,0,Hello there how are you,I am fine thank you for asking\n\
         b,1,What is a cache,A cache keeps data close so it is fast to reuse\n\
         a,6,And what about you today,Still fine and happy to help you with anything\n\
         b,8,Why is that useful,Because recomputing things costs time and energy\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = bin()
        .args([
            "bench",
            "-q",
            "--demo-seconds",
            "1",
            "--metrics-interval",
            "0.2",
        ])
        .arg("--input-file")
        .arg(&csv)
        .arg("--output-dir")
        .arg(&out)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("Serving Benchmark Result"), "{stdout}");
    assert!(stdout.contains("simulator vs server"), "{stdout}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    for k in [
        "date",
        "backend",
        "model_id",
        "tokenizer_id",
        "num_prompts",
        "request_rate",
        "burstiness",
        "max_concurrency",
        "duration",
        "completed",
        "failed",
        "total_input_tokens",
        "total_output_tokens",
        "request_throughput",
        "request_goodput",
        "output_throughput",
        "total_token_throughput",
        "input_lens",
        "output_lens",
        "ttfts",
        "itls",
        "generated_texts",
        "errors",
        "mean_ttft_ms",
        "median_ttft_ms",
        "std_ttft_ms",
        "p99_ttft_ms",
        "mean_tpot_ms",
        "p99_itl_ms",
        "median_e2el_ms",
        "max_output_tokens_per_s",
        "max_concurrent_requests",
    ] {
        assert!(r.get(k).is_some(), "result.json lacks {k}");
    }
    assert_eq!(r["backend"], "openai-chat");
    assert_eq!(
        (r["completed"].as_u64(), r["failed"].as_u64()),
        (Some(4), Some(0))
    );
    let recs = lines(&out.join("requests.jsonl"));
    assert_eq!(recs.len(), 4);
    // Turn 2 of a conversation is sent after turn 1's answer arrived, and hits the cache.
    let a: Vec<&Value> = recs
        .iter()
        .filter(|r| r["conversation"] == recs[0]["conversation"])
        .collect();
    let end0 = a[0]["send_s"].as_f64().unwrap() + a[0]["e2el_s"].as_f64().unwrap();
    assert!(a[1]["send_s"].as_f64().unwrap() >= end0);
    assert!(a[1]["cached_tokens"].as_u64().unwrap() > 0, "{:?}", a[1]);
    assert!(out.join("server.log").exists() && out.join("metrics.jsonl").exists());
}

#[test]
fn trace_replay_sends_token_ids_to_the_completions_endpoint() {
    let (base, bodies) = spawn_server(false);
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args([
            "bench",
            "-q",
            "--model",
            "m",
            "--request-rate",
            "inf",
            "--num-prompts",
            "6",
        ])
        .args([
            "--metrics-interval",
            "0",
            "--base-url",
            &base,
            "--input-file",
        ])
        .arg(repo("data/traces/mooncake/synthetic_trace.jsonl"))
        .arg("--output-dir")
        .arg(dir.path())
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<Value> = bodies
        .try_iter()
        .map(|b| serde_json::from_str(&b).unwrap())
        .collect();
    assert_eq!(got.len(), 6);
    for b in &got {
        assert!(b["prompt"].as_array().unwrap().iter().all(|t| t.is_u64()));
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["ignore_eos"], true);
    }
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("result.json")).unwrap())
            .unwrap();
    assert_eq!(r["completed"], 6);
    assert_eq!(r["total_output_tokens"], 18);
}

/// `--prompt-format text` sends each token id as one word (the same prompts, word for word, as
/// the token-id run, and one o200k_base token per word), and `--request-id-header` sends a UUID
/// or no header.
#[test]
fn text_prompts_and_request_id_headers_for_servers_without_token_ids() {
    let run = |extra: &[&str]| {
        let (base, requests) = spawn_server_with_ids(false);
        let dir = tempfile::tempdir().unwrap();
        let o = bin()
            .args(["bench", "-q", "--model", "m", "--num-prompts", "6"])
            .args(["--request-rate", "inf", "--max-concurrency", "1"])
            .args(["--metrics-interval", "0", "--base-url", &base])
            .args(extra)
            .arg("--input-file")
            .arg(repo(
                "data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log",
            ))
            .arg("--output-dir")
            .arg(dir.path())
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got: Vec<(Option<String>, Value)> = requests
            .try_iter()
            .map(|(id, b)| (id, serde_json::from_str(&b).unwrap()))
            .collect();
        assert_eq!(got.len(), 6);
        got
    };
    let ids = run(&[]);
    let text = run(&["--prompt-format", "text", "--request-id-header", "uuid"]);
    let none = run(&["--request-id-header", "none"]);
    let o200k = inferencelab_convert::tokenizer::TextTokenizer::embedded();
    let mut shared = 0;
    for (k, ((id_a, a), (id_b, b))) in ids.iter().zip(&text).enumerate() {
        let tokens: Vec<u32> = a["prompt"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let prompt = b["prompt"].as_str().unwrap();
        assert_eq!(prompt, inferencelab_bench::words::text_of(&tokens));
        assert_eq!(prompt.split(' ').count() - 1, tokens.len());
        assert_eq!(o200k.encode(prompt).unwrap().len(), tokens.len());
        assert!(
            id_a.as_deref().unwrap().ends_with(&format!("-{k}")),
            "{id_a:?}"
        );
        let u = id_b.as_deref().unwrap();
        assert_eq!(u.len(), 36, "{u}");
        assert_eq!(u.as_bytes()[14], b'4', "{u}");
        // prefix sharing survives: a request whose token prompt shares a prefix with an
        // earlier one shares at least as many words with it
        let words = |s: &str| s.split(' ').skip(1).map(str::to_string).collect::<Vec<_>>();
        for j in 0..k {
            let earlier: Vec<u32> = ids[j].1["prompt"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            let common = earlier
                .iter()
                .zip(&tokens)
                .take_while(|(x, y)| x == y)
                .count();
            let common_words = words(text[j].1["prompt"].as_str().unwrap())
                .iter()
                .zip(&words(prompt))
                .take_while(|(x, y)| x == y)
                .count();
            assert!(common_words >= common, "requests {j} and {k}");
            shared += common;
        }
    }
    assert!(shared > 0, "the first requests of the log share prefixes");
    assert!(none.iter().all(|(id, _)| id.is_none()));
}

#[test]
fn a_dead_server_is_reported_per_request_and_the_run_fails_cleanly() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args([
            "bench",
            "-q",
            "--model",
            "m",
            "--mode",
            "random",
            "--num-prompts",
            "3",
        ])
        .args([
            "--metrics-interval",
            "0",
            "--base-url",
            &format!("http://{addr}"),
        ])
        .arg("--output-dir")
        .arg(dir.path())
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no request succeeded (3 connection_refused)"),
        "{err}"
    );
    let recs = lines(&dir.path().join("requests.jsonl"));
    assert_eq!(recs.len(), 3);
    assert!(recs.iter().all(|r| r["error_kind"] == "connection_refused"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("connection_refused:"), "{stdout}");
}

#[test]
fn ctrl_c_writes_what_finished_and_counts_the_cut_requests() {
    let (base, bodies) = spawn_server(true);
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("inferencelab"))
        .args([
            "bench",
            "-q",
            "--model",
            "m",
            "--mode",
            "random",
            "--num-prompts",
            "3",
        ])
        .args([
            "--random-input-len",
            "4",
            "--metrics-interval",
            "0",
            "--base-url",
            &base,
        ])
        .arg("--output-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until all three requests reached the server, then interrupt.
    for _ in 0..3 {
        bodies.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("interrupted"), "{err}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("result.json")).unwrap())
            .unwrap();
    assert_eq!(r["cancelled"], 3);
    assert_eq!(r["stop_reason"], "interrupted");
}

/// The reproduction: three requests 1.5 s apart against a server that closes idle
/// keep-alive connections after 1 s. Each one must reach the server on a fresh connection
/// (before the fix, the second and third waited for --request-timeout on a closed one).
#[test]
fn requests_after_the_server_closed_an_idle_connection_reach_it() {
    let (base, requests) = spawn_server_closing_idle(false, Some(Duration::from_secs(1)));
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["bench", "-q", "--model", "m", "--mode", "random"])
        .args(["--random-input-len", "64", "--random-output-len", "8"])
        .args([
            "--num-prompts",
            "3",
            "--request-rate",
            "0.67",
            "--burstiness",
            "inf",
        ])
        .args(["--request-timeout", "20", "--metrics-interval", "0"])
        .args(["--base-url", &base])
        .arg("--output-dir")
        .arg(dir.path())
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recs = lines(&dir.path().join("requests.jsonl"));
    assert!(recs.iter().all(|r| r["success"] == true), "{recs:?}");
    assert_eq!(requests.try_iter().count(), 3);
}

/// `--duration` is a hard limit: requests the server never answers are cut when it passes, and
/// result.json is written (before, the run waited for --request-timeout, 600 s by default).
#[test]
fn duration_cuts_requests_that_would_outlast_it_and_writes_the_results() {
    let (base, bodies) = spawn_server(true);
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["bench", "-q", "--model", "m", "--mode", "random"])
        .args(["--random-input-len", "4", "--num-prompts", "3"])
        .args(["--duration", "1", "--metrics-interval", "0"])
        .args(["--base-url", &base])
        .arg("--output-dir")
        .arg(dir.path())
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "nothing finished: {err}");
    assert!(
        err.contains("no request finished within --duration: 3 cut in flight"),
        "{err}"
    );
    for _ in 0..3 {
        bodies.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("result.json")).unwrap())
            .unwrap();
    assert_eq!(r["stop_reason"], "duration");
    assert_eq!(
        (r["sent"].as_u64(), r["cancelled"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(r["duration_limit_s"], 1.0);
}

#[test]
fn replay_compares_measured_with_simulated_hits() {
    let (base, bodies) = spawn_server(false);
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args([
            "replay",
            "-q",
            "--model",
            "m",
            "--request-rate",
            "inf",
            "--num-prompts",
            "5",
        ])
        .args([
            "--metrics-interval",
            "0",
            "--gpu-blocks",
            "1000",
            "--base-url",
            &base,
        ])
        .arg("--input-file")
        .arg(repo(
            "data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log",
        ))
        .arg("--output-dir")
        .arg(dir.path())
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("simulator vs server"), "{stdout}");
    assert_eq!(bodies.try_iter().count(), 5);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("replay.json")).unwrap())
            .unwrap();
    assert_eq!(r["simulation"]["requests"], 5);
    assert_eq!(r["requests"].as_array().unwrap().len(), 5);
    // this server reports no cached tokens: the per-request join still covers every request
    assert_eq!(r["per_request"]["requests"], 5);
    assert_eq!(r["per_request"]["measured_cached_tokens"], 0);
    assert!(r["requests"]
        .as_array()
        .unwrap()
        .iter()
        .all(|q| q["predicted_hit_tokens"].is_u64()));
}

/// Every word of the text-prompt list is one o200k_base token with its leading space, and a
/// prompt of them is as many tokens as words (the pre-tokenizer splits at the spaces).
#[test]
fn every_text_prompt_word_is_one_o200k_token() {
    let o200k = inferencelab_convert::tokenizer::TextTokenizer::embedded();
    for w in inferencelab_bench::words::WORDS {
        assert_eq!(o200k.encode(&format!(" {w}")).unwrap().len(), 1, "{w}");
    }
    let all: String = inferencelab_bench::words::WORDS
        .iter()
        .map(|w| format!(" {w}"))
        .collect();
    assert_eq!(
        o200k.encode(&all).unwrap().len(),
        inferencelab_bench::words::WORDS.len()
    );
}
