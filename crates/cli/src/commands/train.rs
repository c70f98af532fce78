//! `inferencelab train`: fit the `lightgbm` policy's model on the first part of a trace (by
//! time), write it in LightGBM's text format, and report the policy on the rest beside LRU and
//! Belady. `--export-features F.csv` writes the training rows for Python `lightgbm`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use inferencelab_cache::learned::features::PREFIX_MONOTONE;
use inferencelab_cache::policy::lightgbm::LightGbmConfig;
use inferencelab_learn::boost::BoostParams;
use inferencelab_learn::calibrate::{self, CalibrateOptions};
use inferencelab_learn::dataset;
use inferencelab_learn::eval::{Candidate, Comparison, Split};
use inferencelab_sim::resolve::{self, bundled_lightgbm, DEFAULT_MODEL_PATH};
use rayon::prelude::*;
use serde_json::json;

use crate::split::{print_comparisons, progress_bar, report_queueing, stem, write_file, SplitArgs};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: SplitArgs,
    /// Where the LightGBM text model goes.
    #[arg(long, short = 'o', default_value = DEFAULT_MODEL_PATH)]
    pub output: PathBuf,
    /// Also write the training rows (label + features, header line) as CSV.
    #[arg(long)]
    pub export_features: Option<PathBuf>,
    /// Only export the features (with --export-features): no training, no report.
    #[arg(long, requires = "export_features")]
    pub export_only: bool,
    /// At most this many training rows (a seeded uniform sample of the block references).
    #[arg(long, default_value_t = 200_000)]
    pub max_rows: usize,
    /// Seed of the row sample.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Boosting rounds (trees).
    #[arg(long, default_value_t = BoostParams::default().num_iterations)]
    pub num_iterations: usize,
    /// Leaves per tree.
    #[arg(long, default_value_t = BoostParams::default().num_leaves,
          value_parser = parse_leaves)]
    pub num_leaves: usize,
    /// Shrinkage per boosting round (LightGBM's learning_rate), above 0.
    #[arg(long, default_value_t = BoostParams::default().learning_rate,
          value_parser = parse_learning_rate)]
    pub learning_rate: f64,
    /// Fewest training rows in a leaf (LightGBM's min_data_in_leaf).
    #[arg(long, default_value_t = BoostParams::default().min_data_in_leaf)]
    pub min_data_in_leaf: usize,
    /// Evaluate this existing model (e.g. trained by Python lightgbm) instead of training one.
    #[arg(long, conflicts_with = "export_only")]
    pub model: Option<PathBuf>,
    /// With --model: evaluate it as it is (its calibration from the YAML `train` wrote beside
    /// it, else the defaults; the bundled default model with `--model bundled`), no calibration
    /// on this trace. The protocol script (`scripts/policy_protocol.sh`) judges defaults so.
    #[arg(long, requires = "model")]
    pub as_is: bool,
    /// Only the static model: do not try online retraining (LRB's sliding window) in the
    /// calibration.
    #[arg(long)]
    pub no_retrain: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Worker threads (default: all cores; at most 1024).
    #[arg(long, value_parser = crate::cli::parse_threads)]
    pub threads: Option<usize>,
}

/// `--model bundled`: the default model shipped in the binary.
const BUNDLED: &str = "bundled";

/// LightGBM's own bound: a tree needs at least two leaves.
fn parse_leaves(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 2 => Ok(n),
        _ => Err(format!(
            "{s:?} is not allowed: give 2 or more leaves (LightGBM's minimum)"
        )),
    }
}

fn parse_learning_rate(s: &str) -> Result<f64, String> {
    s.parse::<inferencelab_trace::checked::Positive>()
        .map(f64::from)
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads")?;
    }
    let trace = args.data.trace()?;
    let mut split = args.data.prepare(&trace)?;
    let params = BoostParams {
        num_iterations: args.num_iterations,
        num_leaves: args.num_leaves,
        learning_rate: args.learning_rate,
        min_data_in_leaf: args.min_data_in_leaf,
        monotone: PREFIX_MONOTONE.to_vec(),
        ..Default::default()
    };
    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => match train_model(&args, &trace, &split, &params)? {
            Some(p) => p,
            None => return Ok(()), // --export-only
        },
    };
    let mut config = if model_path.as_os_str() == BUNDLED {
        bundled_lightgbm()
    } else {
        LightGbmConfig::load(&model_path).map_err(anyhow::Error::msg)?
    };
    let (capacities, base) = args.data.settle(&mut split)?;
    if args.as_is {
        if model_path.as_os_str() != BUNDLED {
            let mut notes = Vec::new();
            let applied = resolve::apply_calibration_beside(&mut config, &model_path, &mut notes);
            for n in notes {
                eprintln!("note: {n}");
            }
            applied?;
            // a calibration with online retraining runs with its models, as in `simulate`
            inferencelab_learn::online::attach(&mut config, &trace, &split.prepared.gpu);
        }
        eprintln!(
            "as is: scale {}, overdue_factor {}, ranking {:?}, adaptive {}, waiting_queue {}, no \
             calibration",
            config.scale,
            config.overdue_factor,
            config.ranking,
            config.adaptive,
            config.waiting_queue
        );
    } else {
        let opts = CalibrateOptions {
            trained_here: args.model.is_none(),
            retrain: !args.no_retrain,
            params: &params,
            max_rows: args.max_rows,
            seed: args.seed,
            model_path: &model_path,
        };
        calibrate_and_write(&args, &trace, &split, &capacities, &mut config, &opts)?;
    }
    let mut bar = progress_bar(args.quiet, "evaluating");
    bar.set_length(capacities.len() as u64 * 4);
    bar.set_position(capacities.len() as u64 * 3);
    let comparisons: Vec<Comparison> = capacities
        .par_iter()
        .map(|&c| {
            let r = split.run(&Candidate::LightGbm(config.clone()), c, f64::INFINITY);
            bar.inc(1);
            r
        })
        .collect::<Vec<_>>()
        .iter()
        .zip(&base)
        .map(|(r, b)| b.compare("lightgbm", r))
        .collect();
    bar.finish();
    println!(
        "{} ({} requests), train = first {:.0}% of the time span; model {}:",
        args.data.input.input_file.display(),
        trace.requests.len(),
        100.0 * args.data.train_fraction,
        model_path.display()
    );
    print_comparisons(&comparisons);
    let queueing = report_queueing(&split, &base);
    write_summary(&args, &split, &model_path, &config, &comparisons, queueing)
}

/// Train a model on the train part and write it to `--output` (`None`: `--export-only`, the
/// features are written and nothing is trained).
fn train_model(
    args: &TrainArgs,
    trace: &inferencelab_trace::Trace,
    split: &Split<'_>,
    params: &BoostParams,
) -> anyhow::Result<Option<PathBuf>> {
    let data = dataset::build(
        trace,
        &split.prepared.gpu,
        split.split,
        args.max_rows,
        args.seed,
    );
    eprintln!(
        "{} training rows from the requests before {:.1} s",
        data.rows.len(),
        split.split - split.t0
    );
    if let Some(csv) = &args.export_features {
        let mut buf = Vec::new();
        dataset::write_csv(&data, &mut buf)?;
        write_file(csv, &buf)?;
        eprintln!("wrote {}", csv.display());
        if args.export_only {
            return Ok(None);
        }
    }
    let fit = calibrate::fit_rows(&data, params);
    eprintln!(
        "trained {} trees of {} leaves: train MSE {:.4} (label variance {:.4})",
        fit.model.trees.len(),
        args.num_leaves,
        fit.mse,
        fit.label_variance
    );
    write_file(&args.output, fit.model.to_text().as_bytes())?;
    eprintln!("wrote {}", args.output.display());
    Ok(Some(args.output.clone()))
}

/// Choose the policy's settings on the validation part ([`calibrate::calibrate`]) and write
/// them beside the model (`MODEL.yaml`, which `simulate --lightgbm-model MODEL` takes).
fn calibrate_and_write(
    args: &TrainArgs,
    trace: &inferencelab_trace::Trace,
    split: &Split<'_>,
    capacities: &[u64],
    config: &mut LightGbmConfig,
    opts: &CalibrateOptions<'_>,
) -> anyhow::Result<()> {
    let mut bar = progress_bar(args.quiet, "calibration");
    bar.set_length(calibrate::points(opts.retrain, capacities.len()) as u64);
    let chosen = calibrate::calibrate(trace, split, capacities, config, opts, &|| bar.inc(1));
    bar.finish();
    if chosen.in_sample_static {
        eprintln!(
            "note: choosing on the whole train part, where the static model is scored in \
             sample: only online retraining competes (--no-retrain for the static model)"
        );
    }
    eprintln!(
        "calibrated on the {}: scale {}, overdue_factor {}, ranking {:?}, retrain {}",
        if chosen.on_whole_train_part {
            "whole train part"
        } else {
            "validation part"
        },
        config.scale,
        config.overdue_factor,
        config.ranking,
        config.retrain.map_or("off".to_string(), |r| format!(
            "every {:.1} s on the past {:.1} s",
            r.every_seconds, r.window_seconds
        ))
    );
    let policy_yaml = opts.model_path.with_extension("yaml");
    write_file(
        &policy_yaml,
        format!(
            "# lightgbm policy calibrated by `inferencelab train` on {}\nname: lightgbm\n{}",
            args.data.input.input_file.display(),
            serde_norway::to_string(&*config)?
        )
        .as_bytes(),
    )?;
    eprintln!("wrote {}", policy_yaml.display());
    Ok(())
}

/// `train_<input>.json` beside the model (the bundled one has no file: beside `--output`).
fn write_summary(
    args: &TrainArgs,
    split: &Split<'_>,
    model_path: &std::path::Path,
    config: &LightGbmConfig,
    comparisons: &[Comparison],
    queueing: serde_json::Value,
) -> anyhow::Result<()> {
    let beside = if model_path.as_os_str() == BUNDLED {
        &args.output
    } else {
        model_path
    };
    let summary =
        beside.with_file_name(format!("train_{}.json", stem(&args.data.input.input_file)));
    let doc = json!({
        "inferencelab_version": env!("CARGO_PKG_VERSION"),
        "command": "train",
        "input": super::path_text(&args.data.input.input_file),
        "train_fraction": args.data.train_fraction,
        "validation_share": args.data.validation_share,
        "split_seconds": split.split - split.t0,
        "validation_from_seconds": split.validation_from - split.t0,
        "pinning": !args.data.no_pinning,
        "model": super::path_text(model_path),
        "scale": config.scale,
        "overdue_factor": config.overdue_factor,
        "comparisons": comparisons,
        "prefill_tokens_per_s": split.timing.prefill_tokens_per_s,
        "queueing": queueing,
    });
    write_file(&summary, &serde_json::to_vec_pretty(&doc)?)?;
    eprintln!("wrote {}", summary.display());
    Ok(())
}
