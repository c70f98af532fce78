//! What a run records: one row per point (`points.jsonl`, appended as each point ends), the
//! rows of earlier runs for resuming, the run's report and its summary table.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::grid::ExpPoint;
use crate::error::{RunnerError, RunnerResult};

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
pub(super) fn recorded_rows(dir: &Path) -> RunnerResult<Vec<PointOutcome>> {
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
    /// A fleet point: every replica's log (replica 0's is `server_log`), port and devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaRun>,
    /// A fleet point: the router's log, port and how it went away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_log: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_stop: Option<String>,
}

/// One replica of a fleet point.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaRun {
    pub replica: usize,
    pub slot: usize,
    pub devices: Vec<String>,
    pub port: u16,
    pub log: PathBuf,
    /// Its `/metrics` after the replay (the router would route a scrape through the policy).
    pub metrics: PathBuf,
    pub stop: Option<String>,
}

/// A fleet replica's log: `<stem>.log` for replica 0, `<stem>.replicaK.log` for the others (as
/// `serve --replicas` names its logs).
pub fn replica_log_path(dir: &Path, p: &ExpPoint, k: usize) -> PathBuf {
    if k == 0 {
        dir.join(format!("{}.log", p.stem))
    } else {
        dir.join(format!("{}.replica{k}.log", p.stem))
    }
}

/// `lmcache server`'s log of a point: `<stem>.lmcache.log` beside vLLM's.
pub fn lmcache_log_path(dir: &Path, p: &ExpPoint) -> PathBuf {
    dir.join(format!("{}.lmcache.log", p.stem))
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
