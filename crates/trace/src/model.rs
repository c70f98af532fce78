//! The request/trace model shared by every reader, the simulator, the emulator and the load
//! generator.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The input formats InferenceLab reads (DESIGN.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Mooncake,
    Bailian,
    Weka,
    Azure,
    VllmLog,
    Native,
    /// LMCache's lookup-hash JSONL logs (`lookup_hashes_*.jsonl`, a file or a directory).
    LmcacheLookup,
}

impl Format {
    pub const ALL: [Format; 7] = [
        Format::Mooncake,
        Format::Bailian,
        Format::Weka,
        Format::Azure,
        Format::VllmLog,
        Format::Native,
        Format::LmcacheLookup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Mooncake => "mooncake",
            Format::Bailian => "bailian",
            Format::Weka => "weka",
            Format::Azure => "azure",
            Format::VllmLog => "vllm-log",
            Format::Native => "native",
            Format::LmcacheLookup => "lmcache-lookup",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s || (s == "vllm" && *f == Format::VllmLog))
            .ok_or_else(|| {
                format!(
                    "unknown input format '{s}'; expected one of: {}",
                    Format::ALL.map(|f| f.name()).join(", ")
                )
            })
    }
}

/// What a request carries about its prompt's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// The prompt's token ids (vLLM logs, native token traces). Hashable at any block size.
    Tokens(Vec<u32>),
    /// Prefix-chained block ids at the trace's `block_size`: equal ids at equal positions mean
    /// equal prefixes up to the end of that block (Mooncake, Bailian, WEKA).
    HashIds(Vec<u64>),
    /// Token ids hashed as the input was read and then dropped (issue 19,
    /// [`crate::read_trace_hashed`]): block ids at [`Trace::hashing`]'s block size.
    Hashed(HashedTokens),
    /// Lengths only (Azure): no reuse information at all.
    None,
}

/// A prompt (and its logged answer) whose token ids were hashed at read time into chained block
/// hashes at `Hashing::block_size` tokens (DESIGN.md section 3), interned to dense ids: equal ids
/// at equal positions are equal prefixes. What the simulator needs of the tokens, without them:
/// any block size that is a multiple of the hashing block size (keep every k-th id), the
/// answer's blocks, and whether one prompt starts with another (the follow-up test).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashedTokens {
    /// The prompt's full blocks (the partial tail is never hashed).
    pub blocks: Vec<u32>,
    /// The full blocks of prompt + logged output tokens (all but the last, which vLLM never
    /// computes) past the prompt's own full blocks; `None` when no output ids were logged.
    pub answer: Option<Vec<u32>>,
    /// The whole prompt's identity: equal for identical prompts (tail included).
    pub prompt: u32,
    /// The `prompt` identities of the prompts with a partial tail that this prompt starts with
    /// (found as the input was read). A prompt of whole blocks is a prefix of another when the
    /// other's block at its last position is its last block.
    pub extends: Vec<u32>,
}

/// How a trace's token ids were hashed at read time ([`Content::Hashed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashing {
    /// Tokens per hashed block.
    pub block_size: u32,
    /// Distinct block ids (`0..num_ids`).
    pub num_ids: u32,
}

/// One inference request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The request id (from the log) or the record's index.
    pub id: String,
    /// Arrival time in seconds since the start of the trace.
    pub timestamp: f64,
    /// Finish time in seconds when the input records it (vLLM "Generated response" lines).
    pub finish_time: Option<f64>,
    /// Conversation / session / chat id, dense per trace, when the trace has one.
    pub conversation: Option<u64>,
    /// Turn number within the conversation (0-based), when known.
    pub turn: u32,
    /// Prompt length in tokens.
    pub input_length: u32,
    /// Output length in tokens.
    pub output_length: u32,
    /// Request type when the trace has one (Bailian `type`, WEKA `type`).
    pub kind: Option<String>,
    pub content: Content,
    /// The generated token ids when the input records them (vLLM with `--enable-log-outputs`,
    /// native traces with `output_tokens`). vLLM caches full blocks of prompt + output - 1
    /// tokens, so multi-turn prompts that repeat the answer hit on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<Vec<u32>>,
    /// When each output token was sampled, seconds on the trace's clock (vLLM logs one
    /// `streaming delta` line per token with `--enable-log-outputs`). `output_length` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_times: Option<Vec<f64>>,
}

/// A whole trace, in arrival order (ties keep file order).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub requests: Vec<Request>,
    /// For id traces: the block size (tokens) of the ids.
    pub block_size: Option<u32>,
    /// For id traces: whether the partial last block of a prompt carries an id (Mooncake yes,
    /// Bailian yes, WEKA no).
    pub partial_last_block: bool,
    pub format: Option<Format>,
    pub source: PathBuf,
    /// Things the reader noticed that the user must know (truncated token ids, no reuse info...).
    pub notes: Vec<String>,
    /// Records skipped under `--skip-invalid`.
    pub skipped: usize,
    /// What LMCache logged about requests (vLLM logs with LMCache attached), for comparing
    /// measured hits with simulated ones. Empty for every other input.
    pub lmcache: Vec<LmcacheLookup>,
    /// vLLM's `Finished sending KV transfer for request ID` lines (DEBUG; a connector that
    /// stores asynchronously, LMCache's multi-process one): when vLLM freed the finished
    /// request's blocks, seconds on the requests' clock, by request id. Empty for every other
    /// input.
    pub kv_sent_s: std::collections::HashMap<String, f64>,
    /// vLLM logs: the wall-clock stamp of time 0 (the earliest request's first line), to put
    /// other logs of the same run on the requests' clock ([`crate::lmcache_log`]).
    pub clock_origin: Option<crate::lmcache_log::MonthDayTime>,
    /// `simulate --lmcache-log`: the ticks of LMCache's L1 eviction loop that evicted, seconds
    /// on the requests' clock, as the server logged them. Empty: not known.
    pub lmcache_evicting_ticks_s: Vec<f64>,
    /// Bytes read from the input's files or pipe, as stored (compressed for `.gz`/`.zst`);
    /// 0 when the trace was not read by [`crate::read_trace`].
    pub input_bytes: u64,
    /// Bytes of text the reader parsed (decompressed).
    pub text_bytes: u64,
    /// Set when the token ids were hashed at read time ([`Content::Hashed`]).
    pub hashing: Option<Hashing>,
    /// The largest token id of the prompts and logged outputs, kept by readers that drop the
    /// ids ([`Trace::max_token_id`]).
    pub hashed_max_token_id: Option<u32>,
}

/// One LMCache lookup line, `LMCache INFO: Reqid: ID, Total tokens N, Inference Engine computed
/// tokens: G, LMCache hit tokens: L, need to load: K` (older LMCache omits the computed tokens).
/// One entry per request: when LMCache logs several lookups for one request (it is retried while
/// the scheduler cannot admit it), the last one, i.e. the one that was loaded, is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LmcacheLookup {
    /// The `Request::id` it belongs to when it could be matched (LMCache may log the engine's id,
    /// the API id plus a `-suffix`), else LMCache's `Reqid` as logged.
    pub request_id: String,
    /// Whether `request_id` names a request of this trace.
    pub matched: bool,
    /// `Total tokens`: the full prompt length as the engine saw it (never cut by `--max-log-len`).
    pub total_tokens: u32,
    /// `Inference Engine computed tokens`: vLLM's own GPU prefix-cache hit, when logged.
    pub engine_computed_tokens: Option<u32>,
    /// `LMCache hit tokens`: the leading tokens LMCache holds.
    pub hit_tokens: u32,
    /// `need to load`: hit tokens beyond the GPU hit (can be negative, DESIGN.md section 4).
    pub need_to_load: i64,
}

impl Trace {
    /// The trace of its first `n` requests, as a replay that stops there sees it: the ids
    /// hashed at read time keep indexing the whole trace's ids (`hashing`,
    /// `hashed_max_token_id`), and what the reader noticed about the rest is not carried
    /// (notes, LMCache lookups, KV-transfer times, clock, input sizes).
    pub fn prefix(&self, n: usize) -> Trace {
        Trace {
            requests: self.requests[..n.min(self.requests.len())].to_vec(),
            hashing: self.hashing,
            hashed_max_token_id: self.hashed_max_token_id,
            block_size: self.block_size,
            partial_last_block: self.partial_last_block,
            format: self.format,
            source: self.source.clone(),
            ..Default::default()
        }
    }

    /// Seconds from the earliest request's arrival to the latest's (0 without requests).
    pub fn span_s(&self) -> f64 {
        let (first, last) = self
            .requests
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
                (lo.min(r.timestamp), hi.max(r.timestamp))
            });
        (last - first).max(0.0)
    }

    /// True when the trace carries token ids or block ids, i.e. prefix reuse can be simulated.
    /// Dense ids of the requests' types (`Request::kind`), in order of first appearance;
    /// `u32::MAX` for a request without one.
    pub fn kind_ids(&self) -> Vec<u32> {
        let mut seen: Vec<&str> = Vec::new();
        self.requests
            .iter()
            .map(|r| match r.kind.as_deref() {
                None => u32::MAX,
                Some(k) => match seen.iter().position(|&s| s == k) {
                    Some(i) => i as u32,
                    None => {
                        seen.push(k);
                        (seen.len() - 1) as u32
                    }
                },
            })
            .collect()
    }

    pub fn has_reuse_info(&self) -> bool {
        self.requests
            .iter()
            .any(|r| !matches!(r.content, Content::None))
    }

    pub fn has_tokens(&self) -> bool {
        self.requests
            .iter()
            .any(|r| matches!(r.content, Content::Tokens(_) | Content::Hashed(_)))
    }

    /// The largest token id of every prompt and logged output (`None` without token ids).
    pub fn max_token_id(&self) -> Option<u32> {
        let kept = self.requests.iter().flat_map(|r| {
            let prompt = match &r.content {
                Content::Tokens(t) => t.as_slice(),
                _ => &[],
            };
            prompt
                .iter()
                .chain(r.output_tokens.iter().flatten())
                .copied()
        });
        kept.chain(self.hashed_max_token_id).max()
    }

    pub fn total_prompt_tokens(&self) -> u64 {
        self.requests.iter().map(|r| r.input_length as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_ids_are_dense_in_order_of_first_appearance() {
        let req = |kind: Option<&str>| Request {
            id: String::new(),
            timestamp: 0.0,
            finish_time: None,
            conversation: None,
            turn: 0,
            input_length: 1,
            output_length: 1,
            kind: kind.map(str::to_string),
            content: Content::None,
            output_tokens: None,
            output_times: None,
        };
        let t = Trace {
            requests: vec![req(Some("s")), req(None), req(Some("n")), req(Some("s"))],
            ..Default::default()
        };
        assert_eq!(t.kind_ids(), vec![0, u32::MAX, 1, 0]);
        // a prefix keeps what indexes the ids and drops what the reader noticed of the rest
        let t = Trace {
            block_size: Some(16),
            partial_last_block: true,
            hashed_max_token_id: Some(7),
            notes: vec!["a note".into()],
            ..t
        };
        let p = t.prefix(2);
        assert_eq!(p.requests, t.requests[..2]);
        assert_eq!(
            (p.block_size, p.partial_last_block, p.hashed_max_token_id),
            (Some(16), true, Some(7))
        );
        assert!(p.notes.is_empty());
        assert_eq!(t.prefix(10).requests.len(), 4);
        // the span: earliest to latest arrival, in whatever order they are listed; none: 0
        let at = |ts: &[f64]| Trace {
            requests: ts
                .iter()
                .map(|&timestamp| Request {
                    timestamp,
                    ..t.requests[0].clone()
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(at(&[3.0, 1.5, 9.0, 4.0]).span_s(), 7.5);
        assert_eq!(at(&[2.0]).span_s(), 0.0);
        assert_eq!(at(&[]).span_s(), 0.0);
    }
}
