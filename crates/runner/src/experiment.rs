//! The experiment runner: one YAML file describes an experiment (model, vLLM flags, LMCache
//! settings, traces, request rates, eviction policies); every point gets a fresh `vllm serve`
//! with LMCache (the only way to empty LMCache's tiers) on its own GPU slot and port, the workload
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

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{RunnerError, RunnerResult};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Hugging Face id passed to `vllm serve`.
    pub hf_id: String,
    /// Our registry name (configs/models/NAME.yaml), used by `simulate` on the logs.
    pub registry: String,
    /// `--served-model-name` (default: the registry name).
    #[serde(default)]
    pub served_model_name: Option<String>,
}

fn default_vllm_command() -> Vec<String> {
    vec!["vllm".into()]
}
fn default_port_base() -> u16 {
    8100
}
fn default_health_timeout() -> f64 {
    900.0
}
fn default_stop_grace() -> f64 {
    30.0
}
fn default_block_size() -> u32 {
    16
}
fn default_log_flag() -> Option<String> {
    Some("--enable-log-requests".into())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VllmSection {
    /// The executable (and leading arguments) that is `vllm` (default `["vllm"]`).
    #[serde(default = "default_vllm_command")]
    pub command: Vec<String>,
    #[serde(default)]
    pub gpu_memory_utilization: Option<f64>,
    #[serde(default)]
    pub max_model_len: Option<u32>,
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    /// The flag that turns request logging on (`--enable-log-requests` since vLLM 0.10.2; set
    /// null for older versions, which log requests by default).
    #[serde(default = "default_log_flag")]
    pub log_requests_flag: Option<String>,
    /// `--enable-prefix-caching` (true) or `--no-enable-prefix-caching` (false); null: vLLM's
    /// default (on in the V1 engine).
    #[serde(default)]
    pub enable_prefix_caching: Option<bool>,
    /// More `vllm serve` arguments, verbatim.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Slot `i` serves on `port_base + i`.
    #[serde(default = "default_port_base")]
    pub port_base: u16,
    /// Seconds a server may take to answer `GET /health` with 200 (model loading included).
    #[serde(default = "default_health_timeout")]
    pub health_timeout_s: f64,
    /// Seconds between SIGTERM and SIGKILL.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_s: f64,
    /// More environment variables for the server.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

fn default_chunk() -> u32 {
    256
}
fn default_cpu_sizes() -> Vec<f64> {
    vec![5.0]
}
fn default_policies() -> Vec<String> {
    vec!["LRU".into()]
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LmcacheSection {
    #[serde(default = "default_chunk")]
    pub chunk_size: u32,
    /// GB of LMCache CPU memory per point (an axis of the grid).
    #[serde(default = "default_cpu_sizes")]
    pub max_local_cpu_size: Vec<f64>,
    /// `file:///path` for LMCache's local disk backend, or null.
    #[serde(default)]
    pub local_disk: Option<String>,
    #[serde(default)]
    pub max_local_disk_size: f64,
    /// LMCache eviction policies (an axis): LRU, LFU, FIFO, MRU.
    #[serde(default = "default_policies")]
    pub cache_policy: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSection {
    pub path: PathBuf,
    /// Label used in log names (default: the file stem).
    #[serde(default)]
    pub name: Option<String>,
}

fn default_reps() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSection {
    pub traces: Vec<TraceSection>,
    /// Requests per second (an axis); `inf` sends everything at once.
    pub request_rates: Vec<f64>,
    #[serde(default = "default_reps")]
    pub repetitions: u32,
    /// Stop the replay of a point after this many seconds.
    #[serde(default)]
    pub time_limit_s: Option<f64>,
    #[serde(default)]
    pub num_prompts: Option<u64>,
    /// More `inferencelab bench` arguments, verbatim.
    #[serde(default)]
    pub bench_args: Vec<String>,
}

fn default_tp() -> u32 {
    1
}

/// The experiment file (`configs/qwen-8b.yaml`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: String,
    pub model: ModelSection,
    #[serde(default = "default_tp")]
    pub tensor_parallel_size: u32,
    pub vllm: VllmSection,
    pub lmcache: LmcacheSection,
    pub workload: WorkloadSection,
    /// Parent of the experiment's folder (default outputs/logs/experiments).
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
}

impl ExperimentConfig {
    pub fn load(path: &Path) -> RunnerResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| RunnerError::io(path, e))?;
        let cfg: ExperimentConfig = serde_norway::from_str(&text).map_err(|e| {
            RunnerError::Config(format!(
                "{}{}: {e}",
                path.display(),
                e.location()
                    .map(|l| format!(":{}", l.line()))
                    .unwrap_or_default()
            ))
        })?;
        let err = |m: String| Err(RunnerError::Config(format!("{}: {m}", path.display())));
        if cfg.workload.traces.is_empty() {
            return err("workload.traces is empty: list at least one trace".into());
        }
        if cfg.workload.request_rates.is_empty()
            || cfg
                .workload
                .request_rates
                .iter()
                .any(|r| r.is_nan() || *r <= 0.0)
        {
            return err(
                "workload.request_rates must list positive rates (requests/s), e.g. [0.9, 2.0]"
                    .into(),
            );
        }
        if cfg.lmcache.max_local_cpu_size.iter().any(|g| *g < 0.0) {
            return err("lmcache.max_local_cpu_size: sizes are GB and must be >= 0".into());
        }
        for p in &cfg.lmcache.cache_policy {
            if !["LRU", "LFU", "FIFO", "MRU"].contains(&p.to_ascii_uppercase().as_str()) {
                return err(format!(
                    "lmcache.cache_policy: '{p}' is not an LMCache policy; use LRU, LFU, FIFO or MRU"
                ));
            }
        }
        if cfg.tensor_parallel_size == 0 {
            return err("tensor_parallel_size must be at least 1".into());
        }
        if cfg.vllm.command.is_empty() {
            return err("vllm.command must name an executable, e.g. [vllm]".into());
        }
        for (key, v) in [
            ("vllm.health_timeout_s", cfg.vllm.health_timeout_s),
            ("vllm.stop_grace_s", cfg.vllm.stop_grace_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return err(format!("{key} must be a number of seconds >= 0, got {v}"));
            }
        }
        Ok(cfg)
    }

    fn served_name(&self) -> String {
        self.model
            .served_model_name
            .clone()
            .unwrap_or_else(|| self.model.registry.clone())
    }
}

/// One point of the experiment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExpPoint {
    pub index: usize,
    pub trace: String,
    pub trace_path: PathBuf,
    pub cpu_gb: f64,
    pub cache_policy: String,
    pub request_rate: f64,
    pub repetition: u32,
    /// `server_64.0gb_0.9rps_29_5am_6am` (+ `_lfu` / `_r2` when those axes vary).
    pub stem: String,
}

fn fmt_rate(r: f64) -> String {
    if r.is_infinite() {
        "inf".into()
    } else {
        format!("{r}")
    }
}

impl ExperimentConfig {
    pub fn points(&self) -> Vec<ExpPoint> {
        let mut out = Vec::new();
        let many_policies = self.lmcache.cache_policy.len() > 1;
        for t in &self.workload.traces {
            let label = t.name.clone().unwrap_or_else(|| {
                t.path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "trace".into())
            });
            for &gb in &self.lmcache.max_local_cpu_size {
                for policy in &self.lmcache.cache_policy {
                    for &rate in &self.workload.request_rates {
                        for rep in 1..=self.workload.repetitions {
                            let mut stem =
                                format!("server_{gb:.1}gb_{}rps_{label}", fmt_rate(rate));
                            if many_policies {
                                stem.push_str(&format!("_{}", policy.to_ascii_lowercase()));
                            }
                            if self.workload.repetitions > 1 {
                                stem.push_str(&format!("_r{rep}"));
                            }
                            out.push(ExpPoint {
                                index: out.len(),
                                trace: label.clone(),
                                trace_path: t.path.clone(),
                                cpu_gb: gb,
                                cache_policy: policy.to_ascii_uppercase(),
                                request_rate: rate,
                                repetition: rep,
                                stem,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

/// GPU slots: the devices split into groups of the tensor-parallel size.
pub fn gpu_slots(devices: &[String], tp: u32) -> Vec<Vec<String>> {
    devices
        .chunks(tp as usize)
        .filter(|c| c.len() == tp as usize)
        .map(|c| c.to_vec())
        .collect()
}

/// The devices to use: `--gpus N` (0..N) or `CUDA_VISIBLE_DEVICES`.
pub fn devices(gpus: Option<usize>, cuda_visible: Option<&str>) -> Vec<String> {
    match (gpus, cuda_visible) {
        (Some(n), _) => (0..n).map(|i| i.to_string()).collect(),
        (None, Some(v)) if !v.trim().is_empty() => v
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => vec!["0".into()],
    }
}

/// The exact server command of a point on a slot.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub port: u16,
}

pub fn server_command(
    cfg: &ExperimentConfig,
    p: &ExpPoint,
    slot: usize,
    devices: &[String],
) -> ServerCommand {
    let port = cfg.vllm.port_base + slot as u16;
    let mut argv = cfg.vllm.command.clone();
    argv.extend([
        "serve".into(),
        cfg.model.hf_id.clone(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--served-model-name".into(),
        cfg.served_name(),
        "--tensor-parallel-size".into(),
        cfg.tensor_parallel_size.to_string(),
        "--block-size".into(),
        cfg.vllm.block_size.to_string(),
    ]);
    if let Some(u) = cfg.vllm.gpu_memory_utilization {
        argv.extend(["--gpu-memory-utilization".into(), u.to_string()]);
    }
    if let Some(l) = cfg.vllm.max_model_len {
        argv.extend(["--max-model-len".into(), l.to_string()]);
    }
    match cfg.vllm.enable_prefix_caching {
        Some(true) => argv.push("--enable-prefix-caching".into()),
        Some(false) => argv.push("--no-enable-prefix-caching".into()),
        None => {}
    }
    if let Some(f) = &cfg.vllm.log_requests_flag {
        argv.push(f.clone());
    }
    argv.push("--enable-prompt-tokens-details".into());
    argv.extend([
        "--kv-transfer-config".into(),
        r#"{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}"#.into(),
    ]);
    argv.extend(cfg.vllm.extra_args.iter().cloned());
    let mut env = vec![
        ("CUDA_VISIBLE_DEVICES".to_string(), devices.join(",")),
        ("PYTHONHASHSEED".into(), "0".into()),
        ("VLLM_LOGGING_LEVEL".into(), "DEBUG".into()),
        ("LMCACHE_USE_EXPERIMENTAL".into(), "True".into()),
        (
            "LMCACHE_CHUNK_SIZE".into(),
            cfg.lmcache.chunk_size.to_string(),
        ),
        (
            "LMCACHE_LOCAL_CPU".into(),
            if p.cpu_gb > 0.0 { "True" } else { "False" }.into(),
        ),
        (
            "LMCACHE_MAX_LOCAL_CPU_SIZE".into(),
            format!("{:.1}", p.cpu_gb),
        ),
        ("LMCACHE_CACHE_POLICY".into(), p.cache_policy.clone()),
    ];
    if let Some(d) = &cfg.lmcache.local_disk {
        env.push(("LMCACHE_LOCAL_DISK".into(), d.clone()));
        env.push((
            "LMCACHE_MAX_LOCAL_DISK_SIZE".into(),
            format!("{:.1}", cfg.lmcache.max_local_disk_size),
        ));
    }
    for (k, v) in &cfg.vllm.env {
        env.push((k.clone(), v.clone()));
    }
    ServerCommand { argv, env, port }
}

/// The bench command of a point.
pub fn bench_command(
    cfg: &ExperimentConfig,
    p: &ExpPoint,
    port: u16,
    bench_exe: &Path,
    out: &Path,
) -> Vec<String> {
    let mut argv = vec![
        bench_exe.display().to_string(),
        "bench".into(),
        "--base-url".into(),
        format!("http://127.0.0.1:{port}"),
        "--model".into(),
        cfg.served_name(),
        "--input-file".into(),
        p.trace_path.display().to_string(),
        "--request-rate".into(),
        fmt_rate(p.request_rate),
        "--output-dir".into(),
        out.display().to_string(),
    ];
    if let Some(n) = cfg.workload.num_prompts {
        argv.extend(["--num-prompts".into(), n.to_string()]);
    }
    if let Some(t) = cfg.workload.time_limit_s {
        argv.extend(["--duration".into(), t.to_string()]);
    }
    argv.extend(cfg.workload.bench_args.iter().cloned());
    argv
}

/// POSIX shell quoting for `--dry-run` output.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

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
}

/// The file a run appends its rows to: `points.jsonl`, or one per shard so that runners on
/// several nodes never append to the same file.
pub fn results_file_name(shard: Option<crate::batch::Shard>) -> String {
    match shard {
        Some(s) => format!("points-shard-{}-of-{}.jsonl", s.index, s.count),
        None => "points.jsonl".into(),
    }
}

/// The summary a run writes: `summary.json`, or one per shard.
pub fn summary_file_name(shard: Option<crate::batch::Shard>) -> String {
    match shard {
        Some(s) => format!("summary-shard-{}-of-{}.json", s.index, s.count),
        None => "summary.json".into(),
    }
}

/// Every row recorded in `dir` by any run, sharded or not (`points*.jsonl`), in file order.
fn recorded_rows(dir: &Path) -> RunnerResult<Vec<PointOutcome>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with("points") && n.ends_with(".jsonl")
                })
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(RunnerError::io(dir, e)),
    };
    files.sort();
    let mut rows = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| RunnerError::io(&f, e))?;
        // a torn last line (a runner killed mid-write) does not parse and is skipped
        rows.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<PointOutcome>(l).ok()),
        );
    }
    Ok(rows)
}

/// The outcome of one point (a row of `points.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointOutcome {
    pub point: ExpPoint,
    pub status: String,
    pub reason: Option<String>,
    pub slot: usize,
    pub devices: Vec<String>,
    pub port: u16,
    pub server_log: PathBuf,
    pub bench_dir: PathBuf,
    pub seconds: f64,
    /// How the server went away: `exited after SIGTERM`, `SIGKILL after N s (SIGTERM ignored)`,
    /// or `exited by itself` (absent in rows written before this field existed).
    #[serde(default)]
    pub stop: Option<String>,
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
    let slots = gpu_slots(&opts.devices, cfg.tensor_parallel_size);
    if slots.is_empty() {
        return Err(RunnerError::Config(format!(
            "{} GPUs cannot hold one slot of tensor_parallel_size {}: give --gpus or CUDA_VISIBLE_DEVICES with at least {}",
            opts.devices.len(),
            cfg.tensor_parallel_size,
            cfg.tensor_parallel_size
        )));
    }
    let dir = opts
        .experiment_dir
        .clone()
        .unwrap_or_else(|| experiment_dir(cfg, today));
    let points: Vec<ExpPoint> = cfg
        .points()
        .into_iter()
        .filter(|p| opts.shard.is_none_or(|s| p.index % s.count == s.index))
        .collect();
    if opts.dry_run {
        say(format!(
            "# {} points on {} slot(s) of {} GPU(s) each; logs in {}",
            points.len(),
            slots.len(),
            cfg.tensor_parallel_size,
            dir.display()
        ));
        for p in &points {
            let slot = p.index % slots.len();
            let sc = server_command(cfg, p, slot, &slots[slot]);
            let log = dir.join(format!("{}.log", p.stem));
            say(format!("\n# point {} (slot {slot}): {}", p.index, p.stem));
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
            say("# then SIGTERM the server's process group; SIGKILL after the grace period".into());
        }
        return Ok(RunReport {
            points,
            dir,
            ..RunReport::default()
        });
    }
    std::fs::create_dir_all(&dir).map_err(|e| RunnerError::io(&dir, e))?;
    let results_path = dir.join(results_file_name(opts.shard));
    let earlier_text = match std::fs::read_to_string(&results_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(RunnerError::io(&results_path, e)),
    };
    // The last ok row of each point, in any run's file (a sharded run sees what an unsharded
    // one did and the other way round; rows are appended; a torn last line is skipped).
    let mut done: HashMap<String, PointOutcome> = HashMap::new();
    for o in recorded_rows(&dir)? {
        if o.status == "ok" {
            done.insert(o.point.stem.clone(), o);
        }
    }
    let mut earlier = Vec::new();
    let mut pending = Vec::new();
    for p in &points {
        match done.get(&p.stem) {
            Some(o) => earlier.push(o.clone()),
            None => pending.push(p.clone()),
        }
    }
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
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results_path)
        .map_err(|e| RunnerError::io(&results_path, e))?;
    if !earlier_text.is_empty() && !earlier_text.ends_with('\n') {
        // A runner killed mid-write left a torn line: end it so the next row stays whole.
        file.write_all(b"\n")
            .map_err(|e| RunnerError::io(&results_path, e))?;
    }
    let queue = Arc::new(Mutex::new(pending.into_iter()));
    let results_file = Arc::new(Mutex::new(file));
    let outcomes: Arc<Mutex<Vec<PointOutcome>>> = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for (slot, devs) in slots.iter().enumerate() {
            let queue = queue.clone();
            let results_file = results_file.clone();
            let outcomes = outcomes.clone();
            let dir = &dir;
            let results_path = &results_path;
            s.spawn(move || loop {
                let next = queue.lock().expect("queue").next();
                let Some(p) = next else { break };
                say(format!("[slot {slot}] start {}", p.stem));
                let o = run_point(cfg, opts, &p, slot, devs, dir);
                // Recorded first, announced second: an `ok` line means the row is on disk.
                if let Ok(line) = serde_json::to_string(&o) {
                    let mut f = results_file.lock().expect("results");
                    if let Err(e) = writeln!(f, "{line}").and_then(|_| f.flush()) {
                        say(format!("cannot append to {}: {e}", results_path.display()));
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
    let report = RunReport {
        points,
        this_run,
        earlier,
        dir: dir.clone(),
    };
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
    Ok(report)
}

/// What a run did, for the summary: every point of the grid with its latest outcome.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub points: Vec<ExpPoint>,
    /// The points run this time, in point order.
    pub this_run: Vec<PointOutcome>,
    /// The points skipped because `points.jsonl` has them ok (their last ok row).
    pub earlier: Vec<PointOutcome>,
    pub dir: PathBuf,
}

impl RunReport {
    /// Points that failed this run.
    pub fn failed(&self) -> usize {
        self.this_run.iter().filter(|o| o.status != "ok").count()
    }

    /// Every point with its outcome and which run it comes from (`this`, `earlier`, or
    /// `not run` when the run was cut short).
    pub fn rows(&self) -> Vec<(&ExpPoint, Option<&PointOutcome>, &'static str)> {
        self.points
            .iter()
            .map(|p| {
                if let Some(o) = self.this_run.iter().find(|o| o.point.stem == p.stem) {
                    (p, Some(o), "this")
                } else if let Some(o) = self.earlier.iter().find(|o| o.point.stem == p.stem) {
                    (p, Some(o), "earlier")
                } else {
                    (p, None, "not run")
                }
            })
            .collect()
    }
}

fn run_point(
    cfg: &ExperimentConfig,
    opts: &RunOptions,
    p: &ExpPoint,
    slot: usize,
    devs: &[String],
    dir: &Path,
) -> PointOutcome {
    let started = Instant::now();
    let sc = server_command(cfg, p, slot, devs);
    let log_path = dir.join(format!("{}.log", p.stem));
    let bench_dir = dir.join(&p.stem);
    let mut outcome = PointOutcome {
        point: p.clone(),
        status: "failed".into(),
        reason: None,
        slot,
        devices: devs.to_vec(),
        port: sc.port,
        server_log: log_path.clone(),
        bench_dir: bench_dir.clone(),
        seconds: 0.0,
        stop: None,
    };
    let see_log = |what: String| {
        let last = last_line(&log_path)
            .map(|l| format!("; last log line: {l:?}"))
            .unwrap_or_default();
        format!("{what}{last}; see {}", log_path.display())
    };
    let result = (|| -> Result<(), String> {
        wait_port_free(sc.port, PORT_FREE_TIMEOUT)?;
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&sc.argv[0]);
        cmd.args(&sc.argv[1..])
            .envs(sc.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        stop_with_runner(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {}: {e} (is it installed and on PATH? set vllm.command)",
                sc.argv[0]
            )
        })?;
        let r = (|| {
            wait_healthy(
                &mut child,
                sc.port,
                Duration::from_secs_f64(cfg.vllm.health_timeout_s),
            )
            .map_err(&see_log)?;
            std::fs::create_dir_all(&bench_dir)
                .map_err(|e| format!("{}: {e}", bench_dir.display()))?;
            let argv = bench_command(cfg, p, sc.port, &opts.bench_exe, &bench_dir);
            let bench_log = bench_dir.join("bench.log");
            let bl = std::fs::File::create(&bench_log)
                .map_err(|e| format!("{}: {e}", bench_log.display()))?;
            let bl2 = bl.try_clone().map_err(|e| e.to_string())?;
            let status = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(bl)
                .stderr(bl2)
                .status()
                .map_err(|e| format!("cannot run bench ({}): {e}", argv[0]))?;
            if let Ok(m) = http_get(sc.port, "/metrics", Duration::from_secs(10)) {
                let _ = std::fs::write(bench_dir.join("metrics_final.prom"), m);
            }
            if let Some(code) = child.try_wait().ok().flatten() {
                return Err(see_log(format!("server died during the replay ({code})")));
            }
            if !status.success() {
                return Err(format!(
                    "bench exited with {status}; see {}",
                    bench_log.display()
                ));
            }
            Ok(())
        })();
        outcome.stop = Some(stop(
            &mut child,
            Duration::from_secs_f64(cfg.vllm.stop_grace_s),
        ));
        r
    })();
    if let Err(reason) = result {
        outcome.reason = Some(reason);
    } else {
        outcome.status = "ok".into();
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

/// How long a point waits for its port to be released (by the previous point's server, or by a
/// server of a killed run that is still shutting down) before it fails.
const PORT_FREE_TIMEOUT: Duration = Duration::from_secs(10);

fn wait_port_free(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            return Err(format!(
                "port {port} is taken (another server still running? `ss -ltnp | grep :{port}` \
                 names it; or move vllm.port_base)"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The last non-empty line of a log (at most 200 characters), for failure reasons.
fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let tail = &text[text.len().saturating_sub(4096)..];
    let line = String::from_utf8_lossy(tail)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())?
        .trim()
        .to_string();
    Some(line.chars().take(200).collect())
}

/// On Linux, the server gets SIGTERM when the runner dies (killed, Ctrl-C), so no `vllm serve`
/// is left holding GPUs and ports after a runner is gone; re-running then finds them free.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn stop_with_runner(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let runner = nix::unistd::getpid();
    // SAFETY: the hook runs in the forked child before exec; it makes only async-signal-safe
    // system calls (prctl, getppid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            // The runner may have died between fork and prctl.
            if nix::unistd::getppid() != runner {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn stop_with_runner(_cmd: &mut Command) {}

fn wait_healthy(child: &mut Child, port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("server exited ({status}) before becoming healthy"));
        }
        if let Ok(resp) = http_get(port, "/health", Duration::from_secs(2)) {
            if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "server not healthy: no 200 from http://127.0.0.1:{port}/health within \
                 {} s (vllm.health_timeout_s)",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.1 GET over loopback (no client library in the runner).
pub fn http_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Stop the server: SIGTERM its process group, wait `grace`, then SIGKILL the group. Returns how
/// it went away, for the point's row.
fn stop(child: &mut Child, grace: Duration) -> String {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let pgid = Pid::from_raw(child.id() as i32);
    if let Ok(Some(status)) = child.try_wait() {
        let _ = killpg(pgid, Signal::SIGKILL);
        return format!("exited by itself ({status})");
    }
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // the leader is gone; make sure its group is too
            let _ = killpg(pgid, Signal::SIGKILL);
            return "exited after SIGTERM".into();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait();
    format!("SIGKILL after {} s (SIGTERM ignored)", grace.as_secs_f64())
}

/// The summary table of a run: every point of the grid.
pub fn summary_table(report: &RunReport) -> String {
    let mut s = format!(
        "{:<48} {:>4} {:>8} {:>8}  {}\n",
        "point", "slot", "status", "seconds", "note"
    );
    for (p, o, run) in report.rows() {
        let (slot, status, seconds, note) = match o {
            Some(o) => (
                o.slot.to_string(),
                o.status.clone(),
                format!("{:.1}", o.seconds),
                match (&o.reason, run) {
                    (Some(r), _) => r.clone(),
                    (None, "earlier") => "done in an earlier run".into(),
                    (None, _) => o
                        .stop
                        .clone()
                        .filter(|s| s.starts_with("SIGKILL"))
                        .unwrap_or_default(),
                },
            ),
            None => ("-".into(), "not run".into(), "-".into(), String::new()),
        };
        s.push_str(&format!(
            "{:<48} {:>4} {:>8} {:>8}  {}\n",
            p.stem, slot, status, seconds, note
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let p = cfg().points();
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
        let p = &c.points()[0];
        let sc = server_command(&c, p, 1, &["2".into(), "3".into()]);
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
        let p = c.points()[0].clone();
        c.vllm.enable_prefix_caching = Some(false);
        let argv = server_command(&c, &p, 0, &["0".into()]).argv;
        assert!(argv.contains(&"--no-enable-prefix-caching".to_string()));
        c.vllm.enable_prefix_caching = Some(true);
        let argv = server_command(&c, &p, 0, &["0".into()]).argv;
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
        let points = c.points();
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

    #[test]
    fn shell_quoting_round_trips_json() {
        assert_eq!(shell_quote(r#"{"a":"b"}"#), r#"'{"a":"b"}'"#);
        assert_eq!(shell_quote("it's"), r#"'it'\''s'"#);
        assert_eq!(shell_quote("--port"), "--port");
    }
}
