//! `inferencelab serve`: the emulated vLLM + LMCache server (`inferencelab_emu`).
//!
//! It stands in for `vllm serve MODEL ...`: it takes vLLM's flags that matter here and LMCache's
//! `LMCACHE_*` environment variables; any other `--flag` (and its value) is accepted with a
//! warning, so an experiment's `vllm serve` command line works unchanged.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, FromArgMatches, Parser};
use inferencelab_cache::PolicyConfig;
use inferencelab_emu::engine::{
    EngineConfig, LmcacheMode as EngineLmcacheMode, LmcacheTier, MpEviction,
};
use inferencelab_emu::kv_events::KvEventsConfig;
use inferencelab_emu::server::{self, ServerConfig};
use inferencelab_emu::timing::{GpuProfile, Timing};
use inferencelab_models as models;
use inferencelab_sim::plan;
use inferencelab_sim::resolve::PolicyFiles;
use inferencelab_trace::checked::{NonNegative, Positive, Scale, Seconds};

use super::load_policy;

/// Raw arguments: parsed by [`ServeOpts`] after unknown vLLM flags are set aside.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct ServeArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<String>,
}

/// Emulated vLLM + LMCache OpenAI-compatible server (real HTTP, real cache model, metrics, logs).
#[derive(Parser, Debug)]
#[command(name = "inferencelab serve", no_binary_name = true)]
struct ServeOpts {
    /// The model, as `vllm serve MODEL` takes it (registry name, Hugging Face id, model YAML,
    /// config.json, or a model directory: its config.json sizes the KV cache and its
    /// tokenizer.json and chat template count every token); same as --model.
    #[arg(value_name = "MODEL")]
    model_positional: Option<String>,
    /// Model for KV bytes per token and the time model.
    #[arg(long, short = 'm', default_value = "qwen-8b")]
    model: String,
    /// vLLM --tokenizer: a model directory or tokenizer.json (Hugging Face format, with the
    /// chat template beside it), or `o200k-chatml` (the embedded o200k_base ranks with ChatML
    /// specials, the CPU vLLM peer's tokenizer). Default: MODEL's when MODEL is a directory,
    /// else the built-in word tokenizer (not a model's token counts).
    #[arg(long)]
    tokenizer: Option<String>,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the bound address is printed on stderr).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// N emulated replicas in one process (issue 21), each its own engine, on ports PORT,
    /// PORT+1, ... (all on free ports with --port 0); replica k > 0 logs to
    /// LOG_FILE's `STEM.replicaK.EXT`. For a router in front (docs/replicas.md).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    replicas: u16,
    /// vLLM's --kv-events-config JSON: publish the GPU cache's BlockStored / BlockRemoved /
    /// AllBlocksCleared events on ZMQ in vLLM's wire format (docs/replicas.md), e.g.
    /// '{"enable_kv_cache_events": true, "endpoint": "tcp://*:5557"}'. With --replicas, replica
    /// k publishes on the endpoint's port + k. Hashes are the emulator's 64-bit chained block
    /// hashes, not vLLM's sha256; vllm-router's kv_aware works with them (it hashes the events'
    /// token ids itself) when `topic` is left unset (its --kv-event-source reads topic "" only).
    #[arg(long, value_parser = parse_kv_events)]
    kv_events_config: Option<KvEventsConfig>,
    /// Name clients use in `model` (default: the model as given).
    #[arg(long)]
    served_model_name: Option<String>,
    /// GPU prefix-cache eviction policy (vLLM itself has only lru).
    #[arg(long, default_value = "lru", value_parser = crate::cli::PolicyParser)]
    eviction_policy: PolicyConfig,
    /// GPU KV cache size in blocks.
    #[arg(long, conflicts_with_all = ["gpu_cache_gb", "num_gpu_blocks_override"])]
    gpu_blocks: Option<u64>,
    /// vLLM's name for --gpu-blocks.
    #[arg(long, conflicts_with = "gpu_cache_gb")]
    num_gpu_blocks_override: Option<u64>,
    /// GPU KV cache size in GiB (default: what --gpu-memory-utilization of the GPU leaves after
    /// the weights).
    #[arg(long)]
    gpu_cache_gb: Option<NonNegative>,
    /// vLLM --gpu-memory-utilization, for the default KV cache size (above 0, at most 1).
    #[arg(long, default_value_t = 0.9, value_parser = parse_fraction)]
    gpu_memory_utilization: f64,
    /// GPU memory in GiB, for the default KV cache size.
    #[arg(long, default_value = "80")]
    gpu_memory_gb: Positive,
    /// vLLM --block-size.
    #[arg(long, default_value_t = plan::VLLM_DEFAULT_BLOCK,
          value_parser = clap::value_parser!(u32).range(1..))]
    block_size: u32,
    /// vLLM --tensor-parallel-size: each GPU (and each LMCache worker) holds 1/N of the KV
    /// heads (all of MLA's latent), so GiB sizes give N times the blocks. Sizing only: the
    /// time model stays one GPU's.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    tensor_parallel_size: u32,
    /// vLLM --pipeline-parallel-size: each stage holds its share of the layers (the largest
    /// stage sizes the cache). Sizing only, as --tensor-parallel-size.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pipeline_parallel_size: u32,
    /// LMCache CPU tier size in GiB (LMCache max_local_cpu_size; env LMCACHE_MAX_LOCAL_CPU_SIZE;
    /// default 5).
    #[arg(long)]
    cpu_cache_gb: Option<NonNegative>,
    /// No LMCache tier (plain vLLM).
    #[arg(long, conflicts_with = "cpu_cache_gb")]
    no_cpu_tier: bool,
    /// LMCache chunk size (env LMCACHE_CHUNK_SIZE; default 256).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    chunk_size: Option<u32>,
    /// LMCache cache_policy (env LMCACHE_CACHE_POLICY; default lru).
    #[arg(long, value_parser = crate::cli::PolicyParser)]
    cpu_eviction_policy: Option<PolicyConfig>,
    /// Which LMCache: inprocess (LMCacheConnectorV1, the default) or mp (`lmcache server` +
    /// LMCacheMPConnector: its L1 rules, and /metrics shows its lmcache_mp_* families instead
    /// of lmcache:*). A --kv-transfer-config naming LMCacheMPConnector means mp.
    #[arg(long, value_parser = |s: &str| s.parse::<inferencelab_sim::LmcacheMode>())]
    lmcache_mode: Option<inferencelab_sim::LmcacheMode>,
    /// --lmcache-mode mp: `lmcache server --eviction-trigger-watermark` (0 to 1; 0.8).
    #[arg(long, default_value_t = 0.8, value_parser = parse_fraction)]
    lmcache_eviction_trigger_watermark: f64,
    /// --lmcache-mode mp: `lmcache server --eviction-ratio` (0 to 1; 0.2).
    #[arg(long, default_value_t = 0.2, value_parser = parse_fraction)]
    lmcache_eviction_ratio: f64,
    /// vLLM --kv-transfer-config JSON: an LMCache connector keeps the LMCache tier on, any other
    /// connector switches it off.
    #[arg(long)]
    kv_transfer_config: Option<String>,
    /// Prefill throughput at short context, tokens/s (default: from the model and the GPU).
    #[arg(long)]
    prefill_tokens_per_s: Option<Positive>,
    /// Decode step time at batch 1, ms (default: from the model and the GPU).
    #[arg(long)]
    decode_ms_per_token: Option<Positive>,
    /// GPU profile YAML (peak_flops, hbm_bytes_per_s, pcie_bytes_per_s, ...; default H100 SXM).
    #[arg(long)]
    gpu_profile: Option<PathBuf>,
    /// vLLM --max-num-batched-tokens (token budget per step).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    max_num_batched_tokens: u32,
    /// vLLM --max-num-seqs.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_num_seqs: u32,
    /// vLLM --max-model-len.
    #[arg(long, default_value_t = 32_768, value_parser = clap::value_parser!(u32).range(1..))]
    max_model_len: u32,
    /// Emulated seconds per real second (10: ten times faster than a GPU), 1e-6 to 1e6; 0: no
    /// pacing at all.
    #[arg(long, default_value_t = 1.0, value_parser = parse_time_scale)]
    time_scale: f64,
    /// Seed of the generated tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Require `Authorization: Bearer KEY` on /v1 (env VLLM_API_KEY).
    #[arg(long)]
    api_key: Option<String>,
    /// Log every request (vLLM's request_logger lines, at DEBUG and INFO).
    #[arg(long)]
    enable_log_requests: bool,
    /// With --enable-log-requests: log a streamed response token by token as vLLM 0.32 does
    /// (a `(streaming delta)` line pair per token, then `(streaming complete)` without ids), so
    /// `simulate` knows when each token was sampled. Without it a response is logged once, at
    /// its end, with all its token ids.
    #[arg(long)]
    enable_log_outputs: bool,
    /// Report usage.prompt_tokens_details.cached_tokens.
    #[arg(long)]
    enable_prompt_tokens_details: bool,
    /// Log at most this many prompt characters and token ids.
    #[arg(long)]
    max_log_len: Option<usize>,
    /// Write the log here instead of stdout.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Digits of the second in vLLM's log stamps (vLLM writes 0; 6 gives `simulate` the
    /// server's arrival and finish times to the microsecond).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=6))]
    log_time_decimals: u8,
    /// Largest request body accepted (bytes).
    #[arg(long, default_value_t = 16 << 20)]
    max_request_bytes: usize,
    /// Seconds in-flight requests may take to finish after SIGTERM before they are cut.
    #[arg(long, default_value = "30")]
    shutdown_grace_s: Seconds,
    /// Close a connection that sends no request headers for this many seconds (idle keep-alive
    /// connections too), as vLLM's uvicorn does (env VLLM_HTTP_TIMEOUT_KEEP_ALIVE; default 5;
    /// 0: never).
    #[arg(long)]
    http_timeout_keep_alive: Option<Seconds>,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not allowed: give a fraction above 0, at most 1"
        )),
    }
}

/// 0 (no pacing) or a [`Scale`].
fn parse_time_scale(s: &str) -> Result<f64, String> {
    if s.trim().parse::<f64>() == Ok(0.0) {
        return Ok(0.0);
    }
    s.parse::<Scale>()
        .map(Scale::get)
        .map_err(|e| format!("{e} (or 0: no pacing)"))
}

/// Split off the flags `ServeOpts` does not know (with the value that follows them, if it does
/// not look like a flag), returning (known args, ignored flags).
fn split_unknown(args: &[String]) -> (Vec<String>, Vec<String>) {
    let cmd = ServeOpts::command();
    let known: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let takes_value = |name: &str| {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(name))
            .is_some_and(|a| a.get_action().takes_values())
    };
    let mut keep = Vec::new();
    let mut ignored = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(flag) = a.strip_prefix("--") {
            let name = flag.split('=').next().unwrap_or(flag);
            if name == "help" || known.iter().any(|k| k == name) {
                keep.push(a.clone());
                if !flag.contains('=') && takes_value(name) {
                    if let Some(v) = args.get(i + 1) {
                        keep.push(v.clone());
                        i += 1;
                    }
                }
            } else {
                ignored.push(a.clone());
                if !flag.contains('=') && args.get(i + 1).is_some_and(|v| !v.starts_with("--")) {
                    ignored.push(args[i + 1].clone());
                    i += 1;
                }
            }
        } else {
            keep.push(a.clone());
        }
        i += 1;
    }
    (keep, ignored)
}

fn env<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{name}={v}: {e}")),
        _ => Ok(None),
    }
}

pub fn run(raw: ServeArgs) -> anyhow::Result<()> {
    let (known, ignored) = split_unknown(&raw.args);
    if !ignored.is_empty() {
        eprintln!(
            "warning: inferencelab serve ignores these vLLM arguments: {}",
            ignored.join(" ")
        );
    }
    let matches = ServeOpts::command()
        .try_get_matches_from(&known)
        .map_err(|e| {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        })
        .unwrap_or_else(|()| unreachable!());
    let o = ServeOpts::from_arg_matches(&matches)?;
    let model_name = o
        .model_positional
        .clone()
        .unwrap_or_else(|| o.model.clone());
    let model_dir = std::path::Path::new(&model_name)
        .is_dir()
        .then(|| PathBuf::from(&model_name));
    let model = match &model_dir {
        Some(d) => models::resolve(&d.join("config.json").to_string_lossy())
            .with_context(|| format!("model directory {}", d.display()))?,
        None => models::resolve(&model_name)?,
    }
    .with_parallelism(o.tensor_parallel_size, o.pipeline_parallel_size);
    let gpu: GpuProfile = match &o.gpu_profile {
        Some(p) => serde_norway::from_str(
            &inferencelab_trace::fsutil::read_input_string(p)
                .with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("--gpu-profile {}", p.display()))?,
        None => GpuProfile::default(),
    };
    let timing = Timing::derive(
        &model,
        &gpu,
        o.prefill_tokens_per_s.map(Positive::get),
        o.decode_ms_per_token.map(Positive::get),
    );
    let num_gpu_blocks = num_gpu_blocks(&o, &model)?;
    let lmcache = lmcache_tier(&o, &model)?;
    let served = o
        .served_model_name
        .clone()
        .unwrap_or_else(|| model_name.clone());
    let mut engine = EngineConfig::new(model, timing, num_gpu_blocks);
    engine.block_size = o.block_size;
    engine.gpu_policy = load_policy(o.eviction_policy.clone(), &PolicyFiles::default())
        .context("--eviction-policy")?;
    engine.lmcache = lmcache;
    engine.max_num_batched_tokens = o.max_num_batched_tokens.max(1);
    engine.max_num_seqs = o.max_num_seqs.max(1);
    let mut cfg = ServerConfig::new(engine, &served);
    cfg.max_model_len = o.max_model_len;
    cfg.time_scale = o.time_scale;
    cfg.seed = o.seed;
    cfg.api_key = o
        .api_key
        .clone()
        .or_else(|| std::env::var("VLLM_API_KEY").ok().filter(|k| !k.is_empty()));
    cfg.enable_log_requests = o.enable_log_requests;
    cfg.enable_log_outputs = o.enable_log_outputs;
    cfg.enable_prompt_tokens_details = o.enable_prompt_tokens_details;
    cfg.max_log_len = o.max_log_len;
    cfg.log_time_decimals = o.log_time_decimals;
    cfg.max_request_bytes = o.max_request_bytes;
    cfg.shutdown_grace = o.shutdown_grace_s.duration();
    let keep_alive = match o.http_timeout_keep_alive {
        Some(s) => s,
        None => env::<Seconds>("VLLM_HTTP_TIMEOUT_KEEP_ALIVE")?
            .unwrap_or(Seconds::try_from(5.0).map_err(anyhow::Error::msg)?),
    };
    cfg.keep_alive_timeout = (keep_alive.get() > 0.0).then(|| keep_alive.duration());
    cfg.kv_events = o.kv_events_config.clone();
    cfg.log = Some(match &o.log_file {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout()),
    });
    let tokenizer_spec = o.tokenizer.clone().or_else(|| {
        model_dir
            .as_ref()
            .filter(|d| d.join("tokenizer.json").is_file())
            .map(|d| d.to_string_lossy().into_owned())
    });
    cfg.tokenizer = match &tokenizer_spec {
        Some(spec) => inferencelab_emu::tokenizer::load(spec)
            .map_err(|e| anyhow::anyhow!("--tokenizer {e}"))?,
        None => Arc::new(inferencelab_emu::tokenizer::WordTokenizer::default()),
    };
    if model_dir.is_some() {
        cfg.model_root = model_name.clone();
    }
    eprintln!(
        "inferencelab serve: tokenizer: {}",
        cfg.tokenizer.describe()
    );
    if o.host != "127.0.0.1" && o.host != "localhost" && o.host != "::1" {
        eprintln!("warning: listening on {} (not loopback)", o.host);
    }
    if o.replicas > 1 {
        return serve_replicas(&o, cfg);
    }
    server::serve_blocking(&o.host, o.port, cfg, |addr| {
        use std::io::Write;
        eprintln!("inferencelab serve: listening on http://{addr}");
        let _ = std::io::stderr().flush();
    })
    .context("inferencelab serve")
}

/// `--replicas N`: replica 0 is `cfg` (its log where --log-file says), replica k > 0 the same
/// server on the next port with its own engine and log.
fn serve_replicas(o: &ServeOpts, cfg: ServerConfig) -> anyhow::Result<()> {
    let n = o.replicas;
    if o.port != 0 && o.port.checked_add(n - 1).is_none() {
        bail!("--port {} --replicas {n}: the ports run past 65535", o.port);
    }
    let ports: Vec<u16> = (0..n)
        .map(|k| if o.port == 0 { 0 } else { o.port + k })
        .collect();
    let mut configs = Vec::with_capacity(n as usize);
    for k in 1..n {
        let log: inferencelab_emu::core::LogSink = match &o.log_file {
            Some(p) => {
                let stem = p
                    .file_stem()
                    .map_or("serve".into(), |s| s.to_string_lossy());
                let name = match p.extension() {
                    Some(e) => format!("{stem}.replica{k}.{}", e.to_string_lossy()),
                    None => format!("{stem}.replica{k}"),
                };
                let path = p.with_file_name(name);
                Box::new(
                    std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )
            }
            None => Box::new(std::io::stdout()),
        };
        let mut c = cfg.replica(Some(log));
        c.kv_events = match &cfg.kv_events {
            Some(kv) => Some(replica_endpoint(kv, k)?),
            None => None,
        };
        configs.push(c);
    }
    configs.insert(0, cfg);
    server::serve_replicas_blocking(&o.host, &ports, configs, |k, addr| {
        use std::io::Write;
        eprintln!("inferencelab serve: replica {k} listening on http://{addr}");
        let _ = std::io::stderr().flush();
    })
    .context("inferencelab serve --replicas")
}

fn parse_kv_events(s: &str) -> Result<KvEventsConfig, String> {
    KvEventsConfig::parse(s)
}

/// Replica `k`'s KV events endpoint: the given one's port + k (`tcp://*:5557` -> `:5558` for
/// replica 1); an endpoint without a port number (`ipc://`) cannot be shared.
fn replica_endpoint(kv: &KvEventsConfig, k: u16) -> anyhow::Result<KvEventsConfig> {
    let mut c = kv.clone();
    if !kv.publishes() {
        return Ok(c);
    }
    let (head, port) = kv
        .endpoint
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .with_context(|| {
            format!(
                "--kv-events-config endpoint {} with --replicas: give a tcp endpoint with a \
                 port (replica k publishes on port + k)",
                kv.endpoint
            )
        })?;
    let p = if port == 0 {
        0
    } else {
        port.checked_add(k).with_context(|| {
            format!(
                "--kv-events-config endpoint {}: port + {k} passes 65535",
                kv.endpoint
            )
        })?
    };
    c.endpoint = format!("{head}:{p}");
    Ok(c)
}

/// vLLM's `num_gpu_blocks`: given, or from GiB of KV memory, or what is left of the GPU's
/// memory after one rank's share of the weights.
fn num_gpu_blocks(o: &ServeOpts, model: &models::ModelSpec) -> anyhow::Result<u64> {
    Ok(
        match (o.gpu_blocks.or(o.num_gpu_blocks_override), o.gpu_cache_gb) {
            (Some(n), _) => n,
            (None, Some(gb)) => model.blocks_in_gib(gb.get(), o.block_size),
            (None, None) => {
                // one GPU's share of the weights
                let ranks = o.tensor_parallel_size as f64 * o.pipeline_parallel_size as f64;
                let weights_gib =
                    model.num_params * model.dtype_bytes as f64 / (1u64 << 30) as f64 / ranks;
                let kv_gib = o.gpu_memory_gb.get() * o.gpu_memory_utilization - weights_gib;
                if kv_gib <= 0.0 {
                    bail!(
                        "{} does not fit in {} GiB at --gpu-memory-utilization {}: give \
                     --gpu-blocks or --gpu-cache-gb",
                        model.name,
                        o.gpu_memory_gb,
                        o.gpu_memory_utilization
                    );
                }
                model.blocks_in_gib(kv_gib, o.block_size)
            }
        },
    )
}

/// The LMCache tier the flags, `--kv-transfer-config` and LMCache's environment describe
/// (`None`: off).
fn lmcache_tier(o: &ServeOpts, model: &models::ModelSpec) -> anyhow::Result<Option<LmcacheTier>> {
    let mp_connector = o.kv_transfer_config.as_deref().is_some_and(|j| {
        serde_json::from_str::<serde_json::Value>(j)
            .is_ok_and(|v| v["kv_connector"] == "LMCacheMPConnector")
    });
    let mode = match (o.lmcache_mode, mp_connector) {
        (Some(inferencelab_sim::LmcacheMode::Inprocess), true) => bail!(
            "--lmcache-mode inprocess with --kv-transfer-config LMCacheMPConnector: the \
             connector is the multi-process one; drop one of them"
        ),
        (Some(m), _) => m,
        (None, true) => inferencelab_sim::LmcacheMode::Mp,
        (None, false) => inferencelab_sim::LmcacheMode::Inprocess,
    };
    let connector_is_lmcache = match &o.kv_transfer_config {
        None => true,
        Some(j) => {
            let v: serde_json::Value =
                serde_json::from_str(j).context("--kv-transfer-config is not JSON")?;
            let name = v["kv_connector"].as_str().unwrap_or_default();
            if !name.contains("LMCache") {
                eprintln!(
                    "warning: --kv-transfer-config names connector {name:?}: the LMCache tier is \
                     off (only LMCache connectors are emulated)"
                );
            }
            name.contains("LMCache")
        }
    };
    Ok(if o.no_cpu_tier || !connector_is_lmcache {
        None
    } else {
        let chunk_size = match o.chunk_size {
            Some(c) => c,
            None => env("LMCACHE_CHUNK_SIZE")?.unwrap_or(plan::LMCACHE_DEFAULT_CHUNK),
        };
        if chunk_size == 0 {
            bail!("LMCACHE_CHUNK_SIZE=0: the LMCache chunk size must be positive");
        }
        let gb = match o.cpu_cache_gb {
            Some(g) => g.get(),
            None => env::<NonNegative>("LMCACHE_MAX_LOCAL_CPU_SIZE")?
                .map_or(plan::LMCACHE_DEFAULT_CPU_GB, NonNegative::get),
        };
        let policy = match &o.cpu_eviction_policy {
            Some(p) => {
                load_policy(p.clone(), &PolicyFiles::default()).context("--cpu-eviction-policy")?
            }
            None => match std::env::var("LMCACHE_CACHE_POLICY") {
                Ok(p) if !p.trim().is_empty() => load_policy(
                    p.parse()
                        .map_err(|e: String| anyhow::anyhow!("LMCACHE_CACHE_POLICY: {e}"))?,
                    &PolicyFiles::default(),
                )
                .context("LMCACHE_CACHE_POLICY")?,
                _ => PolicyConfig::Lru,
            },
        };
        let mode = match mode {
            inferencelab_sim::LmcacheMode::Inprocess => EngineLmcacheMode::InProcess,
            inferencelab_sim::LmcacheMode::Mp => {
                EngineLmcacheMode::Mp(MpEviction {
                    trigger_watermark: o.lmcache_eviction_trigger_watermark,
                    eviction_ratio: o.lmcache_eviction_ratio,
                    // the usage ratio is bytes over bytes, as simulate's
                    l1_size_chunks: model.lmcache_chunks_in_gib_unrounded(gb, chunk_size),
                })
            }
        };
        Some(LmcacheTier {
            chunk_size,
            num_chunks: model.lmcache_chunks_in_gib(gb, chunk_size),
            policy,
            mode,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn unknown_vllm_flags_are_set_aside_with_their_values() {
        let (keep, ignored) = split_unknown(&s(&[
            "Qwen/Qwen3-8B",
            "--port",
            "8101",
            "--swap-space",
            "4",
            "--trust-remote-code",
            "--enable-log-requests",
            "--dtype=bfloat16",
            "--block-size",
            "16",
        ]));
        assert_eq!(
            keep,
            s(&[
                "Qwen/Qwen3-8B",
                "--port",
                "8101",
                "--enable-log-requests",
                "--block-size",
                "16"
            ])
        );
        assert_eq!(
            ignored,
            s(&[
                "--swap-space",
                "4",
                "--trust-remote-code",
                "--dtype=bfloat16"
            ])
        );
        let m = ServeOpts::command().try_get_matches_from(&keep).unwrap();
        let o = ServeOpts::from_arg_matches(&m).unwrap();
        assert_eq!(o.port, 8101);
        assert_eq!(o.model_positional.as_deref(), Some("Qwen/Qwen3-8B"));
        assert!(o.enable_log_requests);
    }
}
