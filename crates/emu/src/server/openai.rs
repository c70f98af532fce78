//! OpenAI request parsing and validation as vLLM 0.32 does it: the JSON body (FastAPI's and
//! pydantic's errors), the model name, the sampling parameters of both completion endpoints, and
//! the client's `X-Request-Id`.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::error::{bad_param, bad_request, body_error, error, ApiError};
use super::Shared;

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Chat,
    Completion,
}

/// Parse a JSON body, or the error response to send. A body whose Content-Type is not JSON is
/// refused as vLLM's `validate_json_request` does.
pub(super) fn parse_body(
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

pub(super) fn check_model(s: &Shared, v: &Value) -> Result<(), ApiError> {
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

pub(super) fn opt_bool(v: &Value, key: &str) -> Result<Option<bool>, ApiError> {
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
pub(super) struct Params {
    pub(super) max_tokens: Option<u32>,
    pub(super) n: u32,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    pub(super) continuous_usage: bool,
    pub(super) temperature: f64,
    pub(super) top_p: f64,
    pub(super) seed: Option<u64>,
    pub(super) stop: Vec<String>,
    pub(super) include_stop: bool,
    pub(super) min_tokens: u32,
    /// Completions: top logprobs per token; chat: `top_logprobs` when `logprobs` is true.
    pub(super) logprobs: Option<u32>,
    pub(super) echo: bool,
}

pub(super) fn params(v: &Value, kind: Kind) -> Result<Params, ApiError> {
    let max_tokens = max_tokens(v, kind)?;
    let n = opt_int(v, "n")?.unwrap_or(1);
    if n < 1 {
        return Err(bad_request(format!("n must be at least 1, got {n}.")));
    }
    let (stream, include_usage, continuous_usage) = stream_options(v)?;
    let (temperature, top_p) = sampling(v)?;
    let min_tokens = min_tokens(v, max_tokens)?;
    let stop = stop_strings(v)?;
    let logprobs = logprobs(v, kind)?;
    let seed = opt_int(v, "seed")?.map(|s| s as u64);
    Ok(Params {
        max_tokens,
        n: n.min(u32::MAX as i64) as u32,
        stream,
        include_usage,
        continuous_usage,
        temperature,
        top_p,
        seed,
        stop,
        include_stop: opt_bool(v, "include_stop_str_in_output")?.unwrap_or(false),
        min_tokens: min_tokens.min(u32::MAX as i64) as u32,
        logprobs,
        echo: opt_bool(v, "echo")?.unwrap_or(false),
    })
}

/// `max_tokens` (chat: also `max_completion_tokens`, the later key wins), at least 1.
fn max_tokens(v: &Value, kind: Kind) -> Result<Option<u32>, ApiError> {
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
    Ok(max_tokens)
}

/// `stream` and its `stream_options` (only with `stream: true`): `(stream, include_usage,
/// continuous_usage_stats)`.
fn stream_options(v: &Value) -> Result<(bool, bool, bool), ApiError> {
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
    Ok((
        stream,
        so_flag("include_usage"),
        so_flag("continuous_usage_stats"),
    ))
}

/// The sampling parameters vLLM checks (`temperature`, `top_p`, `top_k`, `min_p`, the
/// penalties); returns `(temperature, top_p)` with their defaults, the only ones the emulator
/// uses.
fn sampling(v: &Value) -> Result<(f64, f64), ApiError> {
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
    Ok((temperature.unwrap_or(1.0), top_p.unwrap_or(1.0)))
}

/// `min_tokens`: 0 or more, at most `max_tokens`.
fn min_tokens(v: &Value, max_tokens: Option<u32>) -> Result<i64, ApiError> {
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
    Ok(min_tokens)
}

/// `stop`: one string or a list of strings.
fn stop_strings(v: &Value) -> Result<Vec<String>, ApiError> {
    Ok(match v.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(_) => return Err(body_error("stop", "Input should be a valid string")),
    })
}

/// Completions: `logprobs` (top alternatives per token); chat: `top_logprobs` when `logprobs`
/// is true. At most 20, as vLLM's default `max_logprobs`.
fn logprobs(v: &Value, kind: Kind) -> Result<Option<u32>, ApiError> {
    const MAX_LOGPROBS: i64 = 20;
    Ok(match kind {
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
    })
}

/// The client's `X-Request-Id`, which vLLM makes the base of the request id
/// (`serving_engine._base_request_id`: `cmpl-<id>`, `chatcmpl-<id>`), so a client's ids appear
/// in the responses and the logs.
///
/// Deviation: vLLM copies the header as it is; here a space, a quote, a backslash, a control or
/// a non-ASCII byte is percent-encoded (and the id cut at 256 bytes), so one client's id cannot
/// split a log line that `simulate` reads back.
pub(super) fn client_request_id(headers: &HeaderMap) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
