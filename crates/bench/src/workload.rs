//! *What* to send: workloads. A workload hands the dispatch loop its root requests (in arrival
//! order, with their trace time), builds a request's prompt when the request is due (so a
//! conversation's next turn carries the answer the server actually gave), and says which
//! request follows a finished one and after how long (think time).
//!
//! - [`TraceWorkload`]: any trace our readers read. Token traces (vLLM logs, native traces with
//!   tokens) are sent as completions with `prompt` = the token ids. Id traces (Mooncake,
//!   Bailian, WEKA) are expanded into tokens that reproduce their prefix sharing exactly and
//!   identically on every run ([`expand_hash_ids`]). Length-only traces (Azure) get unique
//!   random tokens.
//! - [`RandomWorkload`]: vLLM's `random` dataset: fixed input/output lengths, random token ids.
//! - [`ConversationWorkload`]: conversations replayed faithfully on the chat endpoint.

use std::collections::VecDeque;

use inferencelab_trace::{Content, Trace};
use serde::Serialize;

use crate::executor::Endpoint;
use crate::record::RequestRecord;
use inferencelab_trace::rng::{splitmix64, Xoshiro256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Tokens(Vec<u32>),
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// A root request: its workload key and its time in the trace (seconds), if any.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Root {
    pub key: u64,
    pub timestamp: Option<f64>,
}

/// A request whose time has come.
#[derive(Debug, Clone)]
pub struct ReadyRequest {
    pub prompt: Prompt,
    pub max_tokens: u32,
    pub source_id: Option<String>,
    pub conversation: Option<u64>,
    pub turn: Option<u32>,
}

/// The request that follows a finished one, `delay_s` trace seconds after its answer arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FollowUp {
    pub key: u64,
    pub delay_s: f64,
}

/// A source of requests for the dispatch loop.
///
/// The loop calls `next_root` in arrival order and `prepare` exactly once per key it sends
/// (roots and follow-ups), when the request is due; it calls `finished` once per sent request
/// with its record. A workload must not block.
pub trait Workload: Send {
    fn endpoint(&self) -> Endpoint;
    /// How many roots there are, when known (finite workloads); the arrival process needs it
    /// for vLLM's normalization.
    fn num_roots(&self) -> Option<usize>;
    /// How many requests in all (roots and follow-ups), when known: for the progress bar.
    fn num_requests(&self) -> Option<usize>;
    fn next_root(&mut self) -> Option<Root>;
    fn prepare(&mut self, key: u64) -> ReadyRequest;
    fn finished(&mut self, key: u64, record: &RequestRecord) -> Option<FollowUp>;
}

/// Token ids used for synthetic content: `[lo, hi)`, away from most tokenizers' special tokens
/// and below every common vocabulary size (32k and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRange {
    pub lo: u32,
    pub hi: u32,
}

impl Default for TokenRange {
    fn default() -> Self {
        TokenRange {
            lo: 1000,
            hi: 30000,
        }
    }
}

const BLOCK_SALT: u64 = 0x1F3D_5B79_A2C4_E6F8;
const FILL_SALT: u64 = 0x0DDB_A11C_AFE5_EED5;

/// The `block_size` tokens of block id `id`: a pseudo-random sequence seeded by the id alone,
/// so equal ids give equal tokens in every request, every run, every machine.
pub fn block_tokens(id: u64, block_size: u32, range: TokenRange, out: &mut Vec<u32>) {
    let mut r = Xoshiro256::new(splitmix64(id ^ BLOCK_SALT));
    let span = (range.hi - range.lo) as u64;
    out.extend((0..block_size).map(|_| range.lo + r.below(span) as u32));
}

/// Prompt tokens for a chained block-id prompt: block `i` is `block_tokens(ids[i])`; the prompt
/// is cut to `input_length` (a partial last block that has an id, as in Mooncake, is that id's
/// sequence truncated); tokens past the last id (WEKA gives ids of full blocks only) are filled
/// from `fill_seed`, unique per request, so they share nothing.
pub fn expand_hash_ids(
    ids: &[u64],
    block_size: u32,
    input_length: u32,
    fill_seed: u64,
    range: TokenRange,
) -> Vec<u32> {
    let n = input_length as usize;
    let mut out = Vec::with_capacity(n.max(ids.len() * block_size as usize));
    for &id in ids {
        if out.len() >= n {
            break;
        }
        block_tokens(id, block_size, range, &mut out);
    }
    out.truncate(n);
    if out.len() < n {
        let mut r = Xoshiro256::new(splitmix64(fill_seed ^ FILL_SALT));
        let span = (range.hi - range.lo) as u64;
        while out.len() < n {
            out.push(range.lo + r.below(span) as u32);
        }
    }
    out
}

fn random_tokens(seed: u64, n: u32, range: TokenRange) -> Vec<u32> {
    expand_hash_ids(&[], 1, n, seed, range)
}

/// A whole trace, every request a root at its own timestamp.
pub struct TraceWorkload {
    trace: Trace,
    next: usize,
    range: TokenRange,
    seed: u64,
}

impl TraceWorkload {
    /// `seed` only feeds the content of requests without reuse information (Azure) and the
    /// tail of WEKA prompts; id-derived content does not depend on it.
    pub fn new(trace: Trace, range: TokenRange, seed: u64) -> Self {
        TraceWorkload {
            trace,
            next: 0,
            range,
            seed,
        }
    }

    /// The tokens request `i` is sent with.
    pub fn prompt_tokens(&self, i: usize) -> Vec<u32> {
        let r = &self.trace.requests[i];
        match &r.content {
            Content::Tokens(t) => t.clone(),
            Content::HashIds(ids) => expand_hash_ids(
                ids,
                self.trace.block_size.unwrap_or(16),
                r.input_length,
                splitmix64(self.seed ^ i as u64),
                self.range,
            ),
            // a trace hashed at read time (simulate only) has no ids left: like lengths only
            Content::Hashed(_) | Content::None => {
                random_tokens(splitmix64(self.seed ^ i as u64), r.input_length, self.range)
            }
        }
    }
}

impl Workload for TraceWorkload {
    fn endpoint(&self) -> Endpoint {
        Endpoint::Completions
    }
    fn num_roots(&self) -> Option<usize> {
        Some(self.trace.requests.len())
    }
    fn num_requests(&self) -> Option<usize> {
        self.num_roots()
    }
    fn next_root(&mut self) -> Option<Root> {
        let r = self.trace.requests.get(self.next)?;
        let root = Root {
            key: self.next as u64,
            timestamp: Some(r.timestamp),
        };
        self.next += 1;
        Some(root)
    }
    fn prepare(&mut self, key: u64) -> ReadyRequest {
        let i = key as usize;
        let tokens = self.prompt_tokens(i);
        let r = &mut self.trace.requests[i];
        if let Content::Tokens(t) = &mut r.content {
            // Each request is sent once: free its tokens.
            *t = Vec::new();
        }
        ReadyRequest {
            prompt: Prompt::Tokens(tokens),
            max_tokens: r.output_length.max(1),
            source_id: Some(r.id.clone()),
            conversation: r.conversation,
            turn: r.conversation.map(|_| r.turn),
        }
    }
    fn finished(&mut self, _: u64, _: &RequestRecord) -> Option<FollowUp> {
        None
    }
}

/// vLLM's `random` dataset: `input_len` random token ids, `output_len` tokens out
/// (`ignore_eos` should be set). Open-ended when `num_prompts` is `None`.
pub struct RandomWorkload {
    pub num_prompts: Option<usize>,
    pub input_len: u32,
    pub output_len: u32,
    pub seed: u64,
    pub range: TokenRange,
    next: u64,
}

impl RandomWorkload {
    pub fn new(
        num_prompts: Option<usize>,
        input_len: u32,
        output_len: u32,
        seed: u64,
        range: TokenRange,
    ) -> Self {
        RandomWorkload {
            num_prompts,
            input_len,
            output_len,
            seed,
            range,
            next: 0,
        }
    }
}

impl Workload for RandomWorkload {
    fn endpoint(&self) -> Endpoint {
        Endpoint::Completions
    }
    fn num_roots(&self) -> Option<usize> {
        self.num_prompts
    }
    fn num_requests(&self) -> Option<usize> {
        self.num_prompts
    }
    fn next_root(&mut self) -> Option<Root> {
        if self.num_prompts.is_some_and(|n| self.next >= n as u64) {
            return None;
        }
        self.next += 1;
        Some(Root {
            key: self.next - 1,
            timestamp: None,
        })
    }
    fn prepare(&mut self, key: u64) -> ReadyRequest {
        ReadyRequest {
            prompt: Prompt::Tokens(random_tokens(
                splitmix64(self.seed.wrapping_mul(0x9E37) ^ key),
                self.input_len,
                self.range,
            )),
            max_tokens: self.output_len.max(1),
            source_id: None,
            conversation: None,
            turn: None,
        }
    }
    fn finished(&mut self, _: u64, _: &RequestRecord) -> Option<FollowUp> {
        None
    }
}

/// One turn of a recorded conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnSpec {
    pub user: String,
    /// The recorded answer: its length sets `max_tokens`; it stands in the history when the
    /// live answer failed.
    pub reference_answer: String,
    pub max_tokens: u32,
    /// Trace time of the turn (seconds); the first turn's time places the conversation.
    pub timestamp: Option<f64>,
    /// Trace seconds between the previous turn's answer and this turn (0 for the first).
    pub think_s: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConversationSpec {
    pub id: String,
    pub system: Option<String>,
    pub turns: Vec<TurnSpec>,
}

/// Think times from recorded turn times: the user sent turn k+1 `t[k+1] - t[k]` after turn k,
/// of which the answer took `answer_tokens[k] / tokens_per_second` (the same synthetic answer
/// speed `convert --tokens-per-second` puts on its timeline); the rest is thinking. Without
/// times, `default_think_s`.
pub fn think_times(
    stamps: &[Option<f64>],
    answer_tokens: &[u32],
    tokens_per_second: f64,
    default_think_s: f64,
) -> Vec<f64> {
    (0..stamps.len())
        .map(|k| {
            if k == 0 {
                return 0.0;
            }
            match (stamps[k - 1], stamps[k]) {
                (Some(a), Some(b)) => {
                    let answer = answer_tokens[k - 1] as f64 / tokens_per_second.max(1e-9);
                    (b - a - answer).max(0.0)
                }
                _ => default_think_s,
            }
        })
        .collect()
}

/// Conversations replayed faithfully: turn k+1 is due when turn k's answer has arrived plus
/// its think time, and carries the real history (system prompt, every user message, and the
/// answers the server actually gave).
pub struct ConversationWorkload {
    conversations: Vec<ConversationSpec>,
    history: Vec<Vec<ChatMessage>>,
    roots: VecDeque<usize>,
    total: usize,
}

const TURN_BITS: u32 = 24;

impl ConversationWorkload {
    pub fn new(conversations: Vec<ConversationSpec>) -> Self {
        let mut order: Vec<usize> = (0..conversations.len())
            .filter(|&c| !conversations[c].turns.is_empty())
            .collect();
        order.sort_by(|&a, &b| {
            let t = |c: usize| conversations[c].turns[0].timestamp.unwrap_or(0.0);
            t(a).total_cmp(&t(b))
        });
        let total = conversations.iter().map(|c| c.turns.len()).sum();
        let history = conversations
            .iter()
            .map(|c| {
                c.system
                    .iter()
                    .map(|s| ChatMessage::new("system", s.clone()))
                    .collect()
            })
            .collect();
        ConversationWorkload {
            conversations,
            history,
            roots: order.into(),
            total,
        }
    }

    fn split(key: u64) -> (usize, usize) {
        (
            (key >> TURN_BITS) as usize,
            (key & ((1 << TURN_BITS) - 1)) as usize,
        )
    }

    fn key(c: usize, t: usize) -> u64 {
        ((c as u64) << TURN_BITS) | t as u64
    }

    pub fn history(&self, conversation: usize) -> &[ChatMessage] {
        &self.history[conversation]
    }

    /// The history of a conversation as a chat prompt (for tests and inspection).
    pub fn prepare_history_for_test(&self, conversation: usize) -> Prompt {
        Prompt::Chat(self.history[conversation].clone())
    }
}

impl Workload for ConversationWorkload {
    fn endpoint(&self) -> Endpoint {
        Endpoint::Chat
    }
    fn num_roots(&self) -> Option<usize> {
        Some(self.roots.len())
    }
    fn num_requests(&self) -> Option<usize> {
        Some(self.total)
    }
    fn next_root(&mut self) -> Option<Root> {
        let c = self.roots.pop_front()?;
        Some(Root {
            key: Self::key(c, 0),
            timestamp: self.conversations[c].turns[0].timestamp,
        })
    }
    fn prepare(&mut self, key: u64) -> ReadyRequest {
        let (c, t) = Self::split(key);
        let turn = &self.conversations[c].turns[t];
        self.history[c].push(ChatMessage::new("user", turn.user.clone()));
        ReadyRequest {
            prompt: Prompt::Chat(self.history[c].clone()),
            max_tokens: turn.max_tokens.max(1),
            source_id: Some(format!("{}#{}", self.conversations[c].id, t)),
            conversation: Some(c as u64),
            turn: Some(t as u32),
        }
    }
    fn finished(&mut self, key: u64, record: &RequestRecord) -> Option<FollowUp> {
        let (c, t) = Self::split(key);
        let conv = &self.conversations[c];
        let answer = if record.success {
            record.generated_text.clone()
        } else {
            conv.turns[t].reference_answer.clone()
        };
        self.history[c].push(ChatMessage::new("assistant", answer));
        conv.turns.get(t + 1).map(|next| FollowUp {
            key: Self::key(c, t + 1),
            delay_s: next.think_s,
        })
    }
}

/// What every request body carries besides its prompt.
#[derive(Debug, Clone, Default)]
pub struct BodyOptions {
    pub model: String,
    /// vLLM's `ignore_eos`: generate exactly `max_tokens` (random and trace workloads).
    pub ignore_eos: bool,
    /// Send token-id prompts of `/v1/completions` as text (`crate::words`), for servers that
    /// take no token ids.
    pub text_prompts: bool,
    /// Merged into every body last (`--extra-body`), like vLLM's client.
    pub extra_body: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The JSON body of a streaming request (vLLM's client payloads, see `executor`).
pub fn build_body(
    endpoint: Endpoint,
    prompt: &Prompt,
    max_tokens: u32,
    opts: &BodyOptions,
) -> Vec<u8> {
    use serde_json::{json, Value};
    let mut body = serde_json::Map::new();
    body.insert("model".into(), Value::String(opts.model.clone()));
    match (endpoint, prompt) {
        (Endpoint::Chat, Prompt::Chat(m)) => {
            body.insert("messages".into(), json!(m));
        }
        (Endpoint::Chat, Prompt::Text(t)) => {
            body.insert(
                "messages".into(),
                json!([ChatMessage::new("user", t.clone())]),
            );
        }
        (Endpoint::Completions, Prompt::Tokens(t)) if opts.text_prompts => {
            body.insert("prompt".into(), json!(crate::words::text_of(t)));
        }
        (Endpoint::Chat, Prompt::Tokens(t)) | (Endpoint::Completions, Prompt::Tokens(t)) => {
            body.insert("prompt".into(), json!(t));
        }
        (Endpoint::Completions, Prompt::Text(t)) => {
            body.insert("prompt".into(), json!(t));
        }
        (Endpoint::Completions, Prompt::Chat(m)) => {
            let text: Vec<&str> = m.iter().map(|m| m.content.as_str()).collect();
            body.insert("prompt".into(), json!(text.join("\n")));
        }
    }
    body.insert("max_tokens".into(), json!(max_tokens));
    if endpoint == Endpoint::Chat {
        body.insert("max_completion_tokens".into(), json!(max_tokens));
    }
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    if opts.ignore_eos {
        body.insert("ignore_eos".into(), json!(true));
    }
    if let Some(extra) = &opts.extra_body {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&Value::Object(body)).expect("a JSON map serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferencelab_trace::Request;

    #[test]
    fn expansion_reproduces_prefix_sharing_exactly() {
        let r = TokenRange::default();
        // Mooncake-like: chained ids, the partial last block has an id.
        let a = expand_hash_ids(&[1, 2, 3], 4, 10, 100, r);
        let b = expand_hash_ids(&[1, 2, 9], 4, 12, 200, r);
        assert_eq!(a.len(), 10);
        assert_eq!(b.len(), 12);
        assert_eq!(a[..8], b[..8], "shared ids share tokens");
        assert_ne!(a[8..10], b[8..10], "different ids differ");
        // Identical on every run, independent of the request's own seed.
        assert_eq!(a, expand_hash_ids(&[1, 2, 3], 4, 10, 7, r));
        // WEKA-like: ids of full blocks only; the tail is unique per request.
        let c = expand_hash_ids(&[1], 4, 7, 1, r);
        let d = expand_hash_ids(&[1], 4, 7, 2, r);
        assert_eq!(c[..4], a[..4]);
        assert_ne!(c[4..], d[4..]);
        assert!(a.iter().all(|&t| (r.lo..r.hi).contains(&t)));
    }

    fn rec(success: bool, text: &str) -> RequestRecord {
        RequestRecord {
            index: 0,
            request_id: String::new(),
            response_id: None,
            source_id: None,
            conversation: None,
            turn: None,
            scheduled_s: 0.0,
            send_s: 0.0,
            client_lag_s: 0.0,
            send_unix_s: 0.0,
            success,
            error_kind: None,
            error: String::new(),
            http_status: None,
            prompt_len: 0,
            expected_output_len: 0,
            output_tokens: 0,
            cached_tokens: 0,
            usage: false,
            ttft_s: 0.0,
            e2el_s: 0.0,
            tpot_s: 0.0,
            itl_s: vec![],
            done: true,
            generated_text: text.into(),
        }
    }

    #[test]
    fn conversation_history_carries_the_live_answers() {
        let turn = |u: &str, a: &str, t: f64, think: f64| TurnSpec {
            user: u.into(),
            reference_answer: a.into(),
            max_tokens: 5,
            timestamp: Some(t),
            think_s: think,
        };
        let mut w = ConversationWorkload::new(vec![
            ConversationSpec {
                id: "late".into(),
                system: Some("sys".into()),
                turns: vec![turn("q1", "r1", 10.0, 0.0), turn("q2", "r2", 20.0, 3.0)],
            },
            ConversationSpec {
                id: "early".into(),
                system: None,
                turns: vec![turn("x", "y", 1.0, 0.0)],
            },
        ]);
        assert_eq!(w.num_requests(), Some(3));
        let r0 = w.next_root().unwrap();
        assert_eq!(r0.timestamp, Some(1.0), "roots in time order");
        let k = w.next_root().unwrap().key;
        let first = w.prepare(k);
        assert_eq!(
            first.prompt,
            Prompt::Chat(vec![
                ChatMessage::new("system", "sys"),
                ChatMessage::new("user", "q1")
            ])
        );
        let f = w.finished(k, &rec(true, "LIVE")).unwrap();
        assert_eq!(f.delay_s, 3.0);
        let second = w.prepare(f.key);
        let Prompt::Chat(m) = second.prompt else {
            panic!()
        };
        assert_eq!(m[2], ChatMessage::new("assistant", "LIVE"));
        assert_eq!(m[3], ChatMessage::new("user", "q2"));
        assert!(w.finished(f.key, &rec(false, "")).is_none());
        assert_eq!(
            w.history(0)[4],
            ChatMessage::new("assistant", "r2"),
            "failed: reference"
        );
    }

    #[test]
    fn think_times_subtract_the_recorded_answer() {
        let t = think_times(
            &[Some(0.0), Some(10.0), Some(11.0)],
            &[200, 500, 0],
            100.0,
            5.0,
        );
        assert_eq!(t, vec![0.0, 8.0, 0.0]);
        assert_eq!(
            think_times(&[None, None], &[1, 1], 100.0, 5.0),
            vec![0.0, 5.0]
        );
    }

    #[test]
    fn trace_workload_sends_tokens_and_expands_ids() {
        let req = |id: &str, content: Content, len: u32| Request {
            id: id.into(),
            timestamp: 0.0,
            finish_time: None,
            conversation: None,
            turn: 0,
            input_length: len,
            output_length: 3,
            kind: None,
            content,
            output_tokens: None,
            output_times: None,
        };
        let trace = Trace {
            requests: vec![
                req("a", Content::Tokens(vec![5, 6, 7]), 3),
                req("b", Content::HashIds(vec![1, 2]), 20),
                req("c", Content::HashIds(vec![1, 3]), 20),
            ],
            block_size: Some(16),
            ..Default::default()
        };
        let mut w = TraceWorkload::new(trace, TokenRange::default(), 0);
        let keys: Vec<u64> = std::iter::from_fn(|| w.next_root().map(|r| r.key)).collect();
        let p: Vec<Vec<u32>> = keys
            .iter()
            .map(|&k| match w.prepare(k).prompt {
                Prompt::Tokens(t) => t,
                _ => panic!(),
            })
            .collect();
        assert_eq!(p[0], vec![5, 6, 7]);
        assert_eq!(p[1].len(), 20);
        assert_eq!(p[1][..16], p[2][..16]);
        assert_ne!(p[1][16..], p[2][16..]);
    }

    #[test]
    fn bodies_match_vllm_payloads() {
        let opts = BodyOptions {
            model: "m".into(),
            ignore_eos: true,
            text_prompts: false,
            extra_body: Some(serde_json::from_str(r#"{"temperature":0}"#).unwrap()),
        };
        let b = build_body(Endpoint::Completions, &Prompt::Tokens(vec![1, 2]), 4, &opts);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model":"m","prompt":[1,2],"max_tokens":4,"stream":true,
                "stream_options":{"include_usage":true},"ignore_eos":true,"temperature":0})
        );
        let b = build_body(
            Endpoint::Chat,
            &Prompt::Chat(vec![ChatMessage::new("user", "hi")]),
            4,
            &BodyOptions::default(),
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["messages"][0]["content"], "hi");
        assert_eq!(v["max_completion_tokens"], 4);
        // text prompts: token ids as words on completions
        let text = BodyOptions {
            text_prompts: true,
            ..opts
        };
        let b = build_body(Endpoint::Completions, &Prompt::Tokens(vec![1, 2]), 4, &text);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["prompt"], crate::words::text_of(&[1, 2]));
    }
}
