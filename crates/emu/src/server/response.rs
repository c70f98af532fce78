//! The answer to a completion request in vLLM's JSON shapes: the choices the engine took, their
//! streamed chunks (role, tokens, usage) or the one response object, emulated logprobs.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::openai::Kind;
use super::sse::push_event;
use crate::core::{Command, Event};
use crate::engine::ReqKey;
use crate::tokenizer::Tokenizer;

/// Sends `Abort` for a request that was not seen to the end (the client went away).
pub(super) struct AbortGuard {
    pub(super) key: Option<ReqKey>,
    pub(super) commands: std::sync::mpsc::Sender<Command>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let _ = self.commands.send(Command::Abort(key));
        }
    }
}

/// One choice of a response (one engine request): its answer, known when the engine takes it,
/// and its stream of due tokens.
pub(super) struct Choice {
    pub(super) index: u32,
    pub(super) prompt: usize,
    pub(super) prompt_len: u64,
    pub(super) ids: Vec<u32>,
    /// The text each token adds (the answer clipped before its stop string).
    pub(super) pieces: Vec<String>,
    pub(super) finish_reason: &'static str,
    pub(super) stop_reason: Option<String>,
    pub(super) events: mpsc::UnboundedReceiver<Event>,
    pub(super) guard: AbortGuard,
    pub(super) sent: usize,
    pub(super) cached_tokens: u64,
    pub(super) text_offset: usize,
    /// Completions' echo: the prompt text, sent before the first token.
    pub(super) echo: Option<String>,
    /// Completions' echo: the prompt's ids as the engine got them (vLLM's
    /// `res.prompt_token_ids`, with the BOS `add_special_tokens` put there).
    pub(super) echo_ids: Option<Vec<u32>>,
}

/// Emulated log probabilities: deterministic per token and position, in (-4, 0]; the top
/// alternatives are other ordinary words. Not a model's numbers (there is no model).
fn logprob_of(id: u32, pos: usize) -> f64 {
    -((crate::core::mix(id as u64 ^ ((pos as u64) << 32)) % 4000) as f64) / 1000.0
}

fn alternatives(tok: &dyn Tokenizer, id: u32, pos: usize, k: u32) -> Vec<(String, f64)> {
    let lp = logprob_of(id, pos);
    let mut out = vec![(tok.decode(&[id]), lp)];
    let mut r = crate::core::mix(id as u64 + pos as u64);
    let mut tries = 0;
    while out.len() < k.max(1) as usize && tries < 8 * k as usize + 8 {
        r = crate::core::mix(r);
        tries += 1;
        let t = tok.decode(&[tok.sample(r)]);
        if out.iter().all(|(s, _)| *s != t) {
            let alt = lp - 0.05 * out.len() as f64 - (r % 1000) as f64 / 1000.0;
            out.push((t, alt));
        }
    }
    out.truncate(k.max(1) as usize);
    out
}

/// Everything the response chunks need besides the choices.
pub(super) struct Response1 {
    pub(super) kind: Kind,
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) model: String,
    pub(super) fingerprint: String,
    pub(super) include_usage: bool,
    pub(super) continuous_usage: bool,
    pub(super) details: bool,
    pub(super) logprobs: Option<u32>,
    pub(super) tokenizer: Arc<dyn Tokenizer>,
    /// Per prompt: length, cached tokens, full-block tokens (for created_cache_tokens).
    pub(super) prompts: Vec<(u64, u64)>,
    pub(super) block_size: u64,
    /// A chat prompt's ids, for `prompt_logprobs` under `echo`.
    pub(super) chat_prompt_ids: Option<Vec<u32>>,
}

impl Response1 {
    fn head(&self, chunk: bool) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert(
            "object".into(),
            json!(match (self.kind, chunk) {
                (Kind::Chat, true) => "chat.completion.chunk",
                (Kind::Chat, false) => "chat.completion",
                (Kind::Completion, _) => "text_completion",
            }),
        );
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), json!(self.model));
        m
    }

    /// The final usage: prompts counted once each (not once per `n`), completions summed.
    fn usage(&self, choices: &[Choice], streaming: bool) -> Value {
        let prompt: u64 = self.prompts.iter().map(|p| p.0).sum();
        let completion: u64 = choices.iter().map(|c| c.sent as u64).sum();
        let mut u = json!({
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
        });
        if !streaming {
            u["completion_tokens_details"] = Value::Null;
        }
        if self.details {
            let mut cached = 0;
            let mut created = 0;
            for (pi, &(len, _)) in self.prompts.iter().enumerate() {
                let c = choices
                    .iter()
                    .find(|c| c.prompt == pi)
                    .map_or(0, |c| c.cached_tokens);
                cached += c;
                // vLLM's PrefillStats.finalize: full prompt blocks now cached, less the hits
                created += (len / self.block_size * self.block_size).saturating_sub(c);
            }
            let mut d = json!({ "cached_tokens": cached });
            if self.kind == Kind::Chat || !streaming {
                d["created_cache_tokens"] = json!(created);
            }
            if !streaming {
                d["multimodal_tokens"] = Value::Null;
            }
            u["prompt_tokens_details"] = d;
        }
        u
    }

    fn chat_logprobs(&self, c: &Choice, from: usize, to: usize) -> Value {
        let Some(k) = self.logprobs else {
            return Value::Null;
        };
        let tok = &*self.tokenizer;
        let content: Vec<Value> = (from..to)
            .map(|j| {
                let alts = alternatives(tok, c.ids[j], j, k);
                let (t, lp) = alts[0].clone();
                json!({
                    "token": t,
                    "logprob": lp,
                    "bytes": t.as_bytes(),
                    "top_logprobs": alts.iter().take(k as usize).map(|(t, lp)| json!({
                        "token": t, "logprob": lp, "bytes": t.as_bytes()
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "content": content })
    }

    fn completion_logprobs(
        &self,
        c: &mut Choice,
        from: usize,
        to: usize,
        echo: Option<&[u32]>,
    ) -> Value {
        let Some(k) = self.logprobs else {
            return Value::Null;
        };
        let tok = &*self.tokenizer;
        let mut lp =
            json!({"text_offset": [], "token_logprobs": [], "tokens": [], "top_logprobs": []});
        let mut push = |t: String, l: Value, top: Value, off: usize| {
            if let Some(a) = lp["text_offset"].as_array_mut() {
                a.push(json!(off));
            }
            if let Some(a) = lp["token_logprobs"].as_array_mut() {
                a.push(l);
            }
            if let Some(a) = lp["tokens"].as_array_mut() {
                a.push(json!(t));
            }
            if let Some(a) = lp["top_logprobs"].as_array_mut() {
                a.push(top);
            }
        };
        // vLLM's offsets advance by each reported token's length in characters (Python's
        // `len`), not by the text the token added
        if let Some(prompt) = echo {
            for &id in prompt {
                let t = tok.decode(&[id]);
                push(t.clone(), Value::Null, Value::Null, c.text_offset);
                c.text_offset += t.chars().count();
            }
        }
        for j in from..to {
            let alts = alternatives(tok, c.ids[j], j, k.max(1));
            let mut top = serde_json::Map::new();
            for (t, l) in alts.iter().take(k.max(1) as usize) {
                top.insert(t.clone(), json!(l));
            }
            push(
                alts[0].0.clone(),
                json!(alts[0].1),
                Value::Object(top),
                c.text_offset,
            );
            c.text_offset += alts[0].0.chars().count();
        }
        lp
    }

    /// One SSE event for tokens `from..to` of a choice (the last one ends it when `finish`).
    pub(super) fn chunk(&self, c: &mut Choice, from: usize, to: usize, out: &mut String) {
        let finish = to == c.ids.len();
        let mut text: String = c.pieces[from..to].concat();
        let mut echo_ids = None;
        if let Some(e) = c.echo.take() {
            text.insert_str(0, &e);
            echo_ids = c.echo_ids.take();
        }
        let mut choice = serde_json::Map::new();
        choice.insert("index".into(), json!(c.index));
        match self.kind {
            Kind::Chat => {
                choice.insert("delta".into(), json!({ "content": text }));
                choice.insert("logprobs".into(), self.chat_logprobs(c, from, to));
            }
            Kind::Completion => {
                choice.insert("text".into(), json!(text));
                let lp = self.completion_logprobs(c, from, to, echo_ids.as_deref());
                choice.insert("logprobs".into(), lp);
                choice.insert("prompt_token_ids".into(), json!(echo_ids));
            }
        }
        if finish {
            choice.insert("finish_reason".into(), json!(c.finish_reason));
            choice.insert("stop_reason".into(), json!(c.stop_reason));
        } else {
            choice.insert("finish_reason".into(), Value::Null);
            if self.kind == Kind::Completion {
                choice.insert("stop_reason".into(), Value::Null);
            }
        }
        choice.insert("token_ids".into(), Value::Null);
        c.sent = to;
        let mut m = self.head(true);
        m.insert("choices".into(), json!([choice]));
        if self.continuous_usage {
            m.insert("usage".into(), self.choice_usage(c));
        }
        if finish && !self.include_usage {
            m.insert("system_fingerprint".into(), json!(self.fingerprint));
        }
        push_event(out, &Value::Object(m));
    }

    fn choice_usage(&self, c: &Choice) -> Value {
        let mut u = json!({
            "prompt_tokens": c.prompt_len,
            "total_tokens": c.prompt_len + c.sent as u64,
            "completion_tokens": c.sent,
        });
        if self.kind == Kind::Chat {
            u["completion_tokens_details"] = Value::Null;
        }
        u
    }

    /// vLLM's `prompt_logprobs` under `echo`: none for the first token, then one entry per
    /// prompt token (emulated numbers, as [`logprob_of`]).
    fn prompt_logprobs(&self, ids: &[u32]) -> Value {
        let mut out = Vec::with_capacity(ids.len());
        for (j, &id) in ids.iter().enumerate() {
            if j == 0 {
                out.push(Value::Null);
                continue;
            }
            let mut m = serde_json::Map::new();
            m.insert(
                id.to_string(),
                json!({
                    "logprob": logprob_of(id, j) - 8.0,
                    "rank": 1 + crate::core::mix(id as u64 ^ j as u64) % 100_000,
                    "decoded_token": self.tokenizer.decode(&[id]),
                }),
            );
            out.push(Value::Object(m));
        }
        Value::Array(out)
    }

    /// Chat streams open every choice with the role.
    pub(super) fn role_chunk(&self, c: &Choice, out: &mut String) {
        let mut m = self.head(true);
        m.insert(
            "choices".into(),
            json!([{
                "index": c.index,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": null,
                "finish_reason": null,
            }]),
        );
        m.insert("prompt_token_ids".into(), Value::Null);
        m.insert("prompt_text".into(), Value::Null);
        if self.continuous_usage {
            m.insert("usage".into(), self.choice_usage(c));
        }
        push_event(out, &Value::Object(m));
    }

    pub(super) fn usage_chunk(&self, choices: &[Choice], out: &mut String) {
        let mut m = self.head(true);
        m.insert("choices".into(), json!([]));
        m.insert("usage".into(), self.usage(choices, true));
        m.insert("system_fingerprint".into(), json!(self.fingerprint));
        push_event(out, &Value::Object(m));
    }

    /// The whole answer as one JSON object.
    pub(super) fn body(&self, choices: &mut [Choice], echo: bool) -> Value {
        let mut list = Vec::with_capacity(choices.len());
        for c in choices.iter_mut() {
            let n = c.ids.len();
            let text = c.pieces.concat();
            let choice = match self.kind {
                Kind::Chat => {
                    let content = match c.echo.take() {
                        Some(e) => e + &text,
                        None => text,
                    };
                    json!({
                        "index": c.index,
                        "message": {
                            "role": "assistant", "content": content, "refusal": null,
                            "annotations": null, "audio": null, "function_call": null,
                            "reasoning": null,
                        },
                        "logprobs": self.chat_logprobs(c, 0, n),
                        "finish_reason": c.finish_reason,
                        "stop_reason": c.stop_reason,
                        "token_ids": null,
                        "routed_experts": null,
                    })
                }
                Kind::Completion => {
                    let e = c.echo.take();
                    let echo_ids = c.echo_ids.take().filter(|_| e.is_some());
                    let lp = self.completion_logprobs(c, 0, n, echo_ids.as_deref());
                    let prompt_logprobs = match (&echo_ids, self.logprobs) {
                        (Some(ids), Some(_)) if echo => self.prompt_logprobs(ids),
                        _ => Value::Null,
                    };
                    json!({
                        "index": c.index,
                        "text": e.unwrap_or_default() + &text,
                        "logprobs": lp,
                        "finish_reason": c.finish_reason,
                        "stop_reason": c.stop_reason,
                        "token_ids": null,
                        "prompt_logprobs": prompt_logprobs,
                        "prompt_token_ids": null,
                        "routed_experts": null,
                    })
                }
            };
            c.sent = n;
            list.push(choice);
        }
        let mut m = self.head(false);
        m.insert("choices".into(), Value::Array(list));
        m.insert("service_tier".into(), Value::Null);
        m.insert("system_fingerprint".into(), json!(self.fingerprint));
        m.insert("usage".into(), self.usage(choices, false));
        if self.kind == Kind::Chat {
            let lp = match &self.chat_prompt_ids {
                Some(ids) if echo => self.prompt_logprobs(ids),
                _ => Value::Null,
            };
            m.insert("prompt_logprobs".into(), lp);
            m.insert("prompt_token_ids".into(), Value::Null);
            m.insert("prompt_text".into(), Value::Null);
        }
        m.insert("kv_transfer_params".into(), Value::Null);
        m.insert("ec_transfer_params".into(), Value::Null);
        m.insert("metrics".into(), Value::Null);
        Value::Object(m)
    }
}
