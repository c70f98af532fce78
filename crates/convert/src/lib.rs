//! `inferencelab convert`: conversation CSV -> vLLM-format server log and native trace on a
//! synthetic timeline (DESIGN.md section 1), plus the seeded demo-data generator.
//!
//! Flow: [`read_csv`] (schema and `file:line` errors) -> [`load_tokenizer`] (Hugging Face
//! `tokenizer.json` or the embedded fallback) -> [`build_workload`] (chat template, one
//! tokenization per message block, timeline, trace) -> [`write_outputs`] (`server_<MODEL>.log`
//! via [`write_vllm_log`] and `trace_<MODEL>.jsonl` via the trace crate's native writer).
//! No printing here: the CLI reports what the library returns.

pub mod csv_input;
pub mod demo;
pub mod error;
pub mod template;
pub mod timestamp;
pub mod tokenizer;
pub mod vllm_log;
pub mod workload;

/// The seeded generator is the trace crate's ([`inferencelab_trace::rng::SplitMix64`]); this
/// path stays only for `vllm_log.rs` until the vLLM log writer moves to the trace crate.
mod rng {
    pub(crate) use inferencelab_trace::rng::SplitMix64 as Rng;
}

use std::path::{Path, PathBuf};

pub use csv_input::{read_csv, ColumnNames, Conversation, ConversationSet, Turn};
pub use demo::write_demo_csv;
pub use error::{ConvertError, ConvertResult};
pub use template::ChatTemplate;
pub use tokenizer::{load_tokenizer, LoadedTokenizer, TextTokenizer};
pub use vllm_log::{log_pid, write_vllm_log, STAND_IN_TOKENIZER};
pub use workload::{build_workload, TimelineConfig, Workload};

/// The files [`write_outputs`] wrote.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub log: PathBuf,
    pub trace: PathBuf,
}

/// `server_<name>.log` and `trace_<name>.jsonl` in `dir`; characters other than letters,
/// digits, `.`, `_` and `-` in `name` become `_`.
pub fn output_paths(dir: &Path, name: &str) -> Outputs {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    Outputs {
        log: dir.join(format!("server_{safe}.log")),
        trace: dir.join(format!("trace_{safe}.jsonl")),
    }
}

/// Write the log and the native trace of `w` into `dir` (created if missing): files named after
/// `name`, the log's start-up line naming `model` (as vLLM would be given it, e.g. a Hugging
/// Face id).
pub fn write_outputs(
    w: &Workload,
    dir: &Path,
    name: &str,
    model: &str,
    seed: u64,
) -> ConvertResult<Outputs> {
    std::fs::create_dir_all(dir).map_err(|e| ConvertError::io(dir, e))?;
    let out = output_paths(dir, name);
    let create = |p: &Path| std::fs::File::create(p).map_err(|e| ConvertError::io(p, e));
    write_vllm_log(w, log_pid(seed), model, create(&out.log)?)
        .map_err(|e| ConvertError::io(&out.log, e))?;
    inferencelab_trace::readers::native::write(&w.trace, create(&out.trace)?)
        .map_err(|e| ConvertError::io(&out.trace, e))?;
    Ok(out)
}
