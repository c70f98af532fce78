//! Command-line definitions. Flag names follow the prototype and vLLM/LMCache's own words.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use inferencelab_cache::PolicyConfig;
use inferencelab_sim::resolve::TierPolicy;
use inferencelab_sim::{HitSemantics, LmcacheMode, LmcacheRules, Schedule};
use inferencelab_trace::checked::{NonNegative, Positive};
use inferencelab_trace::{AnswerBlocks, Format};

#[derive(Parser, Debug)]
#[command(
    name = "inferencelab",
    version,
    about = "KV-cache simulation, emulation and benchmarking for vLLM + LMCache"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Offline two-tier prefix-cache simulation (vLLM GPU prefix cache + LMCache CPU/disk).
    Simulate(SimulateArgs),
    /// Run a YAML grid of simulations in parallel (resumable, shardable); `batch merge` joins shards.
    Batch(crate::commands::batch::BatchArgs),
    /// The whole LRU hit-ratio curve in one pass (stack distances); --check compares with point simulations.
    Mrc(crate::commands::mrc::MrcArgs),
    /// Experiment grid on real GPUs: a fresh `vllm serve` + LMCache per point and GPU slot.
    Experiment(crate::commands::experiment::ExperimentArgs),
    /// Charts (PNG + SVG) and a self-contained HTML report from a simulate/batch result file.
    Plot(crate::commands::plot::PlotArgs),
    /// Emulated vLLM + LMCache OpenAI-compatible server (same cache model as simulate).
    Serve(crate::commands::serve::ServeArgs),
    /// Tune the conversation_aware scorer on the first part of a trace, report the rest beside LRU and Belady.
    Sweep(crate::commands::sweep::SweepArgs),
    /// Train the lightgbm policy's model (LightGBM text format); --export-features for Python lightgbm.
    Train(crate::commands::train::TrainArgs),
    /// Conversation CSV -> vLLM-format server log + native trace on a synthetic timeline.
    Convert(crate::commands::convert::ConvertArgs),
    /// Load an OpenAI-compatible server (vLLM bench serve metrics, cache hits); no --base-url: the demo.
    Bench(crate::commands::bench::BenchArgs),
    /// Replay a server log or trace against a live endpoint; measured vs simulated hits.
    Replay(crate::commands::bench::replay::ReplayArgs),
}

impl Command {
    /// Whether the command opens network connections (or serves them), where a write to a peer
    /// that has gone must not raise SIGPIPE.
    pub fn writes_to_network(&self) -> bool {
        matches!(
            self,
            Command::Serve(_) | Command::Bench(_) | Command::Replay(_) | Command::Experiment(_)
        )
    }
}

/// The trace a command reads: `simulate`, `sweep` and `train` take the same flags.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Trace or vLLM server log (any input format, gzip/zstd included; a directory of WEKA
    /// sessions or of rotated logs works too).
    #[arg(long, short = 'i')]
    pub input_file: PathBuf,
    /// Force the input format instead of detecting it.
    #[arg(long, value_parser = parse_format)]
    pub input_format: Option<Format>,
    /// Skip (and count) invalid records instead of stopping at the first one.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Traces without conversation ids: infer them from the prefix chain (a request that
    /// repeats most of an earlier prompt is its follow-up; docs/policies.md).
    #[arg(long)]
    pub infer_conversations: bool,
}

impl InputArgs {
    pub fn read_options(&self) -> inferencelab_trace::ReadOptions {
        inferencelab_trace::ReadOptions {
            format: self.input_format,
            skip_invalid: self.skip_invalid,
        }
    }

    /// `--infer-conversations` on a trace just read (a note when it has ids already).
    pub fn infer(&self, trace: &mut inferencelab_trace::Trace) {
        if self.infer_conversations && inferencelab_trace::infer_conversations(trace).is_none() {
            eprintln!("note: --infer-conversations: the trace has conversation ids; kept them");
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// GPU-tier eviction policies, comma separated. With conversation_aware or lightgbm, lru
    /// and belady run too and the table shows the share of the LRU->Belady gap closed.
    #[arg(long, short = 'p', value_delimiter = ',', default_value = "lru",
          value_parser = PolicyParser)]
    pub eviction_policy: Vec<PolicyConfig>,
    /// conversation_aware's scorer (YAML: configs/scorer_*.yaml, or `sweep`'s scorer_best.yaml);
    /// default: the built-in defaults (configs/scorer_default.yaml).
    #[arg(long)]
    pub scorer_config: Option<PathBuf>,
    /// lightgbm's model: a LightGBM text model (`inferencelab train` writes
    /// outputs/models/lightgbm.txt, the default; Python lightgbm's save_model works too) or the
    /// calibrated policy YAML `train` writes beside it.
    #[arg(long)]
    pub lightgbm_model: Option<PathBuf>,
    /// LMCache-tier policy: lru (LMCache's default), lfu, fifo, mru are LMCache 0.5.6's own;
    /// the others are ours, for exploration; "same" = the GPU tier's policy of each run
    /// [default: lru; an LMCache lookup log without a GPU tier: same, so --eviction-policy
    /// lists the LMCache tier's policies].
    #[arg(long, value_parser = TierPolicyParser)]
    pub cpu_eviction_policy: Option<TierPolicy>,
    /// GPU KV-cache capacities in blocks, comma separated (vLLM's num_gpu_blocks).
    #[arg(long, value_delimiter = ',', conflicts_with = "gpu_cache_gb")]
    pub gpu_blocks: Vec<u64>,
    /// GPU KV-cache capacities in GiB of KV memory, comma separated (needs --model).
    #[arg(long, value_delimiter = ',')]
    pub gpu_cache_gb: Vec<NonNegative>,
    /// Tokens per GPU block (vLLM --block-size); id traces default to their own block size.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub block_size: Option<u32>,
    /// LMCache CPU tier sizes in GiB, comma separated: a grid with every policy and GPU size
    /// (LMCache max_local_cpu_size; default 5.0).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["cpu_chunks", "no_cpu_tier"])]
    pub cpu_cache_gb: Vec<NonNegative>,
    /// LMCache CPU tier size in chunks.
    #[arg(long, conflicts_with = "no_cpu_tier")]
    pub cpu_chunks: Option<u64>,
    /// Switch the LMCache CPU tier off (GPU prefix cache only).
    #[arg(long)]
    pub no_cpu_tier: bool,
    /// LMCache local disk tier size in GiB (LMCache max_local_disk_size; off by default).
    #[arg(long, conflicts_with = "disk_chunks")]
    pub disk_cache_gb: Option<NonNegative>,
    /// LMCache local disk tier size in chunks.
    #[arg(long)]
    pub disk_chunks: Option<u64>,
    /// LMCache chunk size in tokens (default 256; id traces: a multiple of their block size).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: Option<u32>,
    /// Model (registry name, model YAML or Hugging Face config.json) for bytes and FLOPs.
    #[arg(long, short = 'm', default_value = "qwen-8b")]
    pub model: String,
    /// vLLM --tensor-parallel-size: GiB sizes are one GPU's and one LMCache worker's, holding
    /// 1/N of the KV heads (all of an MLA model's latent), so they give N times the blocks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub tensor_parallel_size: u32,
    /// vLLM --pipeline-parallel-size: GiB sizes are one stage's, holding its share of the
    /// layers (the largest stage's).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub pipeline_parallel_size: u32,
    /// prefix: vLLM's leading-run hits; any: every cached block hits (classic simulators).
    #[arg(long, default_value = "prefix", value_parser = parse_semantics)]
    pub hit_semantics: HitSemantics,
    /// Do not pin the blocks of running requests (each request finishes before the next;
    /// implies --schedule trace).
    #[arg(long)]
    pub no_pinning: bool,
    /// GPU-tier model: vllm (vLLM's engine rules: null block, partial-tail and answer blocks,
    /// admission, preemption) or abstract (the classic prefix model over prompt blocks, as
    /// published prefix-cache figures and `mrc` curves use; no schedule, no answer blocks).
    #[arg(long, default_value = "vllm", value_parser = ["vllm", "abstract"])]
    pub gpu_model: String,
    /// When requests hold GPU blocks: trace (admitted at arrival, finished at the logged finish
    /// time), vllm (replayed through vLLM's scheduler in virtual time: token budget, chunked
    /// prefill, admission when the prompt fits, preemption), auto (trace when every request has
    /// a finish time, else vllm). docs/semantics.md.
    #[arg(long, default_value = "auto", value_parser = |s: &str| s.parse::<Schedule>())]
    pub schedule: Schedule,
    /// Which answer blocks requests cache (vLLM caches prompt + output - 1 tokens): auto
    /// (logged output ids, else the follow-up prompt, else blocks that never match),
    /// next-prompt, fresh, off (prompt blocks only).
    #[arg(long, default_value = "auto", value_parser = |s: &str| s.parse::<AnswerBlocks>())]
    pub answer_blocks: AnswerBlocks,
    /// vLLM --max-num-batched-tokens (token budget per step; --schedule vllm).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_num_batched_tokens: u32,
    /// vLLM --max-num-seqs (--schedule vllm).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_num_seqs: u32,
    /// Whose rules the LMCache tier follows: engine (LMCache 0.5.6's engine, the default for
    /// every input) or simulator (LMCache's own `lmcache tool cache-simulator`: one cache over
    /// chunks, every chunk touched head first, no -1, no store truncation; the LMCache tier
    /// alone). docs/semantics.md shows both.
    #[arg(long, default_value = "engine", value_parser = |s: &str| s.parse::<LmcacheRules>())]
    pub lmcache_rules: LmcacheRules,
    /// Which LMCache: inprocess (vLLM's LMCacheConnectorV1, the default; CPU + disk) or mp
    /// (`lmcache server` + LMCacheMPConnector, the only one that runs with a CPU vLLM: L1 only,
    /// evicted by a watermark pass, all-or-nothing stores). docs/semantics.md has both.
    #[arg(long, default_value = "inprocess", value_parser = |s: &str| s.parse::<LmcacheMode>())]
    pub lmcache_mode: LmcacheMode,
    /// --lmcache-mode mp: `lmcache server --eviction-trigger-watermark` (L1 usage, 0 to 1).
    #[arg(long, default_value = "0.8", value_parser = unit_interval)]
    pub lmcache_eviction_trigger_watermark: f64,
    /// --lmcache-mode mp: `lmcache server --eviction-ratio` (share of L1's keys a pass evicts).
    #[arg(long, default_value = "0.2", value_parser = unit_interval)]
    pub lmcache_eviction_ratio: f64,
    /// --lmcache-mode mp with a vLLM log: the same run's `lmcache server` log (plain or .gz).
    /// Its eviction loop then ticks when that log's `triggering eviction` lines say (and whole
    /// periods between them) instead of 1 s apart from 0.5 s after the first request.
    #[arg(long, value_name = "FILE")]
    pub lmcache_log: Option<PathBuf>,
    /// LMCache lookup-hash logs: keep only the lookups of this model_name (LMCache's
    /// simulator's --model).
    #[arg(long, value_name = "NAME")]
    pub lookup_model: Option<String>,
    /// LMCache lookup-hash logs: KV bytes of one chunk, for --cpu-cache-gb (default: from the
    /// first lookup's shapes and dtypes, as LMCache's simulator does).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub kv_bytes_per_chunk: Option<u64>,
    /// Write every request's outcome as JSON lines (request_id, prompt_tokens, gpu_hit_tokens,
    /// cpu_hit_tokens, disk_hit_tokens, lmcache_hit_tokens, admitted_s, preemptions; plus the
    /// point's policy and gpu_blocks when the run has several points).
    #[arg(long)]
    pub per_request: Option<PathBuf>,
    /// Time model when the trace has no finish times: prefill rate. It is the engine model's
    /// speed (pin lifetimes; under --schedule vllm the steps, hence the admission queue).
    #[arg(long, default_value = "10000")]
    pub prefill_tokens_per_s: Positive,
    /// Time model for pin lifetimes: milliseconds per output token.
    #[arg(long, default_value = "20")]
    pub decode_ms_per_token: NonNegative,
    /// Width of the time-series windows in seconds of trace time.
    #[arg(long, default_value = "60")]
    pub window_seconds: Positive,
    /// Print exactly one JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Summary JSON file (default: outputs/simulation/simulate_<input>_<policies>_<digest>.json,
    /// the digest of the run's flags: runs with other flags never overwrite each other).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Worker threads for grids (default: all cores; at most 1024).
    #[arg(long, value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// Many replicas behind a router (issue 21, partial: docs/replicas.md): N replicas, each
    /// with its own GPU prefix cache, scheduler and LMCache tier (one for the fleet with
    /// --lmcache-shared); every point of the grid is the size of ONE replica.
    #[arg(long, value_parser = parse_replicas)]
    pub replicas: Option<usize>,
    /// The router in front of --replicas (vllm-router's --policy names, plus kv_aware and
    /// ideal_pool as docs/replicas.md defines them).
    #[arg(long, default_value = "cache_aware", requires = "replicas",
          value_parser = clap::builder::PossibleValuesParser::new(
              inferencelab_sim::cluster::registry::names().collect::<Vec<_>>()))]
    pub router: String,
    /// The replicas' URLs as the router was given them (consistent_hash and
    /// sticky_least_loaded hash them), comma separated; default http://127.0.0.1:8001, ...
    #[arg(long, value_delimiter = ',', requires = "replicas")]
    pub router_worker_urls: Vec<String>,
    /// One LMCache tier of the configured size for the whole fleet (LMCache's remote backend):
    /// every replica stores to it and loads from it over the network (docs/replicas.md).
    /// Default: one tier per replica.
    #[arg(long, requires = "replicas")]
    pub lmcache_shared: bool,
    /// --lmcache-shared: the network's bandwidth to the shared tier, Gbit/s [default: 100]
    #[arg(long, requires = "lmcache_shared", value_name = "GBIT_PER_S")]
    pub lmcache_network_gbps: Option<f64>,
    /// --lmcache-shared: the latency of one load from the shared tier, ms [default: 0.5]
    #[arg(long, requires = "lmcache_shared", value_name = "MS")]
    pub lmcache_network_latency_ms: Option<f64>,
    /// A fleet's logs (issue 21): --input-file is replica 0's vLLM log, these the others', in
    /// the router's worker order (as --router-worker-urls); merged by time, and the report adds
    /// the assignment that actually happened (docs/replicas.md). One directory: the
    /// STEM.replicaK.log files in it, K = 1, 2, ... (as `serve --replicas` and the experiment
    /// runner name them beside replica 0's STEM.log).
    #[arg(long, num_args = 1.., requires = "replicas")]
    pub replica_logs: Vec<PathBuf>,
}

fn parse_replicas(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(format!("'{s}': give a number of replicas from 1 to 4096")),
    }
}

/// A thread count, 1 to 1024: `--threads 100000` spawned threads until the machine stalled.
pub fn parse_threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not allowed: give 1 to 1024 threads")),
    }
}

/// A number from 0 to 1 (LMCache's watermark and ratio flags).
fn unit_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number from 0 to 1")),
    }
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

fn parse_semantics(s: &str) -> Result<HitSemantics, String> {
    s.parse()
}

/// A clap parser for a type parsed by `FromStr` whose names `--help` lists as possible values
/// (so a new policy needs no help text): `--eviction-policy` ([`PolicyParser`]) and
/// `--cpu-eviction-policy` ([`TierPolicyParser`]).
#[derive(Debug)]
pub struct NamedParser<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Clone for NamedParser<T> {
    fn clone(&self) -> Self {
        NamedParser(std::marker::PhantomData)
    }
}

/// The names `--help` lists for a [`NamedParser`]'s values.
pub trait Names {
    fn names() -> Vec<&'static str>;
}

impl Names for PolicyConfig {
    fn names() -> Vec<&'static str> {
        PolicyConfig::NAMES.to_vec()
    }
}

impl Names for TierPolicy {
    fn names() -> Vec<&'static str> {
        let mut names = PolicyConfig::NAMES.to_vec();
        names.push("same");
        names
    }
}

/// `--eviction-policy` values: the registry's names and their aliases.
#[allow(non_upper_case_globals)]
pub const PolicyParser: NamedParser<PolicyConfig> = NamedParser(std::marker::PhantomData);

/// `--cpu-eviction-policy` values: a policy or `same`.
#[allow(non_upper_case_globals)]
pub const TierPolicyParser: NamedParser<TierPolicy> = NamedParser(std::marker::PhantomData);

impl<T> clap::builder::TypedValueParser for NamedParser<T>
where
    T: std::str::FromStr<Err = String> + Names + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        text.parse().map_err(|e: String| {
            let arg = arg.map_or_else(|| "...".to_string(), |a| a.to_string());
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value '{text}' for '{arg}': {e}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            T::names()
                .into_iter()
                .map(clap::builder::PossibleValue::new),
        ))
    }
}
