//! The log lines the emulator writes, in vLLM's and LMCache's exact formats (what
//! `inferencelab_trace::readers::vllm_log` and other log tooling read):
//!
//! - vLLM (`vllm/logger.py`: `%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s`,
//!   date `%m-%d %H:%M:%S`, behind the process tag `(APIServer pid=N)`), request logging as
//!   vLLM 0.33 writes it (`entrypoints/.../utils/request_logger.py`): `Request ID details:
//!   prompt: ..., prompt_token_ids: [...], prompt_embeds shape: None.` (DEBUG), `Received request
//!   ID: params: SamplingParams(...), lora_request: None.` (INFO), and `Generated response ID
//!   (streaming complete) details: output_token_ids: [...]` / `...: output: ..., finish_reason:
//!   X`; the periodic `Engine 000: Avg prompt throughput: ...` line (`v1/metrics/loggers.py`).
//! - LMCache (`[%(asctime)s] LMCache %(levelname)s: %(message)s (%(filename)s:%(lineno)d:%(name)s)`,
//!   behind `(EngineCore_DP0 pid=N)`): the lookup line `Reqid: ID, Total tokens N, Inference
//!   Engine computed tokens: G, LMCache hit tokens: L, need to load: K` and the `Retrieved` /
//!   `Stored` lines.
//!
//! Stamps come from the emulated clock, in UTC. `decimals` > 0 adds a fraction of a second to
//! vLLM's stamps (vLLM writes none; the trace reader accepts it): with 6 the log records every
//! admission and finish to the microsecond, so `simulate` replays the emulator's run exactly.

use std::fmt::Write;

/// Civil date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A point on the emulated clock: microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Stamp(pub u64);

impl Stamp {
    fn parts(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let secs = (self.0 / 1_000_000) as i64;
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400) as u32;
        (
            y,
            mo,
            d,
            sod / 3600,
            sod / 60 % 60,
            sod % 60,
            (self.0 % 1_000_000) as u32,
        )
    }

    /// vLLM's `MM-DD HH:MM:SS`, plus `decimals` digits of the second.
    pub fn vllm(self, decimals: u8) -> String {
        let (_, mo, d, h, mi, s, us) = self.parts();
        let mut out = format!("{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
        if decimals > 0 {
            let digits = format!("{us:06}");
            out.push('.');
            out.push_str(&digits[..(decimals as usize).min(6)]);
        }
        out
    }

    /// Python logging's default `YYYY-MM-DD HH:MM:SS,mmm` (LMCache).
    pub fn python(self) -> String {
        let (y, mo, d, h, mi, s, us) = self.parts();
        format!(
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02},{:03}",
            us / 1000
        )
    }
}

/// Python's `repr()` of a string: single quotes unless the text has `'` and no `"`, escapes for
/// backslashes, the quote, `\n \r \t` and other control characters.
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `[1, 2, 3]`.
pub fn id_list(ids: &[u32]) -> String {
    let mut out = String::with_capacity(ids.len() * 7 + 2);
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{id}");
    }
    out.push(']');
    out
}

/// Python's `%.1f` of a float.
fn f1(x: f64) -> String {
    format!("{x:.1}")
}

/// Formats lines for one server.
#[derive(Debug, Clone)]
pub struct LogFormat {
    pub api_pid: u32,
    pub engine_pid: u32,
    pub decimals: u8,
    /// vLLM `--max-log-len`: prompt characters and token ids logged at most.
    pub max_log_len: Option<usize>,
}

/// What a request line needs to know about the request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub request_id: String,
    pub prompt: String,
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: u32,
    pub seed: Option<u64>,
}

impl LogFormat {
    fn vllm(&self, level: &str, at: Stamp, file: &str, msg: &str) -> String {
        format!(
            "(APIServer pid={}) {level} {} [{file}] {msg}\n",
            self.api_pid,
            at.vllm(self.decimals)
        )
    }

    fn lmcache_line(&self, at: Stamp, msg: &str, origin: &str) -> String {
        format!(
            "(EngineCore_DP0 pid={}) [{}] LMCache INFO: {msg} ({origin})\n",
            self.engine_pid,
            at.python()
        )
    }

    /// A plain INFO line (start-up messages).
    pub fn info(&self, at: Stamp, file: &str, msg: &str) -> String {
        self.vllm("INFO", at, file, msg)
    }

    /// `Request ID details: ...` (DEBUG) and `Received request ID: params: ...` (INFO).
    pub fn request(&self, at: Stamp, r: &RequestInfo, prompt_token_ids: &[u32]) -> String {
        let (prompt, ids) = match self.max_log_len {
            Some(n) => {
                let cut: String = r.prompt.chars().take(n).collect();
                (cut, &prompt_token_ids[..prompt_token_ids.len().min(n)])
            }
            None => (r.prompt.clone(), prompt_token_ids),
        };
        let details = format!(
            "Request {} details: prompt: {}, prompt_token_ids: {}, prompt_embeds shape: None.",
            r.request_id,
            py_repr(&prompt),
            id_list(ids)
        );
        let seed = r.seed.map_or("None".to_string(), |s| s.to_string());
        let received = format!(
            "Received request {}: params: SamplingParams(n=1, presence_penalty=0.0, \
             frequency_penalty=0.0, repetition_penalty=1.0, temperature={}, watermarking=None, \
             top_p={}, top_k=0, min_p=0.0, seed={seed}, stop=[], stop_token_ids=[], bad_words=[], \
             thinking_token_budget=None, include_stop_str_in_output=False, ignore_eos=False, \
             max_tokens={}, min_tokens=0, logprobs=None, prompt_logprobs=None, \
             skip_special_tokens=True, spaces_between_special_tokens=True, \
             structured_outputs=None, extra_args=None), lora_request: None.",
            r.request_id,
            py_float(r.temperature),
            py_float(r.top_p),
            r.max_tokens
        );
        let mut out = self.vllm(
            "DEBUG",
            at,
            "entrypoints/.../utils/request_logger.py:56",
            &details,
        );
        out.push_str(&self.vllm(
            "INFO",
            at,
            "entrypoints/.../utils/request_logger.py:66",
            &received,
        ));
        out
    }

    /// The two `(streaming delta)` lines of one sampled token (vLLM 0.32 with
    /// `--enable-log-outputs`); `finish_reason` on the last one.
    pub fn delta(
        &self,
        at: Stamp,
        request_id: &str,
        token_id: u32,
        text: &str,
        finish_reason: Option<&str>,
    ) -> String {
        let mut out = self.vllm(
            "DEBUG",
            at,
            "entrypoints/.../utils/request_logger.py:101",
            &format!(
                "Generated response {request_id} (streaming delta) details: output_token_ids: \
                 [{token_id}]"
            ),
        );
        out.push_str(&self.vllm(
            "INFO",
            at,
            "entrypoints/.../utils/request_logger.py:108",
            &format!(
                "Generated response {request_id} (streaming delta): output: {}, finish_reason: {}",
                py_repr(text),
                finish_reason.unwrap_or("None")
            ),
        ));
        out
    }

    /// The two `Generated response` lines of a finished request. `output_token_ids` is None
    /// after `(streaming delta)` lines (vLLM logs `output_token_ids: None` then).
    pub fn response(
        &self,
        at: Stamp,
        request_id: &str,
        streaming: bool,
        output: &str,
        output_token_ids: Option<&[u32]>,
        finish_reason: &str,
    ) -> String {
        let tag = if streaming {
            " (streaming complete)"
        } else {
            ""
        };
        let ids = output_token_ids.map(|ids| match self.max_log_len {
            Some(n) => &ids[..ids.len().min(n)],
            None => ids,
        });
        let text: String = match self.max_log_len {
            Some(n) => output.chars().take(n).collect(),
            None => output.to_string(),
        };
        let mut out = self.vllm(
            "DEBUG",
            at,
            "entrypoints/.../utils/request_logger.py:112",
            &format!(
                "Generated response {request_id}{tag} details: output_token_ids: {}",
                ids.map_or_else(|| "None".to_string(), id_list)
            ),
        );
        out.push_str(&self.vllm(
            "INFO",
            at,
            "entrypoints/.../utils/request_logger.py:119",
            &format!(
                "Generated response {request_id}{tag}: output: {}, finish_reason: {finish_reason}",
                py_repr(&text)
            ),
        ));
        out
    }

    /// LMCache's lookup line, and its `Retrieved`/`Stored` lines when it loaded or stored.
    #[allow(clippy::too_many_arguments)]
    pub fn lmcache(
        &self,
        at: Stamp,
        request_id: &str,
        total_tokens: u64,
        gpu_hit_tokens: u64,
        hit_tokens: u64,
        need_to_load: i64,
        loaded_tokens: u64,
        stored_tokens: u64,
        kv_bytes_per_token: u64,
        load_seconds: f64,
    ) -> String {
        let mut out = self.lmcache_line(
            at,
            &format!(
                "Reqid: {request_id}, Total tokens {total_tokens}, Inference Engine computed \
                 tokens: {gpu_hit_tokens}, LMCache hit tokens: {hit_tokens}, need to load: \
                 {need_to_load}"
            ),
            "vllm_v1_adapter.py:1214:lmcache.integration.vllm.vllm_v1_adapter",
        );
        let gb = |tokens: u64| (tokens * kv_bytes_per_token) as f64 / 1e9;
        if loaded_tokens > 0 {
            let ms = load_seconds * 1000.0;
            let tput = if load_seconds > 0.0 {
                gb(loaded_tokens) / load_seconds
            } else {
                0.0
            };
            out.push_str(&self.lmcache_line(
                at,
                &format!(
                    "[req_id={request_id}] Retrieved {loaded_tokens} out of {loaded_tokens} \
                     required tokens (from {total_tokens} total tokens). size: {:.4} gb, cost \
                     {ms:.4} ms, throughput: {tput:.4} GB/s;",
                    gb(loaded_tokens)
                ),
                "cache_engine.py:652:lmcache.v1.cache_engine",
            ));
        }
        if stored_tokens > 0 {
            out.push_str(&self.lmcache_line(
                at,
                &format!(
                    "[req_id={request_id}] Stored {stored_tokens} out of total {total_tokens} \
                     tokens. size: {:.4} gb, cost 0.0000 ms, throughput: 0.0000 GB/s;",
                    gb(stored_tokens)
                ),
                "cache_engine.py:301:lmcache.v1.cache_engine",
            ));
        }
        out
    }

    /// vLLM's periodic stats line.
    #[allow(clippy::too_many_arguments)]
    pub fn engine_stats(
        &self,
        at: Stamp,
        prompt_tput: f64,
        gen_tput: f64,
        running: usize,
        waiting: usize,
        kv_usage: f64,
        prefix_hit_rate: f64,
        external_hit_rate: Option<f64>,
    ) -> String {
        let mut msg = format!(
            "Engine 000: Avg prompt throughput: {} tokens/s, Avg generation throughput: {} \
             tokens/s, Running: {running} reqs, Waiting: {waiting} reqs, GPU KV cache usage: \
             {}%, Prefix cache hit rate: {}%",
            f1(prompt_tput),
            f1(gen_tput),
            f1(kv_usage * 100.0),
            f1(prefix_hit_rate * 100.0)
        );
        if let Some(x) = external_hit_rate {
            let _ = write!(msg, ", External prefix cache hit rate: {}%", f1(x * 100.0));
        }
        self.vllm("INFO", at, "v1/metrics/loggers.py:236", &msg)
    }
}

/// Python's `repr()` of a float: always with a decimal point.
pub fn py_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_match_vllm_and_python_formats() {
        // 2025-08-12 12:00:06.123456 UTC
        let s = Stamp(1_755_000_006_123_456);
        assert_eq!(s.vllm(0), "08-12 12:00:06");
        assert_eq!(s.vllm(6), "08-12 12:00:06.123456");
        assert_eq!(s.python(), "2025-08-12 12:00:06,123");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn repr_quotes_like_python() {
        assert_eq!(py_repr("a'b"), "\"a'b\"");
        assert_eq!(py_repr("a\"b'c\n"), "'a\"b\\'c\\n'");
        assert_eq!(py_repr("é\u{1}"), "'é\\x01'");
        assert_eq!(py_float(0.7), "0.7");
        assert_eq!(py_float(1.0), "1.0");
    }

    #[test]
    fn request_lines_match_the_sample_log_shape() {
        let f = LogFormat {
            api_pid: 7,
            engine_pid: 8,
            decimals: 0,
            max_log_len: None,
        };
        let r = RequestInfo {
            request_id: "chatcmpl-1".into(),
            prompt: "hi".into(),
            temperature: 0.7,
            top_p: 1.0,
            max_tokens: 101,
            seed: None,
        };
        let text = f.request(Stamp(1_755_000_006_000_000), &r, &[1, 2]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "(APIServer pid=7) DEBUG 08-12 12:00:06 [entrypoints/.../utils/request_logger.py:56] \
             Request chatcmpl-1 details: prompt: 'hi', prompt_token_ids: [1, 2], prompt_embeds \
             shape: None."
        );
        // the sample log's SamplingParams, field for field
        let sample = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log"
        ))
        .unwrap();
        let sample_params = sample
            .lines()
            .find(|l| l.contains("Received request") && l.contains("max_tokens=101"))
            .and_then(|l| l.split_once("params: "))
            .unwrap()
            .1;
        assert_eq!(lines[1].split_once("params: ").unwrap().1, sample_params);
    }
}
