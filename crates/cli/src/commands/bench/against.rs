//! One benchmark against a server, from the flags to `result.json`, and the server log's
//! per-request attribution.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use indicatif::ProgressBar;
use inferencelab_bench::arrival::{Arrival, RampStrategy};
use inferencelab_bench::conversations;
use inferencelab_bench::executor::{Endpoint, HttpConfig, HttpExecutor};
use inferencelab_bench::metrics::{parse_slos, summarize, SloMetric};
use inferencelab_bench::output::{date_string, result_json, summary_table, RecordWriter, RunInfo};
use inferencelab_bench::record::RequestRecord;
use inferencelab_bench::runner::{Observer, RequestIdHeader, RunConfig};
use inferencelab_bench::session::{self, Session};
use inferencelab_bench::workload::{
    BodyOptions, ConversationSpec, ConversationWorkload, RandomWorkload, TokenRange, TraceWorkload,
    Workload,
};
use inferencelab_trace::checked::{NonNegative, Positive, Seconds};
use inferencelab_trace::fsutil::write_json;
use inferencelab_trace::{read_trace, Format, ReadOptions};

use super::{BenchArgs, BenchOutput, Mode, PromptFormat, RampArg, RequestIdArg};

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
            let trace = read_trace(path, &args.read_options())?;
            crate::output::print_read_notes(&trace);
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
/// `--enable-log-requests`, no LMCache lines) is a warning, never the exit status (docs/bench.md: the
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
