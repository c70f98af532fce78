//! A request's prompts as token ids: a chat's messages through the chat template, or a
//! completion's prompt (text, token ids, or a batch of either).

use serde_json::Value;

use super::error::{bad_request, body_error, ApiError};
use super::openai::opt_bool;
use super::Shared;
use crate::tokenizer::ChatOptions;

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
pub(super) struct PromptIn {
    pub(super) text: String,
    pub(super) ids: Vec<u32>,
}

pub(super) fn chat_prompt(s: &Shared, v: &Value) -> Result<(PromptIn, Option<String>), ApiError> {
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
    // vLLM's chat default: no special tokens beyond the template's own
    let specials = opt_bool(v, "add_special_tokens")?.unwrap_or(false);
    let ids = s.tokenizer.encode_prompt(&text, specials);
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
pub(super) fn completion_prompts(s: &Shared, v: &Value) -> Result<Vec<PromptIn>, ApiError> {
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
    // vLLM's completion default: the tokenizer's BOS (a Llama tokenizer's post-processor)
    let specials = opt_bool(v, "add_special_tokens")?.unwrap_or(true);
    let text_of = |p: &str| -> Result<PromptIn, ApiError> {
        if p.is_empty() {
            return Err(ApiError {
                param: Some("prompt".into()),
                ..bad_request("Prompt cannot be empty.")
            });
        }
        Ok(PromptIn {
            text: p.to_string(),
            ids: s.tokenizer.encode_prompt(p, specials),
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
