//! `inferencelab convert`: a conversation CSV -> `server_<MODEL>.log` (vLLM request-logging
//! format) and `trace_<MODEL>.jsonl` (native trace) on a synthetic timeline; and
//! `convert --generate-demo N` for the bundled demo CSV. The work is in `inferencelab-convert`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use inferencelab_convert::workload::{
    DEFAULT_ARRIVAL_RATE, DEFAULT_PREFILL_TOKENS_PER_SECOND, DEFAULT_THINK_SIGMA,
};
use inferencelab_convert::{
    build_workload, load_tokenizer, read_csv, write_demo_csv, write_outputs, ChatTemplate,
    ColumnNames, TimelineConfig,
};
use inferencelab_models as models;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Conversation CSV, one row per turn (schema: docs/convert.md, "The CSV schema").
    #[arg(required_unless_present_any = ["generate_demo", "lmcache_lookup_from"])]
    pub csv: Option<PathBuf>,
    /// Model: registry name (qwen-8b, llama-8b, ...), model YAML or Hugging Face config.json.
    /// Picks the chat template and the tokenizer, and names the output files.
    #[arg(required_unless_present_any = ["generate_demo", "lmcache_lookup_from"])]
    pub model: Option<String>,
    /// Decode speed of the synthetic server: output tokens per second per request.
    #[arg(long, default_value_t = 100.0)]
    pub tokens_per_second: f64,
    /// Prefill speed of the synthetic server: prompt tokens per second.
    #[arg(long, default_value_t = DEFAULT_PREFILL_TOKENS_PER_SECOND)]
    pub prefill_tokens_per_second: f64,
    /// Where to write server_<MODEL>.log and trace_<MODEL>.jsonl.
    #[arg(long, default_value = "outputs/logs")]
    pub output_dir: PathBuf,
    /// Hugging Face tokenizer.json (default: the model's, from the local Hugging Face cache;
    /// else the embedded o200k_base tokenizer).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Chat template shape: chatml, llama3 or mistral (default: from the model's family).
    #[arg(long, value_parser = parse_template)]
    pub chat_template: Option<ChatTemplate>,
    /// Median think time in seconds between a response and the user's next turn (log-normal).
    /// Default: from the CSV's timestamps when it has them, else a median of 10 s.
    #[arg(long)]
    pub think_time: Option<f64>,
    /// Sigma of the log-normal think time (0: always the median).
    #[arg(long, default_value_t = DEFAULT_THINK_SIGMA)]
    pub think_time_sigma: f64,
    /// New conversations per second (Poisson) when the CSV has no timestamps.
    #[arg(long, default_value_t = DEFAULT_ARRIVAL_RATE)]
    pub arrival_rate: f64,
    /// Seed for request ids, think times, arrivals and --generate-demo.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CSV column of the conversation id [default: conversation_id].
    #[arg(long)]
    pub column_conversation: Option<String>,
    /// CSV column of the time the user sent the turn [default: timestamp; optional].
    #[arg(long)]
    pub column_timestamp: Option<String>,
    /// CSV column of the user message [default: user_message].
    #[arg(long)]
    pub column_user: Option<String>,
    /// CSV column of the assistant's answer [default: assistant_response].
    #[arg(long)]
    pub column_assistant: Option<String>,
    /// CSV column of the system prompt, read from a conversation's first row
    /// [default: system_prompt; optional].
    #[arg(long)]
    pub column_system: Option<String>,
    /// Instead of converting: print N synthetic demo conversations as CSV on stdout
    /// (how data/test_data.csv is made; see data/README.md).
    #[arg(long, value_name = "N", conflicts_with_all = ["csv", "model"])]
    pub generate_demo: Option<usize>,
    /// Instead of converting a CSV: write this trace (any input format with token or block
    /// ids) as LMCache lookup-hash logs (lookup_hashes_*.jsonl) in --output-dir, one lookup per
    /// request (docs/lmcache-lookup.md).
    #[arg(long, value_name = "TRACE", conflicts_with_all = ["csv", "model", "generate_demo"])]
    pub lmcache_lookup_from: Option<PathBuf>,
    /// --lmcache-lookup-from: LMCache chunk size in tokens [default: 256; id traces: a
    /// multiple of their block size].
    #[arg(long, requires = "lmcache_lookup_from", value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: Option<u32>,
    /// --lmcache-lookup-from: copies of the trace one after the other, each with its own
    /// hashes (to reach a size: the bundled Mooncake trace x 26 = 103,818 lookups).
    #[arg(long, default_value_t = 1, requires = "lmcache_lookup_from", value_parser = clap::value_parser!(u32).range(1..))]
    pub copies: u32,
    /// --lmcache-lookup-from: the model whose KV shape the lookups carry (model_name, shapes,
    /// dtypes).
    #[arg(long, default_value = "qwen-8b", requires = "lmcache_lookup_from")]
    pub lookup_model: String,
}

fn parse_template(s: &str) -> Result<ChatTemplate, String> {
    s.parse()
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    if let Some(n) = args.generate_demo {
        let stdout = std::io::stdout().lock();
        let stats = write_demo_csv(n, args.seed, stdout).context("writing the demo CSV")?;
        eprintln!(
            "generated {} conversations, {} turns (seed {})",
            stats.conversations, stats.turns, args.seed
        );
        return Ok(());
    }
    if let Some(trace) = &args.lmcache_lookup_from {
        return write_lookup_log(trace, &args);
    }
    let (Some(csv), Some(model_arg)) = (args.csv, args.model) else {
        anyhow::bail!("give the CSV and the model: inferencelab convert CSV MODEL");
    };
    let started = Instant::now();
    let model = models::resolve(&model_arg)?;
    let template = args
        .chat_template
        .unwrap_or_else(|| ChatTemplate::for_family(model.tokenizer_family.as_deref()));
    let columns = ColumnNames {
        conversation: args.column_conversation,
        timestamp: args.column_timestamp,
        user: args.column_user,
        assistant: args.column_assistant,
        system: args.column_system,
    };
    let set = read_csv(&csv, &columns)?;
    let loaded = load_tokenizer(args.tokenizer.as_deref(), model.hf_id.as_deref())?;
    if let Some(reason) = &loaded.fallback_reason {
        eprintln!(
            "note: {reason}; using the embedded o200k_base tokenizer instead (token ids and \
             counts are approximate; pass --tokenizer tokenizer.json for exact ones)"
        );
    }
    let cfg = TimelineConfig {
        tokens_per_second: args.tokens_per_second,
        prefill_tokens_per_second: args.prefill_tokens_per_second,
        think_time: args.think_time,
        think_time_sigma: args.think_time_sigma,
        arrival_rate: args.arrival_rate,
        seed: args.seed,
    };
    let workload = build_workload(set, &loaded.tokenizer, template, &cfg)?;
    let served = model.hf_id.as_deref().unwrap_or(&model.name);
    let out = write_outputs(&workload, &args.output_dir, &model.name, served, args.seed)?;
    let trace = &workload.trace;
    println!(
        "{}: {} conversations, {} requests, {} prompt tokens, {} output tokens over {:.0} s \
         (chat template {}, tokenizer {}) in {:.1} s",
        csv.display(),
        workload.conversations,
        trace.requests.len(),
        trace.total_prompt_tokens(),
        workload.output_tokens,
        workload.duration(),
        template,
        workload.tokenizer,
        started.elapsed().as_secs_f64()
    );
    println!("wrote {}", out.log.display());
    println!("wrote {}", out.trace.display());
    Ok(())
}

/// `convert --lmcache-lookup-from TRACE`: the trace as LMCache lookup-hash logs.
fn write_lookup_log(path: &std::path::Path, args: &ConvertArgs) -> anyhow::Result<()> {
    use inferencelab_trace::readers::lmcache_lookup::{write_dir, WriteOptions};
    let started = Instant::now();
    let trace = inferencelab_trace::read_trace(path, &Default::default())?;
    if !trace.has_reuse_info() {
        anyhow::bail!(
            "{} has no token or block ids: a lookup-hash log needs the prompts' prefix structure",
            path.display()
        );
    }
    let model = models::resolve(&args.lookup_model)?;
    let chunk_size = args
        .chunk_size
        .unwrap_or_else(|| inferencelab_sim::plan::default_chunk_size(&trace));
    // one chunk's KV as one tensor: K and V x layers x tokens x (KV heads x head size), or an
    // MLA model's latent; its bytes are `kv_bytes_per_token * chunk_size`
    let per_token_elems = model.kv_bytes_per_token() / u64::from(model.dtype_bytes.max(1));
    let dtype = match model.dtype_bytes {
        1 => "float8_e4m3fn",
        4 => "float32",
        _ => "bfloat16",
    };
    let opts = WriteOptions {
        chunk_size,
        copies: args.copies,
        model_name: model.hf_id.clone().unwrap_or_else(|| model.name.clone()),
        shapes: vec![vec![
            u64::from(model.num_layers),
            u64::from(chunk_size),
            per_token_elems / u64::from(model.num_layers.max(1)),
        ]],
        dtypes: vec![dtype.to_string()],
        start_unix_s: 1_775_000_000.0,
        rotate_bytes: 100 * 1024 * 1024,
    };
    let written = write_dir(&trace, &args.output_dir, &opts)?;
    println!(
        "{}: {} lookups ({} requests x {} copies), chunk size {chunk_size}, {} KV bytes per \
         chunk ({}), {} file(s) in {} in {:.1} s",
        path.display(),
        written.lookups,
        trace.requests.len(),
        args.copies,
        model.kv_bytes_per_token() * u64::from(chunk_size),
        model.name,
        written.files.len(),
        args.output_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
