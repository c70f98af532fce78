//! Server-sent events: the streamed response body, one frame per due token, and the pacing
//! records of each stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use http_body::Frame;
use serde_json::Value;

use super::openai::Kind;
use super::response::{Choice, Response1};
use crate::core::{Event, PacingLog, TokenPacing};

pub(super) fn push_event(out: &mut String, v: &Value) {
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
}

/// Append `s` as a JSON string literal (quotes included), escaped as serde_json does.
#[cfg(test)]
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The SSE response body: one frame per due token (more when several are queued), choices
/// interleaved as their tokens come due.
pub(super) struct SseBody {
    pub(super) resp: Response1,
    pub(super) choices: Vec<Choice>,
    pub(super) done: bool,
    pub(super) opened: bool,
    pub(super) pacing: Option<PacingRecord>,
}

/// A stream's pacing records, handed to the shared log when the stream ends.
pub(super) struct PacingRecord {
    pub(super) log: PacingLog,
    pub(super) request_id: String,
    pub(super) tokens: Vec<TokenPacing>,
}

impl Drop for PacingRecord {
    fn drop(&mut self) {
        if let Ok(mut log) = self.log.lock() {
            log.insert(
                std::mem::take(&mut self.request_id),
                std::mem::take(&mut self.tokens),
            );
        }
    }
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let mut out = String::new();
        let mut times: Vec<(Instant, Instant)> = Vec::new();
        let mut cut = false;
        for i in 0..this.choices.len() {
            loop {
                let c = &mut this.choices[i];
                if c.sent >= c.ids.len() && c.guard.key.is_none() {
                    break;
                }
                match c.events.poll_recv(cx) {
                    Poll::Ready(Some(Event::Admitted { cached_tokens })) => {
                        c.cached_tokens = cached_tokens;
                        let pi = c.prompt;
                        if this.resp.prompts[pi].1 == 0 {
                            this.resp.prompts[pi].1 = cached_tokens;
                        }
                    }
                    Poll::Ready(Some(Event::Token {
                        finished, times: t, ..
                    })) => {
                        times.extend(t);
                        if this.resp.kind == Kind::Chat && c.sent == 0 {
                            this.resp.role_chunk(c, &mut out);
                        }
                        let from = c.sent;
                        let to = if finished {
                            c.ids.len()
                        } else {
                            (from + 1).min(c.ids.len())
                        };
                        this.resp.chunk(c, from, to, &mut out);
                        if finished {
                            c.guard.key = None;
                            break;
                        }
                    }
                    Poll::Ready(None) => {
                        cut = true;
                        c.guard.key = None;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        this.opened |= !out.is_empty();
        let all_done = this.choices.iter().all(|c| c.guard.key.is_none());
        if all_done {
            this.done = true;
            if !cut {
                if this.resp.include_usage {
                    this.resp.usage_chunk(&this.choices, &mut out);
                }
                out.push_str("data: [DONE]\n\n");
            }
        }
        if let Some(p) = this.pacing.as_mut() {
            let sent = Instant::now();
            p.tokens
                .extend(
                    times
                        .into_iter()
                        .map(|(due, queued)| TokenPacing { due, queued, sent }),
                );
        }
        if out.is_empty() {
            if this.done {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        } else {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped_as_serde_json_does() {
        for s in [
            "",
            " word",
            "a \"quoted\" \\ path",
            "line\nbreak\ttab\r",
            "\u{1}\u{8}\u{c}",
            "wörld ✓",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }
}
