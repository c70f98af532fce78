//! The HTTP server: vLLM's OpenAI-compatible API (`vllm/entrypoints/openai/api_server.py`) in
//! front of the engine core thread.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions` (SSE streaming in vLLM's chunk
//! format, `stream_options.include_usage`, `usage.prompt_tokens_details.cached_tokens` with
//! `enable_prompt_tokens_details`; or one JSON response), `GET /v1/models`, `GET /health`,
//! `GET /version`, `GET /metrics`, `POST /tokenize`, `POST /detokenize`,
//! `POST /reset_prefix_cache`. Errors are OpenAI-style JSON (`{"error": {"message", "type",
//! "param", "code"}}`) with the status vLLM uses. With an API key, `/v1/*` needs
//! `Authorization: Bearer KEY` (compared in constant time, as vLLM's middleware guards `/v1`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body::Frame;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::core::{
    Clock, Command, Core, CoreConfig, Event, LogSink, PacingLog, Submission, TokenPacing,
};
use crate::engine::{Engine, EngineConfig, Prompt, ReqKey};
use crate::logfmt::{LogFormat, RequestInfo, Stamp};
use crate::metrics::Metrics;
use crate::tokenizer::Tokenizer;

/// The vLLM version the emulator reports and writes in its logs.
pub const VLLM_VERSION: &str = "0.33.0";

/// Everything a server needs.
pub struct ServerConfig {
    pub engine: EngineConfig,
    /// `--served-model-name` (what clients put in `model`).
    pub served_model_name: String,
    /// The model's Hugging Face id or registry name (`/v1/models` `root`).
    pub model_root: String,
    pub max_model_len: u32,
    /// Emulated seconds per real second; 0: no pacing (the logical clock, see [`Clock`]).
    pub time_scale: f64,
    pub seed: u64,
    pub api_key: Option<String>,
    /// vLLM `--enable-log-requests` (request and response lines).
    pub enable_log_requests: bool,
    /// vLLM `--enable-log-outputs`: with request logging, a streamed response is logged one
    /// `(streaming delta)` line pair per token as it is sampled, as vLLM 0.32 does, then a
    /// `(streaming complete)` pair without ids. Without it the response is one pair at the end.
    pub enable_log_outputs: bool,
    pub enable_prompt_tokens_details: bool,
    pub max_log_len: Option<usize>,
    pub log_time_decimals: u8,
    /// `None`: no log at all.
    pub log: Option<LogSink>,
    /// Emulated time zero (microseconds since the Unix epoch); `None`: now.
    pub epoch_us: Option<u64>,
    /// vLLM's stats log interval (`VLLM_LOG_STATS_INTERVAL`, 10 s), emulated seconds.
    pub stats_interval_s: f64,
    pub max_request_bytes: usize,
    /// How long in-flight requests may finish after a shutdown signal before they are cut.
    pub shutdown_grace: Duration,
    /// A connection must send a request's headers within this long of being accepted or of its
    /// previous response, else it is closed: the keep-alive idle timeout of vLLM's uvicorn
    /// (`VLLM_HTTP_TIMEOUT_KEEP_ALIVE`, 5 s), which also bounds a slow header read. `None`:
    /// never (idle sockets pile up to the fd limit and block new requests).
    pub keep_alive_timeout: Option<Duration>,
    pub tokenizer: Arc<dyn Tokenizer>,
    /// Record, per streamed token, when it was due, queued and sent (pacing measurements).
    pub pacing: Option<PacingLog>,
}

impl ServerConfig {
    /// vLLM's defaults around an engine: port-independent settings only, real-time pacing,
    /// no request log, the built-in tokenizer.
    pub fn new(engine: EngineConfig, served_model_name: &str) -> Self {
        ServerConfig {
            model_root: engine
                .model
                .hf_id
                .clone()
                .unwrap_or_else(|| engine.model.name.clone()),
            engine,
            served_model_name: served_model_name.to_string(),
            max_model_len: 32_768,
            time_scale: 1.0,
            seed: 0,
            api_key: None,
            enable_log_requests: false,
            enable_log_outputs: false,
            enable_prompt_tokens_details: false,
            max_log_len: None,
            log_time_decimals: 0,
            log: None,
            epoch_us: None,
            stats_interval_s: 10.0,
            max_request_bytes: 16 << 20,
            shutdown_grace: Duration::from_secs(5),
            keep_alive_timeout: Some(Duration::from_secs(5)),
            tokenizer: Arc::new(crate::tokenizer::WordTokenizer::default()),
            pacing: None,
        }
    }
}

struct Shared {
    served_model_name: String,
    model_root: String,
    max_model_len: u32,
    api_key: Option<Vec<u8>>,
    enable_prompt_tokens_details: bool,
    seed: u64,
    block_size: u32,
    chunk_size: Option<u32>,
    commands: std::sync::mpsc::Sender<Command>,
    metrics: Arc<Mutex<Metrics>>,
    tokenizer: Arc<dyn Tokenizer>,
    next_id: AtomicU64,
    pacing: Option<PacingLog>,
    /// The engine core thread has ended (a panic): /health says so.
    engine_dead: AtomicBool,
}

type AppState = Arc<Shared>;

/// A running server (for tests and embedding).
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// Stop accepting, let in-flight requests finish (up to the grace period), flush the log.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Serve on an already bound listener until `shutdown` resolves, in the current runtime.
pub fn spawn(listener: TcpListener, config: ServerConfig) -> std::io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, config, async move {
        let _ = stopped.await;
    }));
    Ok(ServerHandle {
        addr,
        stop: Some(stop),
        task,
    })
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Serve on `listener` until `shutdown` resolves; then stop accepting, give in-flight requests
/// `shutdown_grace` to finish, cut the rest, and flush the log.
pub async fn run(
    listener: TcpListener,
    mut config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let lmcache = config.engine.lmcache.is_some();
    let metrics = Arc::new(Mutex::new(Metrics::new(lmcache)));
    let clock = if config.time_scale > 0.0 {
        Clock::Real {
            start: Instant::now(),
            scale: config.time_scale,
        }
    } else {
        Clock::Logical
    };
    let pid = std::process::id();
    let format = LogFormat {
        api_pid: pid,
        engine_pid: pid + 1,
        decimals: config.log_time_decimals,
        max_log_len: config.max_log_len,
    };
    let epoch_us = config.epoch_us.unwrap_or_else(unix_us);
    let (tx, rx) = std::sync::mpsc::channel::<Command>();
    let shared = Arc::new(Shared {
        served_model_name: config.served_model_name.clone(),
        model_root: config.model_root.clone(),
        max_model_len: config.max_model_len,
        api_key: config.api_key.clone().map(String::into_bytes),
        enable_prompt_tokens_details: config.enable_prompt_tokens_details,
        seed: config.seed,
        block_size: config.engine.block_size,
        chunk_size: config.engine.lmcache.as_ref().map(|l| l.chunk_size),
        commands: tx.clone(),
        metrics: metrics.clone(),
        tokenizer: config.tokenizer.clone(),
        next_id: AtomicU64::new(0),
        pacing: config.pacing.clone(),
        engine_dead: AtomicBool::new(false),
    });
    let startup = startup_lines(&format, Stamp(epoch_us), &config, addr);
    let engine = Engine::new(config.engine.clone());
    let core_cfg = CoreConfig {
        clock,
        seed: config.seed,
        log_requests: config.enable_log_requests,
        log_deltas: config.enable_log_requests && config.enable_log_outputs,
        format,
        epoch_us,
        stats_interval_us: (config.stats_interval_s * 1e6) as u64,
        tokenizer: config.tokenizer.clone(),
        pacing: config.pacing.is_some(),
    };
    let mut core = Core::new(engine, core_cfg, config.log.take(), metrics);
    core.write_log(&startup);
    let core_thread = std::thread::Builder::new()
        .name("engine-core".into())
        .spawn(move || core.run(rx))?;

    let app = router(shared.clone(), config.max_request_bytes);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_task = tokio::spawn(accept_loop(
        listener,
        app,
        config.keep_alive_timeout,
        stop_rx,
    ));
    // The core thread only ends when every sender is gone, so an end before that is a panic:
    // then /health fails and the server stops with an error, instead of answering 503 to every
    // request while saying it is healthy.
    let mut core_done = tokio::task::spawn_blocking(move || core_thread.join());
    let result = tokio::select! {
        r = &mut server_task => Some(r),
        _ = shutdown => None,
        joined = &mut core_done => {
            shared.engine_dead.store(true, Ordering::SeqCst);
            let why = match joined {
                Ok(Err(panic)) => panic_text(&panic),
                _ => "it ended".into(),
            };
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut server_task).await;
            server_task.abort();
            return Err(std::io::Error::other(format!(
                "the engine core thread failed ({why}); the server stopped"
            )));
        }
    };
    let result = match result {
        Some(r) => r,
        None => {
            let _ = stop_tx.send(true);
            match tokio::time::timeout(config.shutdown_grace, &mut server_task).await {
                Ok(r) => r,
                Err(_) => {
                    // cut what is still streaming: the core drops every stream
                    let _ = tx.send(Command::Cancel);
                    match tokio::time::timeout(Duration::from_secs(5), &mut server_task).await {
                        Ok(r) => r,
                        Err(_) => {
                            server_task.abort();
                            Ok(Ok(()))
                        }
                    }
                }
            }
        }
    };
    let _ = tx.send(Command::Cancel);
    drop(tx);
    drop(shared);
    core_done
        .await
        .map_err(std::io::Error::other)?
        .map_err(|p| {
            std::io::Error::other(format!(
                "the engine core thread panicked: {}",
                panic_text(&p)
            ))
        })?;
    result.map_err(std::io::Error::other)?
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Accept connections until `stop`, then let the open ones finish. One hyper HTTP/1 connection
/// per socket (what `axum::serve` does, plus the header-read / keep-alive timeout it cannot set).
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    keep_alive_timeout: Option<Duration>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // out of file descriptors and the like: wait, as axum::serve does, instead
                    // of spinning; a failed handshake only concerns that client
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                    ) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|&s| s).await; } => break,
        };
        // Every token is its own small write: without TCP_NODELAY, Nagle's algorithm holds a
        // write back while the previous one is unacknowledged, and the client's delayed ACK can
        // stretch that to tens of milliseconds.
        let _ = tcp.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(keep_alive_timeout);
        let conn =
            builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn startup_lines(f: &LogFormat, at: Stamp, c: &ServerConfig, addr: SocketAddr) -> String {
    let e = &c.engine;
    let mut s = f.info(
        at,
        "entrypoints/openai/api_server.py:1839",
        &format!("vLLM API server version {VLLM_VERSION} (inferencelab emulator)"),
    );
    s.push_str(&f.info(
        at,
        "v1/core/kv_cache_utils.py:1087",
        &format!(
            "GPU KV cache size: {} tokens ({} blocks of {}; eviction policy {})",
            e.num_gpu_blocks.saturating_mul(e.block_size as u64),
            e.num_gpu_blocks,
            e.block_size,
            e.gpu_policy
        ),
    ));
    if let Some(l) = &e.lmcache {
        s.push_str(&f.info(
            at,
            "distributed/kv_transfer/kv_connector/factory.py:53",
            &format!(
                "Creating v1 connector with name: LMCacheConnectorV1 (chunk_size {}, {} CPU \
                 chunks, cache_policy {})",
                l.chunk_size,
                l.num_chunks,
                l.policy.name().to_uppercase()
            ),
        ));
    }
    s.push_str(&f.info(
        at,
        "entrypoints/openai/api_server.py:1912",
        &format!("Starting vLLM API server 0 on http://{addr}"),
    ));
    s
}

fn router(state: AppState, max_request_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(v1)
        .route(
            "/health",
            get(|State(s): State<AppState>| async move {
                // vLLM's /health fails once the engine is dead (EngineDeadError)
                if s.engine_dead.load(Ordering::SeqCst) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }),
        )
        .route("/ping", get(|| async { StatusCode::OK }))
        .route(
            "/version",
            get(|| async { axum::Json(json!({ "version": VLLM_VERSION })) }),
        )
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/reset_prefix_cache", post(reset_prefix_cache))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NotFoundError", "Not Found".into()) })
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
}

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}` with its status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({
                "error": {
                    "message": self.message,
                    "type": self.kind,
                    "param": null,
                    "code": self.status.as_u16(),
                }
            })),
        )
            .into_response()
    }
}

fn error(status: StatusCode, kind: &'static str, message: String) -> ApiError {
    ApiError {
        status,
        kind,
        message,
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    error(StatusCode::BAD_REQUEST, "BadRequestError", message.into())
}

/// Equal in time whatever the contents (length differences are not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::as_bytes)
            .unwrap_or(b"");
        if !constant_time_eq(given, key) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "error": "Unauthorized" })),
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Parse a JSON body, or the error response to send.
fn parse_body(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Value, ApiError> {
    let bytes = body.map_err(|r| {
        let status = r.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "RequestEntityTooLarge"
        } else {
            "BadRequestError"
        };
        error(status, kind, r.body_text())
    })?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad_request(format!("invalid JSON body: {e}")))?;
    if !v.is_object() {
        return Err(bad_request("the request body must be a JSON object"));
    }
    Ok(v)
}

fn check_model(s: &Shared, v: &Value) -> Result<(), ApiError> {
    match v.get("model") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(m)) if *m == s.served_model_name => Ok(()),
        Some(Value::String(m)) => Err(error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            format!("The model `{m}` does not exist."),
        )),
        Some(_) => Err(bad_request("'model' must be a string")),
    }
}

fn opt_u32(v: &Value, key: &str) -> Result<Option<u32>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad_request(format!("'{key}' must be a non-negative integer"))),
    }
}

fn opt_f64(v: &Value, key: &str, default: f64) -> Result<f64, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_f64()
            .ok_or_else(|| bad_request(format!("'{key}' must be a number"))),
    }
}

/// The common sampling parameters of both endpoints.
struct Params {
    max_tokens: Option<u32>,
    stream: bool,
    include_usage: bool,
    temperature: f64,
    top_p: f64,
    seed: Option<u64>,
}

fn params(v: &Value, max_tokens_keys: &[&str]) -> Result<Params, ApiError> {
    let mut max_tokens = None;
    for k in max_tokens_keys {
        if let Some(n) = opt_u32(v, k)? {
            max_tokens = Some(n);
        }
    }
    if max_tokens == Some(0) {
        return Err(bad_request("max_tokens must be at least 1, got 0."));
    }
    if let Some(n) = opt_u32(v, "n")? {
        if n != 1 {
            return Err(bad_request("the emulator serves n = 1 only"));
        }
    }
    let stream = match v.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad_request("'stream' must be a boolean")),
    };
    let include_usage = v
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !stream && v.get("stream_options").is_some_and(|o| !o.is_null()) {
        return Err(bad_request(
            "Stream options can only be defined when `stream=True`.",
        ));
    }
    Ok(Params {
        max_tokens,
        stream,
        include_usage,
        temperature: opt_f64(v, "temperature", 1.0)?,
        top_p: opt_f64(v, "top_p", 1.0)?,
        seed: v.get("seed").and_then(Value::as_u64),
    })
}

/// The text of a chat message's `content` (a string or a list of text parts).
fn content_text(c: &Value) -> Result<String, ApiError> {
    match c {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut s = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => s.push_str(t),
                    _ => return Err(bad_request("only text content parts are supported")),
                }
            }
            Ok(s)
        }
        _ => Err(bad_request(
            "message content must be a string or a list of parts",
        )),
    }
}

fn chat_prompt(s: &Shared, v: &Value) -> Result<(String, Vec<u32>), ApiError> {
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_request("'messages' is required and must be a list"))?;
    if messages.is_empty() {
        return Err(bad_request("'messages' must not be empty"));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for m in messages {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_request("every message needs a string 'role'"))?;
        turns.push((
            role.to_string(),
            content_text(m.get("content").unwrap_or(&Value::Null))?,
        ));
    }
    let text = s.tokenizer.apply_chat_template(&turns);
    let ids = s.tokenizer.encode(&text);
    Ok((text, ids))
}

fn completion_prompt(s: &Shared, v: &Value) -> Result<(String, Vec<u32>), ApiError> {
    let ids_of = |a: &[Value]| -> Option<Vec<u32>> {
        a.iter()
            .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    };
    match v.get("prompt") {
        Some(Value::String(p)) => Ok((p.clone(), s.tokenizer.encode(p))),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            let p = a[0].as_str().unwrap_or_default().to_string();
            let ids = s.tokenizer.encode(&p);
            Ok((p, ids))
        }
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_array() => {
            let ids = ids_of(a[0].as_array().map_or(&[][..], Vec::as_slice))
                .ok_or_else(|| bad_request("'prompt' token ids must be integers"))?;
            Ok((s.tokenizer.decode(&ids), ids))
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_number) && !a.is_empty() => {
            let ids =
                ids_of(a).ok_or_else(|| bad_request("'prompt' token ids must be integers"))?;
            Ok((s.tokenizer.decode(&ids), ids))
        }
        Some(Value::Array(_)) => Err(bad_request(
            "the emulator serves one prompt per request (a string or a list of token ids)",
        )),
        _ => Err(bad_request("'prompt' is required")),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

async fn chat_completions(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    generate(s, client_request_id(&headers), body, Kind::Chat).await
}

async fn completions(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    generate(s, client_request_id(&headers), body, Kind::Completion).await
}

/// The client's `X-Request-Id`, which vLLM makes the base of the request id
/// (`serving_engine._base_request_id`: `cmpl-<id>`, `chatcmpl-<id>`), so a client's ids appear
/// in the responses and the logs.
///
/// Deviation: vLLM copies the header as it is; here a space, a quote, a backslash, a control or
/// a non-ASCII byte is percent-encoded (and the id cut at 256 bytes), so one client's id cannot
/// split a log line that `simulate` reads back.
fn client_request_id(headers: &HeaderMap) -> Option<String> {
    const MAX_ID: usize = 256;
    let raw = headers.get("x-request-id")?.as_bytes();
    let raw = raw.trim_ascii();
    if raw.is_empty() {
        return None;
    }
    let mut id = String::with_capacity(raw.len());
    for &b in raw {
        if id.len() >= MAX_ID {
            break;
        }
        if b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\' | b'%') {
            id.push(b as char);
        } else {
            id.push_str(&format!("%{b:02X}"));
        }
    }
    Some(id)
}

/// The opening of every SSE chunk, `{"id":…,"object":…,"created":…,"model":…` without the
/// closing brace (the chunk's own keys follow). Built by serde: the id comes from the client.
fn chunk_head(request_id: &str, object: &str, created: u64, model: &str) -> String {
    let mut head = json!({
        "id": request_id,
        "object": object,
        "created": created,
        "model": model,
    })
    .to_string();
    head.pop(); // the closing '}'
    head
}

/// Sends `Abort` for a request that was not seen to the end (the client went away).
struct AbortGuard {
    key: Option<ReqKey>,
    commands: std::sync::mpsc::Sender<Command>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let _ = self.commands.send(Command::Abort(key));
        }
    }
}

async fn generate(
    s: AppState,
    client_id: Option<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    kind: Kind,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    let v = parse_body(body)?;
    check_model(&s, &v)?;
    let p = params(
        &v,
        if kind == Kind::Chat {
            &["max_tokens", "max_completion_tokens"]
        } else {
            &["max_tokens"]
        },
    )?;
    let (prompt_text, ids) = match kind {
        Kind::Chat => chat_prompt(&s, &v)?,
        Kind::Completion => completion_prompt(&s, &v)?,
    };
    let n = ids.len() as u64;
    let max_len = s.max_model_len as u64;
    if n >= max_len || p.max_tokens.is_some_and(|m| n + m as u64 > max_len) {
        let m = p.max_tokens.unwrap_or(0);
        return Err(bad_request(format!(
            "This model's maximum context length is {max_len} tokens. However, you requested \
             {} tokens ({n} in the messages, {m} in the completion). Please reduce the length \
             of the messages or completion.",
            n + m as u64
        )));
    }
    // Without max_tokens the emulated model stops by itself after 16..=256 tokens, a length
    // fixed by the seed and the prompt (so a replay gets the same lengths).
    let (max_tokens, finish_reason) = match p.max_tokens {
        Some(m) => (m, "length"),
        None => {
            let h = inferencelab_trace::hash::block_hash(s.seed, &ids);
            ((16 + h % 241).min(max_len - n) as u32, "stop")
        }
    };
    let counter = s.next_id.fetch_add(1, Ordering::Relaxed);
    let base = client_id.unwrap_or_else(|| {
        format!(
            "{:016x}{:016x}",
            crate::core::mix(s.seed ^ counter),
            crate::core::mix(counter.wrapping_add(0x5EED))
        )
    });
    let request_id = format!(
        "{}-{base}",
        if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        }
    );
    let prompt = Prompt::new(ids, s.block_size, s.chunk_size);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (reply_tx, reply) = oneshot::channel();
    let submission = Submission {
        prompt,
        max_tokens,
        finish_reason,
        arrival,
        info: RequestInfo {
            request_id: request_id.clone(),
            prompt: prompt_text,
            temperature: p.temperature,
            top_p: p.top_p,
            max_tokens,
            seed: p.seed,
        },
        streaming: p.stream,
        events: events_tx,
        reply: reply_tx,
    };
    if s.commands
        .send(Command::Submit(Box::new(submission)))
        .is_err()
    {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableError",
            "the server is shutting down".into(),
        ));
    }
    let key = match reply.await {
        Ok(Ok(key)) => key,
        Ok(Err(e)) => return Err(bad_request(e.to_string())),
        Err(_) => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableError",
                "the server is shutting down".into(),
            ))
        }
    };
    let guard = AbortGuard {
        key: Some(key),
        commands: s.commands.clone(),
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let chunker = Chunker::new(
        kind,
        match kind {
            Kind::Chat => chunk_head(
                &request_id,
                "chat.completion.chunk",
                created,
                &s.served_model_name,
            ),
            Kind::Completion => chunk_head(
                &request_id,
                "text_completion",
                created,
                &s.served_model_name,
            ),
        },
        p.include_usage,
        s.enable_prompt_tokens_details,
        n,
        finish_reason,
        s.tokenizer.clone(),
    );
    if p.stream {
        let body = SseBody {
            events,
            chunker,
            guard,
            done: false,
            pacing: s.pacing.clone().map(|log| PacingRecord {
                log,
                request_id,
                tokens: Vec::with_capacity(max_tokens as usize),
            }),
        };
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::new(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()));
    }
    let mut guard = guard;
    let mut chunker = chunker;
    let mut out_ids = Vec::with_capacity(max_tokens as usize);
    loop {
        match events.recv().await {
            Some(Event::Admitted { cached_tokens }) => chunker.cached_tokens = cached_tokens,
            Some(Event::Token { id, finished, .. }) => {
                out_ids.push(id);
                if finished {
                    break;
                }
            }
            None => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableError",
                    "the server shut down before the response was complete".into(),
                ))
            }
        }
    }
    guard.key = None;
    chunker.completion_tokens = out_ids.len() as u32;
    let text = s.tokenizer.decode(&out_ids);
    let choice = match kind {
        Kind::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null, "tool_calls": []},
            "logprobs": null,
            "finish_reason": finish_reason,
            "stop_reason": null,
        }),
        Kind::Completion => json!({
            "index": 0,
            "text": text,
            "logprobs": null,
            "finish_reason": finish_reason,
            "stop_reason": null,
        }),
    };
    Ok(axum::Json(json!({
        "id": request_id,
        "object": if kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": created,
        "model": s.served_model_name,
        "choices": [choice],
        "usage": chunker.usage(),
    }))
    .into_response())
}

/// Formats vLLM's SSE chunks for one response. The constant parts of a token chunk are built
/// once per response; a token chunk is then one buffer: prefix, the token's JSON-escaped text,
/// suffix.
struct Chunker {
    kind: Kind,
    /// `{"id":...,"object":...,"created":...,"model":...` (no closing brace).
    head: String,
    /// `data: {head},"choices":[{"index":0,"delta":{"content":` (or `"text":`).
    token_prefix: String,
    /// `,"logprobs":null,"finish_reason":null}]}` and the blank line (chat closes the delta).
    token_suffix: String,
    /// The same for the last token, with the finish and stop reasons.
    last_suffix: String,
    include_usage: bool,
    details: bool,
    prompt_tokens: u64,
    cached_tokens: u64,
    completion_tokens: u32,
    tokenizer: Arc<dyn Tokenizer>,
}

impl Chunker {
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: Kind,
        head: String,
        include_usage: bool,
        details: bool,
        prompt_tokens: u64,
        finish_reason: &'static str,
        tokenizer: Arc<dyn Tokenizer>,
    ) -> Self {
        let (token_prefix, close) = match kind {
            Kind::Chat => (
                format!("data: {head},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":"),
                "}",
            ),
            Kind::Completion => (
                format!("data: {head},\"choices\":[{{\"index\":0,\"text\":"),
                "",
            ),
        };
        Chunker {
            kind,
            token_prefix,
            token_suffix: format!("{close},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"),
            last_suffix: format!(
                "{close},\"logprobs\":null,\"finish_reason\":\"{finish_reason}\",\"stop_reason\":null}}]}}\n\n"
            ),
            head,
            include_usage,
            details,
            prompt_tokens,
            cached_tokens: 0,
            completion_tokens: 0,
            tokenizer,
        }
    }

    fn usage(&self) -> Value {
        let mut u = json!({
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens as u64,
            "completion_tokens": self.completion_tokens,
        });
        if self.details {
            u["prompt_tokens_details"] = json!({ "cached_tokens": self.cached_tokens });
        }
        u
    }

    fn token(&mut self, id: u32, finished: bool, out: &mut String) {
        if self.kind == Kind::Chat && self.completion_tokens == 0 {
            // vLLM opens every chat stream with the role
            out.push_str(&format!(
                "data: {},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
                self.head
            ));
        }
        let text = self.tokenizer.decode(&[id]);
        let suffix = if finished {
            &self.last_suffix
        } else {
            &self.token_suffix
        };
        out.reserve(self.token_prefix.len() + text.len() + 2 + suffix.len());
        out.push_str(&self.token_prefix);
        push_json_str(out, &text);
        out.push_str(suffix);
        self.completion_tokens += 1;
        if finished {
            if self.include_usage {
                out.push_str(&format!(
                    "data: {},\"choices\":[],\"usage\":{}}}\n\n",
                    self.head,
                    self.usage()
                ));
            }
            out.push_str("data: [DONE]\n\n");
        }
    }
}

/// Append `s` as a JSON string literal (quotes included), escaped as serde_json does.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The SSE response body: one frame per due token (more when several are queued).
struct SseBody {
    events: mpsc::UnboundedReceiver<Event>,
    chunker: Chunker,
    guard: AbortGuard,
    done: bool,
    pacing: Option<PacingRecord>,
}

/// A stream's pacing records, handed to the shared log when the stream ends.
struct PacingRecord {
    log: PacingLog,
    request_id: String,
    tokens: Vec<TokenPacing>,
}

impl Drop for PacingRecord {
    fn drop(&mut self) {
        if let Ok(mut log) = self.log.lock() {
            log.insert(
                std::mem::take(&mut self.request_id),
                std::mem::take(&mut self.tokens),
            );
        }
    }
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let mut out = String::new();
        let mut times: Vec<(Instant, Instant)> = Vec::new();
        loop {
            match this.events.poll_recv(cx) {
                Poll::Ready(Some(Event::Admitted { cached_tokens })) => {
                    this.chunker.cached_tokens = cached_tokens;
                }
                Poll::Ready(Some(Event::Token {
                    id,
                    finished,
                    times: t,
                })) => {
                    times.extend(t);
                    this.chunker.token(id, finished, &mut out);
                    if finished {
                        this.done = true;
                        this.guard.key = None;
                        break;
                    }
                }
                Poll::Ready(None) => {
                    // the server is cutting streams short
                    this.done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if let Some(p) = this.pacing.as_mut() {
            let sent = Instant::now();
            p.tokens
                .extend(
                    times
                        .into_iter()
                        .map(|(due, queued)| TokenPacing { due, queued, sent }),
                );
        }
        if out.is_empty() {
            if this.done {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        } else {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

async fn models(State(s): State<AppState>) -> Response {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": s.served_model_name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": s.model_root,
            "parent": null,
            "max_model_len": s.max_model_len,
            "permission": [],
        }]
    }))
    .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let text = s
        .metrics
        .lock()
        .map(|m| m.render(&s.served_model_name))
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn tokenize(
    State(s): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let v = parse_body(body)?;
    check_model(&s, &v)?;
    let ids = if v.get("messages").is_some() {
        chat_prompt(&s, &v)?.1
    } else {
        match v.get("prompt") {
            Some(Value::String(p)) => s.tokenizer.encode(p),
            _ => return Err(bad_request("'prompt' (a string) or 'messages' is required")),
        }
    };
    Ok(axum::Json(json!({
        "count": ids.len(),
        "max_model_len": s.max_model_len,
        "tokens": ids,
        "token_strs": null,
    }))
    .into_response())
}

async fn detokenize(
    State(s): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let v = parse_body(body)?;
    check_model(&s, &v)?;
    let ids: Option<Vec<u32>> = v.get("tokens").and_then(Value::as_array).and_then(|a| {
        a.iter()
            .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    });
    match ids {
        Some(ids) => Ok(axum::Json(json!({ "prompt": s.tokenizer.decode(&ids) })).into_response()),
        None => Err(bad_request("'tokens' must be a list of token ids")),
    }
}

async fn reset_prefix_cache(State(s): State<AppState>, _headers: HeaderMap) -> Response {
    let (tx, rx) = oneshot::channel();
    if s.commands.send(Command::ResetPrefixCache(tx)).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match rx.await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => error(
            StatusCode::CONFLICT,
            "ConflictError",
            "the prefix cache cannot be reset while requests are running".into(),
        )
        .into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Bind `host:port` (port 0: any free port), tell `on_bound` the address, and serve on a new
/// multi-threaded runtime until SIGTERM or Ctrl-C; then shut down gracefully (see [`run`]).
pub fn serve_blocking(
    host: &str,
    port: u16,
    config: ServerConfig,
    on_bound: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("inferencelab-serve")
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind((host, port)).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {host}:{port}: {e}"))
        })?;
        on_bound(listener.local_addr()?);
        run(listener, config, shutdown_signal()).await
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped_as_serde_json_does() {
        for s in [
            "",
            " word",
            "a \"quoted\" \\ path",
            "line\nbreak\ttab\r",
            "\u{1}\u{8}\u{c}",
            "wörld ✓",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn token_chunks_are_vllm_json_events() {
        let tok: Arc<dyn Tokenizer> = Arc::new(crate::tokenizer::WordTokenizer::default());
        for kind in [Kind::Chat, Kind::Completion] {
            let head = r#"{"id":"x","object":"o","created":1,"model":"m""#.to_string();
            let mut c = Chunker::new(kind, head, true, true, 7, "length", tok.clone());
            let mut out = String::new();
            c.token(tok.sample(1), false, &mut out);
            c.token(tok.sample(2), true, &mut out);
            let events: Vec<&str> = out
                .split("\n\n")
                .filter(|e| !e.is_empty())
                .map(|e| e.strip_prefix("data: ").unwrap())
                .collect();
            assert_eq!(*events.last().unwrap(), "[DONE]");
            let v: Vec<Value> = events[..events.len() - 1]
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            let (first, last) = match kind {
                Kind::Chat => {
                    assert_eq!(v[0]["choices"][0]["delta"]["role"], "assistant");
                    assert_eq!(
                        v[1]["choices"][0]["delta"]["content"],
                        tok.decode(&[tok.sample(1)])
                    );
                    (&v[1], &v[2])
                }
                Kind::Completion => {
                    assert_eq!(v[0]["choices"][0]["text"], tok.decode(&[tok.sample(1)]));
                    (&v[0], &v[1])
                }
            };
            assert_eq!(first["choices"][0]["finish_reason"], Value::Null);
            assert_eq!(last["choices"][0]["finish_reason"], "length");
            assert_eq!(last["choices"][0]["stop_reason"], Value::Null);
            assert_eq!(v.last().unwrap()["usage"]["completion_tokens"], 2);
        }
    }
}
