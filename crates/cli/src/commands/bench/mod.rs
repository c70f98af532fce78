//! `inferencelab bench`: load an OpenAI-compatible server and measure it with `vllm bench
//! serve`'s definitions (the library: `inferencelab_bench`). Without `--base-url` it is the
//! demo: the embedded emulator on a free loopback port, the bundled conversations replayed
//! faithfully, then the simulator on the server's own log, predicted next to measured hits.
//! `--yaml` is the experiment runner's (the prototype's `benchmark_runner.py --yaml`): the
//! dispatch hands it over. `replay` is a benchmark too, compared with a prediction: it lives
//! here and shares the flags and the run against a server.

mod against;
mod args;
mod demo;
mod export;
pub mod replay;
pub mod vllm;

pub(crate) use against::{attribute, bench_against};
pub use args::{BenchArgs, Mode, PromptFormat, RampArg, RequestIdArg};
pub(crate) use demo::comparison_table;

use std::path::PathBuf;

use anyhow::{bail, Context};
use inferencelab_bench::metrics::Summary;
use inferencelab_bench::prom::ScrapeSummary;
use inferencelab_bench::runner::{RunOutcome, StopReason};

pub fn run_cmd(mut args: BenchArgs) -> anyhow::Result<()> {
    if let Some(out) = args.export_custom_dataset.clone() {
        return export::run(&args, &out);
    }
    let vllm = vllm::apply(&mut args)?;
    let rt = runtime(args.threads)?;
    match args.base_url.clone() {
        Some(base) => {
            let out = bench_against(&rt, &args, &base, vllm.conversations)?;
            if let Some(log) = &args.server_log {
                attribute(&out, log, &args.metric_percentiles)?;
            }
            if let Some(copy) = &vllm.result_copy {
                std::fs::copy(out.dir.join("result.json"), copy)
                    .with_context(|| format!("--result-filename: writing {}", copy.display()))?;
                eprintln!("wrote {}", copy.display());
            }
            finish(&out)
        }
        None if vllm.conversations.is_some() => {
            bail!("--dataset-path needs a server: --base-url URL (or --host/--port)")
        }
        None => demo::demo(&rt, &args),
    }
}

pub(crate) fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    rt.context("starting the async runtime")
}

/// What a run left behind.
pub(crate) struct BenchOutput {
    pub outcome: RunOutcome,
    pub summary: Summary,
    pub scrape: Option<ScrapeSummary>,
    pub dir: PathBuf,
}

pub(super) fn finish(out: &BenchOutput) -> anyhow::Result<()> {
    if out.outcome.stop == StopReason::Interrupted {
        bail!(
            "interrupted: {} finished requests written to {}",
            out.outcome.records.len(),
            out.dir.display()
        );
    }
    if out.outcome.records.is_empty() && out.outcome.cancelled > 0 {
        bail!(
            "no request finished within --duration: {} cut in flight; see {}",
            out.outcome.cancelled,
            out.dir.join("result.json").display()
        );
    }
    if out.summary.completed == 0 && out.outcome.sent > 0 {
        let kinds: Vec<String> = out
            .summary
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        bail!(
            "no request succeeded ({}); see {}",
            kinds.join(", "),
            out.dir.join("requests.jsonl").display()
        );
    }
    Ok(())
}
