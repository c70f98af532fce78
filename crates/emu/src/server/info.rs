//! Read-only routes about the server: `GET /v1/models`, `GET /health`, `GET /version` and
//! `GET /metrics` (Prometheus text).

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{AppState, VLLM_VERSION};

pub(super) async fn models(State(s): State<AppState>) -> Response {
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

/// vLLM's `/health` fails once the engine is dead (`EngineDeadError`).
pub(super) async fn health(State(s): State<AppState>) -> StatusCode {
    if s.engine_dead.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

pub(super) async fn version() -> axum::Json<Value> {
    axum::Json(json!({ "version": VLLM_VERSION }))
}

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
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
