//! `POST /v1/completions/render` and `POST /v1/chat/completions/render`, vLLM 0.33's render
//! endpoints (`vllm/entrypoints/scale_out/render/api_router.py`): a request's prompts as the
//! token ids the engine would get, without generating. vllm-router 0.1.17's `kv_aware` asks each
//! HTTP worker here for a request's tokens before it routes (and falls back to `/tokenize` on a
//! 404); docs/replicas.md.
//!
//! Partial: vLLM answers a whole `GenerateRequest` (a list of them for completions, one per
//! prompt); here only the fields a router reads are rendered, `request_id` (`cmpl-ID[-i]`,
//! `chatcmpl-ID`, ID the client's `X-Request-Id` or a generated one), `token_ids`, `features`
//! (null: no multimodal input) and `model`. vLLM's `sampling_params` and the rest are left out:
//! the emulator has no token-in endpoint (`/inference/v1/generate`) that would take them back.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::ApiError;
use super::openai::{check_model, client_request_id, parse_body};
use super::prompt::{chat_prompt, completion_prompts};
use super::AppState;

/// Render ids are numbered apart from the generation ids (which a render must not shift).
static NEXT: AtomicU64 = AtomicU64::new(0);

fn base_id(headers: &HeaderMap) -> String {
    client_request_id(headers).unwrap_or_else(|| {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("render{:016x}", crate::core::mix(n.wrapping_add(0x7E4D)))
    })
}

fn item(request_id: String, ids: Vec<u32>, model: &Value) -> Value {
    json!({
        "request_id": request_id,
        "token_ids": ids,
        "features": Value::Null,
        "model": model,
    })
}

pub(super) async fn render_completion(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let v = parse_body(&headers, body)?;
    check_model(&s, &v)?;
    let prompts = completion_prompts(&s, &v)?;
    let base = format!("cmpl-{}", base_id(&headers));
    let model = v.get("model").cloned().unwrap_or(Value::Null);
    let n = prompts.len();
    let items: Vec<Value> = prompts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let id = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{i}")
            };
            item(id, p.ids, &model)
        })
        .collect();
    Ok(axum::Json(Value::Array(items)).into_response())
}

pub(super) async fn render_chat(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let v = parse_body(&headers, body)?;
    check_model(&s, &v)?;
    let (prompt, _) = chat_prompt(&s, &v)?;
    let model = v.get("model").cloned().unwrap_or(Value::Null);
    Ok(axum::Json(item(
        format!("chatcmpl-{}", base_id(&headers)),
        prompt.ids,
        &model,
    ))
    .into_response())
}
