//! `vllm bench serve` command lines on `bench` (issue 16). The flag list comes from a captured
//! `vllm bench serve --help=all` of vLLM 0.33 (`tests/fixtures/bench_vllm/`, so vLLM is not
//! needed here): every flag must be classified below, every flag that applies to an
//! OpenAI-compatible server must parse (mapped onto ours, or refused naming our equivalent),
//! and the issue's command line runs unchanged against `serve` and writes vLLM's result keys.

use std::path::PathBuf;

mod common;

fn fixture(name: &str) -> PathBuf {
    common::fixture("bench_vllm").join(name)
}

/// Every `--flag` of the captured help, by section.
fn vllm_flags() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixture("vllm-0.33-bench-serve-help-all.txt")).unwrap();
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line.trim_end_matches(':').to_string();
            continue;
        }
        let t = line.trim_start();
        if line.starts_with("  -") && !line.starts_with("   ") {
            for word in t.split([' ', ',']) {
                if let Some(f) = word.strip_prefix("--").filter(|f| !f.is_empty()) {
                    if f.chars()
                        .all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit())
                    {
                        out.push((section.clone(), format!("--{f}")));
                    }
                }
                if !word.starts_with('-') && !word.is_empty() {
                    break;
                }
            }
        }
    }
    out
}

/// Flags of dataset kinds and features an OpenAI text server benchmark does not have.
fn not_applicable(section: &str, flag: &str) -> Option<&'static str> {
    match section {
        "spec bench dataset options"
        | "blazedit dataset options"
        | "asr dataset options"
        | "random multimodal dataset options extended from random dataset"
        | "hf dataset options"
        | "BFCL dataset options"
        | "prefix repetition dataset options"
        | "speed bench dataset options"
        | "timed-trace dataset options" => {
            return Some(
                "a dataset we do not read (--dataset-name refuses it, naming --input-file)",
            )
        }
        _ => {}
    }
    match flag {
        "--help" => Some("help"),
        "--lora-modules" | "--lora-assignment" => Some("LoRA adapters"),
        "--enable-multimodal-chat" => Some("multimodal"),
        "--no-reranker" | "--random-batch-size" => Some("embedding/reranker backends"),
        "--probe-request-rate" => Some("vLLM's rate-probing mode"),
        "--timeline-itl-thresholds" => Some("only with --plot-timeline (refused)"),
        "--self-timed" | "--no-self-timed" => Some("vLLM's internal client timing switch"),
        _ => None,
    }
}

/// A value for a flag that takes one (None: a switch).
fn value(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "--backend" => "vllm",
        "--endpoint" => "/v1/completions",
        "--dataset-name" => "random",
        "--dataset-path" => return None,
        "--base-url" | "--host" | "--port" | "--model" => return None,
        "--goodput" => "ttft:500",
        "--percentile-metrics" => "ttft,tpot",
        "--metric-percentiles" => "50,99",
        "--ramp-up-strategy" => "linear",
        "--extra-body" => "{\"top_p\":0.9}",
        "--label"
        | "--tokenizer"
        | "--tokenizer-mode"
        | "--request-id-prefix"
        | "--served-model-name"
        | "--result-filename" => "x",
        "--result-dir" => return None,
        "--header" => "X=1",
        "--metadata" => "k=v",
        "--chat-template-kwargs" => "{}",
        "--burstiness"
        | "--request-rate"
        | "--ramp-up-start-rps"
        | "--ramp-up-end-rps"
        | "--temperature"
        | "--top-p"
        | "--min-p"
        | "--frequency-penalty"
        | "--presence-penalty"
        | "--repetition-penalty"
        | "--ready-check-timeout-sec" => "1",
        "--random-range-ratio" => "0",
        "--random-prefix-len" | "--num-warmups" => "0",
        "--top-k"
        | "--logprobs"
        | "--max-concurrency"
        | "--num-prompts"
        | "--seed"
        | "--input-len"
        | "--output-len"
        | "--random-input-len"
        | "--random-output-len"
        | "--sharegpt-output-len"
        | "--custom-output-len" => "4",
        _ => return None,
    })
}

const SWITCHES: &[&str] = &[
    "--append-result",
    "--disable-shuffle",
    "--disable-tqdm",
    "--ignore-eos",
    "--insecure",
    "--no-oversample",
    "--no-stream",
    "--plot-dataset-stats",
    "--plot-timeline",
    "--profile",
    "--save-detailed",
    "--save-result",
    "--skip-chat-template",
    "--skip-tokenizer-init",
    "--trust-remote-code",
    "--use-beam-search",
    "--custom-ensure-client-side-data",
];

#[test]
fn every_vllm_flag_that_applies_parses() {
    let flags = vllm_flags();
    assert!(
        flags.len() > 90,
        "the fixture lists vLLM's flags: {}",
        flags.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut parsed = 0;
    for (section, flag) in &flags {
        if not_applicable(section, flag).is_some() {
            continue;
        }
        let mut args: Vec<String> = vec![flag.clone()];
        match (value(flag), SWITCHES.contains(&flag.as_str())) {
            (Some(v), _) => args.push(v.to_string()),
            (None, true) => {}
            (None, false) => match flag.as_str() {
                // the server's address and model are given in their vLLM form below
                "--base-url" | "--host" | "--port" | "--model" | "--result-dir"
                | "--dataset-path" => continue,
                other => panic!("{other} ({section}) is not classified in this test"),
            },
        }
        if flag == "--ramp-up-strategy" {
            args.extend(["--ramp-up-start-rps", "1", "--ramp-up-end-rps", "2"].map(String::from));
        }
        let out = common::bin()
            .args([
                "bench",
                "--host",
                "127.0.0.1",
                "--port",
                "1",
                "--model",
                "m",
            ])
            .args(["--num-prompts", "1", "--metrics-interval", "0", "-q"])
            .args(["--request-timeout", "2", "--connect-timeout", "1"])
            .arg("--result-dir")
            .arg(dir.path().join(flag.trim_start_matches('-')))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        for bad in [
            "unexpected argument",
            "invalid value",
            "a value is required",
            "panicked",
        ] {
            assert!(!err.contains(bad), "{args:?} did not parse: {err}");
        }
        if err.contains("is not supported by inferencelab bench") {
            // refused by design: the message names our equivalent
            assert!(err.contains("; "), "{args:?}: {err}");
        }
        parsed += 1;
    }
    // plus --base-url, --host, --port, --model, --result-dir and --dataset-path in every run
    assert_eq!(parsed, 59, "applicable flags parsed");
}

#[test]
fn the_issue_command_line_runs_against_serve_with_vllm_result_keys() {
    use std::io::BufRead;
    // serve binds port 0 itself and logs the address it got on stdout
    let mut serve = std::process::Command::new(assert_cmd::cargo::cargo_bin("inferencelab"))
        .args(["serve", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(serve.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(at) = line.find("Starting vLLM API server 0 on ") {
            break line[at + "Starting vLLM API server 0 on ".len()..]
                .trim()
                .to_string();
        }
    };
    // keep reading its log so it never blocks on a full pipe
    std::thread::spawn(move || lines.for_each(drop));
    let dir = tempfile::tempdir().unwrap();
    let out = common::bin()
        .args(["bench", "--base-url", &base, "--backend", "vllm"])
        .args(["--endpoint", "/v1/completions", "--dataset-name", "random"])
        .args([
            "--percentile-metrics",
            "ttft,tpot",
            "--save-result",
            "--result-dir",
        ])
        .arg(dir.path())
        .args([
            "--num-prompts",
            "12",
            "--random-input-len",
            "64",
            "--random-output-len",
            "4",
        ])
        .args([
            "--goodput",
            "ttft:5000",
            "tpot:500",
            "--result-filename",
            "vllm.json",
        ])
        .output()
        .unwrap();
    let sharegpt = common::bin()
        .args([
            "bench",
            "--base-url",
            &base,
            "--dataset-name",
            "sharegpt",
            "--dataset-path",
        ])
        .arg(fixture("sharegpt_small.json"))
        .arg("--result-dir")
        .arg(dir.path().join("sharegpt"))
        .arg("-q")
        .output()
        .unwrap();
    serve.kill().unwrap();
    let _ = serve.wait();
    common::assert_ok(&out);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("vllm.json")).unwrap()).unwrap();
    for key in [
        "completed",
        "total_input_tokens",
        "total_output_tokens",
        "request_throughput",
        "request_goodput",
        "output_throughput",
        "mean_ttft_ms",
        "median_ttft_ms",
        "p99_ttft_ms",
        "mean_tpot_ms",
        "p99_tpot_ms",
        "mean_itl_ms",
        "mean_e2el_ms",
        "input_lens",
        "output_lens",
        "ttfts",
        "itls",
    ] {
        assert!(doc.get(key).is_some(), "result JSON lacks vLLM's {key}");
    }
    assert_eq!(doc["completed"], 12);
    // ShareGPT: conv-a's two human turns and conv-b's one; the entry without one is skipped
    common::assert_ok(&sharegpt);
    let rows = std::fs::read_to_string(dir.path().join("sharegpt/requests.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 3);
}
