//! The experiment runner's fleet points (issue 21, docs/replicas.md): `fleet: {replicas,
//! routers}` starts N `vllm serve` replicas on N GPU slots and `vllm-router` in front, and the
//! bench replays through the router. The dry run is checked always; the real run needs
//! vllm-router on PATH (`pip install vllm-router==0.1.17`) and runs with `--ignored`, with
//! `scripts/vllm-standin` (the emulator, NOT vLLM) as the replicas.

mod common;
use common::{repo, BIN};

use std::path::{Path, PathBuf};

fn write_yaml(dir: &Path, port_base: u16, routers: &str) -> PathBuf {
    let trace = dir.join("tiny.jsonl");
    // 8 requests of 1200 tokens sharing their first two 512-token blocks
    let lines: Vec<String> = (0..8)
        .map(|i| {
            format!(
                r#"{{"timestamp": {}, "input_length": 1200, "output_length": 3, "hash_ids": [0, 1, {}]}}"#,
                i * 100,
                10 + i
            )
        })
        .collect();
    std::fs::write(&trace, lines.join("\n") + "\n").unwrap();
    let yaml = dir.join("fleet.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: fleet\nmodel: {{hf_id: Qwen/Qwen3-8B, registry: qwen-8b}}\n\
             vllm:\n  port_base: {port_base}\n  health_timeout_s: 60\n  stop_grace_s: 5\n  \
             num_gpu_blocks_override: [400]\n\
             workload:\n  traces: [{{path: {}, name: tiny}}]\n  request_rates: [.inf]\n\
             fleet:\n  replicas: [2]\n  routers: {routers}\n",
            trace.display()
        ),
    )
    .unwrap();
    yaml
}

fn runner(dir: &Path, yaml: &Path, gpus: usize, path_first: &[PathBuf]) -> std::process::Command {
    let mut c = std::process::Command::new(BIN);
    let mut path: Vec<String> = path_first.iter().map(|p| p.display().to_string()).collect();
    path.push(std::env::var("PATH").unwrap_or_default());
    c.arg("experiment")
        .arg("--yaml")
        .arg(yaml)
        .arg("--gpus")
        .arg(gpus.to_string())
        .arg("--experiment-dir")
        .arg(dir.join("exp"))
        .current_dir(dir)
        .env("PATH", path.join(":"))
        .env("INFERENCELAB_BIN", BIN)
        .env("STANDIN_TIME_SCALE", "0")
        .env_remove("STANDIN_MODE")
        .env_remove("STANDIN_CRASH_IF_CPU_GB")
        .env_remove("CUDA_VISIBLE_DEVICES");
    c
}

#[test]
fn dry_run_of_a_fleet_prints_every_replica_the_router_and_the_bench_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = write_yaml(dir.path(), 18470, "[round_robin, consistent_hash]");
    let out = runner(dir.path(), &yaml, 2, &[])
        .arg("--dry-run")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("not with N real vLLM servers"), "{all}");
    let blocks: Vec<&str> = stdout.split("\n# point ").skip(1).collect();
    assert_eq!(blocks.len(), 2, "{stdout}");
    for (b, policy) in blocks.iter().zip(["round_robin", "consistent_hash"]) {
        // replica k on slot k: its GPU, its port, its own log
        assert!(b.contains("CUDA_VISIBLE_DEVICES=0 ") && b.contains("CUDA_VISIBLE_DEVICES=1 "));
        assert!(
            b.contains("--port 18470 ") && b.contains("--port 18471 "),
            "{b}"
        );
        assert!(b.contains(&format!("_2x_{policy}.log")), "{b}");
        assert!(b.contains(&format!("_2x_{policy}.replica1.log")), "{b}");
        // the router after the replicas' ports, its exporter on the next one
        assert!(
            b.contains(&format!(
                "vllm-router --host 127.0.0.1 --port 18472 --prometheus-port 18473 --policy \
                 {policy} --worker-urls http://127.0.0.1:18470 http://127.0.0.1:18471"
            )),
            "{b}"
        );
        assert!(
            b.contains("bench --base-url http://127.0.0.1:18472 ")
                && b.contains("--metrics-interval 0"),
            "{b}"
        );
    }
    // one GPU cannot hold two replicas
    let out = runner(dir.path(), &yaml, 1, &[])
        .arg("--dry-run")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs 2 GPU slots"),
        "{err}"
    );
    // kv_aware: each replica publishes its KV events on its own port (after the router's
    // two), no topic; the router subscribes to each, with vLLM's block size and the model's name
    let yaml = write_yaml(dir.path(), 18470, "[kv_aware]");
    let out = runner(dir.path(), &yaml, 2, &[])
        .arg("--dry-run")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for (port, events) in [(18470, 18474), (18471, 18475)] {
        let line = stdout
            .lines()
            .find(|l| l.contains(" serve ") && l.contains(&format!("--port {port} ")))
            .unwrap_or_else(|| panic!("no replica on {port}: {stdout}"));
        let publish = format!(
            "--kv-events-config '{{\"enable_kv_cache_events\":true,\"endpoint\":\
             \"tcp://*:{events}\",\"publisher\":\"zmq\"}}'"
        );
        assert!(line.contains(&publish), "{publish}\n{line}");
    }
    assert!(
        stdout.contains(
            "--policy kv_aware --worker-urls http://127.0.0.1:18470 http://127.0.0.1:18471 \
             --kv-event-source http://127.0.0.1:18470=tcp://127.0.0.1:18474 \
             --kv-event-source http://127.0.0.1:18471=tcp://127.0.0.1:18475 \
             --kv-event-block-size 16 --kv-event-model qwen-8b"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("topic"), "{stdout}");
    // a KV event port on a replica's is refused, naming the key
    let clash = dir.path().join("clash.yaml");
    std::fs::write(
        &clash,
        std::fs::read_to_string(&yaml).unwrap() + "  kv_events_port: 18471\n",
    )
    .unwrap();
    let out = runner(dir.path(), &clash, 2, &[])
        .arg("--dry-run")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("fleet.kv_events_port"),
        "{err}"
    );
}

/// Where vllm-router is: `VLLM_ROUTER_BIN`'s directory, else /work/venvs/router/bin.
fn router_dir() -> PathBuf {
    std::env::var_os("VLLM_ROUTER_BIN")
        .map(|b| PathBuf::from(b).parent().unwrap().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/work/venvs/router/bin"))
}

#[test]
#[ignore = "needs vllm-router 0.1.17 (pip install vllm-router==0.1.17; VLLM_ROUTER_BIN or \
            /work/venvs/router/bin); run with --ignored"]
fn standin_vllm_fleet_behind_the_real_router_keeps_every_replicas_log() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = write_yaml(dir.path(), 18480, "[round_robin]");
    let row = real_router_point(dir.path(), &yaml);
    assert_eq!(row["point"]["replicas"], 2);
    assert_eq!(row["router_port"], 18482);
    let received = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .matches("Received request")
            .count()
    };
    // round_robin over 2 replicas: the 8 requests split 4 and 4, each in its replica's log
    let reps = row["replicas"].as_array().unwrap();
    assert_eq!(reps.len(), 2);
    let counts: Vec<usize> = reps
        .iter()
        .map(|r| received(Path::new(r["log"].as_str().unwrap())))
        .collect();
    assert_eq!(counts, [4, 4], "{row}");
    for r in reps {
        let m = std::fs::read_to_string(r["metrics"].as_str().unwrap()).unwrap();
        assert!(m.contains("vllm:prefix_cache_queries_total"));
    }
    assert!(row["router_stop"].as_str().unwrap().starts_with("exited"));
}

#[test]
#[ignore = "needs vllm-router 0.1.17 (pip install vllm-router==0.1.17; VLLM_ROUTER_BIN or \
            /work/venvs/router/bin); run with --ignored"]
fn kv_aware_fleet_behind_the_real_router_routes_on_the_replicas_kv_events() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = write_yaml(dir.path(), 19040, "[kv_aware]");
    // one request every 0.25 s (each done long before the next: no pacing), the router's
    // decisions in its log
    let text = std::fs::read_to_string(&yaml).unwrap().replace(
        "request_rates: [.inf]",
        "request_rates: [4]\n  bench_args: [--burstiness, inf]",
    ) + "  extra_args: [--log-level, debug]\n";
    std::fs::write(&yaml, text).unwrap();
    let row = real_router_point(dir.path(), &yaml);
    // the router's decisions: it credited the replica's cached prefix, from its KV events
    // (the 8 prompts share their first 1,024 tokens, 64 blocks of 16)
    let router_log = std::fs::read_to_string(row["router_log"].as_str().unwrap()).unwrap();
    // the router colours its log (ESC [ ... m) even into a file
    let mut plain = String::with_capacity(router_log.len());
    let mut chars = router_log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    let decisions: Vec<&str> = plain
        .lines()
        .filter(|l| l.contains("KV prefix decision"))
        .collect();
    let credited: Vec<u64> = decisions
        .iter()
        .filter_map(|l| {
            let v = l.split("credited_prefix_tokens=").nth(1)?;
            v.split_whitespace().next()?.parse().ok()
        })
        .collect();
    assert_eq!(credited.len(), 8, "{decisions:#?}");
    assert_eq!(credited[0], 0, "{router_log}");
    assert!(
        credited[1..].iter().all(|&c| c >= 1024),
        "{credited:?}\n{plain}"
    );
    // an idle fleet and the prefix on one replica: every request there
    let received = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .matches("Received request")
            .count()
    };
    let mut counts: Vec<usize> = row["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| received(Path::new(r["log"].as_str().unwrap())))
        .collect();
    counts.sort();
    assert_eq!(counts, [0, 8], "{row}");
    assert!(row["router_stop"].as_str().unwrap().starts_with("exited"));
}

/// Run the experiment `yaml` (in `dir`, output `dir/exp`) with the stand-in vLLM and the real
/// vllm-router on PATH: its one point's row, checked `ok`.
fn real_router_point(dir: &Path, yaml: &Path) -> serde_json::Value {
    assert!(
        router_dir().join("vllm-router").is_file(),
        "no vllm-router in {}",
        router_dir().display()
    );
    let out = runner(dir, yaml, 2, &[repo("scripts/vllm-standin"), router_dir()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.join("exp/points.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(row["status"], "ok", "{row}");
    row
}
