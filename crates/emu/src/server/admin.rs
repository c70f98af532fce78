//! Administrative routes: `POST /reset_prefix_cache`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use super::error::error;
use super::AppState;
use crate::core::Command;

pub(super) async fn reset_prefix_cache(State(s): State<AppState>, _headers: HeaderMap) -> Response {
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
