//! From result rows to chart data: which rows are plottable points, which are failed points,
//! how points group into chart sets (one per combination of every parameter that is not the
//! policy or the GPU capacity), and the derived figures (gap closed vs Belady).

use std::collections::BTreeMap;

use serde_json::Value;

pub(crate) const LRU: &str = "lru";
pub(crate) const BELADY: &str = "belady";
pub(crate) const IDEAL: &str = "ideal";

/// Keys that never split groups: the series and the x axis of every chart, and per-point
/// identities. `cpu_policy` is left out too: with `--cpu-eviction-policy same` it follows the
/// GPU policy of each row (the grid-level choice is `cpu_policy_config`).
const NOT_GROUP_KEYS: &[&str] = &[
    "policy",
    "policy_config",
    "cpu_policy",
    "gpu_blocks",
    "gpu_cache_gb",
    "gpu_size",
    "unbounded",
    "point_id",
    "point_index",
    "error",
    "windows",
];

/// Parameters that are numbers or objects. Every other number or object in a row is a figure;
/// every other string or boolean is a parameter (so a new string parameter splits groups
/// without code changes).
const NON_STRING_PARAMS: &[&str] = &[
    "block_size",
    "chunk_size",
    "cpu_chunks",
    "cpu_cache_gb",
    "cpu_size",
    "disk_chunks",
    "disk_cache_gb",
    "disk_size",
    "window_seconds",
    "requested_block_size",
    "requested_chunk_size",
    "timing",
];

/// One window of a point's time series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WindowPoint {
    /// Window start, seconds of trace time.
    pub start: f64,
    pub token_hit_ratio: f64,
}

/// One plottable row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Point {
    /// Index into the rows given to `plot_results`.
    pub row: usize,
    /// Series label: the policy, with its parameters when it has any (`s3fifo(small_ratio=0.2)`).
    pub series: String,
    pub policy: String,
    pub gpu_blocks: f64,
    pub gpu_cache_gb: Option<f64>,
    /// Token hit ratio over all tiers (GPU + LMCache CPU + disk), 0..1.
    pub hit: f64,
    pub gpu_hit: f64,
    pub cpu_hit: f64,
    pub disk_hit: f64,
    pub compute_saved: Option<f64>,
    /// The engine model's admission delay (arrival to first scheduling), median and p90, s.
    pub queue_p50_s: Option<f64>,
    pub queue_p90_s: Option<f64>,
    pub windows: Vec<WindowPoint>,
}

impl Point {
    pub fn is_ideal(&self) -> bool {
        self.policy == IDEAL
    }
}

/// Gap closed vs Belady per series: (series, [(gpu_blocks, gap closed 0..1)]).
pub(crate) type GapClosed = Vec<(String, Vec<(f64, f64)>)>;

/// Rows sharing every parameter but policy and GPU capacity: one chart set.
#[derive(Debug, Clone, Default)]
pub(crate) struct Group {
    /// The parameters of the group, sorted by key.
    pub params: BTreeMap<String, Value>,
    pub points: Vec<Point>,
    /// Rows dropped because the group already had a point of the same series and capacity.
    pub duplicates: Vec<usize>,
}

/// Everything the charts and the report need from a list of rows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Analysis {
    pub groups: Vec<Group>,
    /// Rows with an `error`: failed points, listed and never plotted.
    pub failed: Vec<usize>,
    /// Rows that are neither points nor failed points, with the reason.
    pub skipped: Vec<(usize, String)>,
    /// Parameter keys whose value differs between groups (they name the groups).
    pub varying: Vec<String>,
    /// Parameters shared by every group.
    pub common: BTreeMap<String, Value>,
}

pub(crate) fn analyze(rows: &[Value]) -> Analysis {
    let mut a = Analysis::default();
    let mut index: Vec<(BTreeMap<String, Value>, usize)> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let Some(obj) = row.as_object() else {
            a.skipped.push((i, "not a JSON object".into()));
            continue;
        };
        if obj.get("error").is_some_and(|e| !e.is_null()) {
            a.failed.push(i);
            continue;
        }
        // N replicas behind a router: charted against replicas (`fleet.rs`)
        if crate::fleet::is_fleet_row(row) {
            continue;
        }
        let point = match point_of(i, row) {
            Ok(p) => p,
            Err(reason) => {
                a.skipped.push((i, reason));
                continue;
            }
        };
        let params = group_params(row);
        let g = match index.iter().find(|(k, _)| *k == params) {
            Some(&(_, g)) => g,
            None => {
                a.groups.push(Group {
                    params: params.clone(),
                    ..Group::default()
                });
                index.push((params, a.groups.len() - 1));
                a.groups.len() - 1
            }
        };
        let group = &mut a.groups[g];
        if group
            .points
            .iter()
            .any(|p| p.series == point.series && p.gpu_blocks == point.gpu_blocks)
        {
            group.duplicates.push(i);
        } else {
            group.points.push(point);
        }
    }
    let mut keys: Vec<&String> = a.groups.iter().flat_map(|g| g.params.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let first = a.groups[0].params.get(k);
        if a.groups.iter().all(|g| g.params.get(k) == first) {
            if let Some(v) = first {
                a.common.insert(k.clone(), v.clone());
            }
        } else {
            a.varying.push(k.clone());
        }
    }
    a
}

/// Label keys in the order people read them; keys implied by earlier ones come last and are
/// only used when they still tell groups apart.
const LABEL_ORDER: &[&str] = &[
    "trace",
    "model",
    "cpu_size",
    "disk_size",
    "hit_semantics",
    "pinning",
    "block_size",
    "chunk_size",
    "cpu_policy_config",
];
const LABEL_LAST: &[&str] = &[
    "cpu_cache_gb",
    "cpu_chunks",
    "disk_cache_gb",
    "disk_chunks",
    "requested_block_size",
    "requested_chunk_size",
    "trace_path",
    "trace_format",
];

impl Analysis {
    /// The parameters that name groups: varying ones, each kept only if it tells apart groups
    /// the keys before it do not (so `cpu_cache_gb` does not repeat `cpu_size`).
    pub fn label_keys(&self) -> Vec<String> {
        let rank = |k: &String| {
            LABEL_ORDER
                .iter()
                .position(|o| o == k)
                .or_else(|| LABEL_LAST.iter().position(|o| o == k).map(|i| 1000 + i))
                .unwrap_or(500)
        };
        let mut candidates = self.varying.clone();
        candidates.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
        let distinct = |keys: &[String]| {
            let mut seen: Vec<Vec<Option<&Value>>> = Vec::new();
            for g in &self.groups {
                let t: Vec<Option<&Value>> = keys.iter().map(|k| g.params.get(k)).collect();
                if !seen.contains(&t) {
                    seen.push(t);
                }
            }
            seen.len()
        };
        let mut kept: Vec<String> = Vec::new();
        let mut n = 1;
        for k in candidates {
            kept.push(k);
            let m = distinct(&kept);
            if m > n {
                n = m;
            } else {
                kept.pop();
            }
        }
        kept
    }

    /// `trace=mooncake · model=qwen-8b · cpu_size=32 GiB`; empty with a single group.
    pub fn group_label(&self, g: &Group) -> String {
        self.label_keys()
            .iter()
            .map(|k| format!("{k}={}", param_display(g.params.get(k), k)))
            .collect::<Vec<_>>()
            .join(" \u{b7} ")
    }
}

/// A group parameter for people; an absent tier size is `off`.
pub(crate) fn param_display(v: Option<&Value>, key: &str) -> String {
    match v {
        Some(v) => short_value(v),
        None if key.starts_with("cpu_") || key.starts_with("disk_") => "off".into(),
        None => "none".into(),
    }
}

fn num(row: &Value, key: &str) -> Option<f64> {
    row.get(key).and_then(Value::as_f64)
}

fn point_of(i: usize, row: &Value) -> Result<Point, String> {
    let policy = row
        .get("policy")
        .and_then(Value::as_str)
        .ok_or("no `policy`")?
        .to_string();
    let gpu_blocks = num(row, "gpu_blocks").ok_or("no `gpu_blocks`")?;
    let gpu_hit = num(row, "token_hit_ratio").ok_or("no `token_hit_ratio`")?;
    let cpu_hit = num(row, "cpu_token_hit_ratio").unwrap_or(0.0);
    let disk_hit = num(row, "disk_token_hit_ratio").unwrap_or(0.0);
    let hit = num(row, "total_token_hit_ratio").unwrap_or(gpu_hit + cpu_hit + disk_hit);
    let windows = row
        .get("windows")
        .and_then(Value::as_array)
        .map(|ws| {
            ws.iter()
                .filter(|w| num(w, "prompt_tokens").is_none_or(|t| t > 0.0))
                .filter_map(|w| {
                    Some(WindowPoint {
                        start: num(w, "start")?,
                        token_hit_ratio: num(w, "token_hit_ratio")?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Point {
        row: i,
        series: series_label(row, &policy),
        policy,
        gpu_blocks,
        gpu_cache_gb: num(row, "gpu_cache_gb"),
        hit,
        gpu_hit,
        cpu_hit,
        disk_hit,
        compute_saved: num(row, "compute_saved_ratio"),
        queue_p50_s: num(row, "queue_delay_p50_s"),
        queue_p90_s: num(row, "queue_delay_p90_s"),
        windows,
    })
}

/// The policy, plus its parameters when `policy_config` has any, so that two configurations
/// of one policy are two series.
fn series_label(row: &Value, policy: &str) -> String {
    let Some(Value::Object(cfg)) = row.get("policy_config") else {
        return policy.to_string();
    };
    let params: Vec<String> = cfg
        .iter()
        .filter(|(k, _)| k.as_str() != "name")
        .map(|(k, v)| format!("{k}={}", short_value(v)))
        .collect();
    if params.is_empty() {
        policy.to_string()
    } else {
        format!("{policy}({})", params.join(","))
    }
}

fn group_params(row: &Value) -> BTreeMap<String, Value> {
    params_of(row, NOT_GROUP_KEYS, NON_STRING_PARAMS)
}

/// A row's parameters that tell its group: its strings and booleans, and the `numbers` keys,
/// less the `skip` keys (figures, ids) and a `trace_path` beside a `trace` name.
pub(crate) fn params_of(row: &Value, skip: &[&str], numbers: &[&str]) -> BTreeMap<String, Value> {
    let mut params = BTreeMap::new();
    let Some(obj) = row.as_object() else {
        return params;
    };
    for (k, v) in obj {
        if v.is_null() || skip.contains(&k.as_str()) {
            continue;
        }
        // the trace's name says it; its path would only repeat it
        if k == "trace_path" && obj.contains_key("trace") {
            continue;
        }
        if v.is_string() || v.is_boolean() || numbers.contains(&k.as_str()) {
            params.insert(k.clone(), v.clone());
        }
    }
    params
}

/// A parameter value for people: strings bare, `{"gib": 32.0}` as `32 GiB`.
pub(crate) fn short_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().expect("one entry");
            match (k.as_str(), v.as_f64()) {
                ("gib", Some(g)) => format!("{} GiB", trim_float(g)),
                ("entries", Some(n)) => format!("{} entries", trim_float(n)),
                _ => format!("{k}={}", short_value(v)),
            }
        }
        Value::Number(n) => n.as_f64().map(trim_float).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

/// `32.0` -> `32`, `15.9609375` -> `15.96`.
pub(crate) fn trim_float(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

impl Group {
    /// The series in drawing order: first appearance, with Belady and ideal last.
    pub fn series_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for p in &self.points {
            if !names.contains(&p.series) {
                names.push(p.series.clone());
            }
        }
        let rank = |s: &String| match s.as_str() {
            BELADY => 1,
            IDEAL => 2,
            _ => 0,
        };
        names.sort_by_key(rank);
        names
    }

    /// The points of one series by capacity.
    pub fn series(&self, name: &str) -> Vec<&Point> {
        let mut v: Vec<&Point> = self.points.iter().filter(|p| p.series == name).collect();
        v.sort_by(|a, b| a.gpu_blocks.total_cmp(&b.gpu_blocks));
        v
    }

    /// Distinct GPU capacities of the bounded policies (all capacities if only `ideal` ran).
    pub fn capacities(&self) -> Vec<f64> {
        let bounded: Vec<f64> = self
            .points
            .iter()
            .filter(|p| !p.is_ideal())
            .map(|p| p.gpu_blocks)
            .collect();
        let mut caps = if bounded.is_empty() {
            self.points.iter().map(|p| p.gpu_blocks).collect()
        } else {
            bounded
        };
        caps.sort_by(f64::total_cmp);
        caps.dedup();
        caps
    }

    /// GiB of KV memory per GPU block, when the rows carry `gpu_cache_gb`.
    pub fn gib_per_block(&self) -> Option<f64> {
        let mut ratios = self
            .points
            .iter()
            .filter(|p| p.gpu_blocks > 0.0)
            .map(|p| p.gpu_cache_gb.map(|g| g / p.gpu_blocks));
        let first = ratios.next()??;
        ratios
            .all(|r| r.is_some_and(|r| (r - first).abs() <= 1e-9 * first.abs()))
            .then_some(first)
    }

    /// True when an LMCache tier (CPU or disk) is on, so that "hit" means all tiers.
    pub fn has_lmcache(&self) -> bool {
        let on = |k: &str| self.params.get(k).is_some_and(|v| v.as_f64() != Some(0.0));
        on("cpu_chunks")
            || on("disk_chunks")
            || self
                .points
                .iter()
                .any(|p| p.cpu_hit > 0.0 || p.disk_hit > 0.0)
    }

    /// Gap closed vs Belady of every policy but LRU, Belady and ideal, per capacity:
    /// `(P - LRU) / (Belady - LRU)` of the all-tier token hit ratio. `None` without both an
    /// `lru` and a `belady` series; capacities where Belady does not beat LRU by
    /// `MIN_BELADY_GAP` are left out (the ratio is undefined or noise there).
    pub fn gap_closed(&self) -> Option<GapClosed> {
        self.gap_closed_of(false)
    }

    /// Like `gap_closed`, with LRU (0) and Belady (1) themselves where the gap is defined.
    pub fn gap_closed_with_bounds(&self) -> Option<GapClosed> {
        self.gap_closed_of(true)
    }

    fn gap_closed_of(&self, with_bounds: bool) -> Option<GapClosed> {
        let lru = self.series(LRU);
        let belady = self.series(BELADY);
        if lru.is_empty() || belady.is_empty() {
            return None;
        }
        let at = |s: &[&Point], c: f64| s.iter().find(|p| p.gpu_blocks == c).map(|p| p.hit);
        let mut out = Vec::new();
        for name in self.series_names() {
            let bound = [LRU, BELADY].contains(&name.as_str());
            if name == IDEAL || (bound && !with_bounds) {
                continue;
            }
            let pts: Vec<(f64, f64)> = self
                .series(&name)
                .iter()
                .filter_map(|p| {
                    let g = gap_closed(p.hit, at(&lru, p.gpu_blocks)?, at(&belady, p.gpu_blocks)?)?;
                    Some((p.gpu_blocks, g))
                })
                .collect();
            out.push((name, pts));
        }
        Some(out)
    }
}

/// Belady must beat LRU by this much hit ratio (half a percentage point) for the gap closed
/// to mean something: where every policy converges (large caches) the denominator is noise
/// and the ratio would swing to hundreds of percent.
pub(crate) const MIN_BELADY_GAP: f64 = 0.005;

/// `(p - lru) / (belady - lru)`: 0 = no better than LRU, 1 = as good as the offline optimum;
/// negative when worse than LRU. Undefined (None) when Belady beats LRU by less than
/// `MIN_BELADY_GAP`.
pub(crate) fn gap_closed(p: f64, lru: f64, belady: f64) -> Option<f64> {
    let gap = belady - lru;
    (gap >= MIN_BELADY_GAP).then(|| (p - lru) / gap)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(policy: &str, blocks: u64, hit: f64, extra: Value) -> Value {
        let mut r = json!({
            "policy": policy, "gpu_blocks": blocks, "token_hit_ratio": hit,
            "total_token_hit_ratio": hit, "model": "qwen-8b", "hit_semantics": "prefix",
            "pinning": true, "block_size": 16, "cpu_policy": policy,
            "gpu_cache_gb": blocks as f64 * 0.5, "requests": 10, "gpu_evictions": blocks * 3,
        });
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    }

    #[test]
    fn gap_closed_math() {
        let g = |p, l, b| gap_closed(p, l, b).map(|v| (v * 1e9).round() / 1e9);
        assert_eq!(g(0.5, 0.4, 0.6), Some(0.5));
        assert_eq!(g(0.4, 0.4, 0.6), Some(0.0));
        assert_eq!(g(0.6, 0.4, 0.6), Some(1.0));
        // worse than LRU: negative
        assert_eq!(g(0.3, 0.4, 0.6), Some(-0.5));
        assert_eq!(g(0.3, 0.2, 0.21), Some(10.0));
        // Belady == LRU (every policy hits everything): undefined; a sliver of a gap is noise
        assert_eq!(g(0.6, 0.6, 0.6), None);
        assert_eq!(g(0.6, 0.6, 0.6 + 1e-12), None);
        assert_eq!(g(0.6, 0.6, 0.604), None);
    }

    #[test]
    fn groups_split_on_every_parameter_but_policy_and_capacity() {
        let rows = vec![
            row("lru", 100, 0.1, json!({"trace": "a"})),
            row("belady", 100, 0.3, json!({"trace": "a"})),
            row("lru", 200, 0.2, json!({"trace": "a"})),
            row("lru", 100, 0.15, json!({"trace": "b"})),
            row("lru", 100, 0.1, json!({"trace": "a", "cpu_cache_gb": 16.0})),
            row(
                "lru",
                100,
                0.1,
                json!({"trace": "a", "hit_semantics": "any"}),
            ),
            // a new string parameter splits too; a new number is a figure and does not
            row(
                "lru",
                100,
                0.1,
                json!({"trace": "a", "tag": "x", "new_figure": 3.5}),
            ),
            // failed point: listed, not grouped
            json!({"policy": "s3fifo", "trace": "a", "error": "boom", "gpu_size": {"gib": 1.0}}),
            // not plottable
            json!({"trace": "a", "gpu_blocks": 5}),
            // same series and capacity again: a duplicate, not a second point
            row("lru", 200, 0.9, json!({"trace": "a"})),
        ];
        let a = analyze(&rows);
        let sizes: Vec<usize> = a.groups.iter().map(|g| g.points.len()).collect();
        assert_eq!(sizes, vec![3, 1, 1, 1, 1]);
        assert_eq!(a.failed, vec![7]);
        assert_eq!(a.skipped, vec![(8, "no `policy`".to_string())]);
        assert_eq!(a.groups[0].duplicates, vec![9]);
        assert_eq!(a.groups[0].params["trace"], "a");
        assert!(!a.groups[0].params.contains_key("cpu_policy"));
        assert_eq!(
            a.varying,
            vec!["cpu_cache_gb", "hit_semantics", "tag", "trace"]
        );
        assert_eq!(a.common["model"], "qwen-8b");
        assert_eq!(a.groups[0].series_names(), vec!["lru", "belady"]);
        assert_eq!(a.groups[0].capacities(), vec![100.0, 200.0]);
        assert_eq!(a.groups[0].gib_per_block(), Some(0.5));
    }

    #[test]
    fn labels_name_groups_without_repeating_implied_keys() {
        let cpu = |gib: f64, chunks: u64| json!({"cpu_size": {"gib": gib}, "cpu_cache_gb": gib, "cpu_chunks": chunks});
        let rows = vec![
            row(
                "lru",
                100,
                0.1,
                json!({"trace": "a", "trace_path": "x/a.jsonl"}),
            ),
            row(
                "lru",
                100,
                0.1,
                json!({"trace": "b", "trace_path": "x/b.jsonl"}),
            ),
            row(
                "lru",
                100,
                0.1,
                json!({"trace": "a", "cpu_size": {"gib": 32.0}, "cpu_cache_gb": 32.0, "cpu_chunks": 454}),
            ),
            row("lru", 100, 0.1, cpu(16.0, 227)),
        ];
        let a = analyze(&rows);
        assert_eq!(a.label_keys(), vec!["trace", "cpu_size"]);
        assert_eq!(a.group_label(&a.groups[0]), "trace=a \u{b7} cpu_size=off");
        assert_eq!(
            a.group_label(&a.groups[2]),
            "trace=a \u{b7} cpu_size=32 GiB"
        );
        assert_eq!(
            a.group_label(&a.groups[3]),
            "trace=none \u{b7} cpu_size=16 GiB"
        );
        let one = analyze(&rows[..1]);
        assert_eq!(one.group_label(&one.groups[0]), "");
    }

    #[test]
    fn policy_parameters_make_separate_series() {
        let rows = vec![
            row(
                "s3fifo",
                100,
                0.1,
                json!({"policy_config": {"name": "s3fifo", "small_ratio": 0.2}}),
            ),
            row(
                "s3fifo",
                100,
                0.2,
                json!({"policy_config": {"name": "s3fifo", "small_ratio": 0.1}}),
            ),
            row("lru", 100, 0.2, json!({"policy_config": "lru"})),
            row(
                "ideal",
                100,
                0.9,
                json!({"policy_config": {"name": "ideal"}}),
            ),
        ];
        let a = analyze(&rows);
        assert_eq!(a.groups.len(), 1);
        assert_eq!(
            a.groups[0].series_names(),
            vec![
                "s3fifo(small_ratio=0.2)",
                "s3fifo(small_ratio=0.1)",
                "lru",
                "ideal"
            ]
        );
    }

    #[test]
    fn gap_closed_per_policy_and_capacity() {
        let rows = vec![
            row("lru", 100, 0.10, json!({})),
            row("lru", 200, 0.20, json!({})),
            row("lru", 400, 0.50, json!({})),
            row("fifo", 100, 0.05, json!({})),
            row("fifo", 200, 0.25, json!({})),
            row("fifo", 400, 0.50, json!({})),
            row("belady", 100, 0.30, json!({})),
            row("belady", 200, 0.40, json!({})),
            row("belady", 400, 0.50, json!({})),
            row("ideal", 100, 0.50, json!({})),
        ];
        let a = analyze(&rows);
        let gap = a.groups[0].gap_closed().unwrap();
        assert_eq!(gap.len(), 1);
        assert_eq!(gap[0].0, "fifo");
        // 100: (0.05-0.10)/(0.30-0.10) = -0.25; 200: (0.25-0.20)/(0.40-0.20) = 0.25;
        // 400: Belady == LRU, undefined
        let pts = &gap[0].1;
        assert_eq!(pts.len(), 2);
        assert!((pts[0].1 + 0.25).abs() < 1e-9 && pts[0].0 == 100.0);
        assert!((pts[1].1 - 0.25).abs() < 1e-9 && pts[1].0 == 200.0);
        // LRU and Belady themselves: 0 and 1 where the gap is defined
        let bounds = a.groups[0].gap_closed_with_bounds().unwrap();
        let names: Vec<&str> = bounds.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["lru", "fifo", "belady"]);
        assert_eq!(bounds[0].1, vec![(100.0, 0.0), (200.0, 0.0)]);
        assert_eq!(bounds[2].1, vec![(100.0, 1.0), (200.0, 1.0)]);
        // without Belady there is no gap chart
        let a = analyze(&rows[..6]);
        assert!(a.groups[0].gap_closed().is_none());
    }

    #[test]
    fn windows_with_no_prompt_tokens_are_dropped() {
        let r = row(
            "lru",
            100,
            0.1,
            json!({"windows": [
                {"start": 0.0, "prompt_tokens": 10, "token_hit_ratio": 0.5},
                {"start": 60.0, "prompt_tokens": 0, "token_hit_ratio": 0.0},
                {"start": 120.0, "prompt_tokens": 5, "token_hit_ratio": 0.25}
            ]}),
        );
        let p = point_of(0, &r).unwrap();
        let starts: Vec<f64> = p.windows.iter().map(|w| w.start).collect();
        assert_eq!(starts, vec![0.0, 120.0]);
    }

    #[test]
    fn short_values() {
        assert_eq!(short_value(&json!({"gib": 32.0})), "32 GiB");
        assert_eq!(short_value(&json!({"entries": 500})), "500 entries");
        assert_eq!(short_value(&json!(15.9609375)), "15.96");
        assert_eq!(short_value(&json!("x")), "x");
        assert_eq!(short_value(&json!(true)), "true");
    }
}
