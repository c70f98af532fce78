//! `inferencelab batch`: run a YAML grid of simulations (resumable, shardable) and `batch merge`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use inferencelab_runner::batch::{self, BatchConfig, Shard};

use crate::progress::Progress;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub action: Option<BatchAction>,
    /// The grid file (configs/simulation_*.yaml).
    #[arg(long)]
    pub yaml: Option<PathBuf>,
    /// Run only slice i of N (points k with k mod N == i); outputs go to shard-i-of-N/.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Override the grid's output directory.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Do not draw plots at the end.
    #[arg(long)]
    pub no_plot: bool,
    /// Where the charts and report.html go (default: outputs/plots/<name>, or <output_dir>/plots
    /// when the YAML or --output-dir moves the results).
    #[arg(long)]
    pub plots_dir: Option<PathBuf>,
    /// Worker threads (default: all cores; at most 1024).
    #[arg(long, value_parser = crate::cli::parse_threads)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Refuse grids of more points than this (the product of the YAML lists' lengths).
    #[arg(long, default_value_t = batch::DEFAULT_MAX_POINTS)]
    pub max_points: usize,
}

#[derive(Subcommand, Debug)]
pub enum BatchAction {
    /// Join the shards' results (shard-*/results.jsonl) into one summary.json.
    Merge {
        /// The grid file the shards ran.
        #[arg(long)]
        yaml: PathBuf,
        /// The grid's output directory, if the shards ran with --output-dir.
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// Do not draw plots.
        #[arg(long)]
        no_plot: bool,
        /// Where the charts and report.html go (as for `batch`).
        #[arg(long)]
        plots_dir: Option<PathBuf>,
        /// Refuse grids of more points than this.
        #[arg(long, default_value_t = batch::DEFAULT_MAX_POINTS)]
        max_points: usize,
    },
}

pub fn run(args: BatchArgs) -> anyhow::Result<()> {
    if let Some(BatchAction::Merge {
        yaml,
        output_dir,
        no_plot,
        plots_dir,
        max_points,
    }) = args.action
    {
        let mut cfg = BatchConfig::load(&yaml)?;
        if output_dir.is_some() {
            cfg.output_dir = output_dir;
        }
        let (summary, found, total) = batch::merge(&cfg, max_points)
            .with_context(|| format!("batch merge {}", yaml.display()))?;
        if let Some(w) = falls_behind(&summary) {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "merged {found} of {total} points into {}{}",
            summary.display(),
            if found < total {
                format!(
                    " ({} points missing: run the missing shards)",
                    total - found
                )
            } else {
                String::new()
            }
        );
        if !no_plot {
            super::plot_summary(&summary, &plots_dir_of(&cfg, plots_dir), &cfg.name());
        }
        return Ok(());
    }
    let yaml = args
        .yaml
        .context("give the grid: batch --yaml configs/simulation_<name>.yaml")?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads")?;
    }
    let mut cfg = BatchConfig::load(&yaml)?;
    if args.output_dir.is_some() {
        cfg.output_dir = args.output_dir;
    }
    let mut bar = Progress::new(
        args.quiet,
        0,
        "{spinner} {pos}/{len} points [{elapsed} < {eta}] {wide_bar} {msg}",
        "batch",
        "points",
    );
    let on_start = |n: usize| bar.set_length(n as u64);
    let report = batch::run(&cfg, args.shard, args.max_points, &on_start, &|done| {
        if let Some(e) = done.error {
            let msg = format!(
                "point {} ({} {}) failed: {e}",
                done.point.index, done.point.trace, done.point.policy_config
            );
            if bar.is_hidden() {
                eprintln!("{msg}");
            } else {
                bar.println(msg);
            }
        }
        bar.inc(1);
    })
    .with_context(|| format!("batch {}", yaml.display()))?;
    bar.finish();
    if report.config_changed {
        eprintln!(
            "note: the grid changed since the last run in {}: points with unchanged parameters \
             were reused, {} rows no longer in the grid are ignored",
            report.output_dir.display(),
            report.stale_rows
        );
    }
    eprintln!(
        "{} points: {} already done (resumed), {} run, {} failed; rows in {}, summary in {}",
        report.points,
        report.resumed,
        report.ran,
        report.failed,
        report.results_file.display(),
        report.summary_file.display()
    );
    if let Some(w) = falls_behind(&report.summary_file) {
        eprintln!("warning: {w}");
    }
    if !args.no_plot && args.shard.is_none() {
        super::plot_summary(
            &report.summary_file,
            &plots_dir_of(&cfg, args.plots_dir),
            &cfg.name(),
        );
    }
    if report.failed > 0 {
        anyhow::bail!(
            "{} of {} points failed (their rows carry the error; the others are done)",
            report.failed,
            report.points
        );
    }
    Ok(())
}

/// The warning when the engine model falls behind its trace at some points of the grid (their
/// median admission delay above `queueing::FALLS_BEHIND_MEDIAN_S`, as `simulate` warns),
/// naming how many and the worst, from the summary's rows.
fn falls_behind(summary: &Path) -> Option<String> {
    use inferencelab_sim::queueing;
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(summary).ok()?).ok()?;
    let rows = doc["results"].as_array()?;
    let p50 = |r: &serde_json::Value| r["queue_delay_p50_s"].as_f64();
    let behind: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| p50(r).is_some_and(queueing::falls_behind))
        .collect();
    let worst = behind
        .iter()
        .max_by(|a, b| p50(a).unwrap_or(0.0).total_cmp(&p50(b).unwrap_or(0.0)))?;
    let field = |k: &str| match &worst[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "?".to_string(),
        v => v.to_string(),
    };
    Some(format!(
        "the engine model falls behind its trace at {} of {} points: their requests wait a \
         median of more than {} s between arrival and admission (worst: {} with {} at {} GPU \
         blocks, median {:.0} s, p90 {:.0} s), so their hit ratios describe an engine with that \
         queue. Model a faster engine with the grid's `timing: {{prefill_tokens_per_s: N, \
         decode_ms_per_token: 20}}` (or `replicas`); `simulate` on one point says how fast its \
         trace needs it",
        behind.len(),
        rows.len(),
        queueing::FALLS_BEHIND_MEDIAN_S,
        field("trace"),
        field("policy"),
        field("gpu_blocks"),
        p50(worst).unwrap_or(0.0),
        worst["queue_delay_p90_s"].as_f64().unwrap_or(0.0),
    ))
}

/// The prototype's layout: results under outputs/simulation/<name>, charts under
/// outputs/plots/<name>; a grid whose results were moved keeps its charts beside them.
fn plots_dir_of(cfg: &BatchConfig, given: Option<PathBuf>) -> PathBuf {
    match (given, &cfg.output_dir) {
        (Some(d), _) => d,
        (None, Some(out)) => out.join("plots"),
        (None, None) => PathBuf::from("outputs/plots").join(cfg.name()),
    }
}
