//! vLLM's example Grafana dashboard against `serve` (issue 25): scripts/grafana_check.py sends a
//! few completions, scrapes /metrics and checks every series the dashboard queries (the selector
//! file in fixtures/grafana, taken from the dashboard at two commits of vllm-project/vllm: the
//! current one and an older one with V0 names) exists with the dashboard's labels and, for
//! histograms, has observations. Names the recorded CPU vLLM 0.32 does not expose either
//! (fixtures/api_compat) are V0-only and must stay absent. Needs python3 (standard library).

use std::io::BufReader;
use std::process::{Command, Stdio};

mod common;

fn script(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg(common::repo("scripts/grafana_check.py"))
        .args(args)
        .output()
        .expect("python3 runs scripts/grafana_check.py")
}

#[test]
fn the_script_reads_promql_and_tells_missing_from_v0_only() {
    let out = script(&["--self-test"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_dashboard_query_has_data_in_serve() {
    let fixtures = common::fixture("");
    let mut child = Command::new(common::BIN)
        .args([
            "serve",
            "--served-model-name",
            "tiny",
            "--time-scale",
            "0",
            "--port",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = common::listening_addr(&mut stderr).expect("serve exited early");
    let out = script(&[
        "--queries",
        fixtures
            .join("grafana/vllm_dashboard_selectors.json")
            .to_str()
            .unwrap(),
        "--vllm-golden",
        fixtures
            .join("api_compat/vllm-0.32.0-cpu.json")
            .to_str()
            .unwrap(),
        "--serve",
        &format!("http://{addr}"),
    ]);
    let _ = child.kill();
    let _ = child.wait();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the V1 series of the current dashboard, each with data
    for series in [
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:kv_cache_usage_perc",
        "vllm:request_max_num_generation_tokens_sum",
        "vllm:request_success_total",
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(series) && l.contains(" ok ")),
            "{series}:\n{table}"
        );
    }
    // the older dashboard's V0 names: vLLM 0.32 has none of them, nor does serve
    for series in [
        "vllm:num_requests_swapped",
        "vllm:gpu_cache_usage_perc",
        "vllm:cpu_cache_usage_perc",
        "vllm:time_per_output_token_seconds_bucket",
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(series) && l.contains(" v0-only ")),
            "{series}:\n{table}"
        );
    }
    assert!(table.contains("summary: ok 21, v0-only 6"), "{table}");
    assert!(
        table.contains("label_values(model_name): ['tiny'] ok"),
        "{table}"
    );
}
