//! `inferencelab replay`: the successor of the prototype's cache emulator. Replays a recorded
//! workload (a vLLM server log, a native trace or an id trace) against a live endpoint with
//! `bench`, then runs the simulator on the same workload with the same cache configuration and
//! puts measured hits (the API's `cached_tokens` and the server's counters) next to the
//! prediction: in total and per time window of the trace.
//!
//! Per request too: the simulator tells what each request of the trace got
//! (`driver::run_observed`), joined with the measured `cached_tokens` by the request's trace
//! id; the summary counts exact matches and the error, `replay.json` has every request.
//!
//! Whose times the prediction uses: by default the client's (each request's send, tokens and
//! finish as the replay measured them), which any server allows but which can put a token or an
//! arrival on the other side of one of the server's step boundaries; with `--server-log FILE`
//! the server's own (its log read as a trace: when its engine took each request, each token's
//! step, each finish), which for `serve` (`--enable-log-requests --enable-log-outputs
//! --log-time-decimals 6`) is the closed loop and exact by construction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use inferencelab_bench::RequestRecord;
use inferencelab_cache::PolicyConfig;
use inferencelab_models as models;
use inferencelab_sim::driver::RequestHits;
use inferencelab_sim::plan::Capacity;
use inferencelab_sim::resolve::{self, PointSpec};
use inferencelab_sim::{plan, ResultRow, SimConfig};
use inferencelab_trace::checked::{NonNegative, Positive};
use inferencelab_trace::{read_trace, AnswerBlocks, Format, ReadOptions, Trace};
use serde_json::json;

use super::{bench_against, comparison_table, runtime, BenchArgs, BenchOutput};

// The flattened bench flags say what they mean for `bench`; here the server and the workload
// are required (no demo), and the demo and experiment flags do not apply.
#[derive(Args, Debug, Clone)]
#[command(
    mut_arg("base_url", |a| a.required(true)
        .help("The live server to replay against, e.g. http://127.0.0.1:8000")),
    mut_arg("input_file", |a| a.required(true)
        .help("The recorded workload: a vLLM server log (with --enable-log-requests) or a trace")),
    mut_arg("output_dir", |a| a
        .help("Where requests.jsonl, result.json, metrics.jsonl and replay.json go (default outputs/logs/bench_<date>)")),
    mut_arg("demo_gpu_blocks", |a| a.hide(true)),
    mut_arg("demo_cpu_cache_gb", |a| a.hide(true)),
    mut_arg("demo_seconds", |a| a.hide(true)),
    mut_arg("yaml", |a| a.hide(true)),
    mut_arg("gpus", |a| a.hide(true)),
    mut_arg("dry_run", |a| a.hide(true)),
    mut_arg("experiment_dir", |a| a.hide(true)),
    mut_arg("server_log", |a| a
        .help("The server's log of this run (`serve` or vLLM with --enable-log-requests \
               --enable-log-outputs, microsecond stamps: `serve --log-time-decimals 6`): predict \
               from the times the server saw (engine arrival, each token's step, finish) \
               instead of the client's. Exact against `serve`")),
)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub bench: BenchArgs,
    /// The server's GPU KV cache in blocks (vLLM's num_gpu_blocks), for the prediction.
    #[arg(long)]
    pub gpu_blocks: u64,
    /// The server's LMCache CPU tier in GiB (default 5, LMCache's max_local_cpu_size).
    #[arg(long, conflicts_with = "no_cpu_tier")]
    pub cpu_cache_gb: Option<NonNegative>,
    /// The server runs without LMCache.
    #[arg(long)]
    pub no_cpu_tier: bool,
    /// The server's vLLM --block-size, for the prediction.
    #[arg(long, default_value_t = plan::VLLM_DEFAULT_BLOCK,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub block_size: u32,
    /// The server's LMCache chunk size in tokens, for the prediction.
    #[arg(long, default_value_t = plan::LMCACHE_DEFAULT_CHUNK,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: u32,
    /// Model of the server (registry name, YAML or config.json), for GiB -> chunks.
    #[arg(long, default_value = "qwen-8b")]
    pub sim_model: String,
    /// The GPU-tier policy the prediction uses (vLLM's is LRU).
    #[arg(long, default_value = "lru", value_parser = crate::cli::PolicyParser)]
    pub eviction_policy: PolicyConfig,
    /// Width of the comparison windows, seconds of trace time.
    #[arg(long, default_value = "10")]
    pub window_seconds: Positive,
}

/// Give each replayed request the times the replay measured, in trace seconds (send time x
/// `time_scale` from the first request's recorded arrival): its send, its last token, each token
/// (first token, then the gaps between chunks, when there is one chunk per token), and its
/// real output length. The server's scheduler saw these, not the recorded ones.
fn as_replayed(trace: &mut inferencelab_trace::Trace, records: &[RequestRecord], scale: f64) {
    let t0 = trace.requests.first().map_or(0.0, |r| r.timestamp);
    let by_id: HashMap<&str, &RequestRecord> = records
        .iter()
        .filter(|r| r.success)
        .filter_map(|r| Some((r.source_id.as_deref()?, r)))
        .collect();
    for req in &mut trace.requests {
        req.output_tokens = None;
        req.output_times = None;
        let Some(r) = by_id.get(req.id.as_str()) else {
            continue;
        };
        let at = |s: f64| t0 + s * scale;
        req.timestamp = at(r.send_s);
        req.finish_time = Some(at(r.send_s + r.e2el_s));
        req.output_length = r.output_tokens as u32;
        if r.output_tokens > 0 && r.itl_s.len() + 1 == r.output_tokens as usize {
            let mut t = r.send_s + r.ttft_s;
            let mut times = vec![at(t)];
            for gap in &r.itl_s {
                t += gap;
                times.push(at(t));
            }
            req.output_times = Some(times);
        }
    }
    trace
        .requests
        .sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
}

/// How long to wait for the server's log to name every answered request: the server writes a
/// step's lines after it sent the step's tokens, so the client can finish first.
const SERVER_LOG_WAIT: Duration = Duration::from_secs(10);

/// The server's own record of the run: `log` read as a vLLM log (every request it served,
/// stamped when its engine took the request, at the end of the step that sampled each token,
/// and when it finished), and for each of `records` the index of its request there (joined by
/// the id the server streamed back, as `bench --server-log` joins). Waits up to
/// [`SERVER_LOG_WAIT`] for the lines of the last steps; an answered request that is still not
/// in the log is an error (the wrong log, or a server without `--enable-log-requests`).
fn server_side(
    log: &Path,
    records: &[RequestRecord],
) -> anyhow::Result<(Trace, Vec<Option<usize>>)> {
    let opts = ReadOptions {
        format: Some(Format::VllmLog),
        skip_invalid: false,
    };
    let answered = records.iter().filter(|r| r.success).count();
    let started = Instant::now();
    let (trace, slot) = loop {
        // the server may be writing a line as we read: read again until the wait is over
        let trace = match read_trace(log, &opts) {
            Ok(t) => t,
            Err(_) if started.elapsed() < SERVER_LOG_WAIT => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("--server-log {}", log.display())),
        };
        let slot = join(&trace, records);
        let logs_finishes = trace.requests.iter().any(|r| r.finish_time.is_some());
        let complete = records.iter().zip(&slot).all(|(r, i)| {
            !r.success
                || i.is_some_and(|i| !logs_finishes || trace.requests[i].finish_time.is_some())
        });
        if complete || started.elapsed() >= SERVER_LOG_WAIT {
            break (trace, slot);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let missing: Vec<&str> = records
        .iter()
        .zip(&slot)
        .filter(|(r, i)| r.success && i.is_none())
        .map(|(r, _)| r.response_id.as_deref().unwrap_or(&r.request_id))
        .collect();
    if let Some(first) = missing.first() {
        bail!(
            "--server-log {}: {} of the {answered} answered requests are not in it (the first: \
             {first}); give the log of the server this replay ran against, written with \
             --enable-log-requests --enable-log-outputs (serve: --log-file FILE), or leave \
             --server-log out to predict from the client's times",
            log.display(),
            missing.len()
        );
    }
    if !trace.has_reuse_info() {
        bail!(
            "--server-log {}: no prompt token ids (the server needs --enable-log-requests)",
            log.display()
        );
    }
    if trace.requests.iter().all(|r| r.output_times.is_none()) {
        eprintln!(
            "warning: --server-log {} has no per-token lines (the server needs \
             --enable-log-outputs): decode blocks follow the time model, not the server's steps",
            log.display()
        );
    }
    if trace.requests.len() > 1 && trace.requests.iter().all(|r| r.timestamp.fract() == 0.0) {
        eprintln!(
            "warning: --server-log {}: whole-second stamps (vLLM's default): requests within a \
             second keep the file's order, steps are not told apart (serve: \
             --log-time-decimals 6)",
            log.display()
        );
    }
    Ok((trace, slot))
}

/// For each record, the index in `trace` of the request the server streamed back its id for: the
/// same id, or one of the two is the other plus `-...` (engines suffix their internal ids), or,
/// without a streamed id, the server's `<prefix>-<our X-Request-Id>`.
fn join(trace: &Trace, records: &[RequestRecord]) -> Vec<Option<usize>> {
    let by_id: HashMap<&str, usize> = trace
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let extends = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.starts_with('-'))
    };
    records
        .iter()
        .map(|r| match r.response_id.as_deref() {
            Some(rid) => by_id.get(rid).copied().or_else(|| {
                trace
                    .requests
                    .iter()
                    .position(|q| extends(&q.id, rid) || extends(rid, &q.id))
            }),
            None => trace.requests.iter().position(|q| {
                q.id.split_once('-')
                    .is_some_and(|(_, base)| base == r.request_id)
            }),
        })
        .collect()
}

/// The point the prediction runs: `serve`'s defaults and the flags' sizes and policy.
fn prediction_point(args: &ReplayArgs) -> anyhow::Result<PointSpec> {
    let model = models::resolve(&args.sim_model)?;
    let policy = super::super::load_policy(
        args.eviction_policy.clone(),
        &resolve::PolicyFiles::default(),
    )?;
    Ok(PointSpec {
        // LMCache's pool, as `serve` sizes it
        cpu: (!args.no_cpu_tier).then(|| {
            Capacity::Gib(
                args.cpu_cache_gb
                    .map_or(plan::LMCACHE_DEFAULT_CPU_GB, NonNegative::get),
            )
        }),
        window_seconds: args.window_seconds.get(),
        engine: inferencelab_sim::EngineModel {
            // the server writes answers of its own: the recorded ones (which the replayed
            // prompts repeat) are not in its cache
            answers: inferencelab_trace::AnswerBlocks::Fresh,
            ..Default::default()
        },
        ..PointSpec::new(
            Some(model),
            args.block_size,
            args.chunk_size,
            Capacity::Entries(args.gpu_blocks),
            policy,
        )
    })
}

/// The predicted and measured hits per window (the first 30 printed), as `replay.json` keeps
/// them.
fn print_windows(row: &ResultRow, measured: &[u64]) -> Vec<serde_json::Value> {
    outln!(
        "{:>10} {:>9} {:>14} {:>14} {:>14}",
        "window_s",
        "requests",
        "prompt_tok",
        "predicted_hit",
        "measured_hit"
    );
    let windows: Vec<_> = row
        .windows
        .iter()
        .zip(measured)
        .map(|(w, m)| {
            let p = w.gpu_hit_tokens + w.cpu_hit_tokens + w.disk_hit_tokens;
            json!({"start_s": w.start, "requests": w.requests, "prompt_tokens": w.prompt_tokens,
                   "predicted_hit_tokens": p, "measured_cached_tokens": m})
        })
        .collect();
    for (w, m) in row.windows.iter().zip(measured).take(30) {
        outln!(
            "{:>10.0} {:>9} {:>14} {:>14} {:>14}",
            w.start,
            w.requests,
            w.prompt_tokens,
            w.gpu_hit_tokens + w.cpu_hit_tokens + w.disk_hit_tokens,
            m
        );
    }
    if row.windows.len() > 30 {
        outln!("... {} more windows in replay.json", row.windows.len() - 30);
    }
    windows
}

pub fn run(mut args: ReplayArgs) -> anyhow::Result<()> {
    let (base, input) = check_args(&mut args)?;
    let trace = read_trace(&input, &args.bench.read_options())?;
    if !trace.has_reuse_info() {
        bail!(
            "{} carries no prefix-reuse information: nothing to compare",
            input.display()
        );
    }
    let spec = prediction_point(&args)?;
    let mut cfg = spec.resolve()?;
    let rt = runtime(args.bench.threads)?;
    let mut bargs = args.bench.clone();
    bargs.mode = Some(super::Mode::Trace);
    // `bench --server-log` attributes LMCache lookups; here the log is the prediction's input
    bargs.server_log = None;
    let out = bench_against(&rt, &bargs, &base, None)?;
    let records = &out.outcome.records;

    let replayed = as_predicted(&args, trace, &out, &mut cfg)?;
    let sim_trace = &replayed.trace;
    outln!("prediction from {}", replayed.times);
    let prepared = inferencelab_sim::driver::Prepared::new(
        sim_trace,
        args.block_size,
        spec.prepared_chunk_size(),
    )
    .with_context(|| format!("preparing {}", input.display()))?;
    let mut predicted = vec![None; sim_trace.requests.len()];
    let row = inferencelab_sim::driver::run_observed(&prepared, &cfg, |i, hits| {
        predicted[i] = Some(hits)
    })?;
    out!("{}", comparison_table(&out, &row));

    let (measured, agreement, per_request) = measure(&args, &replayed, records, &predicted, &row);
    outln!("{agreement}");
    let others = sim_trace
        .requests
        .len()
        .saturating_sub(replayed.slot.iter().flatten().count());
    if args.bench.server_log.is_some() && others > 0 {
        outln!(
            "note: the prediction ran {others} requests this replay did not send (the server's \
             earlier traffic in --server-log, which its cache still held): the totals and \
             windows include them; this replay's requests alone: predicted {} hit tokens, \
             measured {}",
            agreement.predicted,
            agreement.measured
        );
    }
    let windows = print_windows(&row, &measured);
    let path: PathBuf = out.dir.join("replay.json");
    let doc = json!({
        "input_file": input.display().to_string(),
        "base_url": base,
        "times": match &args.bench.server_log {
            Some(log) => json!({"source": "server_log", "server_log": log.display().to_string()}),
            None => json!({"source": "client"}),
        },
        "simulation": row,
        "windows": windows,
        "per_request": agreement.to_json(),
        "requests": per_request,
    });
    inferencelab_trace::fsutil::write_json(&path, &doc)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The flags' checks (vLLM's bench flags mean the same here: --host/--port, sampling, ...;
/// datasets do not): the server's URL and the input file.
fn check_args(args: &mut ReplayArgs) -> anyhow::Result<(String, PathBuf)> {
    if let Some(log) = &args.bench.server_log {
        if !log.is_file() {
            bail!(
                "--server-log {}: no such file (the log the server writes as it runs: `serve \
                 --log-file FILE`, or vLLM's output redirected to a file)",
                log.display()
            );
        }
    }
    let vllm = super::vllm::apply(&mut args.bench)?;
    if vllm.conversations.is_some() || vllm.result_copy.is_some() {
        bail!(
            "replay replays --input-file (a log or trace); --dataset-name/--dataset-path and \
             --result-filename are `bench`'s"
        );
    }
    let Some(base) = args.bench.base_url.clone() else {
        bail!("replay needs --base-url (the live endpoint to replay against)");
    };
    let Some(input) = args.bench.input_file.clone() else {
        bail!("replay needs --input-file (a server log or a trace)");
    };
    Ok((base, input))
}

/// The requests the prediction runs, with their times.
struct Replayed {
    trace: Trace,
    /// `slot[k]`: record k's request in `trace`.
    slot: Vec<Option<usize>>,
    /// Where the times come from, for the reader.
    times: String,
}

/// The same requests, with the times the server saw them (its log) or, for a server without
/// a log, as the client saw the replay run them.
fn as_predicted(
    args: &ReplayArgs,
    trace: Trace,
    out: &BenchOutput,
    cfg: &mut SimConfig,
) -> anyhow::Result<Replayed> {
    let records = &out.outcome.records;
    if let Some(log) = &args.bench.server_log {
        let (trace, slot) = server_side(log, records)?;
        // the server's own answers: its logged output ids when it wrote them
        // (--enable-log-outputs), else blocks that never match (the replayed prompts repeat
        // the recorded answers, not the server's)
        cfg.engine.answers = if trace.requests.iter().all(|r| r.output_tokens.is_some()) {
            AnswerBlocks::Auto
        } else {
            AnswerBlocks::Fresh
        };
        let times = format!(
            "server-side times: {} ({} requests, {} of this replay)",
            log.display(),
            trace.requests.len(),
            slot.iter().flatten().count()
        );
        return Ok(Replayed { trace, slot, times });
    }
    let mut trace = trace;
    if let Some(n) = args.bench.num_prompts {
        trace.requests.truncate(n as usize);
    }
    trace.requests.truncate(out.outcome.sent as usize);
    as_replayed(&mut trace, records, args.bench.time_scale.get());
    let index: HashMap<&str, usize> = trace
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let slot = records
        .iter()
        .map(|r| r.source_id.as_deref().and_then(|id| index.get(id).copied()))
        .collect();
    let times = "client-side times (each request's send, tokens and finish as the replay \
                 measured them; --server-log FILE takes the server's own)"
        .to_string();
    Ok(Replayed { trace, slot, times })
}

/// Measured hits per window of trace time (beside the predicted ones), the per-request
/// agreement, and each request's line for `replay.json`.
fn measure(
    args: &ReplayArgs,
    replayed: &Replayed,
    records: &[RequestRecord],
    predicted: &[Option<RequestHits>],
    row: &ResultRow,
) -> (Vec<u64>, Agreement, Vec<serde_json::Value>) {
    let requests = &replayed.trace.requests;
    let t0 = requests.first().map_or(0.0, |r| r.timestamp);
    let mut measured = vec![0u64; row.windows.len()];
    let mut per_request = Vec::new();
    let mut agreement = Agreement::default();
    for (r, i) in records.iter().zip(&replayed.slot) {
        let Some(&i) = i.as_ref() else {
            continue;
        };
        let t = requests[i].timestamp;
        let w = ((t - t0) / args.window_seconds.get()).max(0.0) as usize;
        let p = predicted[i];
        if r.success {
            if let Some(m) = measured.get_mut(w) {
                *m += r.cached_tokens;
            }
            if let Some(p) = p {
                agreement.add(p.total(), r.cached_tokens, args.block_size as u64);
            }
        }
        per_request.push(json!({
            "source_id": r.source_id, "trace_time_s": t, "success": r.success,
            "prompt_len": r.prompt_len, "measured_cached_tokens": r.cached_tokens,
            "predicted_hit_tokens": p.map(|p| p.total()), "predicted": p,
            "ttft_ms": r.ttft_s * 1000.0,
        }));
    }
    (measured, agreement, per_request)
}

/// Per-request agreement of predicted and measured hit tokens (successful requests).
#[derive(Debug, Default)]
struct Agreement {
    requests: u64,
    exact: u64,
    within_a_block: u64,
    abs_error: u64,
    predicted: u64,
    measured: u64,
}

impl Agreement {
    fn add(&mut self, predicted: u64, measured: u64, block: u64) {
        let err = predicted.abs_diff(measured);
        self.requests += 1;
        self.exact += (err == 0) as u64;
        self.within_a_block += (err <= block) as u64;
        self.abs_error += err;
        self.predicted += predicted;
        self.measured += measured;
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "requests": self.requests, "exact": self.exact,
            "within_one_block": self.within_a_block,
            "mean_abs_error_tokens": self.abs_error as f64 / self.requests.max(1) as f64,
            "predicted_hit_tokens": self.predicted, "measured_cached_tokens": self.measured,
        })
    }
}

impl std::fmt::Display for Agreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let share = |n: u64| 100.0 * n as f64 / self.requests.max(1) as f64;
        write!(
            f,
            "per request ({} answered): predicted = measured for {} ({:.1}%), within one block \
             for {} ({:.1}%), mean |error| {:.1} tokens",
            self.requests,
            self.exact,
            share(self.exact),
            self.within_a_block,
            share(self.within_a_block),
            self.abs_error as f64 / self.requests.max(1) as f64
        )
    }
}
