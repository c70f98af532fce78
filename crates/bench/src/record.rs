//! *What happened*: one record per request, written as soon as the request ends.

use serde::{Deserialize, Serialize};

/// Why a request failed. Every failure is recorded and counted; the run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Nothing listens on the address (connect: ECONNREFUSED).
    ConnectionRefused,
    /// Any other connect failure (DNS, unreachable, connect timeout).
    Connect,
    /// `--request-timeout` elapsed before the stream ended.
    Timeout,
    /// The server answered with a non-200 status.
    Http,
    /// The connection broke while the response was streaming (server died, reset).
    StreamBroken,
    /// The stream ended cleanly but without `data: [DONE]`.
    Truncated,
    /// The stream ended without a single chunk with non-empty `choices` (vLLM: "Never received
    /// a valid chunk to calculate TTFT").
    NoTokens,
    /// A `data:` payload that is not JSON.
    BadChunk,
    /// The server put an `error` object in the stream.
    ServerError,
    /// Any other client-side failure (a request that could not be built or sent).
    Client,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ConnectionRefused => "connection_refused",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Http => "http",
            ErrorKind::StreamBroken => "stream_broken",
            ErrorKind::Truncated => "truncated",
            ErrorKind::NoTokens => "no_tokens",
            ErrorKind::BadChunk => "bad_chunk",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Client => "client",
        }
    }
}

/// One request, as the client saw it. Times are seconds; `*_s` offsets are from the start of
/// the run on the monotonic clock, `send_unix_s` is the wall clock at send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Dispatch order (0-based); the result arrays are in this order.
    pub index: u64,
    /// Our id, sent as `x-request-id`.
    pub request_id: String,
    /// The id the server put in its chunks (`id`), to join with its logs.
    pub response_id: Option<String>,
    /// The request's id in the input trace, when it came from one.
    pub source_id: Option<String>,
    pub conversation: Option<u64>,
    pub turn: Option<u32>,
    /// When the arrival process (or the previous turn plus think time) wanted it sent.
    pub scheduled_s: f64,
    /// When it was sent (just before the request was written).
    pub send_s: f64,
    /// `send_s - scheduled_s`: client lag, including waiting for a `--max-concurrency` slot.
    pub client_lag_s: f64,
    pub send_unix_s: f64,
    pub success: bool,
    pub error_kind: Option<ErrorKind>,
    pub error: String,
    pub http_status: Option<u16>,
    /// `usage.prompt_tokens` when the server sent it, else the prompt length we know (token
    /// prompts) or 0 (chat).
    pub prompt_len: u64,
    /// `max_tokens` we asked for.
    pub expected_output_len: u32,
    /// `usage.completion_tokens`; without usage, the number of chunks with choices.
    pub output_tokens: u64,
    /// `usage.prompt_tokens_details.cached_tokens` (absent = 0; vLLM needs
    /// `--enable-prompt-tokens-details`).
    pub cached_tokens: u64,
    /// Whether the server sent usage at all.
    pub usage: bool,
    /// First chunk with non-empty `choices` minus send.
    pub ttft_s: f64,
    /// Last chunk with non-empty `choices` minus send (vLLM's `latency`).
    pub e2el_s: f64,
    /// `(e2el - ttft) / (output_tokens - 1)` when output_tokens > 1, else 0.
    pub tpot_s: f64,
    /// Every gap between consecutive chunks with choices.
    pub itl_s: Vec<f64>,
    /// Whether `data: [DONE]` arrived.
    pub done: bool,
    pub generated_text: String,
}
