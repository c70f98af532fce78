//! `batch`: a YAML grid of simulations over traces x models x block/chunk sizes x GPU/CPU/disk
//! sizes x policies x semantics, run in parallel. Every finished point is appended at once to
//! `results.jsonl` as a row carrying all its parameters; re-running resumes (points are keyed by
//! a digest of their parameters and of the trace file's bytes, so a changed config or trace
//! re-runs exactly the points it changed); a bad point becomes an error row and the others go on;
//! `--shard i/N` runs a deterministic slice and `merge` joins the slices.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use inferencelab_cache::PolicyConfig;
use inferencelab_sim::plan::{self, Capacity};
use inferencelab_sim::{models, HitSemantics, Prepared, SimConfig, TierConfig, TimingModel};
use inferencelab_trace::{read_trace, Format, ReadOptions, Trace};
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
    pub gpu_cache_gb: Vec<f64>,
    /// LMCache CPU sizes in GiB; 0 switches the tier off (default: [0]).
    #[serde(default)]
    pub cpu_cache_gb: Vec<f64>,
    /// LMCache CPU sizes in chunks (instead of cpu_cache_gb).
    #[serde(default)]
    pub cpu_chunks: Vec<u64>,
    /// LMCache disk sizes in GiB; 0 = off (default: off).
    #[serde(default)]
    pub disk_cache_gb: Vec<f64>,
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

    /// Expand the grid into points, in a fixed order.
    pub fn points(&self) -> Vec<Point> {
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
                .map(|&g| Capacity::Gib(g))
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
                .map(|&g| (g > 0.0).then_some(Capacity::Gib(g)))
                .collect()
        } else {
            vec![None]
        };
        let disks: Vec<Option<Capacity>> = if self.disk_cache_gb.is_empty() {
            vec![None]
        } else {
            self.disk_cache_gb
                .iter()
                .map(|&g| (g > 0.0).then_some(Capacity::Gib(g)))
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
                                            for &gpu in &gpus {
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
        points
    }
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

/// Run the grid (or one shard of it). `on_start(total_to_run)` and `on_done` report progress.
pub fn run(
    cfg: &BatchConfig,
    shard: Option<Shard>,
    on_start: &(dyn Fn(usize) + Sync),
    on_done: &(dyn Fn(PointDone<'_>) + Sync),
) -> RunnerResult<BatchReport> {
    let all = cfg.points();
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
    let existing = load_rows(&results_file, true)?;
    let done: HashSet<String> = existing
        .iter()
        .filter(|r| r.get("error").is_none_or(Value::is_null))
        .filter_map(|r| r["point_id"].as_str().map(String::from))
        .collect();
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
    )?;
    let pending: Vec<&Point> = mine
        .iter()
        .copied()
        .filter(|p| !done.contains(&p.point_id))
        .collect();
    on_start(pending.len());

    // load each trace once, prepare each (trace, block size, chunk size) once
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
    let specs: HashMap<PathBuf, TraceSpec> = cfg
        .traces
        .iter()
        .map(|e| (e.spec().path.clone(), e.spec()))
        .collect();
    let needed: HashSet<&PathBuf> = pending.iter().map(|p| &p.trace_path).collect();
    let traces: Vec<(PathBuf, Result<Trace, String>)> = trace_paths
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
            (
                path.clone(),
                read_trace(path, &opts).map_err(|e| e.to_string()),
            )
        })
        .collect();
    let trace_of: HashMap<&PathBuf, &Result<Trace, String>> =
        traces.iter().map(|(p, t)| (p, t)).collect();
    let mut prep_keys: Vec<PrepKey<'_>> = Vec::new();
    let mut resolved: Vec<(&Point, Resolved)> = Vec::new();
    for p in &pending {
        let r = match trace_of.get(&p.trace_path) {
            Some(Ok(trace)) => {
                resolve_point(p, trace, &cfg.cpu_policy).and_then(|r| match &r.0.gpu.policy {
                    inferencelab_cache::PolicyConfig::Lightgbm(c) if c.retrain.is_some() => Err(
                        "lightgbm with `retrain:` (online retraining) runs in `simulate` and \
                         `train`; in a batch grid give the static model (drop `retrain`)"
                            .to_string(),
                    ),
                    _ => Ok(r),
                })
            }
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
                // a bug in one point must not take the grid down: turn a panic into an error row
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    inferencelab_sim::run(prep, c)
                }))
                .map_err(|p| {
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    format!("internal error (panic): {msg}")
                })?
                .map_err(|e| e.to_string())
                .and_then(|row| serde_json::to_value(row).map_err(|e| e.to_string()))
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

/// Join the shards' `results.jsonl` into one summary for the whole grid.
pub fn merge(cfg: &BatchConfig) -> RunnerResult<(PathBuf, usize, usize)> {
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
    let all = cfg.points();
    let refs: Vec<&Point> = all.iter().collect();
    let summary_file = out_dir.join("summary.json");
    let (found, _) = summarize(cfg, &refs, &files, &summary_file)?;
    Ok((summary_file, found, all.len()))
}

/// Write `summary.json` from row files: one row per grid point in grid order (successful rows
/// win over error rows). Returns (rows found, stale rows).
fn summarize(
    cfg: &BatchConfig,
    points: &[&Point],
    files: &[PathBuf],
    summary_file: &Path,
) -> RunnerResult<(usize, usize)> {
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for f in files {
        for row in load_rows(f, false)? {
            let Some(id) = row["point_id"].as_str().map(String::from) else {
                continue;
            };
            let ok = row.get("error").is_none_or(Value::is_null);
            match by_id.get(&id) {
                Some(prev) if prev.get("error").is_none_or(Value::is_null) && !ok => {}
                _ => {
                    by_id.insert(id, row);
                }
            }
        }
    }
    let ids: HashSet<&str> = points.iter().map(|p| p.point_id.as_str()).collect();
    let stale = by_id.keys().filter(|k| !ids.contains(k.as_str())).count();
    let mut results = Vec::new();
    let mut missing = 0;
    let mut failed = 0;
    for p in points {
        match by_id.get(&p.point_id) {
            Some(row) => {
                if !row.get("error").is_none_or(Value::is_null) {
                    failed += 1;
                }
                results.push(row.clone());
            }
            None => missing += 1,
        }
    }
    let found = results.len();
    write_json(
        summary_file,
        &json!({
            "inferencelab_version": env!("CARGO_PKG_VERSION"),
            "command": "batch",
            "name": cfg.name(),
            "config": cfg,
            "points": points.len(),
            "finished": found - failed,
            "failed": failed,
            "missing": missing,
            "stale_rows": stale,
            "results": results,
        }),
    )?;
    Ok((found, stale))
}

/// Resolve a point against its loaded trace: sizes, capacities and policies.
fn resolve_point(
    p: &Point,
    trace: &Trace,
    cpu_policy: &str,
) -> Result<(SimConfig, (u32, Option<u32>)), String> {
    let model = models::resolve(&p.model).map_err(|e| e.to_string())?;
    let policy = parse_policy(&p.policy_config)?;
    let bs = p
        .block_size
        .unwrap_or_else(|| plan::default_block_size(trace));
    let cs = p
        .chunk_size
        .unwrap_or_else(|| plan::default_chunk_size(trace));
    let lm_policy = match cpu_policy {
        "same" => policy.clone(),
        s => s.parse().map_err(|e: String| format!("cpu_policy: {e}"))?,
    };
    let cpu = p.cpu.map(|c| TierConfig {
        capacity: c.chunks(&model, cs),
        policy: lm_policy.clone(),
    });
    let disk = p.disk.map(|c| TierConfig {
        capacity: c.chunks(&model, cs),
        policy: lm_policy.clone(),
    });
    if p.hit_semantics == HitSemantics::Any && cpu.is_some() {
        return Err("hit_semantics any needs the CPU tier off (cpu_cache_gb: [0])".into());
    }
    let config = SimConfig {
        gpu: TierConfig {
            capacity: p.gpu.entries(&model, bs),
            policy,
        },
        cpu,
        disk,
        hit_semantics: p.hit_semantics,
        pinning: p.pinning,
        timing: p.timing,
        window_seconds: p.window_seconds,
        model: Some(model),
        engine: Default::default(),
    };
    let chunk = config.cpu.as_ref().map(|_| cs);
    Ok((config, (bs, chunk)))
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

/// Read a JSONL file of rows. With `repair`, a torn last line (a run killed mid-write) is
/// dropped and the file rewritten without it; any other bad line is an error naming it.
pub fn load_rows(path: &Path, repair: bool) -> RunnerResult<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RunnerError::io(path, e)),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut rows = Vec::with_capacity(lines.len());
    let mut torn = false;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) => rows.push(v),
            Err(_) if i + 1 == lines.len() => torn = true,
            Err(e) => {
                return Err(RunnerError::Config(format!(
                "{}:{}: not a result row ({e}); delete the line or the file to re-run those points",
                path.display(),
                i + 1
            )))
            }
        }
    }
    if repair && (torn || (!text.is_empty() && !text.ends_with('\n'))) {
        let mut fixed = String::new();
        for r in &rows {
            fixed.push_str(&r.to_string());
            fixed.push('\n');
        }
        inferencelab_trace::fsutil::write_atomic(path, fixed.as_bytes())
            .map_err(|e| RunnerError::io(path, e))?;
    }
    Ok(rows)
}

/// Block size and optional LMCache chunk size of a point: the key its block stream is built for.
type Sizes = (u32, Option<u32>);
/// A point resolved to its simulation config, or the reason it cannot run.
type Resolved = Result<(SimConfig, Sizes), String>;
/// One prepared block stream: trace path, block size, chunk size.
type PrepKey<'a> = (&'a PathBuf, u32, Option<u32>);

fn write_json(path: &Path, v: &Value) -> RunnerResult<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| RunnerError::Config(e.to_string()))?;
    inferencelab_trace::fsutil::write_atomic(path, &bytes).map_err(|e| RunnerError::io(path, e))
}
