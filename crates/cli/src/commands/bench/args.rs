//! `bench`'s flags (shared by `replay`, which benchmarks a server too).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use inferencelab_trace::checked::{NonNegative, Positive, Scale, Seconds};
use inferencelab_trace::Format;

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
    pub vllm: super::vllm::VllmFlags,
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

impl BenchArgs {
    /// How to read `--input-file` (`--input-format`, `--skip-invalid`).
    pub fn read_options(&self) -> inferencelab_trace::ReadOptions {
        inferencelab_trace::ReadOptions {
            format: self.input_format,
            skip_invalid: self.skip_invalid,
        }
    }
}
