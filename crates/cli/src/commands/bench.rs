//! `inferencelab bench`: load an OpenAI-compatible server and measure it with `vllm bench
//! serve`'s definitions (the library: `inferencelab_bench`). Without `--base-url` it is the
//! demo: the embedded emulator on a free loopback port, the bundled conversations replayed
//! faithfully, then the simulator on the server's own log, predicted next to measured hits.
//! `--yaml` hands over to the experiment runner (the prototype's `benchmark_runner.py --yaml`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use inferencelab_bench::arrival::{Arrival, RampStrategy};
use inferencelab_bench::conversations;
use inferencelab_bench::executor::{Endpoint, HttpConfig, HttpExecutor};
use inferencelab_bench::metrics::{parse_slos, summarize, SloMetric, Summary};
use inferencelab_bench::output::{date_string, result_json, summary_table, RecordWriter, RunInfo};
use inferencelab_bench::prom::ScrapeSummary;
use inferencelab_bench::record::RequestRecord;
use inferencelab_bench::runner::{Observer, RequestIdHeader, RunConfig, RunOutcome, StopReason};
use inferencelab_bench::session::{self, Session};
use inferencelab_bench::workload::{
    BodyOptions, ConversationSpec, ConversationWorkload, RandomWorkload, TokenRange, TraceWorkload,
    Workload,
};
use inferencelab_trace::checked::{NonNegative, Positive, Scale, Seconds};
use inferencelab_trace::fsutil::write_json;
use inferencelab_trace::{read_trace, Format, ReadOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// vLLM's random dataset: --random-input-len / --random-output-len token ids.
    Random,
    /// A trace (--input-file): every request at its own timestamp.
    Trace,
    /// A conversation CSV (--input-file): turns replayed faithfully on the chat endpoint.
    Conversation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PromptFormat {
    TokenIds,
    Text,
}

/// `--request-id-header` (`inferencelab_bench::runner::RequestIdHeader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RequestIdArg {
    /// Our id, bench-<hex>-<index> (as vLLM's client)
    Ours,
    /// A UUID derived from our id (servers that validate the header, e.g. llama-cpp-python)
    Uuid,
    /// No x-request-id header
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RampArg {
    Linear,
    Exponential,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server to load, e.g. http://127.0.0.1:8000. Without it: the demo (embedded emulator).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Model name for the requests (default: the first of the server's /v1/models).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Workload: a trace our readers read (vLLM log, native, Mooncake, Bailian, WEKA, Azure) or
    /// a conversation CSV (.csv).
    #[arg(long, short = 'i')]
    pub input_file: Option<PathBuf>,
    /// Force the trace format instead of detecting it.
    #[arg(long, value_parser = parse_format)]
    pub input_format: Option<Format>,
    /// Skip (and count) invalid trace records.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Workload kind (default: from --input-file, else random).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Random mode: prompt tokens per request.
    #[arg(long, default_value_t = 1024)]
    pub random_input_len: u32,
    /// Random mode: output tokens per request.
    #[arg(long, default_value_t = 128)]
    pub random_output_len: u32,
    /// Requests per second ("inf": all at once). Default: the trace's own timestamps for
    /// traces and conversations, inf for random prompts.
    #[arg(long, value_parser = parse_rate)]
    pub request_rate: Option<f64>,
    /// Gamma shape of the arrival intervals (1: Poisson; inf: constant), as in vLLM.
    #[arg(long, default_value_t = 1.0, value_parser = parse_rate)]
    pub burstiness: f64,
    /// Ramp the request rate over the run (vLLM's --ramp-up-strategy).
    #[arg(long, value_enum, requires_all = ["ramp_up_start_rps", "ramp_up_end_rps"])]
    pub ramp_up_strategy: Option<RampArg>,
    /// Ramp-up: requests per second at the start (with --ramp-up-strategy; vLLM's flag).
    #[arg(long)]
    pub ramp_up_start_rps: Option<NonNegative>,
    /// Ramp-up: requests per second at the end of the run (with --ramp-up-strategy).
    #[arg(long)]
    pub ramp_up_end_rps: Option<Positive>,
    /// At most this many requests in flight (closed loop with --request-rate inf).
    #[arg(long, value_parser = parse_at_least_one)]
    pub max_concurrency: Option<usize>,
    /// Send at most this many requests (random mode: the number of prompts, default 1000
    /// unless --duration is given).
    #[arg(long)]
    pub num_prompts: Option<u64>,
    /// Hard limit in seconds: then requests in flight are cut (counted as "cancelled" in
    /// result.json) and the results so far are written.
    #[arg(long)]
    pub duration: Option<Seconds>,
    /// Trace seconds per real second for timestamps and think times (2: twice as fast).
    #[arg(long, default_value = "1")]
    pub time_scale: Scale,
    /// SLOs for goodput, milliseconds: ttft:500,tpot:50, or vLLM's --goodput ttft:500 tpot:50.
    #[arg(long, alias = "goodput", num_args = 1..)]
    pub slo: Vec<String>,
    /// Percentiles to report, comma separated (vLLM's --metric-percentiles).
    #[arg(long, default_value = "99")]
    pub metric_percentiles: String,
    /// Where requests.jsonl, result.json and metrics.jsonl go
    /// (default outputs/logs/bench_<date>, or outputs/logs/bench_demo for the demo).
    #[arg(long, short = 'o')]
    pub output_dir: Option<PathBuf>,
    /// Seed of everything drawn: arrivals, random prompts, token ids of id traces.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Scrape /metrics every this many seconds (0: never; else at least 0.01).
    #[arg(long, default_value = "1", value_parser = parse_metrics_interval)]
    pub metrics_interval: Seconds,
    /// Per-request limit in seconds, send to end of stream.
    #[arg(long, default_value = "600")]
    pub request_timeout: Seconds,
    /// Seconds to wait for a TCP connection to the server before the request fails.
    #[arg(long, default_value = "10")]
    pub connect_timeout: Seconds,
    /// Environment variable holding the API key (sent as a Bearer token when set).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Prompts of /v1/completions (random and trace modes): token ids (as vLLM's client), or
    /// text, one word per token id (servers without token-id prompts, e.g. llama.cpp's).
    #[arg(long, value_enum, default_value = "token-ids")]
    pub prompt_format: PromptFormat,
    /// The x-request-id header: our id (as vLLM's client), a UUID derived from it, or none.
    #[arg(long, value_enum, default_value = "ours")]
    pub request_id_header: RequestIdArg,
    /// JSON merged into every request body, e.g. '{"temperature":0}'.
    #[arg(long)]
    pub extra_body: Option<String>,
    /// Do not send ignore_eos (random and trace modes send it so outputs have the traced length).
    #[arg(long)]
    pub no_ignore_eos: bool,
    /// A label stored in result.json (vLLM's --label), to tell runs apart.
    #[arg(long)]
    pub label: Option<String>,
    /// Keep-alive connections to open before the run (default: --max-concurrency, at most
    /// 4096; 0: connect lazily like vLLM's client).
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=4096))]
    pub warmup_connections: Option<u16>,
    /// Client threads (1: a single-threaded runtime; at most 1024).
    #[arg(long, default_value_t = 2, value_parser = crate::cli::parse_threads)]
    pub threads: usize,
    /// Conversation CSV: the recorded answers' speed, to separate think time from answer time.
    #[arg(long, default_value = "100")]
    pub tokens_per_second: Positive,
    /// Conversation CSV without timestamps: think time between turns, seconds.
    #[arg(long, default_value = "0")]
    pub think_time: Seconds,
    /// The server's log (vLLM with LMCache, or `serve`): join its LMCache lookup lines with
    /// our requests for per-request attribution (GPU hit, LMCache load, recomputed).
    #[arg(long)]
    pub server_log: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Demo: GPU KV cache of the embedded server, in 16-token blocks.
    #[arg(long, default_value_t = 1000)]
    pub demo_gpu_blocks: u64,
    /// Demo: LMCache CPU tier of the embedded server, GiB.
    #[arg(long, default_value = "8")]
    pub demo_cpu_cache_gb: NonNegative,
    /// Demo: target length of the replay in seconds (sets the time scale).
    #[arg(long, default_value = "20")]
    pub demo_seconds: Positive,
    /// Experiment grid (`inferencelab experiment`): real vLLM + LMCache per point.
    #[arg(long)]
    pub yaml: Option<PathBuf>,
    /// With --yaml: GPUs to use (0..N); default: CUDA_VISIBLE_DEVICES, else one GPU.
    #[arg(long, requires = "yaml")]
    pub gpus: Option<usize>,
    /// With --yaml: print every server and bench command with its environment, run nothing.
    #[arg(long, requires = "yaml")]
    pub dry_run: bool,
    /// With --yaml: the experiment's folder (default outputs/logs/experiments/<name>_<date>;
    /// give an existing one to resume).
    #[arg(long, requires = "yaml")]
    pub experiment_dir: Option<PathBuf>,
    /// Write --input-file (an LMCache lookup-hash log, or any trace with block ids) as a `vllm
    /// bench serve --dataset-name custom` JSONL and exit: each chunk id a fixed run of words
    /// from --tokenizer's vocabulary (default: serve's built-in word tokenizer), as LMCache's
    /// `gen-dataset` does; output_tokens from --custom-output-len, else the trace's (a lookup
    /// log: 128).
    #[arg(long, value_name = "FILE", requires = "input_file", conflicts_with_all = ["base_url", "yaml"])]
    pub export_custom_dataset: Option<PathBuf>,
    /// `vllm bench serve`'s own flags (docs/bench-vllm-flags.md).
    #[command(flatten)]
    pub vllm: super::bench_vllm::VllmFlags,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

/// A rate or a gamma shape: a number above 0, or `inf`.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not allowed: give a number greater than 0, or inf"
        )),
    }
}

fn parse_at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err(
            "0 is not allowed: give 1 or more (0 requests in flight would never \
                      send one)"
                .into(),
        ),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// 0 (never) or at least 10 ms: a zero-length tokio interval panics, and scraping faster would
/// only load the server.
fn parse_metrics_interval(s: &str) -> Result<Seconds, String> {
    let v: Seconds = s.parse()?;
    if v.get() > 0.0 && v.get() < 0.01 {
        return Err(format!(
            "{v} is not allowed: give 0 (never scrape) or at least 0.01 seconds"
        ));
    }
    Ok(v)
}

pub fn run_cmd(mut args: BenchArgs) -> anyhow::Result<()> {
    if let Some(out) = args.export_custom_dataset.clone() {
        return super::bench_export::run(&args, &out);
    }
    let vllm = super::bench_vllm::apply(&mut args)?;
    if let Some(yaml) = args.yaml.clone() {
        return super::experiment::run(super::experiment::ExperimentArgs {
            yaml,
            gpus: args.gpus,
            dry_run: args.dry_run,
            experiment_dir: args.experiment_dir.clone(),
            shard: None,
            max_points: inferencelab_runner::batch::DEFAULT_MAX_POINTS,
        });
    }
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
        None => demo(&rt, &args),
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

fn finish(out: &BenchOutput) -> anyhow::Result<()> {
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

fn is_csv(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// The workload the flags describe, and its name.
fn build_workload(
    args: &BenchArgs,
    conversations: Option<Vec<ConversationSpec>>,
) -> anyhow::Result<(Box<dyn Workload>, String, bool)> {
    if let Some(c) = conversations {
        return Ok((
            Box::new(ConversationWorkload::new(c)),
            "conversation".into(),
            true,
        ));
    }
    let mode = match (args.mode, &args.input_file) {
        (Some(m), _) => m,
        (None, Some(p)) if is_csv(p) && args.input_format.is_none() => Mode::Conversation,
        (None, Some(_)) => Mode::Trace,
        (None, None) => Mode::Random,
    };
    match mode {
        Mode::Random => {
            if args.input_file.is_some() {
                bail!("--mode random takes no --input-file");
            }
            let n = args.num_prompts.or(if args.duration.is_some() {
                None
            } else {
                Some(1000)
            });
            Ok((
                Box::new(RandomWorkload::new(
                    n.map(|n| n as usize),
                    args.random_input_len,
                    args.random_output_len,
                    args.seed,
                    TokenRange::default(),
                )),
                "random".into(),
                false,
            ))
        }
        Mode::Trace | Mode::Conversation => {
            let Some(path) = &args.input_file else {
                bail!("--mode {mode:?} needs --input-file".to_lowercase());
            };
            if mode == Mode::Conversation {
                let c = conversations::from_csv(
                    path,
                    args.tokens_per_second.get(),
                    args.think_time.get(),
                )?;
                return Ok((
                    Box::new(ConversationWorkload::new(c)),
                    "conversation".into(),
                    true,
                ));
            }
            let trace = read_trace(
                path,
                &ReadOptions {
                    format: args.input_format,
                    skip_invalid: args.skip_invalid,
                },
            )?;
            for note in &trace.notes {
                eprintln!("note: {note}");
            }
            if trace.skipped > 0 {
                eprintln!(
                    "note: skipped {} invalid records (--skip-invalid)",
                    trace.skipped
                );
            }
            if trace.requests.is_empty() {
                bail!("{}: no requests", path.display());
            }
            check_replay_span(&trace, path, args)?;
            let fmt = trace.format.map_or("trace".to_string(), |f| f.to_string());
            Ok((
                Box::new(TraceWorkload::new(trace, TokenRange::default(), args.seed)),
                format!("trace ({fmt})"),
                true,
            ))
        }
    }
}

/// The longest replay of a trace's own timeline without `--duration` (a week): a stray
/// timestamp years away would otherwise keep bench waiting for it, silently.
const MAX_REPLAY_S: f64 = 7.0 * 86_400.0;

fn check_replay_span(
    trace: &inferencelab_trace::Trace,
    path: &Path,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    if args.request_rate.is_some() || args.ramp_up_strategy.is_some() || args.duration.is_some() {
        return Ok(());
    }
    let t = trace.requests.iter().map(|r| r.timestamp);
    let span = t.clone().fold(f64::MIN, f64::max) - t.fold(f64::MAX, f64::min);
    let replay = span / args.time_scale.get();
    if replay > MAX_REPLAY_S {
        bail!(
            "{}: its timestamps span {span:.0} s, a replay of {:.1} days at --time-scale {}; \
             raise --time-scale, give --duration (a hard limit) or --request-rate, or check the \
             trace's timestamps",
            path.display(),
            replay / 86_400.0,
            args.time_scale
        );
    }
    Ok(())
}

fn arrival_of(args: &BenchArgs, timed: bool) -> anyhow::Result<Arrival> {
    let a = if let Some(s) = args.ramp_up_strategy {
        if args.request_rate.is_some() {
            bail!("--ramp-up-strategy sets the rate itself: drop --request-rate (as in vLLM)");
        }
        Arrival::Ramp {
            strategy: match s {
                RampArg::Linear => RampStrategy::Linear,
                RampArg::Exponential => RampStrategy::Exponential,
            },
            start_rps: args.ramp_up_start_rps.map_or(0.0, NonNegative::get),
            end_rps: args.ramp_up_end_rps.map_or(0.0, Positive::get),
            burstiness: args.burstiness,
        }
    } else if let Some(r) = args.request_rate {
        Arrival::from_rate(r, args.burstiness)
    } else if timed {
        Arrival::Trace {
            time_scale: args.time_scale.get(),
        }
    } else {
        Arrival::Burst
    };
    a.validate().map_err(anyhow::Error::msg)?;
    Ok(a)
}

/// Writes records and moves the progress bar.
struct Progress {
    writer: RecordWriter,
    bar: ProgressBar,
    failed: u64,
}

impl Observer for Progress {
    fn on_sent(&mut self, sent: u64) {
        if self.bar.length().unwrap_or(0) == 0 {
            self.bar.set_message(format!("{sent} sent"));
        }
    }
    fn on_record(&mut self, r: &RequestRecord) -> std::io::Result<()> {
        self.writer.write(r)?;
        if !r.success {
            self.failed += 1;
            self.bar.set_message(format!("{} failed", self.failed));
        }
        self.bar.inc(1);
        Ok(())
    }
}

/// What `bench` reports and sends beside the workload: `--metric-percentiles`, `--slo`,
/// `--extra-body`, checked.
struct Reporting {
    percentiles: Vec<f64>,
    slos: Vec<(SloMetric, f64)>,
    extra_body: Option<serde_json::Map<String, serde_json::Value>>,
}

fn reporting(args: &BenchArgs) -> anyhow::Result<Reporting> {
    let percentiles: Vec<f64> = args
        .metric_percentiles
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .with_context(|| format!("--metric-percentiles: {s:?} is not a percentile"))
        })
        .collect::<anyhow::Result<_>>()?;
    let slos = if args.slo.is_empty() {
        Vec::new()
    } else {
        parse_slos(&args.slo.join(",")).map_err(|e| anyhow::anyhow!("--slo: {e}"))?
    };
    let extra_body = match &args.extra_body {
        Some(s) => match serde_json::from_str::<serde_json::Value>(s) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ => bail!("--extra-body must be a JSON object, e.g. '{{\"temperature\":0}}'"),
        },
        None => None,
    };
    Ok(Reporting {
        percentiles,
        slos,
        extra_body,
    })
}

/// What a run sends and to whom, settled before the first request.
struct Plan {
    arrival: Arrival,
    endpoint: Endpoint,
    workload_name: String,
    model: String,
    /// Requests to send, when known.
    total: Option<u64>,
}

/// The run's description in `result.json` (vLLM's keys and ours).
fn run_info(args: &BenchArgs, base: &str, plan: &Plan, reporting: &Reporting) -> RunInfo {
    RunInfo {
        backend: plan.endpoint.backend().into(),
        label: args.label.clone(),
        model_id: plan.model.clone(),
        tokenizer_id: None,
        num_prompts: plan.total,
        request_rate: match args.request_rate {
            Some(r) if r.is_finite() => serde_json::json!(r),
            _ => serde_json::json!("inf"),
        },
        burstiness: args.burstiness,
        max_concurrency: args.max_concurrency,
        base_url: base.to_string(),
        endpoint: plan.endpoint.path().into(),
        workload: plan.workload_name.clone(),
        input_file: args.input_file.as_ref().map(|p| p.display().to_string()),
        arrival: serde_json::to_value(&plan.arrival).unwrap_or_default(),
        time_scale: args.time_scale.get(),
        seed: args.seed,
        duration_limit_s: args.duration.map(Seconds::get),
        percentiles: reporting.percentiles.clone(),
        slos_ms: reporting
            .slos
            .iter()
            .map(|(m, v)| {
                (
                    match m {
                        SloMetric::Ttft => "ttft",
                        SloMetric::Tpot => "tpot",
                        SloMetric::E2el => "e2el",
                    }
                    .to_string(),
                    *v,
                )
            })
            .collect(),
    }
}

/// The HTTP client of the flags (`--api-key-env`, the timeouts).
fn http_executor(args: &BenchArgs, base: &str) -> anyhow::Result<Arc<HttpExecutor>> {
    let api_key = std::env::var(&args.api_key_env)
        .ok()
        .filter(|k| !k.is_empty());
    let exec = HttpExecutor::new(&HttpConfig {
        base_url: base.to_string(),
        api_key,
        request_timeout: args
            .request_timeout
            .duration()
            .max(Duration::from_millis(1)),
        connect_timeout: args
            .connect_timeout
            .duration()
            .max(Duration::from_millis(1)),
    })
    .map_err(anyhow::Error::msg)?;
    Ok(Arc::new(exec))
}

/// The session of the flags: limits, request ids, request bodies, scraping, warm-up.
fn session(
    args: &BenchArgs,
    plan: &Plan,
    extra_body: Option<serde_json::Map<String, serde_json::Value>>,
    dir: &Path,
) -> anyhow::Result<Session> {
    let scrape = if args.metrics_interval.get() > 0.0 {
        let path = dir.join("metrics.jsonl");
        let f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let sink: Box<dyn std::io::Write + Send> = Box::new(std::io::BufWriter::new(f));
        Some((args.metrics_interval.duration(), sink))
    } else {
        None
    };
    let run = RunConfig {
        arrival: plan.arrival.clone(),
        max_concurrency: args.max_concurrency,
        num_prompts: args.num_prompts,
        duration: args.duration.map(Seconds::duration),
        time_scale: args.time_scale.get(),
        seed: args.seed,
        request_id_prefix: format!("bench-{:08x}-", args.seed as u32 ^ std::process::id()),
        request_id_header: match args.request_id_header {
            RequestIdArg::Ours => RequestIdHeader::Ours,
            RequestIdArg::Uuid => RequestIdHeader::Uuid,
            RequestIdArg::None => RequestIdHeader::None,
        },
        body: BodyOptions {
            model: plan.model.clone(),
            ignore_eos: plan.endpoint == Endpoint::Completions && !args.no_ignore_eos,
            text_prompts: args.prompt_format == PromptFormat::Text,
            extra_body,
        },
    };
    Ok(Session {
        run,
        scrape,
        warmup_connections: args
            .warmup_connections
            .map_or(args.max_concurrency.unwrap_or(0).min(4096), usize::from),
    })
}

/// One benchmark against `base`; `conversations` overrides the workload (the demo).
pub(crate) fn bench_against(
    rt: &tokio::runtime::Runtime,
    args: &BenchArgs,
    base: &str,
    conversations: Option<Vec<ConversationSpec>>,
) -> anyhow::Result<BenchOutput> {
    let mut reporting = reporting(args)?;
    let exec = http_executor(args, base)?;
    let model = match &args.model {
        Some(m) => m.clone(),
        None => rt
            .block_on(session::served_model(&exec))
            .map_err(anyhow::Error::msg)?,
    };
    let (mut workload, workload_name, timed) = build_workload(args, conversations)?;
    let plan = Plan {
        arrival: arrival_of(args, timed)?,
        endpoint: workload.endpoint(),
        workload_name,
        model,
        total: match (workload.num_requests(), args.num_prompts) {
            (Some(a), Some(b)) => Some((a as u64).min(b)),
            (a, b) => a.map(|a| a as u64).or(b),
        },
    };
    let dir = args.output_dir.clone().unwrap_or_else(|| {
        PathBuf::from("outputs/logs").join(format!("bench_{}", date_string(SystemTime::now())))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let records_path = dir.join("requests.jsonl");
    let writer = RecordWriter::create(&records_path)
        .with_context(|| format!("creating {}", records_path.display()))?;
    let session = session(args, &plan, reporting.extra_body.take(), &dir)?;
    let scraped = session.scrape.is_some();
    let mut reporter = crate::progress::Progress::new(
        args.quiet,
        plan.total.unwrap_or(0),
        "{spinner} {pos}/{len} requests [{elapsed}] {wide_bar} {msg}",
        "bench",
        "requests",
    );
    let mut progress = Progress {
        writer,
        bar: ProgressBar::clone(&reporter),
        failed: 0,
    };
    eprintln!(
        "bench: {} -> {base}{} (model {}), arrival {}, results in {}",
        plan.workload_name,
        plan.endpoint.path(),
        plan.model,
        serde_json::to_string(&plan.arrival).unwrap_or_default(),
        dir.display()
    );
    let stop = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    let (outcome, scrape) = rt.block_on(session::run(
        exec,
        session,
        workload.as_mut(),
        &mut progress,
        stop,
    ))?;
    reporter.finish();
    let summary = summarize(
        &outcome.records,
        outcome.duration_s,
        &reporting.percentiles,
        &reporting.slos,
    );
    let info = run_info(args, base, &plan, &reporting);
    let result = result_json(&info, &outcome, &summary, scrape.as_ref());
    let result_path = dir.join("result.json");
    write_json(&result_path, &result)
        .with_context(|| format!("writing {}", result_path.display()))?;
    out!(
        "{}",
        summary_table(&info, &outcome, &summary, scrape.as_ref())
    );
    eprintln!(
        "wrote {}, {}{}",
        records_path.display(),
        result_path.display(),
        if scraped {
            format!(", {}", dir.join("metrics.jsonl").display())
        } else {
            String::new()
        }
    );
    if summary.failed > 0 {
        eprintln!(
            "note: {} of {} requests failed ({}); each failure is in requests.jsonl with its error",
            summary.failed,
            outcome.records.len(),
            summary
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(BenchOutput {
        outcome,
        summary,
        scrape,
        dir,
    })
}

/// Join the server log's LMCache lookups with the run's records; print and write them.
///
/// The attribution is an extra: the requests already ran and their results are written, so a
/// log it cannot use (missing, no request lines because the server ran without
/// `--enable-log-requests`, no LMCache lines) is a warning, never the exit status (README: the
/// status is non-zero only when no request succeeded or the run was interrupted).
pub(crate) fn attribute(out: &BenchOutput, log: &Path, percentiles: &str) -> anyhow::Result<()> {
    let trace = match read_trace(
        log,
        &ReadOptions {
            format: Some(Format::VllmLog),
            skip_invalid: true,
        },
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "warning: --server-log: no per-request attribution ({e}); the benchmark's \
                 results are written and complete"
            );
            return Ok(());
        }
    };
    if trace.lmcache.is_empty() {
        eprintln!(
            "warning: --server-log {} has no LMCache lookup lines: no per-request attribution \
             (the server needs LMCache with its INFO log lines)",
            log.display()
        );
        return Ok(());
    }
    let p: Vec<f64> = percentiles
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let (rows, summary) =
        inferencelab_bench::attribution::join(&out.outcome.records, &trace.lmcache, &p);
    out!("{}", inferencelab_bench::attribution::table(&summary));
    let path = out.dir.join("attribution.json");
    write_json(
        &path,
        &serde_json::json!({"server_log": log.display().to_string(), "summary": summary,
                            "requests": rows}),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The demo: embedded emulator, bundled conversations, simulator prediction.
fn demo(rt: &tokio::runtime::Runtime, args: &BenchArgs) -> anyhow::Result<()> {
    use inferencelab_emu::engine::{EngineConfig, LmcacheTier};
    use inferencelab_emu::server::{self, ServerConfig};
    use inferencelab_emu::timing::{GpuProfile, Timing};
    use inferencelab_models as models;

    let dir = args
        .output_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("outputs/logs/bench_demo"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let csv = match &args.input_file {
        Some(p) => p.clone(),
        None if Path::new("data/test_data.csv").exists() => PathBuf::from("data/test_data.csv"),
        None => {
            let p = dir.join("demo_data.csv");
            let f =
                std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
            inferencelab_convert::write_demo_csv(40, args.seed, std::io::BufWriter::new(f))
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "note: data/test_data.csv not found here (the demo reads it from the working \
                 directory); generated 40 demo conversations into {}",
                p.display()
            );
            p
        }
    };
    let conversations =
        conversations::from_csv(&csv, args.tokens_per_second.get(), args.think_time.get())?;
    // Fit the recorded timeline into about --demo-seconds of replay: the same scale drives the
    // emulated GPU clock, so the server log's timeline is the trace's.
    let span = conversations
        .iter()
        .map(|c| {
            let start = c.turns[0].timestamp.unwrap_or(0.0);
            let body: f64 = c
                .turns
                .iter()
                .map(|t| t.think_s + t.max_tokens as f64 / 50.0)
                .sum();
            start + body
        })
        .fold(0.0f64, f64::max);
    let scale = if args.time_scale.get() != 1.0 {
        args.time_scale
    } else {
        Scale::try_from((span / args.demo_seconds.get().max(1.0)).clamp(1.0, 1e6))
            .map_err(anyhow::Error::msg)?
    };
    let scale_f = scale.get();
    let model_name = "qwen-8b";
    let model = models::resolve(model_name)?;
    let timing = Timing::derive(&model, &GpuProfile::default(), None, None);
    let chunk_size = inferencelab_sim::plan::LMCACHE_DEFAULT_CHUNK;
    let block_size = inferencelab_sim::plan::VLLM_DEFAULT_BLOCK;
    let cpu_chunks = model.blocks_in_gib(args.demo_cpu_cache_gb.get(), chunk_size);
    let mut engine = EngineConfig::new(model.clone(), timing, args.demo_gpu_blocks);
    engine.lmcache = Some(LmcacheTier {
        chunk_size,
        num_chunks: cpu_chunks,
        policy: inferencelab_cache::PolicyConfig::Lru,
        mode: Default::default(),
    });
    let log_path = dir.join("server.log");
    let mut cfg = ServerConfig::new(engine, model_name);
    cfg.time_scale = scale_f;
    cfg.seed = args.seed;
    cfg.enable_log_requests = true;
    // per-token lines: simulate places each decode block when its token was sampled
    cfg.enable_log_outputs = true;
    cfg.enable_prompt_tokens_details = true;
    // Microsecond log stamps (vLLM prints whole seconds): with them the simulator sees the exact
    // order of arrivals and finishes, so its prediction below can match the server to the token.
    cfg.log_time_decimals = 6;
    cfg.log = Some(Box::new(std::io::BufWriter::new(
        std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?,
    )));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("binding a loopback port for the embedded server")?;
    let handle = {
        let _guard = rt.enter();
        server::spawn(listener, cfg).context("starting the embedded server")?
    };
    let base = format!("http://{}", handle.addr);
    eprintln!(
        "demo: embedded emulator (qwen-8b, {} GPU blocks, LMCache {} GiB = {} chunks) on {base}; \
         replaying {} conversations from {} at {scale_f:.0}x",
        args.demo_gpu_blocks,
        args.demo_cpu_cache_gb,
        cpu_chunks,
        conversations.len(),
        csv.display()
    );
    let mut bargs = args.clone();
    bargs.model = Some(model_name.into());
    bargs.output_dir = Some(dir.clone());
    bargs.time_scale = scale;
    bargs.input_file = Some(csv.clone());
    let out = bench_against(rt, &bargs, &base, Some(conversations));
    rt.block_on(handle.shutdown())
        .context("stopping the embedded server")?;
    let out = out?;
    finish(&out)?;
    eprintln!("wrote {} (vLLM-format server log)", log_path.display());
    attribute(&out, &log_path, &args.metric_percentiles)?;

    // The simulator on the server's own log, same configuration.
    let trace = read_trace(&log_path, &ReadOptions::default())
        .with_context(|| format!("reading {}", log_path.display()))?;
    let prepared = inferencelab_sim::driver::Prepared::new(&trace, block_size, Some(chunk_size))?;
    let sim_cfg = inferencelab_sim::config::SimConfig {
        gpu: inferencelab_sim::config::TierConfig {
            capacity: args.demo_gpu_blocks,
            policy: inferencelab_cache::PolicyConfig::Lru,
        },
        cpu: Some(inferencelab_sim::config::TierConfig {
            capacity: cpu_chunks,
            policy: inferencelab_cache::PolicyConfig::Lru,
        }),
        disk: None,
        hit_semantics: inferencelab_sim::HitSemantics::Prefix,
        pinning: true,
        timing: Default::default(),
        window_seconds: 60.0,
        model: Some(model),
        engine: Default::default(),
    };
    let row = inferencelab_sim::driver::run(&prepared, &sim_cfg)?;
    out!("{}", comparison_table(&out, &row));
    Ok(())
}

/// Predicted (simulator on the server log) next to measured (the server's counters and the
/// API's cached_tokens).
pub(crate) fn comparison_table(out: &BenchOutput, row: &inferencelab_sim::ResultRow) -> String {
    let d = |n: &str| out.scrape.as_ref().and_then(|s| s.delta(n));
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let mut s = String::new();
    s.push_str(&format!(
        "{:=^66}\n{:<34}{:>16}{:>16}\n",
        " Hit tokens: simulator vs server ", "", "predicted", "measured"
    ));
    let mut line = |label: &str, p: Option<f64>, m: Option<f64>| {
        s.push_str(&format!("{:<34}{:>16}{:>16}\n", label, fmt(p), fmt(m)));
    };
    line(
        "prompt tokens",
        Some(row.prompt_tokens as f64),
        d("vllm:prompt_tokens_total").or(Some(out.summary.total_input_tokens as f64)),
    );
    line(
        "GPU prefix cache hit tokens",
        Some(row.gpu_hit_tokens as f64),
        d("vllm:prefix_cache_hits_total"),
    );
    line(
        "LMCache hit tokens (loaded)",
        Some(row.cpu_hit_tokens as f64),
        d("vllm:external_prefix_cache_hits_total"),
    );
    line(
        "cached tokens (GPU + LMCache)",
        Some((row.gpu_hit_tokens + row.cpu_hit_tokens) as f64),
        Some(out.summary.total_cached_tokens as f64),
    );
    let pr = |h: u64| {
        if row.prompt_tokens > 0 {
            h as f64 / row.prompt_tokens as f64 * 100.0
        } else {
            0.0
        }
    };
    s.push_str(&format!(
        "{:<34}{:>15.2}%{:>15.2}%\n",
        "token hit ratio",
        pr(row.gpu_hit_tokens + row.cpu_hit_tokens),
        out.summary.cached_token_ratio * 100.0
    ));
    s.push_str(&"=".repeat(66));
    s.push('\n');
    s
}
