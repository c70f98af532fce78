//! The experiment file: its YAML sections (model, vLLM, LMCache, workload), their defaults,
//! and the checks `load` makes before anything runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use inferencelab_trace::checked::{Seconds, MAX_SECONDS};

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

/// InferenceLab's policy for LMCache's in-process engine, as `cache_policy` names it
/// (`python/lmcache_policy/inferencelab_cache_policy.py` registers it under this key).
pub const CONVERSATION_AWARE: &str = "CONVERSATION_AWARE";

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
    /// LMCache eviction policies (an axis): LRU, LFU, FIFO, MRU and InferenceLab's
    /// `conversation_aware` (a `BaseCachePolicy` the runner registers: `PYTHONPATH`, issue 17);
    /// `mode: mp`: LRU, ARC.
    #[serde(default = "default_policies")]
    pub cache_policy: Vec<String>,
    /// `cache_policy: conversation_aware`: its scorer YAML (`configs/scorer_default.yaml`'s
    /// keys, or a file `sweep` wrote); absent: the bundled defaults.
    #[serde(default)]
    pub scorer_config: Option<PathBuf>,
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

fn default_routers() -> Vec<String> {
    vec!["cache_aware".into()]
}
fn default_router_command() -> Vec<String> {
    vec!["vllm-router".into()]
}

/// vllm-router's `--policy` values (0.1.17, `vllm-router --help`) the runner starts.
/// `kv_aware` also gets the replicas' KV events ([`FleetSection::kv_events_port`]).
pub const ROUTER_POLICIES: [&str; 7] = [
    "random",
    "round_robin",
    "cache_aware",
    "power_of_two",
    "consistent_hash",
    "sticky_least_loaded",
    "kv_aware",
];

/// Many replicas behind a router (issue 21, docs/replicas.md): each point of a fleet size N
/// starts N `vllm serve` replicas, one per GPU slot (slot k serves on its usual port), and
/// vLLM's router in front of them; the bench replays through the router and every replica's
/// log is kept (`<stem>.log` for replica 0, `<stem>.replicaK.log` for the others, as
/// `serve --replicas` names them). Points run one after another, each on the first N slots.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// Fleet sizes (an axis).
    pub replicas: Vec<usize>,
    /// Router `--policy` values (an axis; default [cache_aware], vllm-router's default).
    /// `kv_aware`: every replica publishes vLLM's KV cache events (`--kv-events-config`, ZMQ on
    /// its own port, topic `""`) and the router subscribes to each (`--kv-event-source`).
    #[serde(default = "default_routers")]
    pub routers: Vec<String>,
    /// The router executable and leading arguments (default `["vllm-router"]`: PyPI
    /// `vllm-router`).
    #[serde(default = "default_router_command")]
    pub command: Vec<String>,
    /// The router's port (default: the port after the last replica's); its Prometheus exporter
    /// takes the next one.
    #[serde(default)]
    pub port: Option<u16>,
    /// More router arguments, verbatim.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// `kv_aware` points: replica k publishes its KV events on this port + k (default: the
    /// port after the router's Prometheus exporter, i.e. router port + 2).
    #[serde(default)]
    pub kv_events_port: Option<u16>,
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
    /// Absent: one server per point. Present: N replicas behind a router per point.
    #[serde(default)]
    pub fleet: Option<FleetSection>,
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
        cfg.check()
            .map_err(|m| RunnerError::Config(format!("{}: {m}", path.display())))?;
        Ok(cfg)
    }

    /// Every value the YAML may hold but the runner cannot run, with the fix.
    fn check(&self) -> Result<(), String> {
        let cfg = self;
        if cfg.workload.traces.is_empty() {
            return Err("workload.traces is empty: list at least one trace".into());
        }
        if cfg.workload.request_rates.is_empty()
            || cfg
                .workload
                .request_rates
                .iter()
                .any(|r| r.is_nan() || *r <= 0.0)
        {
            return Err(
                "workload.request_rates must list positive rates (requests/s), e.g. [0.9, 2.0]"
                    .into(),
            );
        }
        if let Some(lm) = &cfg.lmcache {
            check_lmcache(lm)?;
        }
        if let Some(&n) = cfg.vllm.num_gpu_blocks_override.iter().find(|&&n| n < 2) {
            return Err(format!(
                "vllm.num_gpu_blocks_override: {n} blocks leave no usable block (vLLM counts its \
                 null block); give at least 2"
            ));
        }
        if cfg.vllm.enable_log_outputs && cfg.vllm.log_requests_flag.is_none() {
            return Err("vllm.enable_log_outputs needs vllm.log_requests_flag \
                        (--enable-log-requests): vLLM refuses --enable-log-outputs without it"
                .into());
        }
        if cfg.vllm.http_timeout_keep_alive_s.is_some() && cfg.vllm.env.contains_key(KEEP_ALIVE_ENV)
        {
            return Err(format!(
                "vllm.http_timeout_keep_alive_s and vllm.env.{KEEP_ALIVE_ENV} set the same \
                 variable: keep one"
            ));
        }
        if cfg.tensor_parallel_size == 0 {
            return Err("tensor_parallel_size must be at least 1".into());
        }
        if cfg.workload.repetitions == 0 {
            return Err(
                "workload.repetitions: 0 runs nothing: give at least 1 (or leave the key out)"
                    .into(),
            );
        }
        if cfg.vllm.block_size == 0 {
            return Err("vllm.block_size: 0 is not a block size: give vLLM's, e.g. 16".into());
        }
        if let Some(u) = cfg.vllm.gpu_memory_utilization {
            if !(u > 0.0 && u <= 1.0) {
                return Err(format!(
                    "vllm.gpu_memory_utilization: {u} is not a share of GPU memory: give a \
                     number above 0 and at most 1 (vLLM's default 0.9)"
                ));
            }
        }
        if cfg.vllm.command.is_empty() {
            return Err("vllm.command must name an executable, e.g. [vllm]".into());
        }
        for (key, v) in [
            ("vllm.health_timeout_s", cfg.vllm.health_timeout_s),
            ("vllm.stop_grace_s", cfg.vllm.stop_grace_s),
        ] {
            if Seconds::try_from(v).is_err() {
                return Err(format!(
                    "{key} must be a number of seconds from 0 to {MAX_SECONDS:e}, got {v}"
                ));
            }
        }
        if let Some(t) = cfg.workload.time_limit_s {
            if !(t > 0.0 && t <= MAX_SECONDS) {
                return Err(format!(
                    "workload.time_limit_s: {t} is not allowed: give seconds above 0 (at most \
                     {MAX_SECONDS:e}), or leave the key out to replay the whole trace"
                ));
            }
        }
        if cfg.vllm.port_base == 0 {
            return Err(
                "vllm.port_base: 0 is not allowed: give the first server's port, 1 to \
                        65535 (slot i serves on port_base + i; default 8100)"
                    .into(),
            );
        }
        if let Some(f) = &cfg.fleet {
            check_fleet(f, cfg.mp())?;
        }
        for (i, t) in cfg.workload.traces.iter().enumerate() {
            // the bench reads the path as given, from the directory the runner starts in
            if let Err(e) = std::fs::metadata(&t.path) {
                let cwd = std::env::current_dir()
                    .map(|d| format!(" (relative paths start in {})", d.display()))
                    .unwrap_or_default();
                return Err(format!(
                    "workload.traces[{i}].path: {}: {e}{cwd}; fix the path or run from the \
                     directory it is relative to",
                    t.path.display()
                ));
            }
        }
        Ok(())
    }

    /// The grid's axes (YAML key, length), for the size limit.
    pub(super) fn axes(&self) -> Vec<(&'static str, usize)> {
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
            (
                "fleet.replicas",
                self.fleet.as_ref().map_or(1, |f| f.replicas.len()),
            ),
            (
                "fleet.routers",
                self.fleet.as_ref().map_or(1, |f| f.routers.len()),
            ),
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
    pub(super) fn check_ports(&self, slots: usize) -> RunnerResult<()> {
        let per = self.ports_per_slot();
        if self.fleet.is_some() {
            let need = self.max_replicas();
            if slots < need {
                return Err(RunnerError::Config(format!(
                    "fleet.replicas {need} needs {need} GPU slots (one replica each) but there \
                     are {slots}: give --gpus {} (tensor_parallel_size {}), or smaller fleets",
                    need * self.tensor_parallel_size as usize,
                    self.tensor_parallel_size
                )));
            }
            let router = self.router_port() as usize;
            if router + 1 > u16::MAX as usize {
                return Err(RunnerError::Config(format!(
                    "the router's port {router} and its Prometheus port {} pass 65535: lower \
                     fleet.port or vllm.port_base",
                    router + 1
                )));
            }
            let kv = self.kv_events_port() as usize;
            if self.kv_aware() && kv + need - 1 > u16::MAX as usize {
                return Err(RunnerError::Config(format!(
                    "kv_aware: the replicas' KV event ports {kv}..{} pass 65535: lower \
                     fleet.kv_events_port (or fleet.port, vllm.port_base)",
                    kv + need - 1
                )));
            }
            let base = self.vllm.port_base as usize;
            let overlaps = |lo: usize, hi: usize| kv < hi && lo < kv + need;
            if self.kv_aware()
                && (overlaps(base, base + slots * per) || overlaps(router, router + 2))
            {
                return Err(RunnerError::Config(format!(
                    "kv_aware: the replicas' KV event ports {kv}..{} overlap the replicas' \
                     ({base}..{}) or the router's ({router}, {}): set fleet.kv_events_port \
                     past them",
                    kv + need - 1,
                    base + slots * per - 1,
                    router + 1
                )));
            }
        }
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

    /// The largest fleet of the grid (1 without a fleet).
    pub fn max_replicas(&self) -> usize {
        self.fleet
            .as_ref()
            .and_then(|f| f.replicas.iter().copied().max())
            .unwrap_or(1)
    }

    /// The router's port: `fleet.port`, else the port after the largest fleet's last replica.
    pub fn router_port(&self) -> u16 {
        self.fleet.as_ref().and_then(|f| f.port).unwrap_or_else(|| {
            let after = self.vllm.port_base as usize + self.max_replicas() * self.ports_per_slot();
            after.min(u16::MAX as usize) as u16
        })
    }

    /// Where replica 0 of a `kv_aware` point publishes its KV events (replica k: + k):
    /// `fleet.kv_events_port`, else the port after the router's Prometheus exporter.
    pub fn kv_events_port(&self) -> u16 {
        self.fleet
            .as_ref()
            .and_then(|f| f.kv_events_port)
            .unwrap_or_else(|| (self.router_port() as usize + 2).min(u16::MAX as usize) as u16)
    }

    /// Whether any point of the grid routes with `kv_aware`.
    pub(super) fn kv_aware(&self) -> bool {
        self.fleet
            .as_ref()
            .is_some_and(|f| f.routers.iter().any(|r| r == "kv_aware"))
    }

    pub(super) fn served_name(&self) -> String {
        self.model
            .served_model_name
            .clone()
            .unwrap_or_else(|| self.model.registry.clone())
    }
}

impl ExperimentConfig {
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
}

/// vLLM's keep-alive variable (`vllm/envs.py`, used by `vllm/entrypoints/launcher.py`).
pub(super) const KEEP_ALIVE_ENV: &str = "VLLM_HTTP_TIMEOUT_KEEP_ALIVE";

/// The `lmcache:` section's checks.
fn check_lmcache(lm: &LmcacheSection) -> Result<(), String> {
    if let Some(g) = lm.max_local_cpu_size.iter().find(|g| !is_size(**g)) {
        return Err(format!(
            "lmcache.max_local_cpu_size: {g} is not allowed: sizes are GB, finite and \
                 >= 0 (0 and no local_disk: that point runs without LMCache)"
        ));
    }
    if !is_size(lm.max_local_disk_size) {
        return Err(format!(
            "lmcache.max_local_disk_size: {} is not allowed: give GB, finite and >= 0",
            lm.max_local_disk_size
        ));
    }
    if lm.chunk_size == 0 {
        return Err(
            "lmcache.chunk_size: 0 is not allowed: give tokens per LMCache \
                        chunk, at least 1 (LMCache's default: 256)"
                .into(),
        );
    }
    if lm.max_local_cpu_size.is_empty() || lm.cache_policy.is_empty() {
        return Err(
            "lmcache.max_local_cpu_size and lmcache.cache_policy are axes: \
                        list at least one value (or leave the key out for its default)"
                .into(),
        );
    }
    for p in &lm.cache_policy {
        let up = p.to_ascii_uppercase();
        if lm.mode == LmcacheMode::Mp && up == CONVERSATION_AWARE {
            return Err(
                "lmcache.cache_policy: conversation_aware plugs into LMCache's in-process \
                 engine (its BaseCachePolicy); `lmcache server` (lmcache.mode: mp) has its own \
                 eviction policies: use LRU or ARC there, or mode: inprocess"
                    .into(),
            );
        }
        if lm.mode == LmcacheMode::Mp && !MP_POLICIES.contains(&up.as_str()) {
            return Err(format!(
                "lmcache.cache_policy: '{p}' is not a policy of `lmcache server` \
                     (lmcache.mode: mp); use LRU or ARC"
            ));
        }
        if !["LRU", "LFU", "FIFO", "MRU", "ARC", CONVERSATION_AWARE].contains(&up.as_str())
            || (lm.mode == LmcacheMode::Inprocess && up == "ARC")
        {
            return Err(format!(
                "lmcache.cache_policy: '{p}' is not an LMCache policy; use LRU, LFU, FIFO, MRU \
                 or conversation_aware"
            ));
        }
    }
    if let Some(f) = &lm.scorer_config {
        if !lm
            .cache_policy
            .iter()
            .any(|p| p.eq_ignore_ascii_case(CONVERSATION_AWARE))
        {
            return Err(
                "lmcache.scorer_config is the scorer of cache_policy conversation_aware, \
                 which the grid does not use: add conversation_aware or leave the key out"
                    .into(),
            );
        }
        if !f.is_file() {
            return Err(format!(
                "lmcache.scorer_config: {} is not a file (a scorer YAML such as \
                 configs/scorer_default.yaml; relative paths are from where the runner starts)",
                f.display()
            ));
        }
    }
    if lm.mode == LmcacheMode::Mp {
        if lm.local_disk.is_some() {
            return Err(
                "lmcache.local_disk: the runner's multi-process mode (lmcache.mode: \
                            mp) has no L2 yet: leave local_disk out, or use mode: inprocess"
                    .into(),
            );
        }
        if lm.command.is_empty() {
            return Err("lmcache.command must name an executable, e.g. [lmcache]".into());
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
                    return Err(format!(
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
        return Err(
            "lmcache.command, eviction_trigger_watermark, eviction_ratio, \
                        extra_args and env configure `lmcache server`: they need \
                        lmcache.mode: mp"
                .into(),
        );
    }
    Ok(())
}

/// The `fleet:` section's checks (`mp`: the points run LMCache's multi-process server).
fn check_fleet(f: &FleetSection, mp: bool) -> Result<(), String> {
    if f.replicas.is_empty() || f.routers.is_empty() {
        return Err(
            "fleet.replicas and fleet.routers are axes: list at least one \
                        value each, e.g. replicas: [2, 4]"
                .into(),
        );
    }
    if let Some(n) = f.replicas.iter().find(|&&n| n == 0) {
        return Err(format!(
            "fleet.replicas: {n} is not a fleet size: give 1 or more"
        ));
    }
    if let Some(r) = f
        .routers
        .iter()
        .find(|r| !ROUTER_POLICIES.contains(&r.as_str()))
    {
        return Err(format!(
            "fleet.routers: '{r}' is not a policy the runner starts; use one of {}",
            ROUTER_POLICIES.join(", ")
        ));
    }
    if f.command.is_empty() {
        return Err("fleet.command must name an executable, e.g. [vllm-router]".into());
    }
    if mp {
        return Err(
            "fleet with lmcache.mode: mp is not supported yet (issue 21): one \
                        `lmcache server` per replica is not wired; use mode: inprocess"
                .into(),
        );
    }
    Ok(())
}
