//! `vllm bench serve`'s flags on `bench` (issue 16): a vLLM user's command line runs unchanged.
//! Each flag of vLLM 0.33's `bench serve` that applies to an OpenAI-compatible server is either
//! mapped onto ours ([`apply`]), accepted because ours already behaves so (noted once), or
//! refused with a message naming our equivalent. `docs/bench-vllm-flags.md` lists them all;
//! `tests/bench_vllm_flags.rs` parses every one against a captured `vllm bench serve --help=all`.
//!
//! Datasets: `--dataset-name random` is our random mode; `sharegpt` reads vLLM's ShareGPT JSON
//! (`--dataset-path`), multi-turn conversations kept as conversations (our multi-turn replay on
//! the chat endpoint: each turn sent with the history, the server's own answers in it); `custom`
//! reads vLLM's custom JSONL (`{"prompt": ..., "output_tokens": N}`, one single-turn conversation
//! per line). Other datasets are refused, naming `--input-file`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use inferencelab_bench::conversations::estimate_tokens;
use inferencelab_bench::workload::{ConversationSpec, TurnSpec};

use super::{BenchArgs, Mode};

/// vLLM `bench serve` flags that have no flag of ours under the same name.
#[derive(Args, Debug, Clone, Default)]
pub struct VllmFlags {
    /// vLLM: vllm, openai (/v1/completions) or openai-chat (/v1/chat/completions).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub backend: Option<String>,
    /// vLLM: /v1/completions or /v1/chat/completions.
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub endpoint: Option<String>,
    /// vLLM: random (our random mode), sharegpt or custom (with --dataset-path).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub dataset_name: Option<String>,
    /// vLLM: the ShareGPT JSON or custom JSONL file.
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub dataset_path: Option<PathBuf>,
    /// vLLM: which metrics' percentiles to show (ours shows ttft, tpot, itl, e2el always).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub percentile_metrics: Option<String>,
    /// vLLM: save the result JSON (ours always writes result.json).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub save_result: bool,
    /// vLLM: with per-request details (ours always writes requests.jsonl).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub save_detailed: bool,
    /// vLLM: the folder of the result JSON (ours: --output-dir).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub result_dir: Option<PathBuf>,
    /// vLLM: the result JSON's file name (a copy of result.json under that name).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub result_filename: Option<String>,
    /// vLLM: append to the result file (refused: ours writes one folder per run).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub append_result: bool,
    /// vLLM: tokenizer of the model (ours sends token ids or words and counts the server's
    /// usage; accepted, unused).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub tokenizer: Option<String>,
    #[arg(long, hide = true)]
    pub tokenizer_mode: Option<String>,
    #[arg(long, hide = true)]
    pub trust_remote_code: bool,
    #[arg(long, hide = true)]
    pub skip_tokenizer_init: bool,
    /// vLLM: server host (with --port instead of --base-url).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub host: Option<String>,
    /// vLLM: server port.
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub port: Option<u16>,
    /// vLLM: no progress bar (ours: --quiet).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub disable_tqdm: bool,
    /// vLLM: set ignore_eos (ours sends it by default for random and trace prompts).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub ignore_eos: bool,
    /// vLLM: prompt length (random dataset; ours: --random-input-len).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub input_len: Option<u32>,
    /// vLLM: output length (random dataset, or every ShareGPT/custom request).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub output_len: Option<u32>,
    /// vLLM: output tokens of every ShareGPT request (default: the recorded answer's length).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub sharegpt_output_len: Option<u32>,
    /// vLLM: output tokens of every custom-dataset request (-1 or absent: the file's).
    #[arg(
        long,
        allow_negative_numbers = true,
        help_heading = "vllm bench serve flags"
    )]
    pub custom_output_len: Option<i64>,
    #[arg(long, hide = true)]
    pub custom_ensure_client_side_data: bool,
    /// vLLM: the model name sent in requests (ours: --model).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub served_model_name: Option<String>,
    /// vLLM: warm-up requests before the run (ours warms connections; refused above 0).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub num_warmups: Option<u32>,
    /// vLLM: keep the dataset's order (ours never shuffles).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub disable_shuffle: bool,
    #[arg(long, hide = true)]
    pub no_oversample: bool,
    #[arg(long, hide = true)]
    pub no_stream: bool,
    /// vLLM: prefix of request ids (ours: our own ids; accepted, unused).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub request_id_prefix: Option<String>,
    /// vLLM: seconds to wait for the server (ours: --connect-timeout per request).
    #[arg(long, help_heading = "vllm bench serve flags")]
    pub ready_check_timeout_sec: Option<f64>,
    #[arg(long, hide = true)]
    pub skip_chat_template: bool,
    #[arg(long, hide = true)]
    pub random_range_ratio: Option<f64>,
    #[arg(long, hide = true)]
    pub random_prefix_len: Option<u32>,
    /// vLLM: extra request headers KEY=VALUE (refused: ours sends only the API key).
    #[arg(long, num_args = 0.., help_heading = "vllm bench serve flags")]
    pub header: Vec<String>,
    /// vLLM: KEY=VALUE stored in the result (refused: use --label).
    #[arg(long, num_args = 0.., help_heading = "vllm bench serve flags")]
    pub metadata: Vec<String>,
    /// vLLM: JSON for chat templates (refused: use --extra-body).
    #[arg(long, hide = true)]
    pub chat_template_kwargs: Option<String>,
    #[arg(long, hide = true)]
    pub logprobs: Option<u32>,
    #[arg(long, hide = true)]
    pub profile: bool,
    #[arg(long, hide = true)]
    pub use_beam_search: bool,
    #[arg(long, hide = true)]
    pub insecure: bool,
    #[arg(long, hide = true)]
    pub plot_timeline: bool,
    #[arg(long, hide = true)]
    pub plot_dataset_stats: bool,
    #[arg(long, hide = true)]
    pub top_p: Option<f64>,
    #[arg(long, hide = true)]
    pub top_k: Option<i64>,
    #[arg(long, hide = true)]
    pub min_p: Option<f64>,
    #[arg(long, hide = true)]
    pub temperature: Option<f64>,
    #[arg(long, hide = true)]
    pub frequency_penalty: Option<f64>,
    #[arg(long, hide = true)]
    pub presence_penalty: Option<f64>,
    #[arg(long, hide = true)]
    pub repetition_penalty: Option<f64>,
}

/// What [`apply`] decided beside the flags it rewrote.
pub struct Applied {
    /// ShareGPT or custom conversations to replay.
    pub conversations: Option<Vec<ConversationSpec>>,
    /// Copy result.json to this path after the run (`--result-filename`).
    pub result_copy: Option<PathBuf>,
}

fn refuse<T>(flag: &str, ours: &str) -> anyhow::Result<T> {
    bail!("vLLM's {flag} is not supported by inferencelab bench; {ours}")
}

/// vLLM's flags `bench` cannot honour: refused with our equivalent.
fn refuse_unsupported(v: &VllmFlags) -> anyhow::Result<()> {
    if v.append_result {
        refuse(
            "--append-result",
            "every run writes its own folder (--output-dir); `plot --summary-file` reads several",
        )?;
    }
    if !v.header.is_empty() {
        refuse(
            "--header",
            "it sends only the API key (--api-key-env) and x-request-id (--request-id-header)",
        )?;
    }
    if !v.metadata.is_empty() {
        refuse("--metadata", "give --label LABEL (stored in result.json)")?;
    }
    if v.num_warmups.is_some_and(|n| n > 0) {
        refuse(
            "--num-warmups N",
            "it opens --warmup-connections keep-alive connections before the run instead",
        )?;
    }
    if v.chat_template_kwargs.is_some() {
        refuse(
            "--chat-template-kwargs",
            "pass it in --extra-body '{\"chat_template_kwargs\": {...}}'",
        )?;
    }
    if v.profile || v.use_beam_search || v.plot_timeline || v.plot_dataset_stats {
        refuse(
            "--profile/--use-beam-search/--plot-timeline/--plot-dataset-stats",
            "run `inferencelab plot` on the result folder for charts",
        )?;
    }
    if v.random_range_ratio.is_some_and(|r| r != 0.0) || v.random_prefix_len.is_some_and(|n| n > 0)
    {
        refuse(
            "--random-range-ratio/--random-prefix-len",
            "its random prompts have exactly --random-input-len tokens; for shared prefixes \
             replay a trace (--input-file)",
        )?;
    }
    Ok(())
}

/// vLLM's sampling flags, into the request body as vLLM puts them (`--extra-body`'s own keys
/// win).
fn merge_sampling(v: &VllmFlags, args: &mut BenchArgs) -> anyhow::Result<()> {
    let mut body = serde_json::Map::new();
    let sampling = [
        ("top_p", v.top_p),
        ("min_p", v.min_p),
        ("temperature", v.temperature),
        ("frequency_penalty", v.frequency_penalty),
        ("presence_penalty", v.presence_penalty),
        ("repetition_penalty", v.repetition_penalty),
    ];
    for (k, x) in sampling {
        if let Some(x) = x {
            body.insert(k.into(), serde_json::json!(x));
        }
    }
    if let Some(k) = v.top_k {
        body.insert("top_k".into(), serde_json::json!(k));
    }
    if let Some(n) = v.logprobs {
        body.insert("logprobs".into(), serde_json::json!(n));
    }
    if !body.is_empty() {
        let mut merged = match &args.extra_body {
            Some(s) => match serde_json::from_str::<serde_json::Value>(s) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => bail!("--extra-body must be a JSON object, e.g. '{{\"temperature\":0}}'"),
            },
            None => serde_json::Map::new(),
        };
        for (k, x) in body {
            merged.entry(k).or_insert(x);
        }
        args.extra_body = Some(serde_json::Value::Object(merged).to_string());
    }
    Ok(())
}

/// Map the vLLM flags onto ours (notes on stderr), or refuse the ones we cannot honour.
pub fn apply(args: &mut BenchArgs) -> anyhow::Result<Applied> {
    let v = std::mem::take(&mut args.vllm);
    let mut notes: Vec<String> = Vec::new();
    if let Some(b) = &v.backend {
        match b.as_str() {
            "vllm" | "openai" | "openai-chat" => {}
            other => refuse(
                &format!("--backend {other}"),
                "it loads /v1/completions (--backend vllm or openai) and /v1/chat/completions \
                 (openai-chat, or a conversation dataset)",
            )?,
        }
    }
    let chat = match (v.endpoint.as_deref(), v.backend.as_deref()) {
        (Some("/v1/chat/completions"), _) | (None, Some("openai-chat")) => true,
        (Some("/v1/completions") | None, _) => false,
        (Some(e), _) => refuse(
            &format!("--endpoint {e}"),
            "it loads /v1/completions and /v1/chat/completions",
        )?,
    };
    if let Some(h) = &v.host {
        if args.base_url.is_some() {
            bail!("give --base-url or --host/--port, not both");
        }
        args.base_url = Some(format!("http://{h}:{}", v.port.unwrap_or(8000)));
    } else if let Some(p) = v.port {
        if args.base_url.is_some() {
            bail!("give --base-url or --host/--port, not both");
        }
        args.base_url = Some(format!("http://127.0.0.1:{p}"));
    }
    if let Some(m) = &v.served_model_name {
        args.model.get_or_insert_with(|| m.clone());
    }
    if v.disable_tqdm {
        args.quiet = true;
    }
    if let Some(n) = v.input_len {
        args.random_input_len = n;
    }
    if let Some(d) = &v.result_dir {
        if args.output_dir.is_some() {
            bail!("give --output-dir or --result-dir, not both");
        }
        args.output_dir = Some(d.clone());
    }
    refuse_unsupported(&v)?;
    merge_sampling(&v, args)?;
    if v.percentile_metrics.is_some() {
        notes.push("--percentile-metrics: ttft, tpot, itl and e2el are all reported".into());
    }
    if v.tokenizer.is_some() {
        notes.push(
            "--tokenizer: not needed (prompts are token ids or words; token counts come from \
             the server's usage)"
                .into(),
        );
    }
    let mut conversations = None;
    match v.dataset_name.as_deref() {
        None | Some("random") => {
            if v.dataset_name.is_some() {
                if args.input_file.is_some() {
                    bail!("--dataset-name random takes no --input-file");
                }
                args.mode = Some(Mode::Random);
            }
            if let Some(n) = v.output_len {
                args.random_output_len = n;
            }
            if chat && args.input_file.is_none() {
                refuse(
                    "the random dataset on /v1/chat/completions",
                    "it sends random prompts as token ids to /v1/completions; use --backend vllm",
                )?;
            }
        }
        Some(name @ ("sharegpt" | "custom")) => {
            let Some(path) = &v.dataset_path else {
                bail!("--dataset-name {name} needs --dataset-path FILE");
            };
            if args.input_file.is_some() {
                bail!("give --dataset-path or --input-file, not both");
            }
            let convs = if name == "sharegpt" {
                read_sharegpt(path, v.sharegpt_output_len.or(v.output_len))?
            } else {
                let given = v.custom_output_len.filter(|&n| n >= 0).map(|n| n as u32);
                read_custom(path, given.or(v.output_len))?
            };
            if let Some(n) = args.num_prompts {
                notes.push(format!(
                    "--num-prompts {n}: the first {n} conversations of {} (in file order)",
                    path.display()
                ));
            }
            let limit = args.num_prompts.map_or(usize::MAX, |n| n as usize);
            conversations = Some(convs.into_iter().take(limit).collect());
            if !chat {
                notes.push(format!(
                    "--dataset-name {name}: replayed as conversations on /v1/chat/completions \
                     (each turn with its history), not as single prompts on /v1/completions"
                ));
            }
        }
        Some(other) => refuse(
            &format!("--dataset-name {other}"),
            "it reads random, sharegpt and custom datasets, and traces with --input-file \
             (vLLM logs, Mooncake, Bailian, WEKA, Azure, LMCache lookup logs, native)",
        )?,
    }
    for n in notes {
        eprintln!("note: {n}");
    }
    let result_copy = v.result_filename.map(|f| {
        let dir = args
            .output_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."));
        dir.join(f)
    });
    Ok(Applied {
        conversations,
        result_copy,
    })
}

/// vLLM's ShareGPT JSON: `[{"id": .., "conversations": [{"from": "human"|"gpt"|"system",
/// "value": ..}, ..]}, ..]`. Each entry is one conversation: its human turns are sent in order
/// with the history; a gpt turn is the recorded answer (its length, or `--output-len`, sets
/// `max_tokens`). Entries with no human turn are skipped.
pub fn read_sharegpt(
    path: &Path,
    output_len: Option<u32>,
) -> anyhow::Result<Vec<ConversationSpec>> {
    #[derive(serde::Deserialize)]
    struct Msg {
        from: String,
        value: String,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        id: Option<serde_json::Value>,
        conversations: Vec<Msg>,
    }
    let text = inferencelab_trace::fsutil::read_input_string(path)
        .with_context(|| format!("--dataset-path {}", path.display()))?;
    let entries: Vec<Entry> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "--dataset-path {}: not a ShareGPT JSON array of {{\"conversations\": [...]}}: {e}",
            path.display()
        )
    })?;
    let mut out = Vec::new();
    for (i, e) in entries.into_iter().enumerate() {
        let mut system = None;
        let mut turns: Vec<TurnSpec> = Vec::new();
        for m in e.conversations {
            match m.from.as_str() {
                "system" => system = Some(m.value),
                "human" | "user" => turns.push(TurnSpec {
                    user: m.value,
                    reference_answer: String::new(),
                    max_tokens: output_len.unwrap_or(0),
                    timestamp: None,
                    think_s: 0.0,
                }),
                _ => {
                    if let Some(t) = turns.last_mut() {
                        if t.reference_answer.is_empty() {
                            t.max_tokens = output_len.unwrap_or_else(|| estimate_tokens(&m.value));
                            t.reference_answer = m.value;
                        }
                    }
                }
            }
        }
        for t in &mut turns {
            if t.max_tokens == 0 {
                t.max_tokens = output_len.unwrap_or(128);
            }
        }
        if turns.is_empty() {
            continue;
        }
        let id = match e.id {
            Some(serde_json::Value::String(s)) => s,
            Some(v) => v.to_string(),
            None => i.to_string(),
        };
        out.push(ConversationSpec { id, system, turns });
    }
    if out.is_empty() {
        bail!(
            "--dataset-path {}: no conversation with a human turn",
            path.display()
        );
    }
    Ok(out)
}

/// vLLM's custom dataset: JSONL of `{"prompt": TEXT, "output_tokens": N}` (other keys
/// ignored), one single-turn conversation per line.
pub fn read_custom(path: &Path, output_len: Option<u32>) -> anyhow::Result<Vec<ConversationSpec>> {
    #[derive(serde::Deserialize)]
    struct Line {
        prompt: String,
        #[serde(default)]
        output_tokens: Option<u32>,
    }
    let text = inferencelab_trace::fsutil::read_input_string(path)
        .with_context(|| format!("--dataset-path {}", path.display()))?;
    let mut out = Vec::new();
    for (n, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let rec: Line = serde_json::from_str(l).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not a custom-dataset line {{\"prompt\": ..., \"output_tokens\": N}}: {e}",
                path.display(),
                n + 1
            )
        })?;
        out.push(ConversationSpec {
            id: (n + 1).to_string(),
            system: None,
            turns: vec![TurnSpec {
                user: rec.prompt,
                reference_answer: String::new(),
                max_tokens: output_len.or(rec.output_tokens).unwrap_or(128),
                timestamp: None,
                think_s: 0.0,
            }],
        });
    }
    if out.is_empty() {
        bail!("--dataset-path {}: no lines", path.display());
    }
    Ok(out)
}
