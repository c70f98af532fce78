//! The HTTP server: vLLM's OpenAI-compatible API (`vllm/entrypoints/openai/api_server.py`) in
//! front of the engine core thread.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions` (SSE streaming in vLLM's chunk
//! format, `stream_options.include_usage`, `usage.prompt_tokens_details.cached_tokens` with
//! `enable_prompt_tokens_details`; or one JSON response), `GET /v1/models`, `GET /health`,
//! `GET /version`, `GET /metrics`, `POST /tokenize`, `POST /detokenize`,
//! `POST /v1/completions/render`, `POST /v1/chat/completions/render` (token ids only, `render.rs`),
//! `POST /reset_prefix_cache`. Errors are OpenAI-style JSON (`{"error": {"message", "type",
//! "param", "code"}}`) with the status vLLM uses. With an API key, `/v1/*` needs
//! `Authorization: Bearer KEY` (compared in constant time, as vLLM's middleware guards `/v1`).

mod admin;
mod auth;
mod completions;
mod connections;
mod error;
mod info;
mod openai;
mod prompt;
mod render;
mod response;
mod sse;
mod startup;
mod tokenize;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::core::{Clock, Command, Core, CoreConfig, LogSink, PacingLog};
use crate::engine::{Engine, EngineConfig};
use crate::metrics::Metrics;
use crate::tokenizer::Tokenizer;
use inferencelab_trace::vllm_log::write::{LogFormat, Stamp};

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
    /// vLLM's `--kv-events-config`: publish the GPU pool's block events (`kv_events.rs`).
    pub kv_events: Option<crate::kv_events::KvEventsConfig>,
}

impl ServerConfig {
    /// Another replica of this server (`serve --replicas N`, issue 21): the same engine
    /// settings and API, its own engine state and log, no pacing record.
    pub fn replica(&self, log: Option<LogSink>) -> ServerConfig {
        ServerConfig {
            engine: self.engine.clone(),
            served_model_name: self.served_model_name.clone(),
            model_root: self.model_root.clone(),
            max_model_len: self.max_model_len,
            time_scale: self.time_scale,
            seed: self.seed,
            api_key: self.api_key.clone(),
            enable_log_requests: self.enable_log_requests,
            enable_log_outputs: self.enable_log_outputs,
            enable_prompt_tokens_details: self.enable_prompt_tokens_details,
            max_log_len: self.max_log_len,
            log_time_decimals: self.log_time_decimals,
            log,
            epoch_us: self.epoch_us,
            stats_interval_s: self.stats_interval_s,
            max_request_bytes: self.max_request_bytes,
            shutdown_grace: self.shutdown_grace,
            keep_alive_timeout: self.keep_alive_timeout,
            tokenizer: self.tokenizer.clone(),
            pacing: None,
            // each replica publishes on its own endpoint: the caller sets it
            kv_events: None,
        }
    }
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
            kv_events: None,
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
    m.cache_config = startup::cache_config_labels(&config);
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
    let startup = startup::startup_lines(&format, Stamp(epoch_us), &config, addr);
    let engine = Engine::new(config.engine.clone());
    // `--kv-events-config`: bind (or connect) before serving, as vLLM does at start-up
    let kv_publisher = kv_publisher(config.kv_events.as_ref(), &format, epoch_us).await?;
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
    if let Some((publisher, line)) = kv_publisher {
        core.write_log(&line);
        core = core.with_kv_events(publish_task(publisher));
    }
    let core_thread = std::thread::Builder::new()
        .name("engine-core".into())
        .spawn(move || core.run(rx))?;

    let app = router(shared.clone(), config.max_request_bytes);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_task = tokio::spawn(connections::accept_loop(
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

/// `--kv-events-config`'s publisher, started, and the log line that says where it publishes
/// (`None`: no events asked for).
async fn kv_publisher(
    kv: Option<&crate::kv_events::KvEventsConfig>,
    format: &LogFormat,
    epoch_us: u64,
) -> std::io::Result<Option<(crate::kv_events::ZmqPublisher, String)>> {
    let Some(kv) = kv.filter(|k| k.publishes()) else {
        return Ok(None);
    };
    let p = crate::kv_events::ZmqPublisher::start(kv)
        .await
        .map_err(std::io::Error::other)?;
    let line = format.info(
        Stamp(epoch_us),
        "distributed/kv_events.py",
        &format!(
            "KV cache events published on {} (topic '{}'; emulator block hashes)",
            p.endpoint, kv.topic
        ),
    );
    Ok(Some((p, line)))
}

/// A task that publishes the engine core's event batches in order (it ends when the core
/// drops its sender or the socket fails); the core's end of the channel.
fn publish_task(
    mut publisher: crate::kv_events::ZmqPublisher,
) -> tokio::sync::mpsc::UnboundedSender<crate::kv_events::KvEventBatch> {
    let (to, mut from) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(batch) = from.recv().await {
            if publisher.publish(&batch).await.is_err() {
                break;
            }
        }
    });
    to
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

fn router(state: AppState, max_request_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(completions::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions/render", post(render::render_chat))
        .route("/v1/completions/render", post(render::render_completion))
        .route("/v1/models", get(info::models))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ));
    Router::new()
        .merge(v1)
        .route("/health", get(info::health))
        .route("/ping", get(|| async { StatusCode::OK }))
        .route("/version", get(info::version))
        .route("/metrics", get(info::metrics))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/reset_prefix_cache", post(admin::reset_prefix_cache))
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

/// `serve --replicas N` (issue 21): N servers in one process, one port each (`ports[k]`; 0:
/// any free port), every one its own engine; `on_bound(k, addr)` as each listens. A shutdown
/// signal stops them all.
pub fn serve_replicas_blocking(
    host: &str,
    ports: &[u16],
    configs: Vec<ServerConfig>,
    on_bound: impl Fn(usize, SocketAddr),
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("inferencelab-serve")
        .build()?;
    rt.block_on(async move {
        let mut listeners = Vec::with_capacity(ports.len());
        for (k, &port) in ports.iter().enumerate() {
            let l = TcpListener::bind((host, port)).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("replica {k}: cannot listen on {host}:{port}: {e}"),
                )
            })?;
            on_bound(k, l.local_addr()?);
            listeners.push(l);
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = tx.send(true);
        });
        let mut set = tokio::task::JoinSet::new();
        for (l, c) in listeners.into_iter().zip(configs) {
            let mut rx = rx.clone();
            set.spawn(run(l, c, async move {
                let _ = rx.wait_for(|&stop| stop).await;
            }));
        }
        let mut first_err = None;
        while let Some(r) = set.join_next().await {
            if let Err(e) = r.map_err(std::io::Error::other).and_then(|x| x) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
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
