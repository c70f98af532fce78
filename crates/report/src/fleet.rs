//! Fleet rows (issue 21, docs/replicas.md): points of N replicas behind a router, as `batch`
//! writes them with `replicas`/`routers` axes (`inferencelab_sim::cluster::result_row`) and
//! `simulate --replicas` in its summary's `results`. A row is a fleet row when it has a
//! numeric `replicas` and a string `router`.
//!
//! Fleet rows sharing every parameter but the router and the fleet size make one chart pair:
//! the fleet's token hit ratio (GPU + LMCache) and its p90 TTFT (the time model's estimate)
//! against replicas, one line per router.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::style::RGBColor;
use serde_json::Value;

use crate::chart::{Body, Chart, LineChart, Series, SeriesKind, TickLabels, XAxis};
use crate::group::{param_display, trim_float};
use crate::html::esc;

/// Keys that never split fleet groups: the series, the x axis, per-point identities.
const NOT_GROUP_KEYS: &[&str] = &[
    "router",
    "replicas",
    "point_id",
    "point_index",
    "error",
    "policy_config",
    "cpu_policy",
    "gpu_size",
    "schedule",
];

/// Numbers that are parameters of a fleet point (every other number is a figure).
const NUMBER_PARAMS: &[&str] = &[
    "gpu_blocks",
    "cpu_chunks",
    "disk_chunks",
    "block_size",
    "chunk_size",
    "cpu_size",
    "disk_size",
    "requested_block_size",
    "requested_chunk_size",
    "timing",
    "window_seconds",
];

/// True for a row of N replicas behind a router.
pub(crate) fn is_fleet_row(row: &Value) -> bool {
    row.get("replicas").is_some_and(Value::is_u64)
        && row.get("router").is_some_and(Value::is_string)
}

/// One fleet point.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FleetPoint {
    pub row: usize,
    pub router: String,
    pub replicas: f64,
    /// The fleet's token hit ratio over every tier, 0..1.
    pub hit: f64,
    pub ttft_p90_s: f64,
}

/// Fleet rows sharing every parameter but router and replicas.
#[derive(Debug, Clone, Default)]
pub(crate) struct FleetGroup {
    pub params: BTreeMap<String, Value>,
    pub points: Vec<FleetPoint>,
    /// Rows repeating a (router, replicas) already in the group: left out.
    pub duplicates: Vec<usize>,
}

impl FleetGroup {
    /// Routers in first-appearance order, `ideal_pool` (the bound) last.
    pub fn routers(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for p in &self.points {
            if !names.contains(&p.router) {
                names.push(p.router.clone());
            }
        }
        names.sort_by_key(|n| n == IDEAL_POOL);
        names
    }

    fn line(&self, router: &str) -> Vec<&FleetPoint> {
        let mut v: Vec<&FleetPoint> = self.points.iter().filter(|p| p.router == router).collect();
        v.sort_by(|a, b| a.replicas.total_cmp(&b.replicas));
        v
    }

    fn sizes(&self) -> Vec<f64> {
        let mut s: Vec<f64> = self.points.iter().map(|p| p.replicas).collect();
        s.sort_by(f64::total_cmp);
        s.dedup();
        s
    }
}

const IDEAL_POOL: &str = "ideal_pool";

/// The fleet groups of `rows` (failed rows, with an `error`, are not in them).
pub(crate) fn analyze(rows: &[Value]) -> Vec<FleetGroup> {
    let mut groups: Vec<FleetGroup> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if !is_fleet_row(row) || row.get("error").is_some_and(|e| !e.is_null()) {
            continue;
        }
        let num = |k: &str| row.get(k).and_then(Value::as_f64);
        let (Some(hit), Some(ttft)) = (num("token_hit_ratio"), num("ttft_p90_s")) else {
            continue;
        };
        let point = FleetPoint {
            row: i,
            router: row["router"].as_str().unwrap_or_default().to_string(),
            replicas: num("replicas").unwrap_or(0.0),
            hit,
            ttft_p90_s: ttft,
        };
        let params = crate::group::params_of(row, NOT_GROUP_KEYS, NUMBER_PARAMS);
        let g = match groups.iter().position(|g| g.params == params) {
            Some(g) => g,
            None => {
                groups.push(FleetGroup {
                    params,
                    ..FleetGroup::default()
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[g];
        if g.points
            .iter()
            .any(|p| p.router == point.router && p.replicas == point.replicas)
        {
            g.duplicates.push(i);
        } else {
            g.points.push(point);
        }
    }
    groups
}

/// `policy=lru · gpu_blocks=2000`: the parameters that differ between fleet groups (empty with
/// one group).
pub(crate) fn label(groups: &[FleetGroup], g: &FleetGroup) -> String {
    let mut keys: Vec<&String> = groups.iter().flat_map(|g| g.params.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| groups.iter().any(|o| o.params.get(*k) != g.params.get(*k)))
        .map(|k| format!("{k}={}", param_display(g.params.get(k), k)))
        .collect::<Vec<_>>()
        .join(" \u{b7} ")
}

/// Router colors (Tableau 10), the same in every chart; `ideal_pool` dashed grey.
fn color(router: &str, i: usize) -> RGBColor {
    const OTHERS: [RGBColor; 4] = [
        RGBColor(0, 0, 139),
        RGBColor(128, 0, 64),
        RGBColor(100, 100, 0),
        RGBColor(152, 223, 138),
    ];
    match router {
        "round_robin" => RGBColor(31, 119, 180),
        "random" => RGBColor(255, 127, 14),
        "power_of_two" => RGBColor(44, 160, 44),
        "consistent_hash" => RGBColor(148, 103, 189),
        "sticky_least_loaded" => RGBColor(140, 86, 75),
        "cache_aware" => RGBColor(214, 39, 40),
        "kv_aware" => RGBColor(23, 190, 207),
        IDEAL_POOL => RGBColor(120, 120, 120),
        _ => OTHERS[i % OTHERS.len()],
    }
}

fn replicas_axis(g: &FleetGroup) -> XAxis {
    let sizes = g.sizes();
    let (lo, hi) = (sizes[0], *sizes.last().expect("a fleet group has points"));
    let log = lo > 0.0 && hi / lo > 4.0;
    let range = if log {
        (lo / 1.25, hi * 1.25)
    } else if hi > lo {
        let pad = (hi - lo) * 0.06;
        (lo - pad, hi + pad)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    XAxis {
        desc: format!("Replicas{}", if log { " (log scale)" } else { "" }),
        log,
        range,
        ticks: sizes,
        labels: TickLabels::Plain,
        top: None,
    }
}

fn lines(g: &FleetGroup, metric: impl Fn(&FleetPoint) -> f64) -> Vec<Series> {
    g.routers()
        .iter()
        .enumerate()
        .map(|(i, r)| Series {
            label: if r == IDEAL_POOL {
                ideal_pool_label(g)
            } else {
                r.clone()
            },
            color: color(r, i),
            kind: if r == IDEAL_POOL {
                SeriesKind::Dashed
            } else {
                SeriesKind::Line
            },
            points: g.line(r).iter().map(|p| (p.replicas, metric(p))).collect(),
            max_gap: None,
        })
        .collect()
}

/// The bound's legend: with one shared LMCache tier (`lmcache_shared`), `ideal_pool` has N x the
/// GPU blocks but the one tier, not N x every tier.
fn ideal_pool_label(g: &FleetGroup) -> String {
    if g.params.get("lmcache_shared") == Some(&Value::Bool(true)) {
        "ideal_pool (one replica, N x GPU memory, the one LMCache tier)".into()
    } else {
        "ideal_pool (one replica, N x memory)".into()
    }
}

fn top_of(series: &[Series], percent: bool) -> f64 {
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    match (percent, max > 0.0) {
        (true, _) => (((max * 1.06) / 10.0).ceil() * 10.0).clamp(10.0, 102.0),
        (false, true) => max * 1.1,
        (false, false) => 1.0,
    }
}

fn subtitle(label: &str, what: &str) -> String {
    if label.is_empty() {
        what.to_string()
    } else {
        format!("{label}  |  {what}")
    }
}

/// The chart pair of a fleet group.
pub(crate) fn charts(g: &FleetGroup, label: &str) -> Vec<Chart> {
    let hit = lines(g, |p| p.hit * 100.0);
    let ttft = lines(g, |p| p.ttft_p90_s);
    vec![
        Chart {
            name: "fleet_hit_ratio_vs_replicas",
            title: "Fleet token hit ratio vs replicas, per router".into(),
            subtitle: subtitle(
                label,
                "(GPU + LMCache hit tokens) / prompt tokens over the fleet; sizes are per replica",
            ),
            size: (1400, 820),
            body: Body::Lines(LineChart {
                x: replicas_axis(g),
                y_desc: "Token hit ratio, fleet (%)".into(),
                y_percent: true,
                legend_title: "Router",
                y_range: (0.0, top_of(&hit, true)),
                series: hit,
            }),
        },
        Chart {
            name: "fleet_ttft_p90_vs_replicas",
            title: "p90 TTFT vs replicas, per router (time model)".into(),
            subtitle: subtitle(
                label,
                "queueing + uncached prompt tokens at prefill_tokens_per_s (an estimate)",
            ),
            size: (1400, 820),
            body: Body::Lines(LineChart {
                x: replicas_axis(g),
                y_desc: "TTFT p90 (s)".into(),
                y_percent: false,
                legend_title: "Router",
                y_range: (0.0, top_of(&ttft, false)),
                series: ttft,
            }),
        },
    ]
}

/// The figures of a fleet group as an HTML table, one row per (router, replicas).
pub(crate) fn table(out: &mut String, rows: &[Value], g: &FleetGroup) {
    const COLS: &[(&str, &str, bool)] = &[
        ("token_hit_ratio", "Hit ratio %", true),
        ("gpu_token_hit_ratio", "GPU hit ratio %", true),
        ("compute_saved_ratio", "Compute saved %", true),
        ("imbalance", "Imbalance (max/mean)", false),
        ("queue_delay_p90_s", "Queueing p90 s", false),
        ("ttft_p50_s", "TTFT p50 s", false),
        ("ttft_p90_s", "TTFT p90 s", false),
        ("requests", "Requests", false),
    ];
    out.push_str(
        "<div class=\"scroll\"><table class=\"sortable\"><thead><tr>\
         <th class=\"t\">router</th><th>replicas</th>",
    );
    for (_, head, _) in COLS {
        let _ = write!(out, "<th>{head}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for r in g.routers() {
        for p in g.line(&r) {
            let row = &rows[p.row];
            let _ = write!(
                out,
                "<tr><td class=\"t\" data-v=\"{0}\">{0}</td><td data-v=\"{1}\">{1}</td>",
                esc(&r),
                trim_float(p.replicas)
            );
            for (key, _, percent) in COLS {
                match row.get(*key).and_then(Value::as_f64) {
                    Some(x) if *percent => {
                        let _ = write!(out, "<td data-v=\"{x}\">{:.2}</td>", x * 100.0);
                    }
                    Some(x) => {
                        let _ = write!(out, "<td data-v=\"{x}\">{}</td>", trim_float(x));
                    }
                    None => out.push_str("<td data-v=\"\"></td>"),
                }
            }
            out.push_str("</tr>");
        }
    }
    out.push_str("</tbody></table></div>\n");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(router: &str, n: u64, hit: f64, gpu: u64) -> Value {
        json!({"router": router, "replicas": n, "token_hit_ratio": hit, "ttft_p90_s": 1.5,
               "policy": "lru", "gpu_blocks": gpu, "trace": "t", "imbalance": 1.0,
               "schedule": "vllm"})
    }

    #[test]
    fn fleet_rows_group_on_everything_but_router_and_replicas() {
        let rows = vec![
            row("round_robin", 2, 0.1, 100),
            row("round_robin", 4, 0.2, 100),
            row("cache_aware", 2, 0.3, 100),
            row("round_robin", 2, 0.4, 200),
            row("round_robin", 2, 0.5, 100),
            json!({"policy": "lru", "gpu_blocks": 100, "token_hit_ratio": 0.1}),
            json!({"router": "round_robin", "replicas": 2, "error": "boom"}),
        ];
        assert!(is_fleet_row(&rows[0]) && !is_fleet_row(&rows[5]));
        let gs = analyze(&rows);
        assert_eq!(gs.len(), 2);
        assert_eq!(gs[0].points.len(), 3);
        assert_eq!(gs[0].duplicates, [4]);
        assert_eq!(gs[0].routers(), ["round_robin", "cache_aware"]);
        assert_eq!(label(&gs, &gs[1]), "gpu_blocks=200");
        let c = charts(&gs[0], "");
        let Body::Lines(l) = &c[0].body else {
            panic!("lines")
        };
        // one line per router, x = replicas, y = hit ratio in %
        assert_eq!(l.series[0].points, [(2.0, 10.0), (4.0, 20.0)]);
        assert_eq!(l.series[1].points, [(2.0, 30.0)]);
        assert_eq!(l.x.ticks, [2.0, 4.0]);
    }

    #[test]
    fn the_bound_says_what_it_pools_with_a_shared_lmcache_tier() {
        let mut shared = row("ideal_pool", 2, 0.5, 100);
        shared["lmcache_shared"] = json!(true);
        let mut own = row("ideal_pool", 2, 0.4, 100);
        own["lmcache_shared"] = json!(false);
        let gs = analyze(&[shared, own]);
        assert_eq!(
            gs.len(),
            2,
            "shared and per-replica tiers are separate groups"
        );
        let legend = |g: &FleetGroup| {
            let Body::Lines(l) = &charts(g, "")[0].body else {
                panic!("lines")
            };
            l.series[0].label.clone()
        };
        assert_eq!(
            legend(&gs[0]),
            "ideal_pool (one replica, N x GPU memory, the one LMCache tier)"
        );
        assert_eq!(legend(&gs[1]), "ideal_pool (one replica, N x memory)");
    }
}
