//! The grid: the experiment's points (their names, LMCache settings and arrival process) and
//! the GPU slots they run on.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{ExperimentConfig, LmcacheMode};
use crate::batch::check_grid_size;
use crate::error::RunnerResult;

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
    /// `fleet`: this many replicas behind `router` (absent: one server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// `server_64.0gb_0.9rps_29_5am_6am` (+ `_<N>blocks`, `_lfu`, `_r2` when those axes are
    /// given or vary, `_4x_round_robin` for a fleet).
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
        let fleets: Vec<(Option<usize>, Option<String>)> = match &self.fleet {
            None => vec![(None, None)],
            Some(f) => f
                .replicas
                .iter()
                .flat_map(|&n| f.routers.iter().map(move |r| (Some(n), Some(r.clone()))))
                .collect(),
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
                            for (rep, (replicas, router)) in (1..=self.workload.repetitions)
                                .flat_map(|r| fleets.iter().map(move |f| (r, f)))
                            {
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
                                if let (Some(n), Some(r)) = (replicas, router) {
                                    stem.push_str(&format!("_{n}x_{r}"));
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
                                    replicas: *replicas,
                                    router: router.clone(),
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

/// A size in GB as the prototype's log names write it (one decimal: `64.0`), with every
/// decimal a smaller size needs (`0.01`, not `0.0`).
pub(super) fn fmt_gb(gb: f64) -> String {
    let one = format!("{gb:.1}");
    if one.parse::<f64>() == Ok(gb) {
        one
    } else {
        format!("{gb}")
    }
}

pub(super) fn fmt_rate(r: f64) -> String {
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
