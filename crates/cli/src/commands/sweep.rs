//! `inferencelab sweep`: tune `conversation_aware`'s scorer on the first part of a trace (by
//! time) and report it on the rest, beside LRU and Belady. Writes the best config as YAML
//! (`outputs/simulation/scorer_best.yaml`) and every trial as JSON.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use inferencelab_cache::learned::order::Ranking;
use inferencelab_cache::policy::conversation_aware::ScorerConfig;
use inferencelab_learn::eval::{Baseline, Comparison};
use inferencelab_learn::sweep::{self, SweepConfig};
use serde_json::json;

use crate::output::print_table;
use crate::split::{
    pct, print_comparisons, progress_bar, report_queueing, stem, write_file, SplitArgs,
};

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub data: SplitArgs,
    /// Number of scorer configurations tried (defaults and LRU's point included).
    #[arg(long, default_value_t = 32)]
    pub budget: usize,
    /// Also try this scorer config (YAML) as the first trial (`--budget 1` evaluates only it).
    #[arg(long)]
    pub scorer_config: Option<PathBuf>,
    /// Seed of the random search.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Trials shown in the table.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Where the best config goes.
    #[arg(long, default_value = "outputs/simulation/scorer_best.yaml")]
    pub output: PathBuf,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Worker threads (default: all cores; at most 1024).
    #[arg(long, value_parser = crate::cli::parse_threads)]
    pub threads: Option<usize>,
}

pub fn run(args: SweepArgs) -> anyhow::Result<()> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads")?;
    }
    let given: Option<ScorerConfig> = args
        .scorer_config
        .as_deref()
        .map(inferencelab_sim::resolve::load_scorer)
        .transpose()?;
    let trace = args.data.trace()?;
    let mut split = args.data.prepare(&trace)?;
    let (capacities, base) = args.data.settle(&mut split)?;

    let mut bar = progress_bar(args.quiet, "sweep");
    let cfg = SweepConfig {
        budget: args.budget,
        capacities: capacities.clone(),
        seed: args.seed,
        first: given,
        ..Default::default()
    };
    let trials = sweep::run(&split, &cfg, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish();
    let best = trials.first().context("the sweep ran no trial")?;

    let comparisons: Vec<Comparison> = base
        .iter()
        .zip(&best.runs)
        .map(|(b, r): (&Baseline, _)| b.compare("conversation_aware", r))
        .collect();
    println!(
        "{} ({} requests), train = first {:.0}% of the time span; best of {} trials (#{}):",
        args.data.input.input_file.display(),
        trace.requests.len(),
        100.0 * args.data.train_fraction,
        trials.len(),
        best.id
    );
    print_comparisons(&comparisons);
    let queueing = report_queueing(&split, &base);
    println!();
    let mut table = vec![vec![
        "trial".to_string(),
        "train_hit".into(),
        "valid_hit".into(),
        "test_hit".into(),
        "scale".into(),
        "conv".into(),
        "blockgap".into(),
        "types".into(),
        "w_uses".into(),
        "w_share".into(),
        "w_depth".into(),
        "w_prob".into(),
        "overdue".into(),
        "ranking".into(),
    ]];
    for t in trials.iter().filter(|t| !t.runs.is_empty()).take(args.top) {
        let c = &t.config;
        table.push(vec![
            format!("#{}", t.id),
            pct(t.train()),
            pct(t.validation()),
            pct(t.test()),
            format!("{:.3}", c.scale),
            c.use_conversation.to_string(),
            c.use_block_gap.to_string(),
            c.use_request_type.to_string(),
            format!("{:.2}", c.w_uses),
            format!("{:.2}", c.w_sharing),
            format!("{:.2}", c.w_depth),
            format!("{:.2}", c.w_probability),
            format!("{:.3}", c.overdue_factor),
            match c.ranking {
                Ranking::NextUse => "next_use".into(),
                Ranking::ExpectedWait => "expected_wait".into(),
            },
        ]);
    }
    let used_share = (split.split - split.validation_from) / (split.split - split.t0);
    println!(
        "top trials (mean over capacities; ranked on the validation part, the last {:.0}% of \
         train):",
        100.0 * used_share
    );
    print_table(&table);

    let yaml = format!(
        "# conversation_aware scorer tuned by `inferencelab sweep` on {} (train = first {:.0}% \
         of the time span,\n# chosen on its last {:.0}%; capacities {:?}): mean train token hit \
         ratio {:.4}, validation {:.4}, test {:.4}\n{}",
        args.data.input.input_file.display(),
        100.0 * args.data.train_fraction,
        100.0 * used_share,
        capacities,
        best.train(),
        best.validation(),
        best.test(),
        serde_norway::to_string(&best.config)?
    );
    write_file(&args.output, yaml.as_bytes())?;
    let summary = args
        .output
        .with_file_name(format!("sweep_{}.json", stem(&args.data.input.input_file)));
    let doc = json!({
        "inferencelab_version": env!("CARGO_PKG_VERSION"),
        "command": "sweep",
        "input": super::path_text(&args.data.input.input_file),
        "train_fraction": args.data.train_fraction,
        "validation_share": args.data.validation_share,
        "split_seconds": split.split - split.t0,
        "validation_from_seconds": split.validation_from - split.t0,
        "pinning": !args.data.no_pinning,
        "capacities": capacities,
        "prefill_tokens_per_s": split.timing.prefill_tokens_per_s,
        "queueing": queueing,
        "best": best.config,
        "comparisons": comparisons,
        "baselines": base,
        "trials": trials,
    });
    write_file(&summary, &serde_json::to_vec_pretty(&doc)?)?;
    eprintln!("wrote {} and {}", args.output.display(), summary.display());
    Ok(())
}
