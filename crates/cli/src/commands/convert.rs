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
use inferencelab_sim::models;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Conversation CSV, one row per turn (schema: README, "inferencelab convert").
    #[arg(required_unless_present = "generate_demo")]
    pub csv: Option<PathBuf>,
    /// Model: registry name (qwen-8b, llama-8b, ...), model YAML or Hugging Face config.json.
    /// Picks the chat template and the tokenizer, and names the output files.
    #[arg(required_unless_present = "generate_demo")]
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
    let out = write_outputs(&workload, &args.output_dir, &model.name, args.seed)?;
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
