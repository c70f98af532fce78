//! The API key check on `/v1/*` (`Authorization: Bearer KEY`, compared in constant time), as
//! vLLM's middleware guards `/v1`.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// Equal in time whatever the contents (length differences are not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
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
