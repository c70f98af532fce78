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
use crate::tokenizer::ChatOptions;
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
    let mut m = Metrics::new(lmcache);
    m.set_max_model_len(config.max_model_len);
    m.cache_config = cache_config_labels(&config);
    let metrics = Arc::new(Mutex::new(m));
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

/// `vllm:cache_config_info`'s labels: vLLM 0.32's CacheConfig fields, ours where we have them.
fn cache_config_labels(c: &ServerConfig) -> Vec<(String, String)> {
    let e = &c.engine;
    let tokens = e.num_gpu_blocks.saturating_mul(e.block_size as u64);
    let known: [(&str, String); 8] = [
        ("block_size", e.block_size.to_string()),
        ("effective_attention_block_size", e.block_size.to_string()),
        ("enable_prefix_caching", "True".into()),
        ("num_gpu_blocks", e.num_gpu_blocks.to_string()),
        ("kv_cache_size_tokens", tokens.to_string()),
        (
            "kv_cache_max_concurrency",
            format!("{}", tokens as f64 / c.max_model_len.max(1) as f64),
        ),
        ("prefix_caching_hash_algo", "sha256".into()),
        ("user_specified_block_size", "True".into()),
    ];
    let rest: [(&str, &str); 28] = [
        ("_block_size_resolved", "True"),
        ("cache_dtype", "auto"),
        ("cache_hit_alignment_tokens", "None"),
        ("enable_mamba_shared_prefix_checkpoint", "False"),
        ("gpu_memory_utilization", "0.9"),
        ("hash_block_size", "None"),
        ("is_attention_free", "False"),
        ("kv_cache_dtype_skip_layers", "[]"),
        ("kv_cache_layout", "None"),
        ("kv_cache_memory_bytes", "None"),
        ("kv_offloading_backend", "native"),
        ("kv_offloading_size", "None"),
        ("kv_sharing_fast_prefill", "False"),
        ("mamba_block_size", "None"),
        ("mamba_cache_dtype", "auto"),
        ("mamba_cache_mode", "none"),
        ("mamba_page_size_padded", "None"),
        ("mamba_ssm_cache_dtype", "auto"),
        ("num_cpu_blocks", "None"),
        ("num_gpu_blocks_override", "None"),
        ("prefix_cache_retention_interval", "0"),
        ("prefix_match_unit", "None"),
        ("replayssm_buffer_len", "16"),
        ("skip_page_size_padded", "None"),
        ("sliding_window", "None"),
        ("swa_bounded_replay", "True"),
        ("use_kda_recoverssm", "False"),
        ("use_replayssm", "False"),
    ];
    known
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(
            rest.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .collect()
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
        // FastAPI's answers for an unknown path and a known path with another method
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({ "detail": "Not Found" })),
            )
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(json!({ "detail": "Method Not Allowed" })),
            )
        })
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
}

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}` with its status.
/// `param` names the request field, as vLLM fills it: the field for its own checks
/// (`temperature`, `input_tokens`, ...), `body.<field>` for FastAPI/pydantic's (type `Bad
/// Request`).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({
                "error": {
                    "message": self.message,
                    "type": self.kind,
                    "param": self.param,
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
        param: None,
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    error(StatusCode::BAD_REQUEST, "BadRequestError", message.into())
}

/// vLLM's own check of a parameter: `BadRequestError` with `param` and vLLM's message tail.
fn bad_param(param: &str, value: &Value, why: impl std::fmt::Display) -> ApiError {
    let shown = match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => match n.as_f64() {
            Some(f) if matches!(param, "temperature" | "top_p") => format!("{f:?}"),
            _ => n.to_string(),
        },
        v => v.to_string(),
    };
    ApiError {
        param: Some(param.into()),
        ..bad_request(format!("{why} (parameter={param}, value={shown})"))
    }
}

/// A request body field of the wrong type: FastAPI's validation error (type `Bad Request`,
/// param `body.<field>`).
fn body_error(field: &str, why: &str) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "Bad Request",
        message: format!("1 validation error:\n  {{'type': 'value_error', 'loc': ('body', '{field}'), 'msg': '{why}'}}"),
        param: Some(format!("body.{field}")),
    }
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

/// Parse a JSON body, or the error response to send. A body whose Content-Type is not JSON is
/// refused as vLLM's `validate_json_request` does.
fn parse_body(
    headers: &HeaderMap,
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
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ctype.split(';').next().unwrap_or("").trim();
    if !media.is_empty() && !media.eq_ignore_ascii_case("application/json") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed"
                .into(),
        ));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        // FastAPI: ('body', offset) of a JSON decode error, ('body',) of a missing body
        let param = if bytes.is_empty() {
            "body".to_string()
        } else {
            let offset: usize = bytes
                .split(|&b| b == b'\n')
                .take(e.line().saturating_sub(1))
                .map(|l| l.len() + 1)
                .sum::<usize>()
                + e.column().saturating_sub(1);
            format!("body.{offset}")
        };
        ApiError {
            param: Some(param),
            ..error(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                format!("1 validation error:\n  JSON decode error: {e}"),
            )
        }
    })?;
    if !v.is_object() {
        return Err(ApiError {
            param: Some("body".into()),
            ..error(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                "1 validation error:\n  Input should be a valid dictionary or object".into(),
            )
        });
    }
    Ok(v)
}

fn check_model(s: &Shared, v: &Value) -> Result<(), ApiError> {
    match v.get("model") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(m)) if *m == s.served_model_name => Ok(()),
        Some(Value::String(m)) => Err(ApiError {
            param: Some("model".into()),
            ..error(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                format!("The model `{m}` does not exist."),
            )
        }),
        Some(_) => Err(body_error("model", "Input should be a valid string")),
    }
}

/// An integer field as pydantic reads it in lax mode (`"5"` is 5, `1.5` is refused).
fn opt_int(v: &Value, key: &str) -> Result<Option<i64>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| body_error(key, "Input should be a valid integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| body_error(key, "Input should be a valid integer")),
        Some(Value::Bool(b)) => Ok(Some(*b as i64)),
        Some(_) => Err(body_error(key, "Input should be a valid integer")),
    }
}

fn opt_num(v: &Value, key: &str) -> Result<Option<f64>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| body_error(key, "Input should be a valid number")),
        Some(_) => Err(body_error(key, "Input should be a valid number")),
    }
}

fn opt_bool(v: &Value, key: &str) -> Result<Option<bool>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        // pydantic's lax booleans
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" | "t" | "y" => Ok(Some(true)),
            "false" | "no" | "off" | "0" | "f" | "n" => Ok(Some(false)),
            _ => Err(body_error(key, "Input should be a valid boolean")),
        },
        Some(Value::Number(n)) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
            Ok(Some(n.as_i64() == Some(1)))
        }
        Some(_) => Err(body_error(key, "Input should be a valid boolean")),
    }
}

/// The sampling parameters of both endpoints, checked as vLLM 0.32 checks them
/// (`SamplingParams._verify_args` and the protocol models).
struct Params {
    max_tokens: Option<u32>,
    n: u32,
    stream: bool,
    include_usage: bool,
    continuous_usage: bool,
    temperature: f64,
    top_p: f64,
    seed: Option<u64>,
    stop: Vec<String>,
    include_stop: bool,
    min_tokens: u32,
    /// Completions: top logprobs per token; chat: `top_logprobs` when `logprobs` is true.
    logprobs: Option<u32>,
    echo: bool,
}

fn params(v: &Value, kind: Kind) -> Result<Params, ApiError> {
    let mut max_tokens = None;
    let keys: &[&str] = if kind == Kind::Chat {
        &["max_tokens", "max_completion_tokens"]
    } else {
        &["max_tokens"]
    };
    for k in keys {
        if let Some(n) = opt_int(v, k)? {
            if n < 1 {
                return Err(bad_param(
                    "max_tokens",
                    &json!(n),
                    format!("max_tokens must be at least 1, got {n}."),
                ));
            }
            max_tokens = Some(n.min(u32::MAX as i64) as u32);
        }
    }
    let n = opt_int(v, "n")?.unwrap_or(1);
    if n < 1 {
        return Err(bad_request(format!("n must be at least 1, got {n}.")));
    }
    let stream = opt_bool(v, "stream")?.unwrap_or(false);
    let so = v.get("stream_options").filter(|o| !o.is_null());
    if !stream && so.is_some() {
        return Err(ApiError {
            param: Some("stream_options".into()),
            ..bad_request("Stream options can only be defined when `stream=True`.")
        });
    }
    let so_flag = |k: &str| {
        so.and_then(|o| o.get(k))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let temperature = opt_num(v, "temperature")?;
    if let Some(t) = temperature {
        if t < 0.0 {
            return Err(bad_param(
                "temperature",
                &v["temperature"],
                format!("temperature must be non-negative, got {t:?}."),
            ));
        }
        if t > 2.0 {
            return Err(bad_param(
                "temperature",
                &v["temperature"],
                format!("temperature must be at most 2.0, got {t:?}."),
            ));
        }
    }
    let top_p = opt_num(v, "top_p")?;
    if let Some(p) = top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(bad_param(
                "top_p",
                &v["top_p"],
                format!("top_p must be in (0, 1], got {p:?}."),
            ));
        }
    }
    if let Some(k) = opt_int(v, "top_k")? {
        if k < -1 {
            return Err(bad_request(format!(
                "top_k must be 0 (disable), or at least 1, got {k}."
            )));
        }
    }
    if let Some(m) = opt_num(v, "min_p")? {
        if !(0.0..=1.0).contains(&m) {
            return Err(bad_request(format!("min_p must be in [0, 1], got {m}.")));
        }
    }
    for k in ["presence_penalty", "frequency_penalty"] {
        if let Some(x) = opt_num(v, k)? {
            if !(-2.0..=2.0).contains(&x) {
                return Err(bad_request(format!("{k} must be in [-2, 2], got {x}.")));
            }
        }
    }
    if let Some(x) = opt_num(v, "repetition_penalty")? {
        if x <= 0.0 {
            return Err(bad_request(format!(
                "repetition_penalty must be greater than zero, got {x}."
            )));
        }
    }
    let min_tokens = opt_int(v, "min_tokens")?.unwrap_or(0);
    if min_tokens < 0 {
        return Err(bad_request(format!(
            "min_tokens must be greater than or equal to 0, got {min_tokens}."
        )));
    }
    if let Some(m) = max_tokens {
        if min_tokens > m as i64 {
            return Err(bad_request(format!(
                "min_tokens must be less than or equal to max_tokens={m}, got {min_tokens}."
            )));
        }
    }
    let stop = match v.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(_) => return Err(body_error("stop", "Input should be a valid string")),
    };
    const MAX_LOGPROBS: i64 = 20;
    let logprobs = match kind {
        Kind::Completion => match opt_int(v, "logprobs")? {
            None => None,
            Some(l) if l < 0 => {
                return Err(bad_param(
                    "logprobs",
                    &json!(l),
                    format!("logprobs must be non-negative, got {l}."),
                ))
            }
            Some(l) if l > MAX_LOGPROBS => {
                return Err(bad_param(
                    "logprobs",
                    &json!(l),
                    format!(
                        "Requested sample logprobs of {l}, which is greater than max allowed: \
                         {MAX_LOGPROBS}"
                    ),
                ))
            }
            Some(l) => Some(l as u32),
        },
        Kind::Chat => {
            let on = opt_bool(v, "logprobs")?.unwrap_or(false);
            let top = opt_int(v, "top_logprobs")?;
            match (on, top) {
                (false, Some(t)) if t > 0 => {
                    return Err(ApiError {
                        param: Some("top_logprobs".into()),
                        ..bad_request("when using `top_logprobs`, `logprobs` must be set to true.")
                    })
                }
                (true, Some(t)) if t < 0 => {
                    return Err(bad_param(
                        "top_logprobs",
                        &json!(t),
                        "top_logprobs must be a non-negative value.",
                    ))
                }
                (true, Some(t)) if t > MAX_LOGPROBS => {
                    return Err(bad_param(
                        "logprobs",
                        &json!(t),
                        format!(
                            "Requested sample logprobs of {t}, which is greater than max \
                             allowed: {MAX_LOGPROBS}"
                        ),
                    ))
                }
                (true, t) => Some(t.unwrap_or(0) as u32),
                (false, _) => None,
            }
        }
    };
    let seed = opt_int(v, "seed")?.map(|s| s as u64);
    Ok(Params {
        max_tokens,
        n: n.min(u32::MAX as i64) as u32,
        stream,
        include_usage: so_flag("include_usage"),
        continuous_usage: so_flag("continuous_usage_stats"),
        temperature: temperature.unwrap_or(1.0),
        top_p: top_p.unwrap_or(1.0),
        seed,
        stop,
        include_stop: opt_bool(v, "include_stop_str_in_output")?.unwrap_or(false),
        min_tokens: min_tokens.min(u32::MAX as i64) as u32,
        logprobs,
        echo: opt_bool(v, "echo")?.unwrap_or(false),
    })
}

/// The text of a chat message's `content` (a string or a list of text parts).
fn content_text(c: &Value) -> Result<String, ApiError> {
    match c {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            // vLLM joins text parts with a newline
            let mut texts = Vec::with_capacity(parts.len());
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    _ => return Err(bad_request("only text content parts are supported")),
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(body_error(
            "messages",
            "message content must be a string or a list of parts",
        )),
    }
}

/// One prompt of a request: its text (for logs and echo) and token ids.
struct PromptIn {
    text: String,
    ids: Vec<u32>,
}

fn chat_prompt(s: &Shared, v: &Value) -> Result<(PromptIn, Option<String>), ApiError> {
    let messages = match v.get("messages") {
        Some(Value::Array(m)) => m,
        None | Some(Value::Null) => return Err(body_error("messages", "Field required")),
        Some(_) => return Err(body_error("messages", "Input should be a valid list")),
    };
    if messages.is_empty() {
        return Err(bad_request(
            "Cannot apply chat template to an empty conversation. Provide at least one message.",
        ));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError {
                param: Some(format!(
                    "body.messages.{i}.ChatCompletionDeveloperMessageParam.role"
                )),
                ..body_error("messages", "Field required")
            })?;
        turns.push((
            role.to_string(),
            content_text(m.get("content").unwrap_or(&Value::Null))?,
        ));
    }
    let opts = ChatOptions {
        add_generation_prompt: opt_bool(v, "add_generation_prompt")?.unwrap_or(true),
        continue_final_message: opt_bool(v, "continue_final_message")?.unwrap_or(false),
    };
    if opts.add_generation_prompt && opts.continue_final_message {
        return Err(bad_request(
            "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
        ));
    }
    let text = s.tokenizer.render_chat(&turns, opts).map_err(bad_request)?;
    let ids = s.tokenizer.encode(&text);
    if ids.is_empty() {
        return Err(bad_request(
            "The prompt is empty: the chat template rendered no tokens.",
        ));
    }
    // vLLM's chat `echo`: the final message's content when it is the assistant's
    let echo = turns
        .last()
        .filter(|(r, _)| r == "assistant")
        .map(|(_, c)| c.clone());
    Ok((PromptIn { text, ids }, echo))
}

/// The prompts of a completion request: a string, a list of strings, token ids, or a list of
/// token id lists (a batch).
fn completion_prompts(s: &Shared, v: &Value) -> Result<Vec<PromptIn>, ApiError> {
    let ids_of = |a: &[Value], at: &str| -> Result<PromptIn, ApiError> {
        let mut ids = Vec::with_capacity(a.len());
        for (i, x) in a.iter().enumerate() {
            match x.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(id) => ids.push(id),
                None => {
                    return Err(ApiError {
                        param: Some(format!("body.prompt{at}.{i}")),
                        ..body_error("prompt", "Input should be a valid integer")
                    })
                }
            }
        }
        if let Some(&bad) = ids.iter().find(|&&id| id >= s.tokenizer.vocab_size()) {
            return Err(bad_request(format!(
                "Token id {bad} is out of vocabulary (vocabulary size {}).",
                s.tokenizer.vocab_size()
            )));
        }
        Ok(PromptIn {
            text: s.tokenizer.decode(&ids),
            ids,
        })
    };
    let text_of = |p: &str| -> Result<PromptIn, ApiError> {
        if p.is_empty() {
            return Err(ApiError {
                param: Some("prompt".into()),
                ..bad_request("Prompt cannot be empty.")
            });
        }
        Ok(PromptIn {
            text: p.to_string(),
            ids: s.tokenizer.encode(p),
        })
    };
    match v.get("prompt") {
        None | Some(Value::Null) => Err(ApiError {
            param: Some("prompt".into()),
            ..bad_request("Either prompt or prompt_embeds must be provided and non-empty.")
        }),
        Some(Value::String(p)) => Ok(vec![text_of(p)?]),
        Some(Value::Array(a)) if a.is_empty() => Err(bad_request("Prompt cannot be empty.")),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .map(|p| text_of(p.as_str().unwrap_or_default()))
            .collect(),
        Some(Value::Array(a)) if a.iter().all(Value::is_array) => a
            .iter()
            .enumerate()
            .map(|(i, p)| {
                ids_of(
                    p.as_array().map_or(&[][..], Vec::as_slice),
                    &format!(".{i}"),
                )
            })
            .collect(),
        Some(Value::Array(a)) => Ok(vec![ids_of(a, "")?]),
        Some(_) => Err(ApiError {
            param: Some("body.prompt".into()),
            ..body_error("prompt", "Input should be a valid string")
        }),
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
    generate(s, &headers, body, Kind::Chat).await
}

async fn completions(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    generate(s, &headers, body, Kind::Completion).await
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

/// One choice of a response (one engine request): its answer, known when the engine takes it,
/// and its stream of due tokens.
struct Choice {
    index: u32,
    prompt: usize,
    prompt_len: u64,
    ids: Vec<u32>,
    /// The text each token adds (the answer clipped before its stop string).
    pieces: Vec<String>,
    finish_reason: &'static str,
    stop_reason: Option<String>,
    events: mpsc::UnboundedReceiver<Event>,
    guard: AbortGuard,
    sent: usize,
    cached_tokens: u64,
    text_offset: usize,
    /// Completions' echo: the prompt text, sent before the first token.
    echo: Option<String>,
}

/// Emulated log probabilities: deterministic per token and position, in (-4, 0]; the top
/// alternatives are other ordinary words. Not a model's numbers (there is no model).
fn logprob_of(id: u32, pos: usize) -> f64 {
    -((crate::core::mix(id as u64 ^ ((pos as u64) << 32)) % 4000) as f64) / 1000.0
}

fn alternatives(tok: &dyn Tokenizer, id: u32, pos: usize, k: u32) -> Vec<(String, f64)> {
    let lp = logprob_of(id, pos);
    let mut out = vec![(tok.decode(&[id]), lp)];
    let mut r = crate::core::mix(id as u64 + pos as u64);
    let mut tries = 0;
    while out.len() < k.max(1) as usize && tries < 8 * k as usize + 8 {
        r = crate::core::mix(r);
        tries += 1;
        let t = tok.decode(&[tok.sample(r)]);
        if out.iter().all(|(s, _)| *s != t) {
            let alt = lp - 0.05 * out.len() as f64 - (r % 1000) as f64 / 1000.0;
            out.push((t, alt));
        }
    }
    out.truncate(k.max(1) as usize);
    out
}

/// Everything the response chunks need besides the choices.
struct Response1 {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    fingerprint: String,
    include_usage: bool,
    continuous_usage: bool,
    details: bool,
    logprobs: Option<u32>,
    tokenizer: Arc<dyn Tokenizer>,
    /// Per prompt: length, cached tokens, full-block tokens (for created_cache_tokens).
    prompts: Vec<(u64, u64)>,
    block_size: u64,
    /// A chat prompt's ids, for `prompt_logprobs` under `echo`.
    chat_prompt_ids: Option<Vec<u32>>,
}

impl Response1 {
    fn head(&self, chunk: bool) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert(
            "object".into(),
            json!(match (self.kind, chunk) {
                (Kind::Chat, true) => "chat.completion.chunk",
                (Kind::Chat, false) => "chat.completion",
                (Kind::Completion, _) => "text_completion",
            }),
        );
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), json!(self.model));
        m
    }

    /// The final usage: prompts counted once each (not once per `n`), completions summed.
    fn usage(&self, choices: &[Choice], streaming: bool) -> Value {
        let prompt: u64 = self.prompts.iter().map(|p| p.0).sum();
        let completion: u64 = choices.iter().map(|c| c.sent as u64).sum();
        let mut u = json!({
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
        });
        if !streaming {
            u["completion_tokens_details"] = Value::Null;
        }
        if self.details {
            let mut cached = 0;
            let mut created = 0;
            for (pi, &(len, _)) in self.prompts.iter().enumerate() {
                let c = choices
                    .iter()
                    .find(|c| c.prompt == pi)
                    .map_or(0, |c| c.cached_tokens);
                cached += c;
                // vLLM's PrefillStats.finalize: full prompt blocks now cached, less the hits
                created += (len / self.block_size * self.block_size).saturating_sub(c);
            }
            let mut d = json!({ "cached_tokens": cached });
            if self.kind == Kind::Chat || !streaming {
                d["created_cache_tokens"] = json!(created);
            }
            if !streaming {
                d["multimodal_tokens"] = Value::Null;
            }
            u["prompt_tokens_details"] = d;
        }
        u
    }

    fn chat_logprobs(&self, c: &Choice, from: usize, to: usize) -> Value {
        let Some(k) = self.logprobs else {
            return Value::Null;
        };
        let tok = &*self.tokenizer;
        let content: Vec<Value> = (from..to)
            .map(|j| {
                let alts = alternatives(tok, c.ids[j], j, k);
                let (t, lp) = alts[0].clone();
                json!({
                    "token": t,
                    "logprob": lp,
                    "bytes": t.as_bytes(),
                    "top_logprobs": alts.iter().take(k as usize).map(|(t, lp)| json!({
                        "token": t, "logprob": lp, "bytes": t.as_bytes()
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "content": content })
    }

    fn completion_logprobs(
        &self,
        c: &mut Choice,
        from: usize,
        to: usize,
        echo: Option<&[u32]>,
    ) -> Value {
        let Some(k) = self.logprobs else {
            return Value::Null;
        };
        let tok = &*self.tokenizer;
        let mut lp =
            json!({"text_offset": [], "token_logprobs": [], "tokens": [], "top_logprobs": []});
        let mut push = |t: String, l: Value, top: Value, off: usize| {
            if let Some(a) = lp["text_offset"].as_array_mut() {
                a.push(json!(off));
            }
            if let Some(a) = lp["token_logprobs"].as_array_mut() {
                a.push(l);
            }
            if let Some(a) = lp["tokens"].as_array_mut() {
                a.push(json!(t));
            }
            if let Some(a) = lp["top_logprobs"].as_array_mut() {
                a.push(top);
            }
        };
        if let Some(prompt) = echo {
            for &id in prompt {
                let t = tok.decode(&[id]);
                push(t.clone(), Value::Null, Value::Null, c.text_offset);
                c.text_offset += t.len();
            }
        }
        for j in from..to {
            let alts = alternatives(tok, c.ids[j], j, k.max(1));
            let mut top = serde_json::Map::new();
            for (t, l) in alts.iter().take(k.max(1) as usize) {
                top.insert(t.clone(), json!(l));
            }
            push(
                alts[0].0.clone(),
                json!(alts[0].1),
                Value::Object(top),
                c.text_offset,
            );
            c.text_offset += c.pieces[j].len();
        }
        lp
    }

    /// One SSE event for tokens `from..to` of a choice (the last one ends it when `finish`).
    fn chunk(&self, c: &mut Choice, from: usize, to: usize, out: &mut String) {
        let finish = to == c.ids.len();
        let mut text: String = c.pieces[from..to].concat();
        let mut echo_ids = None;
        if let Some(e) = c.echo.take() {
            text.insert_str(0, &e);
            echo_ids = Some(self.tokenizer.encode(&e));
        }
        let mut choice = serde_json::Map::new();
        choice.insert("index".into(), json!(c.index));
        match self.kind {
            Kind::Chat => {
                choice.insert("delta".into(), json!({ "content": text }));
                choice.insert("logprobs".into(), self.chat_logprobs(c, from, to));
            }
            Kind::Completion => {
                choice.insert("text".into(), json!(text));
                let lp = self.completion_logprobs(c, from, to, echo_ids.as_deref());
                choice.insert("logprobs".into(), lp);
                choice.insert("prompt_token_ids".into(), json!(echo_ids));
            }
        }
        if finish {
            choice.insert("finish_reason".into(), json!(c.finish_reason));
            choice.insert("stop_reason".into(), json!(c.stop_reason));
        } else {
            choice.insert("finish_reason".into(), Value::Null);
            if self.kind == Kind::Completion {
                choice.insert("stop_reason".into(), Value::Null);
            }
        }
        choice.insert("token_ids".into(), Value::Null);
        c.sent = to;
        let mut m = self.head(true);
        m.insert("choices".into(), json!([choice]));
        if self.continuous_usage {
            m.insert("usage".into(), self.choice_usage(c));
        }
        if finish && !self.include_usage {
            m.insert("system_fingerprint".into(), json!(self.fingerprint));
        }
        push_event(out, &Value::Object(m));
    }

    fn choice_usage(&self, c: &Choice) -> Value {
        let mut u = json!({
            "prompt_tokens": c.prompt_len,
            "total_tokens": c.prompt_len + c.sent as u64,
            "completion_tokens": c.sent,
        });
        if self.kind == Kind::Chat {
            u["completion_tokens_details"] = Value::Null;
        }
        u
    }

    /// vLLM's `prompt_logprobs` under `echo`: none for the first token, then one entry per
    /// prompt token (emulated numbers, as [`logprob_of`]).
    fn prompt_logprobs(&self, ids: &[u32]) -> Value {
        let mut out = Vec::with_capacity(ids.len());
        for (j, &id) in ids.iter().enumerate() {
            if j == 0 {
                out.push(Value::Null);
                continue;
            }
            let mut m = serde_json::Map::new();
            m.insert(
                id.to_string(),
                json!({
                    "logprob": logprob_of(id, j) - 8.0,
                    "rank": 1 + crate::core::mix(id as u64 ^ j as u64) % 100_000,
                    "decoded_token": self.tokenizer.decode(&[id]),
                }),
            );
            out.push(Value::Object(m));
        }
        Value::Array(out)
    }

    /// Chat streams open every choice with the role.
    fn role_chunk(&self, c: &Choice, out: &mut String) {
        let mut m = self.head(true);
        m.insert(
            "choices".into(),
            json!([{
                "index": c.index,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": null,
                "finish_reason": null,
            }]),
        );
        m.insert("prompt_token_ids".into(), Value::Null);
        m.insert("prompt_text".into(), Value::Null);
        if self.continuous_usage {
            m.insert("usage".into(), self.choice_usage(c));
        }
        push_event(out, &Value::Object(m));
    }

    fn usage_chunk(&self, choices: &[Choice], out: &mut String) {
        let mut m = self.head(true);
        m.insert("choices".into(), json!([]));
        m.insert("usage".into(), self.usage(choices, true));
        m.insert("system_fingerprint".into(), json!(self.fingerprint));
        push_event(out, &Value::Object(m));
    }

    /// The whole answer as one JSON object.
    fn body(&self, choices: &mut [Choice], echo: bool) -> Value {
        let mut list = Vec::with_capacity(choices.len());
        for c in choices.iter_mut() {
            let n = c.ids.len();
            let text = c.pieces.concat();
            let choice = match self.kind {
                Kind::Chat => {
                    let content = match c.echo.take() {
                        Some(e) => e + &text,
                        None => text,
                    };
                    json!({
                        "index": c.index,
                        "message": {
                            "role": "assistant", "content": content, "refusal": null,
                            "annotations": null, "audio": null, "function_call": null,
                            "reasoning": null,
                        },
                        "logprobs": self.chat_logprobs(c, 0, n),
                        "finish_reason": c.finish_reason,
                        "stop_reason": c.stop_reason,
                        "token_ids": null,
                        "routed_experts": null,
                    })
                }
                Kind::Completion => {
                    let e = c.echo.take();
                    let echo_ids = e.as_ref().map(|e| self.tokenizer.encode(e));
                    let lp = self.completion_logprobs(c, 0, n, echo_ids.as_deref());
                    let prompt_logprobs = match (&echo_ids, self.logprobs) {
                        (Some(ids), Some(_)) if echo => self.prompt_logprobs(ids),
                        _ => Value::Null,
                    };
                    json!({
                        "index": c.index,
                        "text": e.unwrap_or_default() + &text,
                        "logprobs": lp,
                        "finish_reason": c.finish_reason,
                        "stop_reason": c.stop_reason,
                        "token_ids": null,
                        "prompt_logprobs": prompt_logprobs,
                        "prompt_token_ids": null,
                        "routed_experts": null,
                    })
                }
            };
            c.sent = n;
            list.push(choice);
        }
        let mut m = self.head(false);
        m.insert("choices".into(), Value::Array(list));
        m.insert("service_tier".into(), Value::Null);
        m.insert("system_fingerprint".into(), json!(self.fingerprint));
        m.insert("usage".into(), self.usage(choices, false));
        if self.kind == Kind::Chat {
            let lp = match &self.chat_prompt_ids {
                Some(ids) if echo => self.prompt_logprobs(ids),
                _ => Value::Null,
            };
            m.insert("prompt_logprobs".into(), lp);
            m.insert("prompt_token_ids".into(), Value::Null);
            m.insert("prompt_text".into(), Value::Null);
        }
        m.insert("kv_transfer_params".into(), Value::Null);
        m.insert("ec_transfer_params".into(), Value::Null);
        m.insert("metrics".into(), Value::Null);
        Value::Object(m)
    }
}

fn push_event(out: &mut String, v: &Value) {
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
}

fn shutting_down() -> ApiError {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableError",
        "the server is shutting down".into(),
    )
}

async fn generate(
    s: AppState,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    kind: Kind,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    let client_id = client_request_id(headers);
    let v = parse_body(headers, body)?;
    check_model(&s, &v)?;
    let p = params(&v, kind)?;
    let (prompts, chat_echo) = match kind {
        Kind::Chat => {
            let (pr, echo) = chat_prompt(&s, &v)?;
            (vec![pr], echo.filter(|_| p.echo))
        }
        Kind::Completion => (completion_prompts(&s, &v)?, None),
    };
    let chat_prompt_ids = (kind == Kind::Chat && p.echo).then(|| prompts[0].ids.clone());
    let max_len = s.max_model_len as u64;
    for pr in &prompts {
        let n = pr.ids.len() as u64;
        if n >= max_len {
            return Err(ApiError {
                param: Some("input_tokens".into()),
                ..bad_request(format!(
                    "This model's maximum context length is {max_len} tokens. However, your \
                     request has {n} input tokens. Please reduce the length of the input \
                     messages."
                ))
            });
        }
    }
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
    let single = prompts.len() == 1 && p.n == 1;
    let mut choices = Vec::with_capacity(prompts.len() * p.n as usize);
    let mut prompt_stats = Vec::with_capacity(prompts.len());
    for (pi, pr) in prompts.into_iter().enumerate() {
        let n = pr.ids.len() as u64;
        // vLLM 0.32 caps max_tokens at what the context leaves (it does not refuse); without
        // max_tokens the emulated model stops by itself after 16..=256 tokens, a length fixed
        // by the seed and the prompt (so a replay gets the same lengths)
        let prompt_hash = inferencelab_trace::hash::block_hash(s.seed, &pr.ids);
        let (max_tokens, finish_reason) = match p.max_tokens {
            Some(m) => ((m as u64).min(max_len - n) as u32, "length"),
            None => ((16 + prompt_hash % 241).min(max_len - n) as u32, "stop"),
        };
        prompt_stats.push((n, 0));
        for c in 0..p.n {
            let index = pi as u32 * p.n + c;
            // the same request gets the same text: greedy (temperature 0) answers depend on the
            // prompt only, seeded ones on the seed, the prompt and the choice
            let sample_seed = if let Some(seed) = p.seed {
                Some(crate::core::mix(seed ^ prompt_hash) ^ crate::core::mix(c as u64))
            } else if p.temperature == 0.0 {
                Some(crate::core::mix(prompt_hash))
            } else {
                None
            };
            let sub_id = if single {
                request_id.clone()
            } else {
                format!("{request_id}-{index}")
            };
            let (events_tx, events) = mpsc::unbounded_channel();
            let (reply_tx, reply) = oneshot::channel();
            let submission = Submission {
                prompt: Prompt::new(pr.ids.clone(), s.block_size, s.chunk_size),
                max_tokens,
                finish_reason,
                arrival,
                info: RequestInfo {
                    request_id: sub_id,
                    prompt: pr.text.clone(),
                    temperature: p.temperature,
                    top_p: p.top_p,
                    max_tokens,
                    seed: p.seed,
                },
                streaming: p.stream,
                sample_seed,
                stop: p.stop.clone(),
                min_tokens: p.min_tokens,
                events: events_tx,
                reply: reply_tx,
            };
            if s.commands
                .send(Command::Submit(Box::new(submission)))
                .is_err()
            {
                return Err(shutting_down());
            }
            let acc = match reply.await {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => return Err(bad_request(e.to_string())),
                Err(_) => return Err(shutting_down()),
            };
            let guard = AbortGuard {
                key: Some(acc.key),
                commands: s.commands.clone(),
            };
            let mut pieces: Vec<String> = acc
                .output
                .iter()
                .map(|&id| s.tokenizer.decode(&[id]))
                .collect();
            if let Some(stop) = &acc.stop_reason {
                // the text ends before the stop string (after it with include_stop_str_in_output)
                let full: String = pieces.concat();
                if let Some(at) = full.find(stop.as_str()) {
                    let end = at + if p.include_stop { stop.len() } else { 0 };
                    let mut start = 0;
                    for piece in pieces.iter_mut() {
                        let keep = end.saturating_sub(start).min(piece.len());
                        start += piece.len();
                        let mut k = keep;
                        while !piece.is_char_boundary(k) {
                            k -= 1;
                        }
                        piece.truncate(k);
                    }
                }
            }
            let echo = match kind {
                Kind::Completion if p.echo => Some(pr.text.clone()),
                Kind::Chat => chat_echo.clone(),
                _ => None,
            };
            choices.push(Choice {
                index,
                prompt: pi,
                prompt_len: n,
                ids: acc.output,
                pieces,
                finish_reason: acc.finish_reason,
                stop_reason: acc.stop_reason,
                events,
                guard,
                sent: 0,
                cached_tokens: 0,
                text_offset: 0,
                echo,
            });
        }
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let resp = Response1 {
        kind,
        id: request_id.clone(),
        created,
        model: s.served_model_name.clone(),
        fingerprint: format!("vllm-{VLLM_VERSION}-inferencelab"),
        include_usage: p.include_usage,
        continuous_usage: p.include_usage && p.continuous_usage,
        details: s.enable_prompt_tokens_details,
        logprobs: p.logprobs,
        tokenizer: s.tokenizer.clone(),
        prompts: prompt_stats,
        block_size: s.block_size.max(1) as u64,
        chat_prompt_ids,
    };
    if let Ok(mut m) = s.metrics.lock() {
        // vLLM observes these per parent request (one per prompt)
        for pi in 0..resp.prompts.len() {
            let of_prompt = choices.iter().filter(|c| c.prompt == pi);
            let longest = of_prompt.map(|c| c.ids.len() as u64).max().unwrap_or(0);
            let max_tokens = p
                .max_tokens
                .map_or(longest, |m| (m as u64).min(max_len - resp.prompts[pi].0));
            m.observe_request_params(p.n as u64, max_tokens, longest);
        }
    }
    if p.stream {
        let max_tokens: usize = choices.iter().map(|c| c.ids.len()).sum();
        let body = SseBody {
            resp,
            choices,
            done: false,
            opened: false,
            pacing: s.pacing.clone().map(|log| PacingRecord {
                log,
                request_id,
                tokens: Vec::with_capacity(max_tokens),
            }),
        };
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::new(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()));
    }
    let mut resp = resp;
    for c in choices.iter_mut() {
        let mut got = 0;
        while got < c.ids.len() {
            match c.events.recv().await {
                Some(Event::Admitted { cached_tokens }) => c.cached_tokens = cached_tokens,
                Some(Event::Token { finished, .. }) => {
                    got += 1;
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
        c.guard.key = None;
    }
    for (pi, st) in resp.prompts.iter_mut().enumerate() {
        st.1 = choices
            .iter()
            .find(|c| c.prompt == pi)
            .map_or(0, |c| c.cached_tokens);
    }
    Ok(axum::Json(resp.body(&mut choices, p.echo)).into_response())
}

/// Append `s` as a JSON string literal (quotes included), escaped as serde_json does.
#[cfg(test)]
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

/// The SSE response body: one frame per due token (more when several are queued), choices
/// interleaved as their tokens come due.
struct SseBody {
    resp: Response1,
    choices: Vec<Choice>,
    done: bool,
    opened: bool,
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
        let mut cut = false;
        for i in 0..this.choices.len() {
            loop {
                let c = &mut this.choices[i];
                if c.sent >= c.ids.len() && c.guard.key.is_none() {
                    break;
                }
                match c.events.poll_recv(cx) {
                    Poll::Ready(Some(Event::Admitted { cached_tokens })) => {
                        c.cached_tokens = cached_tokens;
                        let pi = c.prompt;
                        if this.resp.prompts[pi].1 == 0 {
                            this.resp.prompts[pi].1 = cached_tokens;
                        }
                    }
                    Poll::Ready(Some(Event::Token {
                        finished, times: t, ..
                    })) => {
                        times.extend(t);
                        if this.resp.kind == Kind::Chat && c.sent == 0 {
                            this.resp.role_chunk(c, &mut out);
                        }
                        let from = c.sent;
                        let to = if finished {
                            c.ids.len()
                        } else {
                            (from + 1).min(c.ids.len())
                        };
                        this.resp.chunk(c, from, to, &mut out);
                        if finished {
                            c.guard.key = None;
                            break;
                        }
                    }
                    Poll::Ready(None) => {
                        cut = true;
                        c.guard.key = None;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        this.opened |= !out.is_empty();
        let all_done = this.choices.iter().all(|c| c.guard.key.is_none());
        if all_done {
            this.done = true;
            if !cut {
                if this.resp.include_usage {
                    this.resp.usage_chunk(&this.choices, &mut out);
                }
                out.push_str("data: [DONE]\n\n");
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
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let v = parse_body(&headers, body)?;
    check_model(&s, &v)?;
    let ids = if v.get("messages").is_some() {
        chat_prompt(&s, &v)?.0.ids
    } else {
        match v.get("prompt") {
            Some(Value::String(p)) => s.tokenizer.encode(p),
            Some(_) => return Err(body_error("prompt", "Input should be a valid string")),
            None => {
                return Err(ApiError {
                    param: Some("body.prompt".into()),
                    ..body_error("prompt", "Field required")
                })
            }
        }
    };
    let token_strs = if opt_bool(&v, "return_token_strs")?.unwrap_or(false) {
        json!(ids
            .iter()
            .map(|&id| s.tokenizer.token_str(id).unwrap_or_default())
            .collect::<Vec<_>>())
    } else {
        Value::Null
    };
    Ok(axum::Json(json!({
        "count": ids.len(),
        "max_model_len": s.max_model_len,
        "tokens": ids,
        "token_strs": token_strs,
    }))
    .into_response())
}

async fn detokenize(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let v = parse_body(&headers, body)?;
    check_model(&s, &v)?;
    let ids: Option<Vec<u32>> = v.get("tokens").and_then(Value::as_array).and_then(|a| {
        a.iter()
            .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    });
    match ids {
        // an id past the vocabulary decodes to nothing, as vLLM 0.32's tokenizer does
        Some(ids) => Ok(axum::Json(json!({ "prompt": s.tokenizer.decode(&ids) })).into_response()),
        None => Err(body_error("tokens", "Input should be a valid list")),
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
    fn pydantic_errors_name_the_body_field() {
        let e = params(&json!({"max_tokens": 1.5}), Kind::Completion)
            .err()
            .unwrap();
        assert_eq!(e.param.as_deref(), Some("body.max_tokens"));
        assert_eq!(e.kind, "Bad Request");
        let e = params(&json!({"temperature": -1}), Kind::Chat)
            .err()
            .unwrap();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(
            e.message.ends_with("(parameter=temperature, value=-1.0)"),
            "{}",
            e.message
        );
        let p = params(
            &json!({"max_tokens": "5", "stream": "yes"}),
            Kind::Completion,
        )
        .unwrap();
        assert_eq!(p.max_tokens, Some(5));
        assert!(p.stream);
    }
}
