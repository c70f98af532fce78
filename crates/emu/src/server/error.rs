//! OpenAI-style error responses with the status, `type` and `param` vLLM uses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}` with its status.
/// `param` names the request field, as vLLM fills it: the field for its own checks
/// (`temperature`, `input_tokens`, ...), `body.<field>` for FastAPI/pydantic's (type `Bad
/// Request`).
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) kind: &'static str,
    pub(super) message: String,
    pub(super) param: Option<String>,
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

pub(super) fn error(status: StatusCode, kind: &'static str, message: String) -> ApiError {
    ApiError {
        status,
        kind,
        message,
        param: None,
    }
}

pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
    error(StatusCode::BAD_REQUEST, "BadRequestError", message.into())
}

/// vLLM's own check of a parameter: `BadRequestError` with `param` and vLLM's message tail.
pub(super) fn bad_param(param: &str, value: &Value, why: impl std::fmt::Display) -> ApiError {
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
pub(super) fn body_error(field: &str, why: &str) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "Bad Request",
        message: format!("1 validation error:\n  {{'type': 'value_error', 'loc': ('body', '{field}'), 'msg': '{why}'}}"),
        param: Some(format!("body.{field}")),
    }
}

pub(super) fn shutting_down() -> ApiError {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableError",
        "the server is shutting down".into(),
    )
}
