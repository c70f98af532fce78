//! Charts and a self-contained HTML report from simulation result rows.
//!
//! This crate reads result *rows* (the JSON objects `simulate` and `batch` write, one per grid
//! point, each carrying its parameters and figures), never simulator internals. Rows are
//! grouped by every parameter except the policy and the GPU capacity; each group gets one
//! chart set (PNG and SVG) and a section of `report.html`. Rows with an `error` are failed
//! points: listed in the report, never plotted. Fleet rows (`replicas` and `router`: N
//! replicas behind a router) are drawn apart, hit ratio and p90 TTFT against replicas with
//! one line per router (`fleet.rs`).
//!
//! Rendering is pure Rust (plotters; text with the DejaVu Sans font embedded in the crate,
//! PNGs encoded with `png`), so a fresh machine needs no system font or image libraries.
//!
//! ```no_run
//! # fn main() -> Result<(), inferencelab_report::ReportError> {
//! use std::path::Path;
//! let rows = inferencelab_report::load_results(Path::new("outputs/simulation/demo/summary.json"))?;
//! let files = inferencelab_report::plot_results(&rows, Path::new("outputs/plots"), "demo")?;
//! # let _ = files; Ok(()) }
//! ```

mod chart;
mod charts;
mod error;
mod fleet;
mod glyphs;
mod group;
mod html;
mod load;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use error::ReportError;
pub use load::load_results;

/// The report's file name inside the output directory.
pub const REPORT_FILE: &str = "report.html";

/// Draw every chart of `rows` into `out_dir` (PNG and SVG) and write `out_dir/report.html`
/// (self-contained: charts inlined as SVG, no network fetches), titled `title`.
///
/// With one group the charts go straight into `out_dir`; with several, each group gets a
/// subdirectory `NN-<parameters>/`. Returns every file written, the report last. Rows with a
/// non-null `error` are listed as failed points; rows that are neither plottable nor failed
/// (no `policy`, `gpu_blocks` or `token_hit_ratio`) are listed as such. Fails only on an
/// empty row list, on I/O errors, or if drawing fails.
pub fn plot_results(
    rows: &[Value],
    out_dir: &Path,
    title: &str,
) -> Result<Vec<PathBuf>, ReportError> {
    if rows.is_empty() {
        return Err(ReportError::NoRows);
    }
    let analysis = group::analyze(rows);
    std::fs::create_dir_all(out_dir).map_err(|e| ReportError::io(out_dir, e))?;
    let mut written = Vec::new();
    let mut sections = Vec::new();
    let many = analysis.groups.len() > 1;
    for (i, g) in analysis.groups.iter().enumerate() {
        let label = analysis.group_label(g);
        let sub = if many {
            format!("{:02}-{}", i + 1, slug(&label))
        } else {
            String::new()
        };
        let figures = draw(charts::charts_for(g, &label), out_dir, &sub, &mut written)?;
        sections.push(html::Section {
            group: g,
            label,
            figures,
        });
    }
    // fleets (rows with `replicas` and `router`): hit ratio and p90 TTFT against replicas
    let fleets = fleet::analyze(rows);
    let mut fleet_html = String::new();
    let many = many || !analysis.groups.is_empty() || fleets.len() > 1;
    for (i, g) in fleets.iter().enumerate() {
        let label = fleet::label(&fleets, g);
        let sub = if many {
            format!("fleet-{:02}-{}", i + 1, slug(&label))
        } else {
            String::new()
        };
        let figures = draw(fleet::charts(g, &label), out_dir, &sub, &mut written)?;
        html::fleet_section(&mut fleet_html, rows, &fleets, i, &label, &figures);
    }
    let report = out_dir.join(REPORT_FILE);
    let text = html::report(title, rows, &analysis, &sections, &fleet_html);
    std::fs::write(&report, text).map_err(|e| ReportError::io(&report, e))?;
    written.push(report);
    Ok(written)
}

/// A directory name from a group label: `trace=mooncake · model=qwen-8b` ->
/// `trace-mooncake-model-qwen-8b` (at most 80 characters).
/// Draw `charts` into `out_dir/sub` as PNG and SVG (added to `written`): the report's figures,
/// their files named relative to the report.
fn draw(
    charts: Vec<chart::Chart>,
    out_dir: &Path,
    sub: &str,
    written: &mut Vec<PathBuf>,
) -> Result<Vec<html::Figure>, ReportError> {
    let dir = out_dir.join(sub);
    std::fs::create_dir_all(&dir).map_err(|e| ReportError::io(&dir, e))?;
    let mut figures = Vec::new();
    for chart in charts {
        let png = dir.join(format!("{}.png", chart.name));
        chart::render_png(&chart, &png)?;
        let svg = chart::render_svg(&chart)?;
        let svg_path = dir.join(format!("{}.svg", chart.name));
        std::fs::write(&svg_path, &svg).map_err(|e| ReportError::io(&svg_path, e))?;
        let rel = |ext: &str| {
            if sub.is_empty() {
                format!("{}.{ext}", chart.name)
            } else {
                format!("{sub}/{}.{ext}", chart.name)
            }
        };
        figures.push(html::Figure {
            title: chart.title.clone(),
            svg,
            png: rel("png"),
            svg_file: rel("svg"),
        });
        written.push(png);
        written.push(svg_path);
    }
    Ok(figures)
}

fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(80).collect();
    if out.is_empty() {
        "set".into()
    } else {
        out.trim_end_matches('-').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(
            slug("trace=mooncake \u{b7} model=qwen-8b \u{b7} cpu_size=32 GiB"),
            "trace-mooncake-model-qwen-8b-cpu_size-32-gib"
        );
        assert_eq!(slug(""), "set");
    }
}
