//! `inferencelab plot`: charts (PNG + SVG) and a self-contained HTML report from a result file
//! (the summary JSON of `simulate`/`batch`, or `batch`'s results.jsonl).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Result files: summary JSONs of `simulate`/`batch`, or results.jsonl; several
    /// (`--summary-file a.json b.json`, or a shell glob) are drawn together, e.g. three
    /// `simulate` runs with different policies on one log.
    #[arg(long, short = 'i', num_args = 1.., required = true)]
    pub summary_file: Vec<PathBuf>,
    /// Where the charts and report.html go.
    #[arg(long, short = 'o', default_value = "outputs/plots/")]
    pub output_dir: PathBuf,
    /// Report title (default: the grid's name, from the file's name or directory).
    #[arg(long)]
    pub title: Option<String>,
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| default_title(&args.summary_file[0]));
    let mut rows = Vec::new();
    for f in &args.summary_file {
        inferencelab_trace::fsutil::check_regular(f)
            .with_context(|| format!("--summary-file {}", f.display()))?;
        rows.extend(inferencelab_report::load_results(f)?);
    }
    let read = rows.len();
    let rows = drop_repeats(rows);
    let files =
        inferencelab_report::plot_results(&rows, &args.output_dir, &title).context("plotting")?;
    if args.summary_file.len() > 1 {
        eprintln!(
            "{} rows from {} files ({} repeated rows dropped: the same point in several runs)",
            rows.len(),
            args.summary_file.len(),
            read - rows.len()
        );
    }
    say_written(&files, &args.output_dir);
    Ok(())
}

/// One stderr line: how many charts went where, and the report's path (the last file).
pub fn say_written(files: &[PathBuf], out_dir: &Path) {
    let charts = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "png"))
        .count();
    if let Some(report) = files.last() {
        eprintln!(
            "{charts} charts (PNG + SVG) in {}; report: {}",
            out_dir.display(),
            report.display()
        );
    }
}

/// Load `summary` and draw its charts and report into `out_dir`; returns the files written,
/// the report last. (What `batch` calls at its end.)
pub fn plot_file(summary: &Path, out_dir: &Path, title: &str) -> anyhow::Result<Vec<PathBuf>> {
    let rows = inferencelab_report::load_results(summary)?;
    inferencelab_report::plot_results(&rows, out_dir, title)
        .with_context(|| format!("plotting {}", summary.display()))
}

/// `outputs/simulation/demo/summary.json` -> "InferenceLab: demo";
/// `/tmp/simulate_mooncake.json` -> "InferenceLab: simulate_mooncake".
fn default_title(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = if matches!(stem.as_str(), "summary" | "results") {
        path.canonicalize()
            .ok()
            .and_then(|p| {
                p.parent()?
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or(stem)
    } else {
        stem
    };
    format!("InferenceLab: {name}")
}

/// Rows that are the same point twice: `simulate` adds LRU and Belady to every run of a smart
/// policy, so three runs on one log carry LRU three times. The simulation is deterministic, so
/// the copies differ only in their timing fields; the first is kept.
fn drop_repeats(rows: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let mut seen = std::collections::HashSet::new();
    rows.into_iter()
        .filter(|row| {
            let mut key = row.clone();
            if let Some(m) = key.as_object_mut() {
                m.remove("sim_seconds");
                m.remove("block_refs_per_second");
            }
            seen.insert(key.to_string())
        })
        .collect()
}
