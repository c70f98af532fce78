//! The vLLM server log writer: what `vllm serve --enable-log-requests --enable-log-outputs` with
//! `VLLM_LOGGING_LEVEL=DEBUG` prints for streamed chat completions (vLLM >= 0.10's
//! `RequestLogger`, `vllm/entrypoints/.../utils/request_logger.py`; the bundled
//! `data/traces/vllm-logs/` sample is the reference for every byte outside the values):
//!
//! ```text
//! (APIServer pid=P) DEBUG MM-DD HH:MM:SS [entrypoints/.../utils/request_logger.py:56] Request ID details: prompt: '...', prompt_token_ids: [...], prompt_embeds shape: None.
//! (APIServer pid=P) INFO MM-DD HH:MM:SS [entrypoints/.../utils/request_logger.py:66] Received request ID: params: SamplingParams(..., max_tokens=N, ...), lora_request: None.
//! (APIServer pid=P) DEBUG MM-DD HH:MM:SS [entrypoints/.../utils/request_logger.py:112] Generated response ID (streaming complete) details: output_token_ids: [...]
//! (APIServer pid=P) INFO MM-DD HH:MM:SS [entrypoints/.../utils/request_logger.py:119] Generated response ID (streaming complete): output: '...', finish_reason: stop
//! ```
//!
//! The first two lines are printed at the request's send time, the last two at its finish time,
//! and lines are in time order as a server prints them, so responses of long requests come after
//! later requests. Stamps are Python logging's `%m-%d %H:%M:%S` (floored seconds, no year).
//! Deviations: no server start-up lines, no periodic `Engine 000:` metrics lines, no uvicorn
//! access lines; `max_tokens` is the answer's length (as in the sample, a replay client's
//! setting); prompt and output are never cut (`--max-log-len` unset).

use std::io::Write;

use rayon::prelude::*;

use crate::rng::Rng;
use crate::timestamp::log_stamp;
use crate::workload::Workload;

const LOGGER_PATH: &str = "entrypoints/.../utils/request_logger.py";

const PARAMS_HEAD: &str = "SamplingParams(n=1, presence_penalty=0.0, frequency_penalty=0.0, \
repetition_penalty=1.0, temperature=0.7, watermarking=None, top_p=1.0, top_k=0, min_p=0.0, \
seed=None, stop=[], stop_token_ids=[], bad_words=[], thinking_token_budget=None, \
include_stop_str_in_output=False, ignore_eos=False, max_tokens=";
const PARAMS_TAIL: &str = ", min_tokens=0, logprobs=None, prompt_logprobs=None, \
skip_special_tokens=True, spaces_between_special_tokens=True, structured_outputs=None, \
extra_args=None)";

/// Events per parallel formatting batch: bounds memory to a few batches of formatted lines.
const BATCH: usize = 2048;

/// The API server's pid in the log, seeded (vLLM runs it as a separate process).
pub fn log_pid(seed: u64) -> u32 {
    1000 + (Rng::derive(seed, u64::MAX, 0x919).next_u64() % 60_000) as u32
}

/// Write the workload as a vLLM server log.
pub fn write_vllm_log<W: Write>(w: &Workload, pid: u32, out: W) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let reqs = &w.trace.requests;
    let to_ns = |t: f64| w.start_unix_ns + (t * 1e9).round() as i64;
    // (time, 0 = finish / 1 = send, request index): finishes first at equal times.
    let mut events: Vec<(i64, u8, u32)> = Vec::with_capacity(2 * reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        events.push((to_ns(r.timestamp), 1, i as u32));
        events.push((to_ns(r.finish_time.unwrap_or(r.timestamp)), 0, i as u32));
    }
    events.sort_unstable();
    let prefix = format!("(APIServer pid={pid}) ");
    for batch in events.chunks(BATCH) {
        let lines: Vec<Vec<u8>> = batch
            .par_iter()
            .map(|&(t, kind, i)| {
                let mut b = Vec::new();
                let r = &reqs[i as usize];
                let stamp = log_stamp(t);
                let head = |b: &mut Vec<u8>, level: &str, line: u32| {
                    b.extend_from_slice(prefix.as_bytes());
                    b.extend_from_slice(level.as_bytes());
                    b.push(b' ');
                    b.extend_from_slice(&stamp);
                    b.extend_from_slice(b" [");
                    b.extend_from_slice(LOGGER_PATH.as_bytes());
                    b.push(b':');
                    push_u32(b, line);
                    b.extend_from_slice(b"] ");
                };
                if kind == 1 {
                    let blocks = w.prompt_blocks(r);
                    let texts: Vec<&str> = blocks.iter().map(|b| b.text.as_str()).collect();
                    let ids: Vec<&[u32]> = blocks.iter().map(|b| b.ids.as_slice()).collect();
                    head(&mut b, "DEBUG", 56);
                    b.extend_from_slice(b"Request ");
                    b.extend_from_slice(r.id.as_bytes());
                    b.extend_from_slice(b" details: prompt: ");
                    push_repr(&mut b, &texts);
                    b.extend_from_slice(b", prompt_token_ids: ");
                    push_id_list(&mut b, &ids);
                    b.extend_from_slice(b", prompt_embeds shape: None.\n");
                    head(&mut b, "INFO", 66);
                    b.extend_from_slice(b"Received request ");
                    b.extend_from_slice(r.id.as_bytes());
                    b.extend_from_slice(b": params: ");
                    b.extend_from_slice(PARAMS_HEAD.as_bytes());
                    push_u32(&mut b, r.output_length);
                    b.extend_from_slice(PARAMS_TAIL.as_bytes());
                    b.extend_from_slice(b", lora_request: None.\n");
                } else {
                    let (text, ids) = w.answer(r);
                    head(&mut b, "DEBUG", 112);
                    b.extend_from_slice(b"Generated response ");
                    b.extend_from_slice(r.id.as_bytes());
                    b.extend_from_slice(b" (streaming complete) details: output_token_ids: ");
                    push_id_list(&mut b, &[ids]);
                    b.push(b'\n');
                    head(&mut b, "INFO", 119);
                    b.extend_from_slice(b"Generated response ");
                    b.extend_from_slice(r.id.as_bytes());
                    b.extend_from_slice(b" (streaming complete): output: ");
                    push_repr(&mut b, &[text]);
                    b.extend_from_slice(b", finish_reason: stop\n");
                }
                b
            })
            .collect();
        for l in lines {
            out.write_all(&l)?;
        }
    }
    out.flush()
}

/// Decimal digits of `v`.
pub(crate) fn push_u32(b: &mut Vec<u8>, mut v: u32) {
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
pub(crate) fn push_id_list(b: &mut Vec<u8>, parts: &[&[u32]]) {
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
pub(crate) fn push_repr(b: &mut Vec<u8>, parts: &[&str]) {
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
}
