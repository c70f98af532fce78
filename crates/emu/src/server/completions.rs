//! `POST /v1/chat/completions` and `POST /v1/completions`: one pipeline for both. [`generate`]
//! parses and validates the request, submits every choice to the engine core (which answers at
//! once with the whole text), then streams the tokens as they come due or collects them into
//! one response.

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

use super::error::{bad_request, error, shutting_down, ApiError};
use super::openai::{check_model, client_request_id, params, parse_body, Kind, Params};
use super::prompt::{chat_prompt, completion_prompts, PromptIn};
use super::response::{AbortGuard, Choice, Response1};
use super::sse::{PacingRecord, SseBody};
use super::{AppState, Shared, VLLM_VERSION};
use crate::core::{Accepted, Command, Event, Submission};
use crate::engine::Prompt;
use inferencelab_trace::vllm_log::write::RequestInfo;

type BodyBytes = Result<Bytes, axum::extract::rejection::BytesRejection>;

pub(super) async fn chat_completions(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    generate(s, &headers, body, Kind::Chat).await
}

pub(super) async fn completions(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    generate(s, &headers, body, Kind::Completion).await
}

/// A request checked as vLLM checks it, before any of it reaches the engine.
struct Checked {
    params: Params,
    prompts: Vec<PromptIn>,
    /// Chat's `echo`: the final assistant message, when `echo` is set.
    chat_echo: Option<String>,
    /// A chat prompt's ids, for `prompt_logprobs` under `echo`.
    chat_prompt_ids: Option<Vec<u32>>,
}

async fn generate(
    s: AppState,
    headers: &HeaderMap,
    body: BodyBytes,
    kind: Kind,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    let client_id = client_request_id(headers);
    let req = check_request(&s, headers, body, kind)?;
    let request_id = request_id(&s, client_id, kind);
    let choices = submit_choices(&s, &req, kind, &request_id, arrival).await?;
    let resp = response_head(&s, &req, kind, request_id.clone());
    observe_request_params(&s, &req.params, &resp, &choices);
    if req.params.stream {
        return Ok(stream_response(&s, resp, choices, request_id));
    }
    collect_response(resp, choices, req.params.echo).await
}

/// Parse the body, check the model, the sampling parameters, the prompts and their lengths.
fn check_request(
    s: &Shared,
    headers: &HeaderMap,
    body: BodyBytes,
    kind: Kind,
) -> Result<Checked, ApiError> {
    let v = parse_body(headers, body)?;
    check_model(s, &v)?;
    let p = params(&v, kind)?;
    let (prompts, chat_echo) = match kind {
        Kind::Chat => {
            let (pr, echo) = chat_prompt(s, &v)?;
            (vec![pr], echo.filter(|_| p.echo))
        }
        Kind::Completion => (completion_prompts(s, &v)?, None),
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
    Ok(Checked {
        params: p,
        prompts,
        chat_echo,
        chat_prompt_ids,
    })
}

/// `chatcmpl-<base>` / `cmpl-<base>`: the client's `X-Request-Id`, else one drawn from the
/// server seed and a counter.
fn request_id(s: &Shared, client_id: Option<String>, kind: Kind) -> String {
    let counter = s.next_id.fetch_add(1, Ordering::Relaxed);
    let base = client_id.unwrap_or_else(|| {
        format!(
            "{:016x}{:016x}",
            crate::core::mix(s.seed ^ counter),
            crate::core::mix(counter.wrapping_add(0x5EED))
        )
    });
    format!(
        "{}-{base}",
        if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        }
    )
}

/// vLLM 0.32 caps max_tokens at what the context leaves (it does not refuse); without
/// max_tokens the emulated model stops by itself after 16..=256 tokens, a length fixed by the
/// seed and the prompt (so a replay gets the same lengths). Returns the cap and the finish
/// reason when the answer reaches it.
fn token_budget(p: &Params, prompt_hash: u64, n: u64, max_len: u64) -> (u32, &'static str) {
    match p.max_tokens {
        Some(m) => ((m as u64).min(max_len - n) as u32, "length"),
        None => ((16 + prompt_hash % 241).min(max_len - n) as u32, "stop"),
    }
}

/// The same request gets the same text: greedy (temperature 0) answers depend on the prompt
/// only, seeded ones on the seed, the prompt and the choice; `None`: the engine draws one.
fn sample_seed(p: &Params, prompt_hash: u64, choice: u32) -> Option<u64> {
    if let Some(seed) = p.seed {
        Some(crate::core::mix(seed ^ prompt_hash) ^ crate::core::mix(choice as u64))
    } else if p.temperature == 0.0 {
        Some(crate::core::mix(prompt_hash))
    } else {
        None
    }
}

/// Submit every choice (`n` per prompt) to the engine core and wait for it to take each; a
/// choice already taken is aborted if a later one fails (its guard drops).
async fn submit_choices(
    s: &Shared,
    req: &Checked,
    kind: Kind,
    request_id: &str,
    arrival: Instant,
) -> Result<Vec<Choice>, ApiError> {
    let p = &req.params;
    let max_len = s.max_model_len as u64;
    let single = req.prompts.len() == 1 && p.n == 1;
    let mut choices = Vec::with_capacity(req.prompts.len() * p.n as usize);
    for (pi, pr) in req.prompts.iter().enumerate() {
        let n = pr.ids.len() as u64;
        let prompt_hash = inferencelab_trace::hash::block_hash(s.seed, &pr.ids);
        let (max_tokens, finish_reason) = token_budget(p, prompt_hash, n, max_len);
        for c in 0..p.n {
            let index = pi as u32 * p.n + c;
            let sub_id = if single {
                request_id.to_string()
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
                sample_seed: sample_seed(p, prompt_hash, c),
                stop: p.stop.clone(),
                min_tokens: p.min_tokens,
                events: events_tx,
                reply: reply_tx,
            };
            let acc = submit(s, submission, reply).await?;
            let guard = AbortGuard {
                key: Some(acc.key),
                commands: s.commands.clone(),
            };
            let pieces = answer_pieces(s, &pr.ids, &acc, p.include_stop);
            let echo = match kind {
                Kind::Completion if p.echo => Some(pr.text.clone()),
                Kind::Chat => req.chat_echo.clone(),
                _ => None,
            };
            // vLLM echoes the engine's prompt ids (`res.prompt_token_ids`): a BOS included
            let echo_ids = (kind == Kind::Completion && p.echo).then(|| pr.ids.clone());
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
                echo_ids,
            });
        }
    }
    Ok(choices)
}

/// Hand one submission to the engine core and wait for it to be taken.
async fn submit(
    s: &Shared,
    submission: Submission,
    reply: oneshot::Receiver<Result<Accepted, crate::engine::SubmitError>>,
) -> Result<Accepted, ApiError> {
    if s.commands
        .send(Command::Submit(Box::new(submission)))
        .is_err()
    {
        return Err(shutting_down());
    }
    match reply.await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(bad_request(e.to_string())),
        Err(_) => Err(shutting_down()),
    }
}

/// The text each answer token adds after the prompt, decoded incrementally as vLLM does (so a
/// SentencePiece word keeps its space); with a stop string the text ends before it (after it
/// with `include_stop_str_in_output`).
fn answer_pieces(s: &Shared, prompt: &[u32], acc: &Accepted, include_stop: bool) -> Vec<String> {
    let mut pieces = s.tokenizer.decode_stream(prompt, &acc.output);
    if let Some(stop) = &acc.stop_reason {
        let full: String = pieces.concat();
        if let Some(at) = full.find(stop.as_str()) {
            let end = at + if include_stop { stop.len() } else { 0 };
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
    pieces
}

/// Everything the response needs besides the choices.
fn response_head(s: &Shared, req: &Checked, kind: Kind, request_id: String) -> Response1 {
    let p = &req.params;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Response1 {
        kind,
        id: request_id,
        created,
        model: s.served_model_name.clone(),
        fingerprint: format!("vllm-{VLLM_VERSION}-inferencelab"),
        include_usage: p.include_usage,
        continuous_usage: p.include_usage && p.continuous_usage,
        details: s.enable_prompt_tokens_details,
        logprobs: p.logprobs,
        tokenizer: s.tokenizer.clone(),
        prompts: req
            .prompts
            .iter()
            .map(|pr| (pr.ids.len() as u64, 0))
            .collect(),
        block_size: s.block_size.max(1) as u64,
        chat_prompt_ids: req.chat_prompt_ids.clone(),
    }
}

/// vLLM observes the request parameter histograms per parent request (one per prompt).
fn observe_request_params(s: &Shared, p: &Params, resp: &Response1, choices: &[Choice]) {
    let max_len = s.max_model_len as u64;
    if let Ok(mut m) = s.metrics.lock() {
        for pi in 0..resp.prompts.len() {
            let of_prompt = choices.iter().filter(|c| c.prompt == pi);
            let longest = of_prompt.map(|c| c.ids.len() as u64).max().unwrap_or(0);
            let max_tokens = p
                .max_tokens
                .map_or(longest, |m| (m as u64).min(max_len - resp.prompts[pi].0));
            m.observe_request_params(p.n as u64, max_tokens, longest);
        }
    }
}

/// The SSE response: its body sends each token as it comes due.
fn stream_response(
    s: &Shared,
    resp: Response1,
    choices: Vec<Choice>,
    request_id: String,
) -> Response {
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
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::new(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The one JSON response: wait until every choice's last token is due, then answer.
async fn collect_response(
    mut resp: Response1,
    mut choices: Vec<Choice>,
    echo: bool,
) -> Result<Response, ApiError> {
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
    Ok(axum::Json(resp.body(&mut choices, echo)).into_response())
}
