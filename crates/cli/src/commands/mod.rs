//! One module per subcommand.

pub mod batch;
pub mod bench;
pub mod convert;
pub mod experiment;
pub mod mrc;
pub mod plot;
pub mod serve;
mod simulate;
pub mod sweep;
pub mod train;

use std::path::Path;

use inferencelab_cache::PolicyConfig;
use inferencelab_sim::resolve::{self, PolicyFiles};

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Simulate(args) => simulate::run(args),
        Command::Batch(args) => batch::run(args),
        Command::Mrc(args) => mrc::run(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Train(args) => train::run(args),
        Command::Convert(args) => convert::run(args),
        // `bench --yaml` is the prototype's `benchmark_runner.py --yaml`: the experiment runner
        Command::Bench(args) => match args.yaml.clone() {
            Some(yaml) => experiment::run(experiment::ExperimentArgs {
                yaml,
                gpus: args.gpus,
                dry_run: args.dry_run,
                experiment_dir: args.experiment_dir,
                shard: None,
                max_points: inferencelab_runner::batch::DEFAULT_MAX_POINTS,
            }),
            None => bench::run_cmd(args),
        },
        Command::Replay(args) => bench::replay::run(args),
    }
}

/// A path as JSON text. `json!` on a `Path` panics when it is not UTF-8 (serde refuses it), so
/// result files carry the lossy form (U+FFFD for the bad bytes) instead.
pub fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Draw the plots of a summary file; a plotting failure is reported, not fatal (the results
/// are already written).
pub fn plot_summary(summary: &Path, out_dir: &Path, title: &str) {
    match plot::plot_file(summary, out_dir, title) {
        Ok(files) => plot::say_written(&files, out_dir),
        Err(e) => eprintln!(
            "warning: plots not drawn ({e:#}); the results are written, retry with \
             `inferencelab plot --summary-file {}`",
            summary.display()
        ),
    }
}

/// [`resolve::load_policy`] for a command: its notes (which model, which calibration) on stderr.
pub(crate) fn load_policy(
    policy: PolicyConfig,
    files: &PolicyFiles,
) -> anyhow::Result<PolicyConfig> {
    let mut notes = Vec::new();
    let loaded = resolve::load_policy(policy, files, &mut notes);
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(loaded?)
}
