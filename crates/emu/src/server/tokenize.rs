//! `POST /tokenize` and `POST /detokenize` with the served model's tokenizer.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::{body_error, ApiError};
use super::openai::{check_model, opt_bool, parse_body};
use super::prompt::chat_prompt;
use super::AppState;

pub(super) async fn tokenize(
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
            Some(Value::String(p)) => s
                .tokenizer
                .encode_prompt(p, opt_bool(&v, "add_special_tokens")?.unwrap_or(true)),
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

pub(super) async fn detokenize(
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
