//! The chart set of one group: what each chart shows, as data for `chart.rs` to draw.
//!
//! 1. token hit ratio vs GPU capacity per policy, ideal as a dashed line, Belady as the bound;
//! 2. token hit ratio over time (the trace's windows) at the middle capacity;
//! 3. where prompt tokens come from (GPU hit, LMCache CPU hit, disk hit, recomputed), stacked,
//!    one panel per policy;
//! 4. prefill compute saved vs capacity;
//! 5. gap closed vs Belady, `(P - LRU) / (Belady - LRU)`, when both LRU and Belady ran;
//! 6. the engine model's admission delay (median, p90) vs capacity, when requests waited.

use plotters::style::RGBColor;

use crate::chart::{
    fmt_count, fmt_gib, BarPanel, BarPanels, Body, Chart, LineChart, Series, SeriesKind,
    TickLabels, XAxis,
};
use crate::group::{trim_float, Group, Point, BELADY, IDEAL, LRU};

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 820;

/// Colors of the policies we know (Tableau 10), so a policy keeps its color across charts
/// and reports; other series take the extra colors in turn.
fn known_color(policy: &str) -> Option<RGBColor> {
    Some(match policy {
        LRU => RGBColor(31, 119, 180),
        "fifo" => RGBColor(255, 127, 14),
        "s3fifo" => RGBColor(44, 160, 44),
        "sieve" => RGBColor(148, 103, 189),
        "arc" => RGBColor(140, 86, 75),
        "lfu" => RGBColor(227, 119, 194),
        "mru" => RGBColor(188, 189, 34),
        "conversation_aware" => RGBColor(23, 190, 207),
        "lightgbm" => RGBColor(214, 39, 40),
        BELADY => RGBColor(0, 0, 0),
        IDEAL => RGBColor(120, 120, 120),
        _ => return None,
    })
}

const EXTRA_COLORS: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 139),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(197, 176, 213),
    RGBColor(128, 0, 64),
    RGBColor(100, 100, 0),
];

/// Tier colors of the breakdown chart.
const GPU_HIT: RGBColor = RGBColor(31, 119, 180);
const CPU_HIT: RGBColor = RGBColor(255, 127, 14);
const DISK_HIT: RGBColor = RGBColor(148, 103, 189);
const RECOMPUTED: RGBColor = RGBColor(222, 222, 222);

/// Series styles of a group: color and kind per series name.
struct Styles {
    names: Vec<String>,
    colors: Vec<RGBColor>,
}

impl Styles {
    fn new(g: &Group) -> Self {
        let names = g.series_names();
        let mut extra = 0;
        let colors = names
            .iter()
            .map(|n| {
                // a policy with parameters (`s3fifo(small_ratio=0.2)`) is one of possibly
                // several configurations of it: give each its own color
                known_color(n).unwrap_or_else(|| {
                    extra += 1;
                    EXTRA_COLORS[(extra - 1) % EXTRA_COLORS.len()]
                })
            })
            .collect();
        Styles { names, colors }
    }
    fn color(&self, name: &str) -> RGBColor {
        self.names
            .iter()
            .position(|n| n == name)
            .map_or(RGBColor(0, 0, 0), |i| self.colors[i])
    }
}

fn kind(name: &str) -> SeriesKind {
    match name {
        BELADY => SeriesKind::Bound,
        IDEAL => SeriesKind::Dashed,
        _ => SeriesKind::Line,
    }
}

fn legend_label(name: &str, ideal_value: Option<f64>) -> String {
    match (name, ideal_value) {
        (BELADY, _) => "belady (offline optimum)".into(),
        (IDEAL, Some(v)) => format!("ideal (infinite cache) {v:.1}%"),
        (IDEAL, None) => "ideal (infinite cache)".into(),
        _ => name.to_string(),
    }
}

/// All charts of a group. `label` names the group (empty when there is one group).
pub(crate) fn charts_for(g: &Group, label: &str) -> Vec<Chart> {
    let styles = Styles::new(g);
    let mut charts = vec![hit_vs_capacity(g, label, &styles)];
    charts.extend(hit_over_time(g, label, &styles));
    charts.push(tier_breakdown(g, label));
    charts.extend(compute_saved(g, label, &styles));
    charts.extend(gap_closed(g, label, &styles));
    charts.extend(admission_delay(g, label, &styles));
    charts
}

/// The engine model's admission delay per series and capacity: the median solid, the p90
/// dashed. Only when some request waited (a delay above zero somewhere): the hit ratios then
/// describe an engine with that queue (`simulate` warns past a 10 s median).
fn admission_delay(g: &Group, label: &str, styles: &Styles) -> Option<Chart> {
    if !g
        .points
        .iter()
        .any(|p| p.queue_p90_s.is_some_and(|d| d > 0.0))
    {
        return None;
    }
    let x = capacity_axis(g);
    let mut series = Vec::new();
    for name in styles.names.iter().filter(|n| n.as_str() != IDEAL) {
        let pts = g.series(name);
        for p90 in [false, true] {
            let points: Vec<(f64, f64)> = pts
                .iter()
                .filter_map(|p| {
                    let d = if p90 { p.queue_p90_s } else { p.queue_p50_s };
                    Some((p.gpu_blocks, d?))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            series.push(Series {
                label: format!(
                    "{} {}",
                    legend_label(name, None),
                    if p90 { "p90" } else { "median" }
                ),
                color: styles.color(name),
                kind: if p90 {
                    SeriesKind::Dashed
                } else {
                    SeriesKind::Line
                },
                points,
                max_gap: None,
            });
        }
    }
    let top = max_y(&series);
    Some(Chart {
        name: "admission_delay_vs_capacity",
        title: "Admission delay vs GPU KV-cache capacity".into(),
        subtitle: subtitle(
            label,
            "the engine model's wait from arrival to first scheduling (solid: median, dashed: p90); \
             hit ratios describe an engine with this queue",
        ),
        size: (WIDTH, HEIGHT),
        body: Body::Lines(LineChart {
            y_percent: false,
            legend_title: "Policy",
            y_range: (0.0, if top > 0.0 { top * 1.08 } else { 1.0 }),
            x,
            y_desc: "Admission delay (s)".into(),
            series,
        }),
    })
}

fn block_size_words(g: &Group) -> String {
    g.params
        .get("block_size")
        .and_then(|v| v.as_f64())
        .map(|b| format!("blocks of {} tokens", b as u64))
        .unwrap_or_else(|| "blocks".into())
}

/// The GPU capacity axis: the grid's capacities as ticks, log scale beyond one decade, GiB on
/// top when the rows say how much memory a block is.
fn capacity_axis(g: &Group) -> XAxis {
    let caps = g.capacities();
    let (lo, hi) = (caps[0], *caps.last().expect("a group has points"));
    let log = lo > 0.0 && hi / lo > 10.0;
    let range = if log {
        (lo / 1.3, hi * 1.3)
    } else if hi > lo {
        let pad = (hi - lo) * 0.06;
        (lo - pad, hi + pad)
    } else if lo > 0.0 {
        (lo * 0.5, lo * 1.5)
    } else {
        (-1.0, 1.0)
    };
    let to_axis = |c: f64| if log { c.log10() } else { c };
    let min_gap = (to_axis(range.1) - to_axis(range.0)) / 13.0;
    let mut ticks: Vec<f64> = Vec::new();
    for &c in &caps {
        if ticks
            .last()
            .is_none_or(|&t| to_axis(c) - to_axis(t) >= min_gap)
        {
            ticks.push(c);
        }
    }
    XAxis {
        desc: format!(
            "GPU KV-cache capacity ({}{})",
            block_size_words(g),
            if log { ", log scale" } else { "" }
        ),
        log,
        range,
        ticks,
        labels: TickLabels::Count,
        top: g
            .gib_per_block()
            .map(|per| ("GPU KV-cache memory (GiB)".to_string(), per)),
    }
}

/// 0 up to a round number above the largest value, at most 100 (%).
fn percent_range(max: f64) -> (f64, f64) {
    let top = if max <= 0.0 {
        10.0
    } else if max < 10.0 {
        (max * 1.1).ceil().max(1.0)
    } else {
        ((max * 1.06) / 10.0).ceil() * 10.0
    };
    // a little headroom above 100% so that lines at the top do not merge with the frame
    (0.0, if top >= 100.0 { 102.0 } else { top })
}

/// Lines of `metric` (in %) over capacity for every series; ideal as one dashed level when its
/// value does not depend on the capacity.
fn capacity_series(
    g: &Group,
    styles: &Styles,
    x: &XAxis,
    metric: impl Fn(&Point) -> Option<f64>,
) -> Vec<Series> {
    let mut out = Vec::new();
    for name in &styles.names {
        let pts: Vec<(f64, f64)> = g
            .series(name)
            .iter()
            .filter_map(|p| Some((p.gpu_blocks, metric(p)? * 100.0)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let flat = pts.iter().all(|p| (p.1 - pts[0].1).abs() < 1e-6);
        let (points, value) = if name == IDEAL && flat {
            (
                vec![(x.range.0, pts[0].1), (x.range.1, pts[0].1)],
                Some(pts[0].1),
            )
        } else {
            (pts, None)
        };
        out.push(Series {
            label: legend_label(name, value),
            color: styles.color(name),
            kind: kind(name),
            points,
            max_gap: None,
        });
    }
    out
}

fn max_y(series: &[Series]) -> f64 {
    series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max)
}

fn hit_vs_capacity(g: &Group, label: &str, styles: &Styles) -> Chart {
    let x = capacity_axis(g);
    let series = capacity_series(g, styles, &x, |p| Some(p.hit));
    let (y_desc, what) = if g.has_lmcache() {
        (
            "Token hit ratio, GPU + LMCache (%)",
            "hits from the GPU prefix cache and LMCache",
        )
    } else {
        (
            "GPU prefix-cache token hit ratio (%)",
            "vLLM prefix_cache_hits / prefix_cache_queries",
        )
    };
    Chart {
        name: "hit_ratio_vs_capacity",
        title: "Token hit ratio vs GPU KV-cache capacity".into(),
        subtitle: subtitle(label, what),
        size: (WIDTH, HEIGHT),
        body: Body::Lines(LineChart {
            y_percent: true,
            legend_title: "Policy",
            y_range: percent_range(max_y(&series)),
            x,
            y_desc: y_desc.into(),
            series,
        }),
    }
}

fn subtitle(label: &str, what: &str) -> String {
    match (label.is_empty(), what.is_empty()) {
        (true, _) => what.to_string(),
        (false, true) => label.to_string(),
        (false, false) => format!("{label}  |  {what}"),
    }
}

/// Ticks at round steps covering `lo..hi`, about `n` of them.
fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// Window width in seconds: the rows' `window_seconds`, else the smallest step between
/// window starts.
fn window_width(g: &Group, picked: &[(&String, &Point)]) -> f64 {
    if let Some(w) = g.params.get("window_seconds").and_then(|v| v.as_f64()) {
        return w;
    }
    picked
        .iter()
        .flat_map(|(_, p)| p.windows.windows(2).map(|w| w[1].start - w[0].start))
        .filter(|d| *d > 0.0)
        .fold(f64::INFINITY, f64::min)
        .min(1e12)
}

fn hit_over_time(g: &Group, label: &str, styles: &Styles) -> Option<Chart> {
    let caps = g.capacities();
    let cap = caps[(caps.len() - 1) / 2];
    let mut picked: Vec<(&String, &Point)> = Vec::new();
    for name in &styles.names {
        let pts = g.series(name);
        let at = pts
            .iter()
            .find(|p| p.gpu_blocks == cap)
            .or_else(|| pts.iter().find(|p| p.is_ideal()));
        if let Some(p) = at.filter(|p| p.windows.len() >= 2) {
            picked.push((name, p));
        }
    }
    if picked.is_empty() {
        return None;
    }
    let starts = picked
        .iter()
        .flat_map(|(_, p)| p.windows.iter().map(|w| w.start));
    let (t0, t1) = starts.fold((f64::MAX, f64::MIN), |(a, b), t| (a.min(t), b.max(t)));
    let (unit, unit_name) = if t1 - t0 > 3.0 * 3600.0 {
        (3600.0, "hours")
    } else {
        (60.0, "minutes")
    };
    let (lo, hi) = (t0 / unit, (t1 / unit).max(t0 / unit + 1e-6));
    let pad = (hi - lo) * 0.02;
    let window = window_width(g, &picked);
    let series: Vec<Series> = picked
        .iter()
        .map(|(name, p)| Series {
            label: legend_label(name, None),
            color: styles.color(name),
            kind: kind(name),
            points: p
                .windows
                .iter()
                .map(|w| (w.start / unit, w.token_hit_ratio * 100.0))
                .collect(),
            // windows without requests are not points: do not draw a line across them
            max_gap: Some(window * 1.5 / unit),
        })
        .collect();
    let gib = g
        .gib_per_block()
        .map(|per| format!(" ({} GiB)", fmt_gib(cap * per)))
        .unwrap_or_default();
    let window = format!("{} s windows", trim_float(window));
    Some(Chart {
        name: "hit_ratio_over_time",
        title: format!(
            "Token hit ratio over time at {} GPU blocks{gib}",
            fmt_count(cap)
        ),
        subtitle: subtitle(
            label,
            &format!("{window}, all tiers; the middle capacity of the grid"),
        ),
        size: (WIDTH, HEIGHT),
        body: Body::Lines(LineChart {
            y_percent: true,
            legend_title: "Policy",
            x: XAxis {
                desc: format!("Trace time ({unit_name} since the first request)"),
                log: false,
                range: (lo - pad, hi + pad),
                ticks: nice_ticks(lo, hi, 10),
                labels: TickLabels::Plain,
                top: None,
            },
            y_desc: "Token hit ratio in the window (%)".into(),
            y_range: percent_range(max_y(&series)),
            series,
        }),
    })
}

fn tier_breakdown(g: &Group, label: &str) -> Chart {
    let cpu = g.has_lmcache();
    let disk = g.params.contains_key("disk_chunks") || g.points.iter().any(|p| p.disk_hit > 0.0);
    let mut segments = vec![("GPU prefix-cache hit".to_string(), GPU_HIT)];
    if cpu {
        segments.push(("LMCache CPU hit".into(), CPU_HIT));
    }
    if disk {
        segments.push(("LMCache disk hit".into(), DISK_HIT));
    }
    segments.push(("recomputed".into(), RECOMPUTED));
    let caps = g.capacities();
    let panels: Vec<BarPanel> = g
        .series_names()
        .iter()
        .map(|name| {
            let pts = g.series(name);
            let stacks = caps
                .iter()
                .map(|&c| {
                    // ideal does not depend on the capacity: any of its rows will do
                    let p = pts
                        .iter()
                        .find(|p| p.gpu_blocks == c)
                        .or_else(|| pts.iter().find(|p| p.is_ideal()))?;
                    let mut st = vec![p.gpu_hit * 100.0];
                    if cpu {
                        st.push(p.cpu_hit * 100.0);
                    }
                    if disk {
                        st.push(p.disk_hit * 100.0);
                    }
                    let hit: f64 = st.iter().sum();
                    st.push((100.0 - hit).max(0.0));
                    Some(st)
                })
                .collect();
            BarPanel {
                title: legend_label(name, None),
                labels: caps.iter().map(|&c| fmt_count(c)).collect(),
                stacks,
            }
        })
        .collect();
    // wider panels when there are many capacities
    let cols = match caps.len() {
        0..=4 => 3,
        5..=8 => 2,
        _ => 1,
    }
    .min(panels.len().max(1));
    let rows = panels.len().div_ceil(cols) as u32;
    Chart {
        name: "tier_breakdown",
        title: "Where prompt tokens come from, per policy and GPU capacity".into(),
        subtitle: subtitle(
            label,
            "share of prompt tokens: cache hits per tier, the rest recomputed",
        ),
        size: (WIDTH, 110 + 360 * rows.max(1)),
        body: Body::Bars(BarPanels {
            panels,
            segments,
            x_desc: "GPU capacity (blocks)".into(),
            y_desc: "Prompt tokens (%)".into(),
            cols,
        }),
    }
}

fn compute_saved(g: &Group, label: &str, styles: &Styles) -> Option<Chart> {
    if g.points.iter().all(|p| p.compute_saved.is_none()) {
        return None;
    }
    let x = capacity_axis(g);
    let series = capacity_series(g, styles, &x, |p| p.compute_saved);
    Some(Chart {
        name: "compute_saved_vs_capacity",
        title: "Prefill compute saved vs GPU KV-cache capacity".into(),
        subtitle: subtitle(
            label,
            "prefill FLOPs not spent thanks to cache hits (position-aware: attention grows with context)",
        ),
        size: (WIDTH, HEIGHT),
        body: Body::Lines(LineChart {
            y_percent: true,
            legend_title: "Policy",
            y_range: percent_range(max_y(&series)),
            x,
            y_desc: "Prefill compute saved (%)".into(),
            series,
        }),
    })
}

fn gap_closed(g: &Group, label: &str, styles: &Styles) -> Option<Chart> {
    let gaps = g.gap_closed()?;
    if gaps.iter().all(|(_, pts)| pts.is_empty()) {
        return None;
    }
    let x = capacity_axis(g);
    let mut series: Vec<Series> = gaps
        .into_iter()
        .filter(|(_, pts)| !pts.is_empty())
        .map(|(name, pts)| Series {
            label: name.clone(),
            color: styles.color(&name),
            kind: SeriesKind::Line,
            points: pts.into_iter().map(|(c, v)| (c, v * 100.0)).collect(),
            max_gap: None,
        })
        .collect();
    let (lo, hi) = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold((0.0f64, 100.0f64), |(a, b), v| (a.min(v), b.max(v)));
    // far outside 0..100% the ratio says "much worse/better than the bound allows" and
    // would squash the rest: clip the axis (the table has the numbers)
    let y_range = (
        ((lo / 10.0).floor() * 10.0 - 5.0).max(-105.0),
        ((hi / 10.0).ceil() * 10.0 + 5.0).min(205.0),
    );
    // ... and say so on the chart: a clipped line must not read as "-100%"
    let off_chart = |keep: &dyn Fn(f64) -> bool| {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| !keep(p.1))
            .count()
    };
    let below = off_chart(&|v| v >= y_range.0);
    let above = off_chart(&|v| v <= y_range.1);
    let mut note =
        "of the token hit ratio; 0% = no better than LRU, 100% = the offline optimum".to_string();
    if below > 0 {
        note.push_str(&format!(
            "; {below} point(s) below {:.0}% clipped (values in the table)",
            y_range.0
        ));
    }
    if above > 0 {
        note.push_str(&format!(
            "; {above} point(s) above {:.0}% clipped (values in the table)",
            y_range.1
        ));
    }
    for (name, level) in [(LRU, 0.0), (BELADY, 100.0)] {
        series.push(Series {
            label: format!("{name} = {level:.0}%"),
            color: styles.color(name),
            kind: SeriesKind::Dashed,
            points: vec![(x.range.0, level), (x.range.1, level)],
            max_gap: None,
        });
    }
    Some(Chart {
        name: "gap_closed_vs_belady",
        title: "Gap closed vs Belady: (P - LRU) / (Belady - LRU)".into(),
        subtitle: subtitle(label, &note),
        size: (WIDTH, HEIGHT),
        body: Body::Lines(LineChart {
            y_percent: true,
            legend_title: "Policy",
            x,
            y_desc: "Gap to Belady closed (%)".into(),
            y_range,
            series,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_ranges() {
        assert_eq!(
            nice_ticks(0.0, 17.0, 10),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]
        );
        assert_eq!(nice_ticks(0.0, 60.0, 10).len(), 7);
        assert_eq!(percent_range(65.04), (0.0, 70.0));
        assert_eq!(percent_range(3.1), (0.0, 4.0));
        assert_eq!(percent_range(99.0), (0.0, 102.0));
    }
}
