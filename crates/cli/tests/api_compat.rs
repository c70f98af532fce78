//! `serve` against vLLM's own answers (issue 25): scripts/api_compat_check.py replays its 121
//! cases against a fresh `serve` and compares with the observations it recorded from a real CPU
//! vLLM 0.32.0 (fixtures/api_compat/vllm-0.32.0-cpu.json, scripts/vllm_cpu_peer.sh's tiny model).
//! The peer's tokenizer is the o200k_base ranks with ChatML specials, which `serve` embeds
//! (`--tokenizer o200k-chatml`), so the test needs no model directory and no vLLM: only python3
//! (standard library). Regenerate the golden copy with
//! `python3 scripts/api_compat_check.py --vllm URL --record-golden FILE`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;

#[test]
fn serve_answers_every_case_as_the_recorded_vllm_did() {
    let fixtures = common::fixture("api_compat");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::BIN)
        .arg("serve")
        .arg(fixtures.join("config.json"))
        .args([
            "--tokenizer",
            "o200k-chatml",
            "--served-model-name",
            "tiny-qwen2",
            "--max-model-len",
            "16384",
            "--block-size",
            "32",
            "--gpu-blocks",
            "1025",
            "--enable-prompt-tokens-details",
            "--no-cpu-tier",
            "--time-scale",
            "0",
            "--port",
            "0",
            "--log-file",
        ])
        .arg(dir.path().join("serve.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut tokenizer_line = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve exited early"
        );
        if line.contains("tokenizer:") {
            tokenizer_line = line.clone();
        }
        if let Some(a) = line
            .trim()
            .strip_prefix("inferencelab serve: listening on http://")
        {
            break a.to_string();
        }
    };
    assert!(tokenizer_line.contains("o200k_base"), "{tokenizer_line}");
    let out = Command::new("python3")
        .arg(common::repo("scripts/api_compat_check.py"))
        .arg("--golden")
        .arg(fixtures.join("vllm-0.32.0-cpu.json"))
        .arg("--serve")
        .arg(format!("http://{addr}"))
        .output()
        .expect("python3 runs scripts/api_compat_check.py");
    let _ = child.kill();
    let _ = child.wait();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cases differ from vLLM's:\n{}\n{}",
        table
            .lines()
            .filter(|l| !l.ends_with(" same"))
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = table.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("121 cases: same status in 121, identical in 121"),
        "{summary}"
    );
}
