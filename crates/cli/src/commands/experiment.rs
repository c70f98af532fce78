//! The experiment runner (`inferencelab experiment --yaml configs/qwen-8b.yaml --gpus 8`, also
//! reachable as `inferencelab bench --yaml ...` like the prototype): real `vllm serve` + LMCache
//! servers, one per GPU slot and point.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use inferencelab_runner::batch::{Shard, DEFAULT_MAX_POINTS};
use inferencelab_runner::experiment::{self, ExperimentConfig, RunOptions};

#[derive(Args, Debug, Clone)]
pub struct ExperimentArgs {
    /// The experiment file (configs/qwen-8b.yaml).
    #[arg(long)]
    pub yaml: PathBuf,
    /// GPUs to use (0..N); default: CUDA_VISIBLE_DEVICES, else one GPU.
    #[arg(long)]
    pub gpus: Option<usize>,
    /// Print every server and bench command with its environment, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The experiment's folder (default outputs/logs/experiments/<name>_<date>; re-use it to resume).
    #[arg(long)]
    pub experiment_dir: Option<PathBuf>,
    /// Run only slice i of N (points k with k mod N == i), one runner per node sharing
    /// --experiment-dir; rows go to points-shard-i-of-N.jsonl. A run without --shard afterwards
    /// finds every point done and writes the whole summary.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Refuse grids of more points than this (the product of the YAML axes' lengths).
    #[arg(long, default_value_t = DEFAULT_MAX_POINTS)]
    pub max_points: usize,
}

pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    let cfg = ExperimentConfig::load(&args.yaml)?;
    let devices = experiment::devices(
        args.gpus,
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
    );
    let opts = RunOptions {
        devices,
        dry_run: args.dry_run,
        bench_exe: std::env::current_exe().context("locating the inferencelab binary")?,
        experiment_dir: args.experiment_dir,
        shard: args.shard,
        max_points: args.max_points,
    };
    let today = today_utc();
    let report = experiment::run(&cfg, &opts, &today, &|line| {
        if args.dry_run {
            outln!("{line}");
        } else {
            eprintln!("{line}");
        }
    })
    .with_context(|| format!("experiment {}", args.yaml.display()))?;
    if args.dry_run {
        return Ok(());
    }
    out!("{}", experiment::summary_table(&report));
    eprintln!(
        "results: {} (one row per point and attempt), {}",
        report
            .dir
            .join(experiment::results_file_name(args.shard))
            .display(),
        report
            .dir
            .join(experiment::summary_file_name(args.shard))
            .display()
    );
    let failed = report.failed();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} points failed this run (reasons above); re-run the same command with \
             --experiment-dir {} to retry only them",
            report.this_run.len(),
            report.dir.display()
        );
    }
    Ok(())
}

/// `YYYY-MM-DD` of today (UTC), for the experiment folder's name.
fn today_utc() -> String {
    inferencelab_trace::time::Utc::from_system_time(std::time::SystemTime::now()).date()
}
