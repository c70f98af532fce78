//! `batch`: a YAML grid of simulations over traces x models x block/chunk sizes x GPU/CPU/disk
//! sizes x policies x semantics, run in parallel. Every finished point is appended at once to
//! `results.jsonl` as a row carrying all its parameters; re-running resumes (points are keyed by
//! a digest of their parameters and of the trace file's bytes, so a changed config or trace
//! re-runs exactly the points it changed); a bad point becomes an error row and the others go on;
//! `--shard i/N` runs a deterministic slice and `merge` joins the slices.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use inferencelab_cache::PolicyConfig;
use inferencelab_models as models;
use inferencelab_sim::cluster::{self, ClusterConfig, LmcacheNetwork};
use inferencelab_sim::plan::{self, Capacity};
use inferencelab_sim::resolve::{self, PointSpec, TierPolicy};
use inferencelab_sim::{HitSemantics, Prepared, SimConfig, TimingModel};
use inferencelab_trace::checked::NonNegative;
use inferencelab_trace::fsutil::write_json;
use inferencelab_trace::{read_trace_hashed, Format, ReadOptions, Trace};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{RunnerError, RunnerResult};

/// A trace entry of the grid: a path, or a map with options.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TraceEntry {
    Path(PathBuf),
    Spec(TraceSpec),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    pub path: PathBuf,
    /// Label in results and plots (default: the file stem).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub skip_invalid: bool,
}

impl TraceEntry {
    fn spec(&self) -> TraceSpec {
        match self {
            TraceEntry::Path(p) => TraceSpec {
                path: p.clone(),
                name: None,
                format: None,
                skip_invalid: false,
            },
            TraceEntry::Spec(s) => s.clone(),
        }
    }
}

fn default_models() -> Vec<String> {
    vec!["qwen-8b".into()]
}
fn default_same() -> String {
    "same".into()
}
fn default_window() -> f64 {
    60.0
}

/// The grid file (`configs/simulation_*.yaml`). Every list is one axis of the grid; an empty
/// optional axis takes the default noted on it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Grid name (default: the YAML file stem).
    #[serde(default)]
    pub name: Option<String>,
    /// Where rows, summary and plots go (default: outputs/simulation/<name>).
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    pub traces: Vec<TraceEntry>,
    #[serde(default = "default_models")]
    pub models: Vec<String>,
    /// GPU block sizes in tokens (default: the trace's own for id traces, else 16).
    #[serde(default)]
    pub block_sizes: Vec<u32>,
    /// LMCache chunk sizes in tokens (default: 256, or the trace's block-size multiple).
    #[serde(default)]
    pub chunk_sizes: Vec<u32>,
    /// GPU capacities in blocks.
    #[serde(default)]
    pub gpu_blocks: Vec<u64>,
    /// GPU capacities in GiB of KV memory.
    #[serde(default)]
    pub gpu_cache_gb: Vec<NonNegative>,
    /// LMCache CPU sizes in GiB; 0 switches the tier off (default: [0]).
    #[serde(default)]
    pub cpu_cache_gb: Vec<NonNegative>,
    /// LMCache CPU sizes in chunks (instead of cpu_cache_gb).
    #[serde(default)]
    pub cpu_chunks: Vec<u64>,
    /// LMCache disk sizes in GiB; 0 = off (default: off).
    #[serde(default)]
    pub disk_cache_gb: Vec<NonNegative>,
    /// GPU-tier policies: names (`lru`) or maps with parameters (`{name: s3fifo, ...}`).
    pub policies: Vec<Value>,
    /// LMCache-tier policy: `same` (the GPU policy of the point) or a policy name.
    #[serde(default = "default_same")]
    pub cpu_policy: String,
    /// Default: [prefix].
    #[serde(default)]
    pub hit_semantics: Vec<HitSemantics>,
    /// Default: [true].
    #[serde(default)]
    pub pinning: Vec<bool>,
    #[serde(default)]
    pub timing: Option<TimingModel>,
    #[serde(default = "default_window")]
    pub window_seconds: f64,
    /// Fleet sizes: each point runs N replicas behind a router (`simulate --replicas N`,
    /// docs/replicas.md); every size in the grid is one replica's. Default: one server, no router.
    #[serde(default)]
    pub replicas: Vec<usize>,
    /// The routers in front of `replicas` (`simulate --router` names; default: [cache_aware],
    /// vllm-router's default).
    #[serde(default, alias = "router")]
    pub routers: Vec<String>,
    /// One LMCache tier for the fleet (`simulate --lmcache-shared`) or one per replica: an axis
    /// of fleet points, e.g. [false, true]. Default: [false].
    #[serde(default)]
    pub lmcache_shared: Vec<bool>,
    /// The shared tier's network (`{gbit_per_s, latency_ms}`; default 100 Gbit/s, 0.5 ms).
    #[serde(default)]
    pub lmcache_network: LmcacheNetwork,
}

/// One point of the grid, with every parameter (they are copied into its result row).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// Position in the full grid (deterministic: the axes' nesting order).
    pub index: usize,
    /// Digest of the parameters and the trace bytes.
    pub point_id: String,
    pub trace: String,
    pub trace_path: PathBuf,
    pub model: String,
    pub block_size: Option<u32>,
    pub chunk_size: Option<u32>,
    pub gpu: Capacity,
    pub cpu: Option<Capacity>,
    pub disk: Option<Capacity>,
    pub policy_config: Value,
    pub cpu_policy: String,
    pub hit_semantics: HitSemantics,
    pub pinning: bool,
    pub timing: TimingModel,
    pub window_seconds: f64,
    /// N replicas behind `router` (`None`: one server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// The fleet has one LMCache tier (only written when true).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lmcache_shared: bool,
    /// Its network (only with `lmcache_shared`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmcache_network: Option<LmcacheNetwork>,
}

/// A `--shard i/N` slice: point `k` of the grid belongs to shard `k mod N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("--shard '{s}': expected i/N with 0 <= i < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl BatchConfig {
    /// Read and validate a grid file; errors name the file, line and key.
    pub fn load(path: &Path) -> RunnerResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| RunnerError::io(path, e))?;
        let mut cfg: BatchConfig = serde_norway::from_str(&text).map_err(|e| {
            RunnerError::Config(format!(
                "{}{}: {e}",
                path.display(),
                e.location()
                    .map(|l| format!(":{}", l.line()))
                    .unwrap_or_default()
            ))
        })?;
        if cfg.name.is_none() {
            cfg.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> RunnerResult<()> {
        let err = |m: String| Err(RunnerError::Config(format!("{}: {m}", path.display())));
        if self.traces.is_empty() {
            return err("`traces` is empty: list at least one trace file".into());
        }
        if self.policies.is_empty() {
            return err("`policies` is empty: list at least one policy, e.g. [lru, belady]".into());
        }
        match (self.gpu_blocks.is_empty(), self.gpu_cache_gb.is_empty()) {
            (true, true) => {
                return err(
                    "give `gpu_blocks` or `gpu_cache_gb` (a list of GPU cache sizes)".into(),
                )
            }
            (false, false) => {
                return err("give either `gpu_blocks` or `gpu_cache_gb`, not both".into())
            }
            _ => {}
        }
        if !self.cpu_cache_gb.is_empty() && !self.cpu_chunks.is_empty() {
            return err("give either `cpu_cache_gb` or `cpu_chunks`, not both".into());
        }
        if self.window_seconds.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return err("`window_seconds` must be positive".into());
        }
        if self.replicas.is_empty() && !self.routers.is_empty() {
            return err(
                "`routers` needs `replicas` (a list of fleet sizes, e.g. replicas: [1, 2, 4, 8])"
                    .into(),
            );
        }
        if self.replicas.is_empty() && !self.lmcache_shared.is_empty() {
            return err(
                "`lmcache_shared` needs `replicas` (one server has one LMCache tier anyway)".into(),
            );
        }
        let net = &self.lmcache_network;
        if !(net.gbit_per_s > 0.0 && net.latency_ms >= 0.0) {
            return err(format!(
                "`lmcache_network`: gbit_per_s {} and latency_ms {}: give a bandwidth above 0 \
                 and a latency of 0 or more",
                net.gbit_per_s, net.latency_ms
            ));
        }
        if let Some(n) = self.replicas.iter().find(|&&n| n == 0 || n > MAX_REPLICAS) {
            return err(format!(
                "`replicas`: {n} is not a fleet size; give numbers from 1 to {MAX_REPLICAS}"
            ));
        }
        if let Some(r) = self
            .routers
            .iter()
            .find(|r| !cluster::registry::names().any(|n| n == r.as_str()))
        {
            return err(format!(
                "`routers`: unknown router '{r}'; expected one of: {}",
                cluster::registry::names().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
    }

    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| "batch".into())
    }

    pub fn output_dir(&self) -> PathBuf {
        self.output_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("outputs/simulation").join(self.name()))
    }

    /// The grid's axes with their lengths (an empty optional axis counts 1), in YAML keys.
    fn axes(&self) -> Vec<(&'static str, usize)> {
        let (gpu_key, gpus) = if self.gpu_blocks.is_empty() {
            ("gpu_cache_gb", self.gpu_cache_gb.len())
        } else {
            ("gpu_blocks", self.gpu_blocks.len())
        };
        let (cpu_key, cpus) = if self.cpu_chunks.is_empty() {
            ("cpu_cache_gb", self.cpu_cache_gb.len())
        } else {
            ("cpu_chunks", self.cpu_chunks.len())
        };
        vec![
            ("traces", self.traces.len()),
            ("models", self.models.len()),
            ("block_sizes", self.block_sizes.len().max(1)),
            ("chunk_sizes", self.chunk_sizes.len().max(1)),
            (cpu_key, cpus.max(1)),
            ("disk_cache_gb", self.disk_cache_gb.len().max(1)),
            ("hit_semantics", self.hit_semantics.len().max(1)),
            ("pinning", self.pinning.len().max(1)),
            ("policies", self.policies.len()),
            (gpu_key, gpus),
            ("replicas", self.replicas.len().max(1)),
            ("routers", self.routers.len().max(1)),
            ("lmcache_shared", self.lmcache_shared.len().max(1)),
        ]
    }

    /// Expand the grid into points, in a fixed order. A grid of more than `max_points` points
    /// (before duplicates are merged) is refused before any point is built.
    pub fn points(&self, max_points: usize) -> RunnerResult<Vec<Point>> {
        check_grid_size(&self.axes(), max_points)?;
        let digests: Vec<String> = self
            .traces
            .iter()
            .map(|t| trace_digest(&t.spec().path))
            .collect();
        let opt = |v: &[u32]| -> Vec<Option<u32>> {
            if v.is_empty() {
                vec![None]
            } else {
                v.iter().map(|&x| Some(x)).collect()
            }
        };
        let gpus: Vec<Capacity> = if self.gpu_blocks.is_empty() {
            self.gpu_cache_gb
                .iter()
                .map(|&g| Capacity::Gib(g.get()))
                .collect()
        } else {
            self.gpu_blocks
                .iter()
                .map(|&n| Capacity::Entries(n))
                .collect()
        };
        let cpus: Vec<Option<Capacity>> = if !self.cpu_chunks.is_empty() {
            self.cpu_chunks
                .iter()
                .map(|&n| (n > 0).then_some(Capacity::Entries(n)))
                .collect()
        } else if !self.cpu_cache_gb.is_empty() {
            self.cpu_cache_gb
                .iter()
                .map(|&g| (g.get() > 0.0).then_some(Capacity::Gib(g.get())))
                .collect()
        } else {
            vec![None]
        };
        let disks: Vec<Option<Capacity>> = if self.disk_cache_gb.is_empty() {
            vec![None]
        } else {
            self.disk_cache_gb
                .iter()
                .map(|&g| (g.get() > 0.0).then_some(Capacity::Gib(g.get())))
                .collect()
        };
        let semantics = if self.hit_semantics.is_empty() {
            vec![HitSemantics::Prefix]
        } else {
            self.hit_semantics.clone()
        };
        let pinning = if self.pinning.is_empty() {
            vec![true]
        } else {
            self.pinning.clone()
        };
        let timing = self.timing.unwrap_or_default();
        // (replicas, router, shared LMCache) of each fleet point; one server when `replicas` is
        // not given
        let fleets: Vec<(Option<usize>, Option<String>, bool)> = if self.replicas.is_empty() {
            vec![(None, None, false)]
        } else {
            let routers = if self.routers.is_empty() {
                vec![DEFAULT_ROUTER.to_string()]
            } else {
                self.routers.clone()
            };
            let shared = if self.lmcache_shared.is_empty() {
                vec![false]
            } else {
                self.lmcache_shared.clone()
            };
            let mut fleets = Vec::new();
            for &n in &self.replicas {
                for r in &routers {
                    for &sh in &shared {
                        fleets.push((Some(n), Some(r.clone()), sh));
                    }
                }
            }
            fleets
        };
        let mut points = Vec::new();
        let mut seen = HashSet::new();
        for (ti, entry) in self.traces.iter().enumerate() {
            let spec = entry.spec();
            let label = spec.name.clone().unwrap_or_else(|| {
                spec.path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("trace{ti}"))
            });
            for model in &self.models {
                for &bs in &opt(&self.block_sizes) {
                    for &cs in &opt(&self.chunk_sizes) {
                        for &cpu in &cpus {
                            for &disk in &disks {
                                for &sem in &semantics {
                                    for &pin in &pinning {
                                        for policy in &self.policies {
                                            for (&gpu, (replicas, router, shared)) in gpus
                                                .iter()
                                                .flat_map(|g| fleets.iter().map(move |f| (g, f)))
                                            {
                                                let mut p = Point {
                                                    index: points.len(),
                                                    point_id: String::new(),
                                                    trace: label.clone(),
                                                    trace_path: spec.path.clone(),
                                                    model: model.clone(),
                                                    block_size: bs,
                                                    chunk_size: cs,
                                                    gpu,
                                                    cpu,
                                                    disk,
                                                    policy_config: policy.clone(),
                                                    cpu_policy: self.cpu_policy.clone(),
                                                    hit_semantics: sem,
                                                    pinning: pin,
                                                    timing,
                                                    window_seconds: self.window_seconds,
                                                    replicas: *replicas,
                                                    router: router.clone(),
                                                    lmcache_shared: *shared,
                                                    lmcache_network: shared
                                                        .then_some(self.lmcache_network),
                                                };
                                                p.point_id = point_id(&p, &digests[ti], &spec);
                                                // a value listed twice on an axis is one point
                                                if seen.insert(p.point_id.clone()) {
                                                    points.push(p);
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(points)
    }
}

/// The router of fleet points when the grid names none: vllm-router's default policy.
pub const DEFAULT_ROUTER: &str = "cache_aware";
/// The largest fleet a grid may ask for (as `simulate --replicas`).
pub const MAX_REPLICAS: usize = 4096;

/// Grids larger than this are refused unless `--max-points` raises the limit: 10^5 points are
/// hours of simulation (or days of GPU time), and a typo in a list (10^7 points) would fill the
/// memory with points before the first one runs.
pub const DEFAULT_MAX_POINTS: usize = 100_000;

/// Refuse a grid whose axes (YAML key, length) multiply to more than `max_points`, naming the
/// long axes and the override.
pub(crate) fn check_grid_size(axes: &[(&str, usize)], max_points: usize) -> RunnerResult<()> {
    let total = axes
        .iter()
        .fold(1u128, |n, &(_, len)| n.saturating_mul(len as u128));
    if total <= max_points as u128 {
        return Ok(());
    }
    let long: Vec<String> = axes
        .iter()
        .filter(|(_, len)| *len > 1)
        .map(|(key, len)| format!("{key} {len}"))
        .collect();
    Err(RunnerError::Config(format!(
        "the grid has {total} points ({}), more than the limit of {max_points}: shorten those \
         YAML lists or split the grid into several files, or raise the limit with \
         --max-points {total}",
        long.join(" x ")
    )))
}

/// Digest of a trace file's bytes (or of a directory's files), so an edited trace re-runs.
fn trace_digest(path: &Path) -> String {
    let mut h = 0u64;
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            if let Ok(b) = std::fs::read(&f) {
                h = xxh3_64(&[h.to_le_bytes().as_slice(), &b].concat());
            }
        }
        format!("{h:016x}")
    } else {
        match std::fs::read(path) {
            Ok(b) => format!("{:016x}", xxh3_64(&b)),
            Err(_) => "missing".into(),
        }
    }
}

fn point_id(p: &Point, digest: &str, spec: &TraceSpec) -> String {
    let key = json!({
        "trace_digest": digest,
        "trace_path": p.trace_path,
        "format": spec.format,
        "skip_invalid": spec.skip_invalid,
        "model": p.model,
        "block_size": p.block_size,
        "chunk_size": p.chunk_size,
        "gpu": p.gpu,
        "cpu": p.cpu,
        "disk": p.disk,
        "policy": p.policy_config,
        "cpu_policy": p.cpu_policy,
        "hit_semantics": p.hit_semantics,
        "pinning": p.pinning,
        "timing": p.timing,
        "window_seconds": p.window_seconds,
    });
    // fleet keys only on fleet points, so a single server's point keeps its id (and its row)
    let mut key = key;
    if let (Some(n), Some(r)) = (p.replicas, &p.router) {
        key["replicas"] = json!(n);
        key["router"] = json!(r);
        // only when shared: per-replica fleet points keep their ids
        if p.lmcache_shared {
            key["lmcache_shared"] = json!(true);
            key["lmcache_network"] = json!(p.lmcache_network);
        }
    }
    format!("{:016x}", xxh3_64(key.to_string().as_bytes()))
}

/// Parse a policy entry of the grid: a name, or a map with `name` and parameters.
pub fn parse_policy(v: &Value) -> Result<PolicyConfig, String> {
    match v {
        Value::String(s) => s.parse(),
        Value::Object(given) => {
            let policy: PolicyConfig = serde_json::from_value(v.clone())
                .map_err(|e| format!("invalid policy {v}: {e}"))?;
            // serde accepts extra keys next to a parameterless policy: refuse them here
            let known = serde_json::to_value(&policy).map_err(|e| e.to_string())?;
            if let Some(k) = given.keys().find(|k| known.get(k.as_str()).is_none()) {
                return Err(format!(
                    "invalid policy {v}: unknown parameter '{k}' for policy {}",
                    policy.name()
                ));
            }
            Ok(policy)
        }
        _ => Err(format!(
            "invalid policy {v}: expected a name or a map with `name`"
        )),
    }
}

/// What a finished point reports to the progress callback.
pub struct PointDone<'a> {
    pub point: &'a Point,
    pub error: Option<&'a str>,
}

/// The outcome of a batch run.
#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    pub output_dir: PathBuf,
    pub results_file: PathBuf,
    pub summary_file: PathBuf,
    pub points: usize,
    /// Points skipped because `results.jsonl` already had them.
    pub resumed: usize,
    pub ran: usize,
    pub failed: usize,
    /// Finished rows in `results.jsonl` whose point is no longer in the grid (config changed).
    pub stale_rows: usize,
    pub config_changed: bool,
}

/// Run the grid (or one shard of it), refusing grids of more than `max_points` points.
/// `on_start(total_to_run)` and `on_done` report progress.
pub fn run(
    cfg: &BatchConfig,
    shard: Option<Shard>,
    max_points: usize,
    on_start: &(dyn Fn(usize) + Sync),
    on_done: &(dyn Fn(PointDone<'_>) + Sync),
) -> RunnerResult<BatchReport> {
    let all = cfg.points(max_points)?;
    let out_dir = match shard {
        Some(s) => cfg
            .output_dir()
            .join(format!("shard-{}-of-{}", s.index, s.count)),
        None => cfg.output_dir(),
    };
    std::fs::create_dir_all(&out_dir).map_err(|e| RunnerError::io(&out_dir, e))?;
    let mine: Vec<&Point> = all
        .iter()
        .filter(|p| shard.is_none_or(|s| p.index % s.count == s.index))
        .collect();
    let results_file = out_dir.join("results.jsonl");
    let done: HashSet<String> = index_rows(&results_file, true)?
        .into_iter()
        .filter(|r| r.ok)
        .map(|r| r.point_id)
        .collect();
    let config_changed = record_config(cfg, &out_dir, shard)?;
    let pending: Vec<&Point> = mine
        .iter()
        .copied()
        .filter(|p| !done.contains(&p.point_id))
        .collect();
    on_start(pending.len());

    // load each trace once, prepare each (trace, block size, chunk size) once
    let specs: HashMap<PathBuf, TraceSpec> = cfg
        .traces
        .iter()
        .map(|e| (e.spec().path.clone(), e.spec()))
        .collect();
    let traces = load_traces(cfg, &pending);
    let trace_of: HashMap<&PathBuf, &Result<Trace, String>> =
        traces.iter().map(|(p, t)| (p, t)).collect();
    let mut prep_keys: Vec<PrepKey<'_>> = Vec::new();
    let mut resolved: Vec<(&Point, Resolved)> = Vec::new();
    for p in &pending {
        let r = match trace_of.get(&p.trace_path) {
            Some(Ok(trace)) => resolve_point(p, trace, &cfg.cpu_policy),
            Some(Err(e)) => Err(e.clone()),
            None => Err("trace not loaded".into()),
        };
        if let Ok((_, (bs, cs))) = &r {
            let key = (&p.trace_path, *bs, *cs);
            if !prep_keys.contains(&key) {
                prep_keys.push(key);
            }
        }
        resolved.push((p, r));
    }
    let prepared: Vec<(PrepKey<'_>, Result<Prepared<'_>, String>)> = prep_keys
        .par_iter()
        .map(|&(path, bs, cs)| {
            let trace = match trace_of[path] {
                Ok(t) => t,
                Err(e) => return ((path, bs, cs), Err(e.clone())),
            };
            (
                (path, bs, cs),
                Prepared::new(trace, bs, cs).map_err(|e| e.to_string()),
            )
        })
        .collect();
    let prep_of: HashMap<(&PathBuf, u32, Option<u32>), &Result<Prepared<'_>, String>> =
        prepared.iter().map(|(k, v)| (*k, v)).collect();
    // oracles are shared: annotate before the parallel part
    for (p, r) in &resolved {
        if let Ok((c, (bs, cs))) = r {
            if let Some(Ok(prep)) = prep_of.get(&(&p.trace_path, *bs, *cs)) {
                prep.annotate_for(c);
            }
        }
    }

    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results_file)
        .map_err(|e| RunnerError::io(&results_file, e))?;
    let sink = Mutex::new(file);
    let write_err: Mutex<Option<RunnerError>> = Mutex::new(None);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    resolved.par_iter().for_each(|(p, r)| {
        let outcome: Result<Value, String> =
            r.as_ref().map_err(Clone::clone).and_then(|(c, (bs, cs))| {
                let prep = match prep_of.get(&(&p.trace_path, *bs, *cs)) {
                    Some(Ok(prep)) => prep,
                    Some(Err(e)) => return Err(e.clone()),
                    None => return Err("not prepared".into()),
                };
                run_guarded(p, prep, c)
            });
        let (row, error) = match outcome {
            Ok(v) => (row_of(p, Some(v), None, specs.get(&p.trace_path)), None),
            Err(e) => {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (row_of(p, None, Some(&e), specs.get(&p.trace_path)), Some(e))
            }
        };
        let line = format!("{}\n", row);
        {
            let mut f = sink.lock().expect("results file lock");
            if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.flush()) {
                write_err
                    .lock()
                    .expect("error slot")
                    .get_or_insert(RunnerError::io(&results_file, e));
            }
        }
        on_done(PointDone {
            point: p,
            error: error.as_deref(),
        });
    });
    if let Some(e) = write_err.into_inner().expect("error slot") {
        return Err(e);
    }
    let summary_file = out_dir.join("summary.json");
    let (_, stale) = summarize(
        cfg,
        &mine,
        std::slice::from_ref(&results_file),
        &summary_file,
    )?;
    Ok(BatchReport {
        output_dir: out_dir,
        results_file,
        summary_file,
        points: mine.len(),
        resumed: mine.len() - pending.len(),
        ran: pending.len(),
        failed: failed.into_inner(),
        stale_rows: stale,
        config_changed,
    })
}

/// Write `batch_meta.json` (the config's digest, name and shard) and say whether the digest
/// differs from the one an earlier run left there (its rows were made by another config).
fn record_config(cfg: &BatchConfig, out_dir: &Path, shard: Option<Shard>) -> RunnerResult<bool> {
    let config_digest = format!(
        "{:016x}",
        xxh3_64(serde_json::to_string(cfg).unwrap_or_default().as_bytes())
    );
    let meta_file = out_dir.join("batch_meta.json");
    let config_changed = std::fs::read(&meta_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|m| m["config_digest"].as_str().map(|d| d != config_digest))
        .unwrap_or(false);
    write_json(
        &meta_file,
        &json!({"config_digest": config_digest, "name": cfg.name(), "shard": shard.map(|s| format!("{}/{}", s.index, s.count))}),
    )
    .map_err(|e| RunnerError::io(&meta_file, e))?;
    Ok(config_changed)
}

/// [`run_point`], a panic turned into an error row: a bug in one point must not take the grid
/// down.
fn run_guarded(p: &Point, prep: &Prepared<'_>, c: &SimConfig) -> Result<Value, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_point(p, prep, c))).map_err(
        |p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            format!("internal error (panic): {msg}")
        },
    )?
}

/// One point's figures as a row: a single server's `ResultRow`, or the fleet's
/// (`cluster::result_row`) when the point has replicas.
fn run_point(p: &Point, prep: &Prepared<'_>, c: &SimConfig) -> Result<Value, String> {
    match (p.replicas, &p.router) {
        (Some(replicas), Some(router)) => {
            let fleet = ClusterConfig {
                replicas,
                router: router.clone(),
                lmcache_shared: p.lmcache_shared,
                lmcache_network: p.lmcache_network.unwrap_or_default(),
                ..ClusterConfig::default()
            };
            cluster::run(prep, c, &fleet)
                .map(|r| cluster::result_row(c, &r))
                .map_err(|e| e.to_string())
        }
        _ => inferencelab_sim::run(prep, c)
            .map_err(|e| e.to_string())
            .and_then(|row| serde_json::to_value(row).map_err(|e| e.to_string())),
    }
}

/// Join the shards' `results.jsonl` into one summary for the whole grid.
pub fn merge(cfg: &BatchConfig, max_points: usize) -> RunnerResult<(PathBuf, usize, usize)> {
    let out_dir = cfg.output_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .map_err(|e| RunnerError::io(&out_dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("shard-"))
        })
        .map(|p| p.join("results.jsonl"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(RunnerError::Config(format!(
            "{}: no shard-*/results.jsonl to merge; run `batch --shard i/N` first",
            out_dir.display()
        )));
    }
    let all = cfg.points(max_points)?;
    let refs: Vec<&Point> = all.iter().collect();
    let summary_file = out_dir.join("summary.json");
    let (found, _) = summarize(cfg, &refs, &files, &summary_file)?;
    Ok((summary_file, found, all.len()))
}

/// Write `summary.json` from row files: one row per grid point in grid order (successful rows
/// win over error rows). Streamed: only each row's place in its file is held in memory, and the
/// rows are copied from there into the summary one by one. Returns (rows found, stale rows).
fn summarize(
    cfg: &BatchConfig,
    points: &[&Point],
    files: &[PathBuf],
    summary_file: &Path,
) -> RunnerResult<(usize, usize)> {
    let mut by_id: HashMap<String, (usize, RowRef)> = HashMap::new();
    for (fi, f) in files.iter().enumerate() {
        for row in index_rows(f, false)? {
            match by_id.get(&row.point_id) {
                Some((_, prev)) if prev.ok && !row.ok => {}
                _ => {
                    by_id.insert(row.point_id.clone(), (fi, row));
                }
            }
        }
    }
    let ids: HashSet<&str> = points.iter().map(|p| p.point_id.as_str()).collect();
    let stale = by_id.keys().filter(|k| !ids.contains(k.as_str())).count();
    let chosen: Vec<&(usize, RowRef)> = points
        .iter()
        .filter_map(|p| by_id.get(&p.point_id))
        .collect();
    let found = chosen.len();
    let failed = chosen.iter().filter(|(_, r)| !r.ok).count();
    let head = json!({
        "inferencelab_version": env!("CARGO_PKG_VERSION"),
        "command": "batch",
        "name": cfg.name(),
        "config": cfg,
        "points": points.len(),
        "finished": found - failed,
        "failed": failed,
        "missing": points.len() - found,
        "stale_rows": stale,
    });
    let head =
        serde_json::to_string_pretty(&head).map_err(|e| RunnerError::Config(e.to_string()))?;
    let mut readers: Vec<Option<std::fs::File>> = files.iter().map(|_| None).collect();
    let mut buf = Vec::new();
    inferencelab_trace::fsutil::write_atomic_with(summary_file, |out| {
        // the head object without its closing brace, then the rows as they are in their files
        out.write_all(head.strip_suffix("\n}").unwrap_or(&head).as_bytes())?;
        out.write_all(b",\n  \"results\": [")?;
        for (i, (fi, row)) in chosen.iter().enumerate() {
            let file = match &mut readers[*fi] {
                Some(f) => f,
                slot => slot.insert(std::fs::File::open(&files[*fi])?),
            };
            file.seek(std::io::SeekFrom::Start(row.start))?;
            buf.resize(row.len, 0);
            file.read_exact(&mut buf)?;
            out.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
            out.write_all(&buf)?;
        }
        out.write_all(b"\n  ]\n}\n")
    })
    .map_err(|e| RunnerError::io(summary_file, e))?;
    Ok((found, stale))
}

/// Read each trace the pending points need, once (in parallel); a failed read is that trace's
/// error, reported on its points' rows.
fn load_traces(cfg: &BatchConfig, pending: &[&Point]) -> Vec<(PathBuf, Result<Trace, String>)> {
    let trace_paths: Vec<(PathBuf, Option<String>, bool)> = {
        let mut seen = Vec::new();
        for e in &cfg.traces {
            let s = e.spec();
            let key = (s.path.clone(), s.format.clone(), s.skip_invalid);
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
        seen
    };
    let needed: HashSet<&PathBuf> = pending.iter().map(|p| &p.trace_path).collect();
    trace_paths
        .par_iter()
        .filter(|(p, _, _)| needed.contains(p))
        .map(|(path, format, skip)| {
            let opts = ReadOptions {
                format: match format.as_deref().map(str::parse::<Format>) {
                    Some(Ok(f)) => Some(f),
                    Some(Err(e)) => return (path.clone(), Err(e)),
                    None => None,
                },
                skip_invalid: *skip,
            };
            let hashed = read_trace_hashed(path, &opts, hash_block(pending, path));
            (path.clone(), hashed.map_err(|e| e.to_string()))
        })
        .collect()
}

/// The block size a trace's token ids are hashed at as they are read (issue 19): the gcd of
/// the GPU block and LMCache chunk sizes of its points (vLLM's 16 and LMCache's 256 when not
/// given), so every point cuts its blocks and chunks from the same hashes.
fn hash_block(pending: &[&Point], path: &Path) -> u32 {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    pending
        .iter()
        .filter(|p| p.trace_path == path)
        .flat_map(|p| {
            [
                p.block_size.unwrap_or(plan::VLLM_DEFAULT_BLOCK),
                p.chunk_size.unwrap_or(plan::LMCACHE_DEFAULT_CHUNK),
            ]
        })
        .fold(0, gcd)
        .max(1)
}

/// Resolve a point against its loaded trace: sizes, capacities and policies
/// (`inferencelab_sim::resolve`, as `simulate` does).
fn resolve_point(
    p: &Point,
    trace: &Trace,
    cpu_policy: &str,
) -> Result<(SimConfig, (u32, Option<u32>)), String> {
    let model = models::resolve(&p.model).map_err(|e| e.to_string())?;
    let load = |policy: PolicyConfig| {
        // the notes (which lightgbm model) are the same for every point: not repeated per row
        resolve::load_policy(policy, &resolve::PolicyFiles::default(), &mut Vec::new())
            .map_err(|e| e.to_string())
    };
    let policy = load(parse_policy(&p.policy_config)?)?;
    let cpu_policy = match cpu_policy.parse::<TierPolicy>() {
        Ok(TierPolicy::Same) => None,
        Ok(TierPolicy::Policy(q)) => Some(load(q)?),
        Err(e) => return Err(format!("cpu_policy: {e}")),
    };
    let block_size = p
        .block_size
        .unwrap_or_else(|| plan::default_block_size(trace));
    let chunk_size = p
        .chunk_size
        .unwrap_or_else(|| plan::default_chunk_size(trace));
    let spec = PointSpec {
        cpu: p.cpu,
        disk: p.disk,
        cpu_policy,
        hit_semantics: p.hit_semantics,
        pinning: p.pinning,
        timing: p.timing,
        window_seconds: p.window_seconds,
        ..PointSpec::new(Some(model), block_size, chunk_size, p.gpu, policy)
    };
    let config = spec.resolve().map_err(|e| e.to_string())?;
    Ok((config, (block_size, spec.prepared_chunk_size())))
}

fn row_of(
    p: &Point,
    result: Option<Value>,
    error: Option<&str>,
    spec: Option<&TraceSpec>,
) -> Value {
    let mut row = match result {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let params = json!({
        "point_id": p.point_id,
        "point_index": p.index,
        "trace": p.trace,
        "trace_path": p.trace_path,
        "trace_format": spec.and_then(|s| s.format.clone()),
        "model": p.model,
        "policy_config": p.policy_config,
        "cpu_policy_config": p.cpu_policy,
        "gpu_size": p.gpu,
        "cpu_size": p.cpu,
        "disk_size": p.disk,
        "requested_block_size": p.block_size,
        "requested_chunk_size": p.chunk_size,
        "hit_semantics": p.hit_semantics,
        "pinning": p.pinning,
        "window_seconds": p.window_seconds,
        "error": error,
    });
    let mut params = params;
    if let (Some(n), Some(r)) = (p.replicas, &p.router) {
        params["replicas"] = json!(n);
        params["router"] = json!(r);
    }
    if let Value::Object(m) = params {
        for (k, v) in m {
            row.insert(k, v);
        }
    }
    if error.is_some() {
        row.insert(
            "policy".into(),
            Value::String(policy_label(&p.policy_config)),
        );
    }
    Value::Object(row)
}

fn policy_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        other => other.to_string(),
    }
}

/// Where a result row sits in its file, and what a summary needs to pick it.
#[derive(Debug, Clone)]
struct RowRef {
    point_id: String,
    /// The row has no error.
    ok: bool,
    /// Byte offset and length of the row's JSON (without the newline).
    start: u64,
    len: usize,
}

/// The fields of a row that [`index_rows`] keeps; the rest is checked to be JSON and skipped.
#[derive(Deserialize)]
struct RowKey {
    #[serde(default)]
    point_id: Option<String>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// Index a JSONL file of rows (no row is held in memory). With `repair`, a torn last line (a
/// run killed mid-write) is cut off and a missing final newline added; any other bad line is an
/// error naming it. Rows without a `point_id` are skipped.
fn index_rows(path: &Path, repair: bool) -> RunnerResult<Vec<RowRef>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RunnerError::io(path, e)),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut rows = Vec::new();
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut line_no = 0usize;
    // (start of a bad line, its error): only the last line may be bad
    let mut bad: Option<(u64, usize, serde_json::Error)> = None;
    let mut ends_with_newline = true;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| RunnerError::io(path, e))?;
        if n == 0 {
            break;
        }
        if let Some((_, no, e)) = bad.take() {
            return Err(RunnerError::Config(format!(
                "{}:{no}: not a result row ({e}); delete the line or the file to re-run those \
                 points",
                path.display()
            )));
        }
        line_no += 1;
        let start = offset;
        offset += n as u64;
        ends_with_newline = line.ends_with(b"\n");
        let text = line.trim_ascii_end();
        if text.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice::<RowKey>(text) {
            Ok(key) => {
                if let Some(point_id) = key.point_id {
                    rows.push(RowRef {
                        point_id,
                        ok: key.error.is_none(),
                        start,
                        len: text.len(),
                    });
                }
            }
            Err(e) => bad = Some((start, line_no, e)),
        }
    }
    if repair {
        let fix = |f: &dyn Fn(&mut std::fs::File) -> std::io::Result<()>| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|mut file| f(&mut file))
                .map_err(|e| RunnerError::io(path, e))
        };
        if let Some((start, _, _)) = bad {
            fix(&|f| f.set_len(start))?;
        } else if !ends_with_newline {
            fix(&|f| {
                f.seek(std::io::SeekFrom::End(0))?;
                f.write_all(b"\n")
            })?;
        }
    }
    Ok(rows)
}

/// Block size and optional LMCache chunk size of a point: the key its block stream is built for.
type Sizes = (u32, Option<u32>);
/// A point resolved to its simulation config, or the reason it cannot run.
type Resolved = Result<(SimConfig, Sizes), String>;
/// One prepared block stream: trace path, block size, chunk size.
type PrepKey<'a> = (&'a PathBuf, u32, Option<u32>);

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(extra: &str) -> BatchConfig {
        serde_norway::from_str(&format!(
            "traces: [t.jsonl]\npolicies: [lru, fifo]\ngpu_blocks: [10]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn a_grid_beyond_the_limit_is_refused_before_any_point_is_built() {
        let mut c = grid("");
        c.gpu_blocks = (1..=10_000).collect();
        c.chunk_sizes = (1..=1_000).collect();
        // 10^7 points would take gigabytes; the refusal comes from the axes' lengths alone
        let e = c.points(DEFAULT_MAX_POINTS).unwrap_err().to_string();
        for want in [
            "20000000 points",
            "chunk_sizes 1000 x policies 2 x gpu_blocks 10000",
            "limit of 100000",
            "--max-points 20000000",
        ] {
            assert!(e.contains(want), "{want:?} in {e}");
        }
        let small = grid("");
        assert_eq!(small.points(2).unwrap().len(), 2);
        assert!(small.points(1).is_err());
    }

    #[test]
    fn replicas_and_routers_are_axes_and_leave_single_server_points_alone() {
        let single = grid("").points(100).unwrap();
        assert!(single
            .iter()
            .all(|p| p.replicas.is_none() && p.router.is_none()));
        let fleet = grid("replicas: [1, 2]\nrouters: [round_robin, kv_aware]\n")
            .points(100)
            .unwrap();
        // 2 policies x 1 size x 2 fleet sizes x 2 routers
        assert_eq!(fleet.len(), 8);
        let ids: HashSet<&str> = fleet.iter().map(|p| p.point_id.as_str()).collect();
        assert_eq!(ids.len(), 8);
        assert!(single.iter().all(|p| !ids.contains(p.point_id.as_str())));
        // without `routers`, vllm-router's default
        let p = grid("replicas: [4]\n").points(100).unwrap();
        assert_eq!(p[0].router.as_deref(), Some(DEFAULT_ROUTER));
        assert_eq!(p[0].replicas, Some(4));
    }

    #[test]
    fn lmcache_shared_is_an_axis_of_fleet_points_that_keeps_per_replica_ids() {
        let own = grid("replicas: [2]\nrouters: [round_robin]\n")
            .points(100)
            .unwrap();
        let both = grid("replicas: [2]\nrouters: [round_robin]\nlmcache_shared: [false, true]\n")
            .points(100)
            .unwrap();
        // 2 policies x (own tiers, one shared)
        assert_eq!(both.len(), 4);
        let own_ids: Vec<&str> = own.iter().map(|p| p.point_id.as_str()).collect();
        let kept: Vec<&str> = both
            .iter()
            .filter(|p| !p.lmcache_shared)
            .map(|p| p.point_id.as_str())
            .collect();
        assert_eq!(kept, own_ids);
        assert!(both
            .iter()
            .filter(|p| p.lmcache_shared)
            .all(|p| !own_ids.contains(&p.point_id.as_str())));
        // the shared tier's network is a parameter of its points
        let slow = grid(
            "replicas: [2]\nrouters: [round_robin]\nlmcache_shared: [false, true]\n\
             lmcache_network: {gbit_per_s: 10}\n",
        )
        .points(100)
        .unwrap();
        assert_eq!(slow[0].point_id, both[0].point_id);
        assert_ne!(slow[1].point_id, both[1].point_id);
        assert_eq!(slow[1].lmcache_network.unwrap().gbit_per_s, 10.0);
        assert_eq!(slow[1].lmcache_network.unwrap().latency_ms, 0.5);
        let e = grid("lmcache_shared: [true]\n")
            .validate(Path::new("g.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`lmcache_shared` needs `replicas`"), "{e}");
    }

    #[test]
    fn negative_nan_and_infinite_gib_in_the_yaml_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.yaml");
        for (key, v) in [
            ("gpu_cache_gb", "-1"),
            ("gpu_cache_gb", ".nan"),
            ("cpu_cache_gb", "-1"),
            ("cpu_cache_gb", ".nan"),
            ("disk_cache_gb", ".inf"),
        ] {
            let gpu = if key == "gpu_cache_gb" {
                ""
            } else {
                "gpu_cache_gb: [1]\n"
            };
            std::fs::write(
                &path,
                format!("traces: [t.jsonl]\npolicies: [lru]\n{gpu}{key}: [2, {v}]\n"),
            )
            .unwrap();
            let e = BatchConfig::load(&path).unwrap_err().to_string();
            for want in ["g.yaml", key, "finite number, 0 or more"] {
                assert!(e.contains(want), "{key} {v}: {want:?} in {e}");
            }
        }
        // 0 still switches a tier off
        std::fs::write(
            &path,
            "traces: [t.jsonl]\npolicies: [lru]\ngpu_cache_gb: [1]\ncpu_cache_gb: [0]\n",
        )
        .unwrap();
        let p = BatchConfig::load(&path).unwrap().points(10).unwrap();
        assert_eq!(p[0].cpu, None);
    }

    #[test]
    fn the_summary_is_streamed_in_grid_order_and_ok_rows_win() {
        let dir = tempfile::tempdir().unwrap();
        let c = grid("");
        let points = c.points(10).unwrap();
        let (a, b) = (&points[0].point_id, &points[1].point_id);
        let rows = dir.path().join("results.jsonl");
        // b fails then succeeds; a succeeds then fails (the ok row stays); one stale row; the
        // last line is torn (a run killed mid-write)
        std::fs::write(
            &rows,
            format!(
                "{{\"point_id\":\"{b}\",\"error\":\"boom\"}}\n\
                 {{\"point_id\":\"{a}\",\"error\":null,\"x\":1}}\n\n\
                 {{\"point_id\":\"{b}\",\"x\":2}}\n\
                 {{\"point_id\":\"{a}\",\"error\":\"late\"}}\n\
                 {{\"point_id\":\"gone\",\"x\":3}}\n\
                 {{\"point_id\":\"{a}\",\"x\""
            ),
        )
        .unwrap();
        let idx = index_rows(&rows, true).unwrap();
        assert_eq!(idx.len(), 5);
        let text = std::fs::read_to_string(&rows).unwrap();
        assert!(text.ends_with("\"x\":3}\n"), "torn line cut: {text}");
        let summary = dir.path().join("summary.json");
        let refs: Vec<&Point> = points.iter().collect();
        assert_eq!(
            summarize(&c, &refs, std::slice::from_ref(&rows), &summary).unwrap(),
            (2, 1)
        );
        let doc: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        let xs: Vec<&Value> = doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["x"])
            .collect();
        assert_eq!(xs, [&json!(1), &json!(2)]);
        assert_eq!(
            (
                &doc["finished"],
                &doc["failed"],
                &doc["missing"],
                &doc["stale_rows"]
            ),
            (&json!(2), &json!(0), &json!(0), &json!(1))
        );
        assert_eq!(doc["config"]["policies"], json!(["lru", "fifo"]));
        // a bad line that is not the last is an error naming it
        std::fs::write(
            &rows,
            "{\"point_id\":\"a\"}\nnot json\n{\"point_id\":\"b\"}\n",
        )
        .unwrap();
        let e = index_rows(&rows, false).unwrap_err().to_string();
        assert!(e.contains("results.jsonl:2: not a result row"), "{e}");
    }
}
