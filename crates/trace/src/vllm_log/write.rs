//! Writing vLLM server log lines, byte for byte as vLLM and LMCache print them (the reader is
//! [`super::read`]): one home for what `convert` and the emulator (`serve`) write.
//!
//! - vLLM (`vllm/logger.py`: `%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s`,
//!   date `%m-%d %H:%M:%S`, behind the process tag `(APIServer pid=N)`), request logging as
//!   vLLM >= 0.10 writes it (`entrypoints/.../utils/request_logger.py`; the bundled
//!   `data/traces/vllm-logs/` sample is the reference for every byte outside the values):
//!
//! ```text
//! (APIServer pid=P) DEBUG MM-DD HH:MM:SS [entrypoints/.../utils/request_logger.py:56] Request ID details: prompt: '...', prompt_token_ids: [...], prompt_embeds shape: None.
//! (APIServer pid=P) INFO MM-DD HH:MM:SS [entrypoints/.../utils/request_logger.py:66] Received request ID: params: SamplingParams(..., max_tokens=N, ...), lora_request: None.
//! (APIServer pid=P) DEBUG MM-DD HH:MM:SS [entrypoints/.../utils/request_logger.py:112] Generated response ID (streaming complete) details: output_token_ids: [...]
//! (APIServer pid=P) INFO MM-DD HH:MM:SS [entrypoints/.../utils/request_logger.py:119] Generated response ID (streaming complete): output: '...', finish_reason: stop
//! ```
//!
//!   plus the `(streaming delta)` lines of vLLM 0.32 and the periodic `Engine 000: Avg prompt
//!   throughput: ...` line (`v1/metrics/loggers.py`).
//! - LMCache (`[%(asctime)s] LMCache %(levelname)s: %(message)s (%(filename)s:%(lineno)d:%(name)s)`,
//!   behind `(EngineCore_DP0 pid=N)`): the lookup line `Reqid: ID, Total tokens N, Inference
//!   Engine computed tokens: G, LMCache hit tokens: L, need to load: K` and the `Retrieved` /
//!   `Stored` lines.
//!
//! Stamps are Python logging's `%m-%d %H:%M:%S` (floored seconds, no year), in UTC; a positive
//! `decimals` adds a fraction of a second (vLLM writes none; the reader accepts it). Strings
//! are Python's `repr` ([`push_repr`]), id lists Python's `str(list)`.

use std::fmt::Write as _;

/// The request logger's file as vLLM prints it.
pub const REQUEST_LOGGER: &str = "entrypoints/.../utils/request_logger.py";

/// A point on the emulated clock: microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Stamp(pub u64);

impl Stamp {
    fn parts(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let secs = (self.0 / 1_000_000) as i64;
        let (y, mo, d) = crate::time::civil_from_days(secs.div_euclid(86_400));
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

/// The `SamplingParams(...)` of a `Received request` line: vLLM 0.33's fields in its order,
/// the ones a replay sets as values (as in the bundled sample log).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_p: f64,
    pub seed: Option<u64>,
    pub max_tokens: u32,
}

impl SamplingParams {
    pub fn push(&self, b: &mut Vec<u8>) {
        let seed = self.seed.map_or("None".to_string(), |s| s.to_string());
        let _ = write!(
            Bytes(b),
            "SamplingParams(n=1, presence_penalty=0.0, frequency_penalty=0.0, \
             repetition_penalty=1.0, temperature={}, watermarking=None, top_p={}, top_k=0, \
             min_p=0.0, seed={seed}, stop=[], stop_token_ids=[], bad_words=[], \
             thinking_token_budget=None, include_stop_str_in_output=False, ignore_eos=False, \
             max_tokens={}, min_tokens=0, logprobs=None, prompt_logprobs=None, \
             skip_special_tokens=True, spaces_between_special_tokens=True, \
             structured_outputs=None, extra_args=None)",
            py_float(self.temperature),
            py_float(self.top_p),
            self.max_tokens
        );
    }
}

/// `fmt::Write` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The tokenizer a log's start-up line names (`'tokenizer': 'o200k_base'`) when `convert`'s
/// embedded stand-in tokenized its prompts: its ids are not the model's, so they may pass the
/// model's vocabulary. `convert` writes it, `simulate`'s model check reads it.
pub const STAND_IN_TOKENIZER: &str = "o200k_base";

/// `(APIServer pid=P) LEVEL STAMP [FILE_LINE] `: what comes before a vLLM message.
pub fn push_head(b: &mut Vec<u8>, api_pid: u32, level: &str, stamp: &[u8], file_line: &str) {
    b.extend_from_slice(b"(APIServer pid=");
    push_u32(b, api_pid);
    b.extend_from_slice(b") ");
    b.extend_from_slice(level.as_bytes());
    b.push(b' ');
    b.extend_from_slice(stamp);
    b.extend_from_slice(b" [");
    b.extend_from_slice(file_line.as_bytes());
    b.extend_from_slice(b"] ");
}

/// A request's two lines: `Request ID details: prompt: ..., prompt_token_ids: [...], ...`
/// (DEBUG) and `Received request ID: params: SamplingParams(...), lora_request: None.` (INFO).
/// The prompt and its ids are the concatenations of `prompt` and `ids`.
pub fn push_request(
    b: &mut Vec<u8>,
    api_pid: u32,
    stamp: &[u8],
    request_id: &str,
    prompt: &[&str],
    ids: &[&[u32]],
    params: &SamplingParams,
) {
    push_head(b, api_pid, "DEBUG", stamp, &format!("{REQUEST_LOGGER}:56"));
    b.extend_from_slice(b"Request ");
    b.extend_from_slice(request_id.as_bytes());
    b.extend_from_slice(b" details: prompt: ");
    push_repr(b, prompt);
    b.extend_from_slice(b", prompt_token_ids: ");
    push_id_list(b, ids);
    b.extend_from_slice(b", prompt_embeds shape: None.\n");
    push_head(b, api_pid, "INFO", stamp, &format!("{REQUEST_LOGGER}:66"));
    b.extend_from_slice(b"Received request ");
    b.extend_from_slice(request_id.as_bytes());
    b.extend_from_slice(b": params: ");
    params.push(b);
    b.extend_from_slice(b", lora_request: None.\n");
}

/// A finished request's two lines: `Generated response ID[ (streaming complete)] details:
/// output_token_ids: [...]` (DEBUG; `None` when `ids` is, as after streaming deltas) and
/// `Generated response ID[ ...]: output: '...', finish_reason: X` (INFO).
#[allow(clippy::too_many_arguments)]
pub fn push_response(
    b: &mut Vec<u8>,
    api_pid: u32,
    stamp: &[u8],
    request_id: &str,
    streaming: bool,
    output: &[&str],
    ids: Option<&[&[u32]]>,
    finish_reason: &str,
) {
    let tag: &[u8] = if streaming {
        b" (streaming complete)"
    } else {
        b""
    };
    push_head(b, api_pid, "DEBUG", stamp, &format!("{REQUEST_LOGGER}:112"));
    b.extend_from_slice(b"Generated response ");
    b.extend_from_slice(request_id.as_bytes());
    b.extend_from_slice(tag);
    b.extend_from_slice(b" details: output_token_ids: ");
    match ids {
        Some(ids) => push_id_list(b, ids),
        None => b.extend_from_slice(b"None"),
    }
    b.push(b'\n');
    push_head(b, api_pid, "INFO", stamp, &format!("{REQUEST_LOGGER}:119"));
    b.extend_from_slice(b"Generated response ");
    b.extend_from_slice(request_id.as_bytes());
    b.extend_from_slice(tag);
    b.extend_from_slice(b": output: ");
    push_repr(b, output);
    b.extend_from_slice(b", finish_reason: ");
    b.extend_from_slice(finish_reason.as_bytes());
    b.push(b'\n');
}

/// Python's `repr()` of a string ([`push_repr`] of one part).
pub fn py_repr(s: &str) -> String {
    let mut b = Vec::with_capacity(s.len() + 2);
    push_repr(&mut b, &[s]);
    into_string(b)
}

/// `[1, 2, 3]`.
pub fn id_list(ids: &[u32]) -> String {
    let mut b = Vec::with_capacity(ids.len() * 7 + 2);
    push_id_list(&mut b, &[ids]);
    into_string(b)
}

/// The bytes this module writes are UTF-8 (pieces of `str` and ASCII).
fn into_string(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Decimal digits of `v`.
pub fn push_u32(b: &mut Vec<u8>, mut v: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.extend_from_slice(&buf[i..]);
}

/// Python's `str(list_of_ints)` of the concatenated parts: `[1, 2, 3]`.
pub fn push_id_list(b: &mut Vec<u8>, parts: &[&[u32]]) {
    b.push(b'[');
    let mut first = true;
    for part in parts {
        for &id in *part {
            if !first {
                b.extend_from_slice(b", ");
            }
            first = false;
            push_u32(b, id);
        }
    }
    b.push(b']');
}

/// Python's `repr(str)` of the concatenated parts (what `%r` prints): single quotes unless the
/// string contains `'` and no `"`; `\\`, the quote, `\t`, `\n`, `\r` escaped; other
/// non-printable characters as `\xNN`, `\uNNNN` or `\UNNNNNNNN`; printable non-ASCII as is.
/// Deviation: "printable" follows `str.isprintable` for control, format, separator and
/// private-use characters, but unassigned code points (category Cn, which depends on Python's
/// Unicode version) are printed as they are.
pub fn push_repr(b: &mut Vec<u8>, parts: &[&str]) {
    let has_single = parts.iter().any(|p| p.contains('\''));
    let has_double = parts.iter().any(|p| p.contains('"'));
    let quote = if has_single && !has_double {
        b'"'
    } else {
        b'\''
    };
    b.push(quote);
    for part in parts {
        let bytes = part.as_bytes();
        // Copy runs of characters that need no escape at once; only look at escapes and
        // non-ASCII characters one by one.
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let x = bytes[i];
            if x < 0x80 {
                if (b' '..=b'~').contains(&x) && x != b'\\' && x != quote {
                    i += 1;
                    continue;
                }
                b.extend_from_slice(&bytes[start..i]);
                match x {
                    b'\\' => b.extend_from_slice(b"\\\\"),
                    b'\n' => b.extend_from_slice(b"\\n"),
                    b'\r' => b.extend_from_slice(b"\\r"),
                    b'\t' => b.extend_from_slice(b"\\t"),
                    q if q == quote => {
                        b.push(b'\\');
                        b.push(quote);
                    }
                    c => b.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
                }
                i += 1;
                start = i;
                continue;
            }
            let c = part[i..].chars().next().expect("a char starts here");
            let len = c.len_utf8();
            if !is_printable(c) {
                b.extend_from_slice(&bytes[start..i]);
                let v = c as u32;
                let s = if v < 0x100 {
                    format!("\\x{v:02x}")
                } else if v < 0x10000 {
                    format!("\\u{v:04x}")
                } else {
                    format!("\\U{v:08x}")
                };
                b.extend_from_slice(s.as_bytes());
                start = i + len;
            }
            i += len;
        }
        b.extend_from_slice(&bytes[start..]);
    }
    b.push(quote);
}

/// `str.isprintable` for a non-ASCII character (see `push_repr` for the deviation).
fn is_printable(c: char) -> bool {
    let v = c as u32;
    !matches!(v,
        0x80..=0xA0 // C1 controls, NO-BREAK SPACE (Zs)
        | 0xAD // SOFT HYPHEN (Cf)
        | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2 // Arabic/Syriac Cf
        | 0x1680 // OGHAM SPACE MARK (Zs)
        | 0x180E // MONGOLIAN VOWEL SEPARATOR (Cf)
        | 0x2000..=0x200F // spaces (Zs), ZW* and marks (Cf)
        | 0x2028..=0x202F // LINE/PARAGRAPH SEPARATOR (Zl/Zp), embeddings (Cf), NNBSP (Zs)
        | 0x205F..=0x2064 | 0x2066..=0x206F // MMSP (Zs), invisible operators and isolates (Cf)
        | 0x3000 // IDEOGRAPHIC SPACE (Zs)
        | 0xE000..=0xF8FF // private use (Co)
        | 0xFEFF // BOM / ZWNBSP (Cf)
        | 0xFFF9..=0xFFFB // interlinear annotation (Cf)
        | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0001 | 0xE0020..=0xE007F // tags (Cf)
        | 0xF0000..=0x10FFFF // supplementary private use (Co)
    )
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
        let params = SamplingParams {
            temperature: r.temperature,
            top_p: r.top_p,
            seed: r.seed,
            max_tokens: r.max_tokens,
        };
        let mut b = Vec::new();
        let stamp = at.vllm(self.decimals);
        push_request(
            &mut b,
            self.api_pid,
            stamp.as_bytes(),
            &r.request_id,
            &[&prompt],
            &[ids],
            &params,
        );
        into_string(b)
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
        let ids = output_token_ids.map(|ids| match self.max_log_len {
            Some(n) => &ids[..ids.len().min(n)],
            None => ids,
        });
        let text: String = match self.max_log_len {
            Some(n) => output.chars().take(n).collect(),
            None => output.to_string(),
        };
        let mut b = Vec::new();
        let stamp = at.vllm(self.decimals);
        let ids: Option<[&[u32]; 1]> = ids.map(|ids| [ids]);
        push_response(
            &mut b,
            self.api_pid,
            stamp.as_bytes(),
            request_id,
            streaming,
            &[&text],
            ids.as_ref().map(|i| &i[..]),
            finish_reason,
        );
        into_string(b)
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

    fn repr(s: &str) -> String {
        let mut b = Vec::new();
        push_repr(&mut b, &[s]);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn repr_matches_python() {
        // Expected values are Python 3.12's repr() of the same strings.
        let cases = [
            ("hello", "'hello'"),
            ("", "''"),
            ("it's", "\"it's\""),
            ("say \"hi\"", "'say \"hi\"'"),
            ("it's \"x\"", "'it\\'s \"x\"'"),
            ("a\\b", "'a\\\\b'"),
            ("l1\nl2\r\n\tx", "'l1\\nl2\\r\\n\\tx'"),
            ("bell\x07 del\x7f", "'bell\\x07 del\\x7f'"),
            (
                "caf\u{e9} \u{4e2d}\u{6587} \u{1F600}",
                "'caf\u{e9} \u{4e2d}\u{6587} \u{1F600}'",
            ),
            (
                "nb\u{a0}sp zw\u{200b} ls\u{2028}",
                "'nb\\xa0sp zw\\u200b ls\\u2028'",
            ),
            (
                "bom\u{feff} pua\u{e000} sup\u{F0000}",
                "'bom\\ufeff pua\\ue000 sup\\U000f0000'",
            ),
            (
                "<|im_start|>user\nWhat's 2+2?<|im_end|>\n",
                "\"<|im_start|>user\\nWhat's 2+2?<|im_end|>\\n\"",
            ),
        ];
        for (s, want) in cases {
            assert_eq!(repr(s), want, "{s:?}");
        }
    }

    #[test]
    fn repr_of_parts_chooses_the_quote_over_the_whole_string() {
        let mut b = Vec::new();
        push_repr(&mut b, &["it's ", "fine \"ok\""]);
        assert_eq!(String::from_utf8(b).unwrap(), "'it\\'s fine \"ok\"'");
    }

    #[test]
    fn id_lists_print_like_python() {
        let mut b = Vec::new();
        push_id_list(&mut b, &[&[0, 7], &[], &[4_294_967_295]]);
        assert_eq!(b, b"[0, 7, 4294967295]");
        let mut b = Vec::new();
        push_id_list(&mut b, &[&[]]);
        assert_eq!(b, b"[]");
    }

    #[test]
    fn stamps_match_vllm_and_python_formats() {
        // 2025-08-12 12:00:06.123456 UTC
        let s = Stamp(1_755_000_006_123_456);
        assert_eq!(s.vllm(0), "08-12 12:00:06");
        assert_eq!(s.vllm(6), "08-12 12:00:06.123456");
        assert_eq!(s.python(), "2025-08-12 12:00:06,123");
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

    #[test]
    fn what_is_written_reads_back() {
        // convert's and the emulator's lines through the reader
        let mut b = Vec::new();
        let params = SamplingParams {
            temperature: 0.7,
            top_p: 1.0,
            seed: None,
            max_tokens: 3,
        };
        let stamp = Stamp(1_755_000_006_000_000).vllm(0);
        push_request(
            &mut b,
            9,
            stamp.as_bytes(),
            "r-1",
            &["it's ", "a \"test\"\n"],
            &[&[1, 2], &[3]],
            &params,
        );
        let later = Stamp(1_755_000_008_000_000).vllm(0);
        push_response(
            &mut b,
            9,
            later.as_bytes(),
            "r-1",
            true,
            &["ok"],
            Some(&[&[7, 8, 9]]),
            "stop",
        );
        let text = String::from_utf8(b).unwrap();
        let t = super::super::read::parse(
            std::path::Path::new("w.log"),
            &text,
            &crate::ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(t.requests.len(), 1);
        let r = &t.requests[0];
        assert_eq!(r.id, "r-1");
        assert_eq!(r.content, crate::Content::Tokens(vec![1, 2, 3]));
        assert_eq!(r.output_tokens, Some(vec![7, 8, 9]));
        // 2 s later, and one microsecond after the other line of its stamp
        assert_eq!(r.finish_time, Some(2.000001));
    }
}
