//! *How* to send: the executor trait, the real HTTP/SSE executor and a fake for tests.
//!
//! The HTTP executor follows vLLM's `vllm/benchmarks/lib/endpoint_request_func.py`
//! (`async_request_openai_completions`, `async_request_openai_chat_completions`): the send time
//! is taken just before the request is written; a chunk counts as a token chunk when its
//! `choices` list is non-empty (the trailing usage chunk has none); usage comes from the chunk
//! that carries it. Differences: a chunk is stamped when its bytes arrive (not after JSON
//! parsing); the stream must end with `data: [DONE]` or the request counts as truncated; the
//! response `id` is kept so records join with the server's logs.
//!
//! Keep-alive: servers close idle connections (vLLM's uvicorn after
//! `VLLM_HTTP_TIMEOUT_KEEP_ALIVE`, 5 s). vLLM's client (aiohttp) notices at once because asyncio
//! reads every idle socket; our pool does not drive idle connections, so a pooled connection is
//! polled once when it is taken, and one the server closed is dropped. A request that still
//! meets a closed connection (the close crossed it on the wire) goes once more on a fresh
//! connection when hyper hands it back unwritten, or when a reused connection ended before any
//! byte of the response (the server never handled it).

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, TrySendError};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::record::ErrorKind;
use crate::sse::SseParser;

/// The two OpenAI endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }

    /// vLLM's `--backend` name for the endpoint (the result JSON's `backend`).
    pub fn backend(self) -> &'static str {
        match self {
            Endpoint::Completions => "openai",
            Endpoint::Chat => "openai-chat",
        }
    }
}

/// A request ready to go: the serialized body and what the record needs to know.
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    pub request_id: String,
    pub endpoint: Endpoint,
    pub body: Bytes,
    pub max_tokens: u32,
    /// Prompt tokens when the client knows them (token prompts).
    pub prompt_tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
}

/// What an executor observed for one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub sent: Instant,
    /// Arrival of every chunk with non-empty `choices`.
    pub chunk_times: Vec<Instant>,
    pub generated_text: String,
    pub usage: Option<Usage>,
    pub response_id: Option<String>,
    pub http_status: Option<u16>,
    pub done: bool,
    pub error: Option<(ErrorKind, String)>,
}

impl Outcome {
    pub fn new(sent: Instant) -> Self {
        Outcome {
            sent,
            chunk_times: Vec::new(),
            generated_text: String::new(),
            usage: None,
            response_id: None,
            http_status: None,
            done: false,
            error: None,
        }
    }

    fn fail(&mut self, kind: ErrorKind, msg: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some((kind, msg.into()));
        }
    }

    /// Settle the end of a stream: a clean end needs `[DONE]` and at least one token chunk.
    pub fn finish_stream(&mut self) {
        if self.error.is_some() {
            return;
        }
        if self.chunk_times.is_empty() {
            self.fail(
                ErrorKind::NoTokens,
                "the stream carried no chunk with choices (no first token)",
            );
        } else if !self.done {
            self.fail(
                ErrorKind::Truncated,
                "the stream ended without data: [DONE]",
            );
        }
    }
}

/// Sends one request and watches its stream.
///
/// Implementations must stamp `Outcome::sent` just before the request leaves, every token
/// chunk when it arrives, and never panic on a bad server: every failure is an
/// `Outcome::error`. They are shared by all in-flight requests (`&self`).
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, req: PreparedRequest) -> impl Future<Output = Outcome> + Send;
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<UsageJson>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    role: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    function_call: Option<serde::de::IgnoredAny>,
}

impl Delta {
    /// vLLM's `_choice_has_streamed_output` (vllm/benchmarks/lib/endpoint_request_func.py):
    /// a chat chunk is a token when it carries content, reasoning or a tool call, or an empty
    /// `content` without `role` (a token that decodes to nothing). The opening role-only chunk
    /// and an empty closing chunk are not tokens: they neither start TTFT nor add an ITL gap.
    fn has_streamed_output(&self) -> bool {
        let non_empty = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        non_empty(&self.content)
            || non_empty(&self.reasoning)
            || non_empty(&self.reasoning_content)
            || self.tool_calls.is_some()
            || self.function_call.is_some()
            || (self.content.as_deref() == Some("") && self.role.is_none())
    }
}

#[derive(Deserialize)]
struct UsageJson {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// Interpret one SSE `data` payload (OpenAI streaming chunk) arriving at `at`.
pub fn handle_event(out: &mut Outcome, data: &[u8], at: Instant) {
    if out.error.is_some() || out.done {
        return;
    }
    if data == b"[DONE]" {
        out.done = true;
        return;
    }
    let chunk: Chunk = match serde_json::from_slice(data) {
        Ok(c) => c,
        Err(e) => {
            let shown = String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned();
            out.fail(
                ErrorKind::BadChunk,
                format!("chunk is not JSON ({e}): {shown}"),
            );
            return;
        }
    };
    if out.response_id.is_none() {
        out.response_id = chunk.id.map(|s| s.into_owned());
    }
    if let Some(c) = chunk.choices.first() {
        // Completions: every chunk with a choice is a token (vLLM does the same); chat: only
        // chunks with streamed output.
        if c.delta.as_ref().is_none_or(Delta::has_streamed_output) {
            out.chunk_times.push(at);
        }
        let text = c.text.as_deref().or_else(|| {
            c.delta.as_ref().and_then(|d| {
                d.content
                    .as_deref()
                    .or(d.reasoning_content.as_deref())
                    .or(d.reasoning.as_deref())
            })
        });
        out.generated_text.push_str(text.unwrap_or(""));
    }
    if let Some(u) = chunk.usage {
        out.usage = Some(Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
        });
    }
    if chunk.choices.is_empty() {
        if let Some(e) = chunk.error {
            let msg = e
                .get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| e.to_string(), str::to_string);
            out.fail(ErrorKind::ServerError, msg);
        }
    }
}

/// How long a connection may wait in our pool before it is closed instead of reused: vLLM's
/// client's `keepalive_timeout=60` (`vllm/benchmarks/serve.py`, aiohttp's `TCPConnector`).
/// Closes by the server are noticed whatever their timeout (see the module comment).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of the HTTP executor.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `http://host:port` (a path prefix is kept: `http://host/api` + `/v1/completions`).
    pub base_url: String,
    pub api_key: Option<String>,
    /// Whole-request limit, from send to the end of the stream.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

/// The real executor: HTTP/1.1 with keep-alive (hyper's pooled client), streaming SSE.
pub struct HttpExecutor {
    /// For `get_text` (scrapes, /v1/models): hyper's pooled client.
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    /// `host:port` to connect to.
    authority: String,
    host: HeaderValue,
    completions_path: String,
    chat_path: String,
    auth: Option<HeaderValue>,
    timeout: Duration,
    connect_timeout: Duration,
    /// Idle keep-alive connections for the streamed requests.
    pool: std::sync::Mutex<Vec<PooledConn>>,
}

struct PooledConn {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: http1::Connection<TokioIo<TcpStream>, Full<Bytes>>,
    /// When it went (back) to the pool.
    idle_since: Instant,
}

impl PooledConn {
    /// Whether the server has closed this idle connection, without waiting. Nothing drives a
    /// connection while it sits in the pool, so its end of stream is still unread: one poll
    /// reads it (hyper treats EOF on an idle client connection as a clean close and finishes).
    /// A request given to a finished connection would wait forever (hyper fails a queued
    /// request only on a connection error, or when the connection is dropped).
    async fn closed_by_server(&mut self) -> bool {
        let conn = &mut self.conn;
        std::future::poll_fn(|cx| Poll::Ready(conn.poll_without_shutdown(cx).is_ready())).await
            || self.sender.is_closed()
    }
}

/// Whether a request that failed before its response head may go again on a fresh connection,
/// given that the connection was `reused`: hyper handed it back unwritten (`unsent`), or a
/// reused connection ended before a response head (hyper does not tell a partial head from
/// none; servers write the head at once). The second is a keep-alive close that crossed the
/// request: uvicorn closes an idle connection and never reads what arrives after, so the
/// request never reached vLLM. Go's `net/http` resends in the same two cases
/// (`nothingWrittenError`, `errServerClosedIdle`), the second only for idempotent requests; a
/// completion has no effect beyond its answer, so we resend it too, once.
fn may_resend(e: &hyper::Error, unsent: bool, reused: bool) -> bool {
    if unsent {
        return true;
    }
    if !reused {
        return false;
    }
    if e.is_incomplete_message() || e.is_canceled() {
        return true;
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            );
        }
        src = s.source();
    }
    false
}

/// Classify a client error by its source chain.
fn classify(e: &(dyn std::error::Error + 'static), connect: bool) -> (ErrorKind, String) {
    let mut msg = e.to_string();
    let mut src = e.source();
    let mut kind = if connect {
        ErrorKind::Connect
    } else {
        ErrorKind::StreamBroken
    };
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => kind = ErrorKind::ConnectionRefused,
                std::io::ErrorKind::TimedOut if connect => kind = ErrorKind::Connect,
                _ => {}
            }
        }
        src = s.source();
    }
    (kind, msg)
}

impl HttpExecutor {
    pub fn new(cfg: &HttpConfig) -> Result<Self, String> {
        let base = cfg.base_url.trim_end_matches('/').to_string();
        if base.starts_with("https://") {
            return Err(format!(
                "--base-url {base}: https is not supported by this build (plain http only)"
            ));
        }
        let uri = |p: &str| -> Result<Uri, String> {
            format!("{base}{p}")
                .parse::<Uri>()
                .map_err(|e| format!("--base-url {base}: not a URL ({e})"))
        };
        let completions = uri(Endpoint::Completions.path())?;
        if completions.scheme_str() != Some("http") || completions.host().is_none() {
            return Err(format!(
                "--base-url {base}: expected http://HOST:PORT, e.g. http://127.0.0.1:8000"
            ));
        }
        let chat = uri(Endpoint::Chat.path())?;
        let host = completions.host().unwrap_or_default();
        let port = completions.port_u16().unwrap_or(80);
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let host_header = HeaderValue::from_str(
            completions
                .authority()
                .map(|a| a.as_str())
                .unwrap_or(authority.as_str()),
        )
        .map_err(|e| format!("--base-url {base}: {e}"))?;
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(cfg.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(usize::MAX)
            .build(conn);
        let auth = match &cfg.api_key {
            Some(k) => Some(
                HeaderValue::from_str(&format!("Bearer {k}"))
                    .map_err(|_| "the API key has characters a header cannot carry".to_string())?,
            ),
            None => None,
        };
        Ok(HttpExecutor {
            client,
            base,
            authority,
            host: host_header,
            completions_path: completions
                .path_and_query()
                .map_or("/v1/completions".into(), |p| p.to_string()),
            chat_path: chat
                .path_and_query()
                .map_or("/v1/chat/completions".into(), |p| p.to_string()),
            auth,
            timeout: cfg.request_timeout,
            connect_timeout: cfg.connect_timeout,
            pool: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// GET `path` (e.g. `/metrics`): status and body text.
    pub async fn get_text(&self, path: &str, timeout: Duration) -> Result<(u16, String), String> {
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let mut req = Request::builder().method(Method::GET).uri(uri);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| classify(&e, e.is_connect()).1)?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| format!("GET {path}: no answer within {timeout:?}"))?
    }

    /// An idle pooled connection the server has not closed (the most recently used first), or
    /// a new one; `true` when pooled. Closed and expired connections are dropped on the way.
    async fn checkout(&self) -> Result<(PooledConn, bool), (ErrorKind, String)> {
        loop {
            let Some(mut c) = self.pool.lock().expect("pool lock").pop() else {
                break;
            };
            if c.idle_since.elapsed() < POOL_IDLE_TIMEOUT && !c.closed_by_server().await {
                return Ok((c, true));
            }
        }
        Ok((self.connect().await?, false))
    }

    /// Open `n` keep-alive connections one after the other before a run, so the run's first
    /// requests do not open them all at once (a burst of connects can overflow the server's
    /// accept queue and cost a 1 s SYN retransmit). Deviation from vLLM's client, which connects
    /// lazily. Returns how many were opened; the first failure stops it (the run will record it).
    pub async fn warm_up(&self, n: usize) -> usize {
        let mut opened = 0;
        while opened < n {
            match self.connect().await {
                Ok(c) => self.pool.lock().expect("pool lock").push(c),
                Err(_) => break,
            }
            opened += 1;
        }
        opened
    }

    async fn connect(&self) -> Result<PooledConn, (ErrorKind, String)> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.authority.as_str()),
        )
        .await
        {
            Err(_) => {
                return Err((
                    ErrorKind::Connect,
                    format!(
                        "connect to {}: no answer within {:?}",
                        self.authority, self.connect_timeout
                    ),
                ))
            }
            Ok(Err(e)) => {
                let kind = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    ErrorKind::ConnectionRefused
                } else {
                    ErrorKind::Connect
                };
                return Err((kind, format!("connect to {}: {e}", self.authority)));
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        match http1::handshake(TokioIo::new(stream)).await {
            Ok((sender, conn)) => Ok(PooledConn {
                sender,
                conn,
                idle_since: Instant::now(),
            }),
            Err(e) => Err((ErrorKind::Connect, format!("HTTP handshake: {e}"))),
        }
    }

    fn request(&self, req: &PreparedRequest) -> Result<Request<Full<Bytes>>, String> {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(match req.endpoint {
                Endpoint::Completions => self.completions_path.as_str(),
                Endpoint::Chat => self.chat_path.as_str(),
            })
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, "inferencelab-bench");
        if let Some(a) = &self.auth {
            b = b.header(AUTHORIZATION, a.clone());
        }
        // an empty id: no header (`RequestIdHeader::None`)
        if let Ok(v) = HeaderValue::from_str(&req.request_id) {
            if !req.request_id.is_empty() {
                b = b.header("x-request-id", v);
            }
        }
        b.body(Full::new(req.body.clone()))
            .map_err(|e| e.to_string())
    }

    /// One request on one connection, the connection driven in this task (no hop through a
    /// connection task: a chunk is stamped as soon as this task reads it). A request that a
    /// closed connection did not deliver goes once more on a fresh connection (`may_resend`),
    /// with the same send time.
    async fn run(&self, req: PreparedRequest, out: &mut Outcome) {
        out.sent = Instant::now();
        let deadline = out.sent + self.timeout;
        let mut request = match self.request(&req) {
            Ok(r) => r,
            Err(e) => return out.fail(ErrorKind::Client, e),
        };
        let mut resent = false;
        let (resp, mut c) = loop {
            let checkout = async {
                if resent {
                    Ok((self.connect().await?, false))
                } else {
                    self.checkout().await
                }
            };
            let (c, reused) = match tokio::time::timeout_at(deadline, checkout).await {
                Err(_) => {
                    return out.fail(
                        ErrorKind::Timeout,
                        format!("no connection within {:?}", self.timeout),
                    )
                }
                Ok(Err((kind, msg))) if resent => {
                    return out.fail(
                        kind,
                        format!("{msg} (sending again after a closed connection)"),
                    )
                }
                Ok(Err((kind, msg))) => return out.fail(kind, msg),
                Ok(Ok(c)) => c,
            };
            let PooledConn {
                mut sender, conn, ..
            } = c;
            let mut conn = Some(conn);
            let r = {
                let fut = sender.try_send_request(request);
                tokio::pin!(fut);
                loop {
                    tokio::select! {
                        biased;
                        r = &mut fut => break Some(r),
                        _ = std::future::poll_fn(|cx| conn.as_mut().map_or(Poll::Pending, |c| c.poll_without_shutdown(cx))), if conn.is_some() => {
                            // Finished (the server closed it): drop it, so that hyper answers a
                            // request still queued on it (unwritten, handed back) instead of
                            // leaving it waiting.
                            conn = None;
                        }
                        _ = tokio::time::sleep_until(deadline) => break None,
                    }
                }
            };
            match r {
                None => {
                    return out.fail(
                        ErrorKind::Timeout,
                        format!("no response headers within {:?}", self.timeout),
                    )
                }
                Some(Ok(resp)) => {
                    let c = conn.map(|conn| PooledConn {
                        sender,
                        conn,
                        idle_since: Instant::now(),
                    });
                    break (resp, c);
                }
                Some(Err(e)) => {
                    let (unsent, e) = split(e);
                    if !resent && may_resend(&e, unsent.is_some(), reused) {
                        resent = true;
                        request = match unsent.map_or_else(|| self.request(&req), Ok) {
                            Ok(r) => r,
                            Err(e) => return out.fail(ErrorKind::Client, e),
                        };
                        continue;
                    }
                    let (_, msg) = classify(&e, false);
                    let msg = if resent {
                        format!("{msg} (sending again after a closed connection)")
                    } else {
                        msg
                    };
                    return out.fail(ErrorKind::StreamBroken, msg);
                }
            }
        };
        let status = resp.status();
        out.http_status = Some(status.as_u16());
        let mut body = resp.into_body();
        let mut parser = SseParser::new();
        let mut error_text = Vec::new();
        let mut ended = false;
        while !ended {
            let conn_alive = c.is_some();
            tokio::select! {
                biased;
                f = body.frame() => match f {
                    None => ended = true,
                    Some(Err(e)) => {
                        let (_, msg) = classify(&e, false);
                        return out.fail(ErrorKind::StreamBroken, msg);
                    }
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            if status.is_success() {
                                let at = Instant::now();
                                parser.feed(&data, &mut |ev| handle_event(out, ev, at));
                            } else if error_text.len() < 2048 {
                                error_text.extend_from_slice(&data);
                            }
                        }
                    }
                },
                _ = std::future::poll_fn(|cx| c.as_mut().map_or(std::task::Poll::Pending, |c| c.conn.poll_without_shutdown(cx))), if conn_alive => {
                    c = None;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return out.fail(
                        ErrorKind::Timeout,
                        format!("the stream did not end within {:?}", self.timeout),
                    );
                }
            }
        }
        if let Some(c) = c {
            self.checkin(c).await;
        }
        if !status.is_success() {
            return out.fail(ErrorKind::Http, http_error(status, &error_text));
        }
        let at = Instant::now();
        parser.finish(&mut |ev| handle_event(out, ev, at));
        out.finish_stream();
    }

    /// Back to the pool once the connection is idle again (it needs a poll after the body).
    async fn checkin(&self, mut c: PooledConn) {
        let ok = {
            let ready = c.sender.ready();
            tokio::pin!(ready);
            let mut alive = true;
            let wait = async {
                loop {
                    tokio::select! {
                        biased;
                        r = &mut ready => break r.is_ok() && alive,
                        _ = std::future::poll_fn(|cx| c.conn.poll_without_shutdown(cx)), if alive => {
                            alive = false;
                        }
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(1), wait)
                .await
                .unwrap_or(false)
        };
        if ok {
            c.idle_since = Instant::now();
            self.pool.lock().expect("pool lock").push(c);
        }
    }
}

/// A failed send's error, and the request when hyper hands it back unwritten.
fn split(
    mut e: TrySendError<Request<Full<Bytes>>>,
) -> (Option<Request<Full<Bytes>>>, hyper::Error) {
    let unsent = e.take_message();
    (unsent, e.into_error())
}

impl Executor for HttpExecutor {
    async fn execute(&self, req: PreparedRequest) -> Outcome {
        let mut out = Outcome::new(Instant::now());
        self.run(req, &mut out).await;
        out
    }
}

/// What the fake server does with one request.
#[derive(Debug, Clone)]
pub struct FakeReply {
    pub ttft: Duration,
    pub itl: Duration,
    pub output_tokens: u32,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    /// Text of each token.
    pub token_text: String,
    pub error: Option<(ErrorKind, String)>,
}

type ReplyFn = dyn Fn(&PreparedRequest) -> FakeReply + Send + Sync;

/// A fake executor: no network, tokens on the (tokio) clock, so tests with a paused clock are
/// exact and instant.
pub struct FakeExecutor {
    reply: Box<ReplyFn>,
}

impl FakeExecutor {
    pub fn new(reply: impl Fn(&PreparedRequest) -> FakeReply + Send + Sync + 'static) -> Self {
        FakeExecutor {
            reply: Box::new(reply),
        }
    }

    /// Fixed first-token and inter-token delays, `max_tokens` tokens of text "tok ".
    pub fn fixed(ttft: Duration, itl: Duration) -> Self {
        Self::new(move |r| FakeReply {
            ttft,
            itl,
            output_tokens: r.max_tokens,
            prompt_tokens: r.prompt_tokens.unwrap_or(0),
            cached_tokens: 0,
            token_text: "tok ".into(),
            error: None,
        })
    }
}

impl Executor for FakeExecutor {
    async fn execute(&self, req: PreparedRequest) -> Outcome {
        let r = (self.reply)(&req);
        let mut out = Outcome::new(Instant::now());
        out.response_id = Some(format!("fake-{}", req.request_id));
        if let Some((kind, msg)) = r.error {
            tokio::time::sleep(r.ttft).await;
            out.fail(kind, msg);
            return out;
        }
        out.http_status = Some(200);
        tokio::time::sleep(r.ttft).await;
        for i in 0..r.output_tokens {
            if i > 0 {
                tokio::time::sleep(r.itl).await;
            }
            out.chunk_times.push(Instant::now());
            out.generated_text.push_str(&r.token_text);
        }
        out.usage = Some(Usage {
            prompt_tokens: Some(r.prompt_tokens),
            completion_tokens: Some(r.output_tokens as u64),
            cached_tokens: Some(r.cached_tokens),
        });
        out.done = true;
        out.finish_stream();
        out
    }
}

/// A failed request's error: the status and the server's message (OpenAI's `error.message`,
/// or a top-level `message`, else the body's first 2 KiB).
fn http_error(status: hyper::StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
    let reason = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| text.into_owned());
    format!(
        "HTTP {} {}: {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        reason.trim()
    )
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_role_and_empty_chunks_are_not_tokens_as_in_vllm() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut o = Outcome::new(t0);
        // vLLM's opening chunk: role and empty content, sent before any token.
        handle_event(
            &mut o,
            br#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            at(1),
        );
        handle_event(&mut o, br#"{"choices":[{"delta":{"content":"a"}}]}"#, at(5));
        // a token that decodes to nothing still counts (content "" and no role)
        handle_event(&mut o, br#"{"choices":[{"delta":{"content":""}}]}"#, at(7));
        handle_event(
            &mut o,
            br#"{"choices":[{"delta":{"reasoning":"r"}}]}"#,
            at(8),
        );
        // a closing chunk with only a finish reason is not a token
        handle_event(
            &mut o,
            br#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
            at(9),
        );
        assert_eq!(o.chunk_times, vec![at(5), at(7), at(8)]);
        assert_eq!(o.generated_text, "ar");
    }

    #[test]
    fn chunks_usage_and_errors() {
        let t = Instant::now();
        let mut o = Outcome::new(t);
        handle_event(&mut o, br#"{"id":"cmpl-1","choices":[{"text":"a"}]}"#, t);
        handle_event(
            &mut o,
            br#"{"id":"cmpl-1","choices":[{"delta":{"content":"b"}}]}"#,
            t,
        );
        handle_event(&mut o, br#"{"id":"cmpl-1","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}"#, t);
        handle_event(&mut o, b"[DONE]", t);
        o.finish_stream();
        assert_eq!(o.generated_text, "ab");
        assert_eq!(o.chunk_times.len(), 2);
        assert_eq!(o.response_id.as_deref(), Some("cmpl-1"));
        assert_eq!(
            o.usage,
            Some(Usage {
                prompt_tokens: Some(7),
                completion_tokens: Some(2),
                cached_tokens: Some(4)
            })
        );
        assert!(o.error.is_none() && o.done);

        let mut o = Outcome::new(t);
        handle_event(&mut o, br#"{"choices":[{"text":"a"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"prompt_tokens_details":null}}"#, t);
        o.finish_stream();
        assert_eq!(o.error.as_ref().unwrap().0, ErrorKind::Truncated);
        assert_eq!(
            o.usage.unwrap().cached_tokens,
            None,
            "absent details = no cached count"
        );

        let mut o = Outcome::new(t);
        handle_event(&mut o, br#"{"error":{"message":"boom"}}"#, t);
        assert_eq!(
            o.error.clone().unwrap(),
            (ErrorKind::ServerError, "boom".into())
        );
        let mut o = Outcome::new(t);
        handle_event(&mut o, b"{not json", t);
        assert_eq!(o.error.unwrap().0, ErrorKind::BadChunk);
    }
}
