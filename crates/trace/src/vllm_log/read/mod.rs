//! vLLM server logs with request logging on (`--enable-log-requests`), as written by vLLM's
//! `RequestLogger` (`vllm/entrypoints/logger.py`, later `.../utils/request_logger.py`).
//!
//! A line is `[(APIServer pid=N) ]LEVEL MM-DD HH:MM:SS[.fff] [file.py:NN] message` (very old
//! versions: `file.py:NN] message`, no opening bracket). The request messages:
//! - new (vLLM >= 0.10), DEBUG: `Request ID details: prompt: '...', prompt_token_ids: [...],
//!   prompt_embeds shape: None.`; INFO: `Received request ID: params: SamplingParams(...),
//!   lora_request: None.`
//! - old, INFO: `Received request ID: prompt: '...', params: SamplingParams(...),
//!   prompt_token_ids: [...], [prompt_embeds shape: None, ]lora_request: None[,
//!   prompt_adapter_request: None].` (older still: `sampling_params:`)
//! - outputs: `Generated response ID[ (streaming complete|streaming delta)] details:
//!   output_token_ids: [...]` (DEBUG) and `Generated response ID[ (...)]: output: '...',
//!   [output_token_ids: [...], ]finish_reason: X` (INFO). Deltas add up.
//! - LMCache (any prefix): `LMCache INFO: Reqid: ID, Total tokens N, [Inference Engine computed
//!   tokens: G, ]LMCache hit tokens: L, need to load: K`, kept in `Trace::lmcache`.
//! - the scheduler, DEBUG: `Finished sending KV transfer for request ID-XXXXXXXX` (the engine's
//!   id: the API's id and a random suffix), when a finished request's blocks were freed after
//!   its connector reported its stores done, kept in `Trace::kv_sent_s` (a request line for the
//!   order within a stamp).
//!
//! Every other line is ignored.
//!
//! The prompt is a Python repr and may contain anything (quotes, `prompt_token_ids: [`): it is
//! scanned with repr's quoting rules, and the token list is looked for only after its end.
//! Integer lists are parsed by hand (the 2.6 MB, 200-request sample parses in a few ms).
//!
//! Time: stamps have no year. The log's clock is unwrapped on the request lines: a stamp more than
//! half a year earlier than the previous request line's is taken as the next year (12-31 ->
//! 01-01); smaller steps back (lines of concurrent requests are not written in time order) are
//! kept as they are. `timestamp` is the request's first `details`/`Received` line, in seconds
//! since the earliest request; `finish_time` is its last `Generated response` line on the same
//! clock. Requests are sorted by arrival (stable: ties keep log order).
//!
//! Order within a stamp: vLLM's stamps are floored to the second, and a busy server writes many
//! request lines in one second, in the order things happened (a request that finishes before
//! the next one arrives is logged before it; streaming deltas are logged as tokens are
//! sampled). That order matters to a cache model (the finished request's blocks are free when
//! the next one is looked up), so it is kept in the times: the k-th request line of a run of
//! lines with the same stamp is at `stamp + k` microseconds. (Spreading the lines evenly over
//! the second instead agreed with vLLM's scheduler no better in `scripts/vllm_engine_check.py`,
//! and would move every time by a fraction of a second depending on how many lines a format
//! writes.)
//!
//! `--max-log-len N` cuts the logged prompt and its token ids to N: detected (a spike of
//! requests at exactly the longest length, prompt text cut at the same length, LMCache seeing
//! more tokens than were logged) and reported in `Trace::notes`.

use std::ops::Range;
use std::path::Path;

use memchr::memmem;
use rustc_hash::FxHashMap;

use super::chunks::{read_lines, CHUNK_BYTES};
use super::hashing::{self as vllm_hashing, AnswerChain, HashedPrompt, Hasher};
use crate::error::{TraceError, TraceResult};
use crate::model::{Content, HashedTokens, Hashing, LmcacheLookup, Request, Trace};
use crate::readers::{numbered_lines, ReadOptions};
use crate::time::{
    civil_from_days, days_from_civil, days_in_month, digits, parse_fraction, parse_hms,
};

/// Times are `i128` nanoseconds: a log whose clock wraps into the next year on every other line
/// would overflow `i64` after ~300 wraps.
const NS: i128 = 1_000_000_000;
const HALF_YEAR_NS: i128 = 182 * 86_400 * NS;
/// vLLM's scheduler frees a finished request's blocks its connector held (`scheduler.py:3233`).
const KV_SENT: &str = "Finished sending KV transfer for request ";
/// What separates two request lines that share a stamp: they stay in file order, a microsecond
/// apart.
const ORDER_STEP_NS: i128 = 1_000;
/// The coarsest stamp that never holds two engine steps (a step takes a millisecond or more):
/// its lines are one instant, a step's end (`--log-time-decimals 4` and finer).
const SAME_INSTANT_NS: i128 = 100_000;

/// What the log said about one request so far.
#[derive(Default)]
struct Pending {
    id: String,
    /// First `details`/`Received` line on the unwrapped log clock.
    arrival: Option<Tick>,
    finish: Option<Tick>,
    /// Its `Finished sending KV transfer` line.
    kv_sent: Option<Tick>,
    tokens: Option<Vec<u32>>,
    /// Characters in the logged prompt string (None: not logged, `None` or elided).
    prompt_chars: Option<usize>,
    max_tokens: Option<u32>,
    /// Logged output token ids (streaming deltas appended).
    output_tokens: Option<Vec<u32>>,
    /// Per streaming-delta line: when, and how many token ids it carried.
    deltas: Vec<(Tick, u32)>,
    has_details: bool,
    has_received: bool,
    /// Hashing at read time: the prompt and the answer as block ids, instead of `tokens` and
    /// `output_tokens`.
    hashed: Option<Box<HashedPrompt>>,
    answer: Option<Box<AnswerChain>>,
}

/// The log's clock: month-day stamps unwrapped into one timeline.
struct LogClock {
    year: i64,
    last: Option<i128>,
    /// Lines stamped more than half a year after the previous one (read as the year before).
    stepped_back: usize,
    /// The first of them (line number set by the caller).
    stepped_back_from: Option<usize>,
    line: usize,
}

impl LogClock {
    fn new(leap_day_seen: bool) -> Self {
        // Any year works as long as its leap day matches the log's.
        LogClock {
            year: if leap_day_seen { 2000 } else { 2001 },
            last: None,
            stepped_back: 0,
            stepped_back_from: None,
            line: 0,
        }
    }

    fn at(&mut self, s: &Stamp) -> i128 {
        let ns = |year: i64| {
            (days_from_civil(year, s.month, s.day) * 86_400 + s.secs as i64) as i128 * NS
                + s.nanos as i128
        };
        let mut t = ns(self.year);
        if let Some(last) = self.last {
            if t < last - HALF_YEAR_NS {
                self.year += 1;
                t = ns(self.year);
            } else if t > last + HALF_YEAR_NS {
                // back across the year end: a stray later stamp (one line of 01-01 in a
                // December log) moved the year on; this line is in the year before
                self.year -= 1;
                t = ns(self.year);
                self.stepped_back += 1;
                self.stepped_back_from.get_or_insert(self.line);
            }
        }
        self.last = Some(t);
        t
    }
}

/// A time on the clock [`LogClock::new`] starts in a leap year (2000, then 2001, ...) moved to
/// the clock it starts in a common year (2001, 2002, ...): the same month, day and time of day,
/// one year on. For a log without a 02-29, read before its leap day was known.
fn to_common_year(t: i128) -> i128 {
    let day = 86_400 * NS;
    let (y, m, d) = civil_from_days(t.div_euclid(day) as i64);
    days_from_civil(y + 1, m, d) as i128 * day + t.rem_euclid(day)
}

/// `MM-DD HH:MM:SS[.f]` of a line.
#[derive(Clone, Copy)]
struct Stamp {
    month: u32,
    day: u32,
    secs: u32,
    nanos: u32,
    /// What one unit of the stamp's last digit is, in nanoseconds (1 s without a fraction).
    resolution: u32,
}

/// Where a request line is in time: its stamp on the unwrapped clock (ns), and its place in the
/// run of consecutive request lines that share that stamp. Ordered as the log is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Tick {
    time: i128,
    run: u32,
    k: u32,
}

/// Runs of consecutive request lines with the same stamp: their sizes and resolutions, to spread
/// them over the stamp once the whole run has been read.
#[derive(Default)]
struct Runs {
    /// (lines in the run, resolution ns) per run.
    runs: Vec<(u32, u32)>,
    last: Option<(i128, u32)>,
}

impl Runs {
    fn tick(&mut self, time: i128, resolution: u32) -> Tick {
        let run = self.runs.len();
        match self.runs.last_mut() {
            Some((n, _)) if self.last == Some((time, resolution)) => {
                *n += 1;
                Tick {
                    time,
                    run: (run - 1) as u32,
                    k: *n - 1,
                }
            }
            _ => {
                self.runs.push((1, resolution));
                self.last = Some((time, resolution));
                Tick {
                    time,
                    run: run as u32,
                    k: 0,
                }
            }
        }
    }

    /// The tick's time in ns: event k of a run of n at `stamp + k` microseconds (or `k / n` of
    /// the stamp's resolution when n microseconds do not fit in it). A stamp of
    /// [`SAME_INSTANT_NS`] or finer is one instant: every line of the run gets it (the
    /// requests keep their file order; the simulator runs an instant's events in vLLM's order).
    fn ns(&self, t: Tick) -> i128 {
        let (n, res) = self.runs[t.run as usize];
        if res as i128 <= SAME_INSTANT_NS {
            return t.time;
        }
        let step = if n as i128 * ORDER_STEP_NS < res as i128 {
            ORDER_STEP_NS
        } else {
            res as i128 / n as i128
        };
        t.time + t.k as i128 * step
    }
}

/// The parsed prefix of a vLLM log line.
struct Line<'a> {
    stamp: Stamp,
    msg: &'a str,
}

fn parse_prefix(line: &str) -> Option<Line<'_>> {
    let mut s = line;
    if s.starts_with('(') {
        let head = &s.as_bytes()[..s.len().min(128)];
        let close = memmem::find(head, b") ")?;
        s = &s[close + 2..];
    }
    let sp = s.as_bytes().iter().take(10).position(|&c| c == b' ')?;
    if !matches!(
        &s[..sp],
        "DEBUG" | "INFO" | "WARNING" | "WARN" | "ERROR" | "CRITICAL"
    ) {
        return None;
    }
    let b = &s.as_bytes()[sp + 1..];
    if b.len() < 14 || b[2] != b'-' || b[5] != b' ' {
        return None;
    }
    let month = digits(b, 2)?;
    let day = digits(&b[3..], 2)?;
    // The clock uses a leap year when the log has a 02-29, so 29 is always allowed in February.
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(2000, month) {
        return None;
    }
    let secs = parse_hms(&b[6..])?;
    let (nanos, used) = parse_fraction(&b[14..]);
    // `used` counts the separator: ".123" is 4
    let resolution = match used {
        0 => 1_000_000_000,
        n => 10u32.pow(9u32.saturating_sub((n - 1) as u32)),
    };
    let rest = &b[14 + used..];
    // `[file.py:NN] ` or `file.py:NN] `: the message starts after the first "] ".
    let head = &rest[..rest.len().min(512)];
    let close = memmem::find(head, b"] ")?;
    let start = line.len() - rest.len() + close + 2;
    Some(Line {
        stamp: Stamp {
            month,
            day,
            secs,
            nanos,
            resolution,
        },
        msg: &line[start..],
    })
}

/// Remove ANSI colour sequences (`ESC [ ... letter`), which some setups write around the level.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Scan the Python repr of a string (or `None`) at the start of `s`: `(bytes used, characters
/// in the string)`, the count `None` for `None`. `Err` when the string does not end on this line.
fn scan_repr(s: &str) -> Result<(usize, Option<usize>), String> {
    let b = s.as_bytes();
    if s.starts_with("None") {
        return Ok((4, None));
    }
    let q = match b.first() {
        Some(&q @ (b'\'' | b'"')) => q,
        _ => return Err("the prompt is not a quoted string".into()),
    };
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x80 * ONES;
    // a byte of `w` is `c` (exact: any borrow starts at a byte equal to `c`)
    let has = |w: u64, c: u8| {
        let x = w ^ (c as u64 * ONES);
        x.wrapping_sub(ONES) & !x & TOPS != 0
    };
    let mut i = 1;
    let mut chars = 0usize;
    loop {
        // eight bytes at a time up to the next quote or backslash, counting the characters
        // (UTF-8 lead bytes: all but 10xxxxxx) on the way
        while let Some(w) = b.get(i..i + 8) {
            let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            if has(w, q) || has(w, b'\\') {
                break;
            }
            let continuation = w & !(w << 1) & TOPS;
            chars += 8 - continuation.count_ones() as usize;
            i += 8;
        }
        let Some(&c) = b.get(i) else {
            break;
        };
        if c == b'\\' {
            i += match b.get(i + 1) {
                Some(b'x') => 4,
                Some(b'u') => 6,
                Some(b'U') => 10,
                Some(_) => 2,
                None => break,
            };
            chars += 1;
        } else if c == q {
            return Ok((i + 1, Some(chars)));
        } else {
            if c & 0xC0 != 0x80 {
                chars += 1;
            }
            i += 1;
        }
    }
    Err("the quoted string does not end on this line (a cut line?)".into())
}

/// Parse `[1, 2, 3]` (or `None`) at the start of `s`, appending the ids to `arena`: `(bytes
/// used, the ids' range in the arena)`, no range for `None`. Nothing is appended on an error.
fn parse_id_list(
    s: &[u8],
    what: &str,
    arena: &mut Vec<u32>,
) -> Result<(usize, Option<Range<usize>>), String> {
    if s.starts_with(b"None") {
        return Ok((4, None));
    }
    let start = arena.len();
    // Python's `str(list)` (`[1, 2, 3]`) in one pass; anything else, and every error, from the
    // start again by the careful parser
    if let Some(used) = parse_ids_fast(s, arena) {
        return Ok((used, Some(start..arena.len())));
    }
    arena.truncate(start);
    match parse_ids_checked(s, what, arena) {
        Ok(used) => Ok((used, Some(start..arena.len()))),
        Err(e) => {
            arena.truncate(start);
            Err(e)
        }
    }
}

/// `[1, 2, 3]` exactly as Python prints a list of ints (`, ` between them, no other spaces,
/// at most 9 digits each), read eight bytes at a time; `None` for anything else.
fn parse_ids_fast(b: &[u8], ids: &mut Vec<u32>) -> Option<usize> {
    if b.first() != Some(&b'[') {
        return None;
    }
    if b.get(1) == Some(&b']') {
        return Some(2);
    }
    let mut i = 1;
    loop {
        let (v, n) = match b.get(i..i + 8) {
            Some(w) => digits8(u64::from_le_bytes(w.try_into().ok()?))?,
            None => {
                // the line's last bytes: one digit at a time
                let n = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                if n == 0 || n > 9 {
                    return None;
                }
                let v = b[i..i + n]
                    .iter()
                    .fold(0u32, |v, &c| v * 10 + (c - b'0') as u32);
                (v, n)
            }
        };
        ids.push(v);
        i += n;
        match b.get(i) {
            Some(b',') if b.get(i + 1) == Some(&b' ') => i += 2,
            Some(b']') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The number written by the leading digits of the eight bytes `word` (little-endian: its
/// first byte is the first character) and how many digits it has; `None` when it does not
/// start with a digit or all eight are digits.
#[inline]
fn digits8(word: u64) -> Option<(u32, usize)> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let d = word.wrapping_sub(b'0' as u64 * ONES);
    // a byte's top bit is set in `d` (below '0': borrowed) or in `d + 0x76` (above '9'); a
    // borrow or carry only reaches later bytes, so the first set top bit is the first
    // non-digit
    let non_digit = (d | d.wrapping_add(0x76 * ONES)) & (0x80 * ONES);
    let n = (non_digit.trailing_zeros() / 8) as usize;
    if n == 0 || n == 8 {
        return None;
    }
    // the n digits to the top bytes, zeros (leading zeros of the number) below them, then
    // pairs, quads and the eight combined, first byte most significant
    let v = d << (8 * (8 - n));
    let v = ((v & 0x0f00_0f00_0f00_0f00) >> 8) + (v & 0x000f_000f_000f_000f) * 10;
    let v = ((v & 0x00ff_0000_00ff_0000) >> 16) + (v & 0x0000_00ff_0000_00ff) * 100;
    let v = ((v & 0x0000_ffff_0000_0000) >> 32) + (v & 0x0000_0000_0000_ffff) * 10_000;
    Some((v as u32, n))
}

/// [`parse_id_list`]'s careful parser: any spaces around the ids and commas, errors that say
/// what is wrong.
fn parse_ids_checked(b: &[u8], what: &str, ids: &mut Vec<u32>) -> Result<usize, String> {
    let first = ids.len();
    if b.first() != Some(&b'[') {
        return Err(format!("{what} is not a list of token ids"));
    }
    let mut i = 1;
    loop {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        match b.get(i) {
            Some(b']') if ids.len() == first => return Ok(i + 1),
            Some(c) if c.is_ascii_digit() => {}
            Some(_) => return Err(format!("{what} has a bad token id at byte {i}")),
            None => return Err(format!("{what} is cut off (a cut line?)")),
        }
        // up to 10 digits in a u64 cannot overflow; more never fit 32 bits
        let start = i;
        let mut v: u64 = 0;
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 || i - start == 10 {
                break;
            }
            v = v * 10 + d as u64;
            i += 1;
        }
        if v > u32::MAX as u64 || b.get(i).is_some_and(u8::is_ascii_digit) {
            return Err(format!("{what} has a token id that does not fit 32 bits"));
        }
        ids.push(v as u32);
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b']') => return Ok(i + 1),
            Some(_) => return Err(format!("{what} has a bad token id at byte {i}")),
            None => return Err(format!("{what} is cut off (a cut line?)")),
        }
    }
}

/// `max_tokens=N` in a SamplingParams repr (`None` when unlimited or absent). Only a field of
/// `SamplingParams(...)` itself counts, not text inside its strings (`stop=[', max_tokens=1']`).
fn max_tokens(params: &str) -> Option<u32> {
    let b = params.as_bytes();
    let start = memmem::find(b, b"SamplingParams(")? + "SamplingParams(".len();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut i = start;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                quote = None;
            }
        } else {
            match c {
                b'\'' | b'"' => quote = Some(c),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' if depth == 0 => return None,
                b')' | b']' | b'}' => depth -= 1,
                _ if depth == 0 && (i == start || c == b' ') => {
                    let field = if c == b' ' { &b[i + 1..] } else { &b[i..] };
                    if let Some(v) = field.strip_prefix(b"max_tokens=") {
                        let n = v.iter().take_while(|c| c.is_ascii_digit()).count();
                        return std::str::from_utf8(&v[..n]).ok()?.parse().ok();
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// A signed integer after `label` in `s`.
fn number_after(s: &str, label: &str) -> Option<i64> {
    let at = memmem::find(s.as_bytes(), label.as_bytes())? + label.len();
    let rest = s[at..].trim_start();
    let neg = rest.starts_with('-');
    let digits = &rest[neg as usize..];
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    let v: i64 = digits[..n].parse().ok()?;
    Some(if neg { -v } else { v })
}

/// An `LMCache ... Reqid: ...` line: `(Reqid, lookup without its id resolved)`.
fn parse_lmcache(line: &str) -> Result<(String, LmcacheLookup), String> {
    let at = memmem::find(line.as_bytes(), b"Reqid: ").ok_or("no Reqid")? + "Reqid: ".len();
    let rest = &line[at..];
    let id_end = rest
        .find(',')
        .ok_or("the Reqid is not followed by a comma")?;
    let id = rest[..id_end].trim().to_string();
    let fields = &rest[id_end..];
    let count = |label: &str| -> Result<u32, String> {
        let v = number_after(fields, label)
            .ok_or_else(|| format!("no number after {label:?} in an LMCache Reqid line"))?;
        u32::try_from(v).map_err(|_| format!("{label:?} {v} is not a token count"))
    };
    let lookup = LmcacheLookup {
        request_id: id.clone(),
        matched: false,
        total_tokens: count("Total tokens")?,
        engine_computed_tokens: if fields.contains("Inference Engine computed tokens:") {
            Some(count("Inference Engine computed tokens:")?)
        } else {
            None
        },
        hit_tokens: count("LMCache hit tokens:")?,
        need_to_load: number_after(fields, "need to load:")
            .ok_or("no number after \"need to load:\" in an LMCache Reqid line")?,
    };
    Ok((id, lookup))
}

/// Everything the line loop collects.
#[derive(Default)]
struct Collected {
    entries: Vec<Pending>,
    /// Request id -> its latest entry.
    by_id: FxHashMap<String, usize>,
    /// LMCache lookups in log order: (Reqid, lookup).
    lmcache: Vec<(String, LmcacheLookup)>,
    orphan_responses: usize,
    runs: Runs,
    /// Set when token ids are hashed as they are read.
    hasher: Option<Hasher>,
}

impl Collected {
    /// Entry `i`'s prompt (`None`: not logged, the log says `None`), kept or hashed.
    fn set_prompt(&mut self, i: usize, ids: Option<&[u32]>) {
        let e = &mut self.entries[i];
        e.tokens = None;
        e.hashed = None;
        let Some(ids) = ids else {
            return;
        };
        let Some(h) = self.hasher.as_mut() else {
            // exact capacity: a 100k-request log keeps every list until the trace is built
            e.tokens = Some(ids.to_vec());
            return;
        };
        let (p, earlier) = h.prompt(ids, i);
        for j in earlier {
            if let Some(pj) = self.entries[j].hashed.as_mut() {
                if !pj.extends.contains(&p.prompt) {
                    pj.extends.push(p.prompt);
                }
            }
        }
        let e = &mut self.entries[i];
        if let Some(a) = e.answer.as_mut() {
            h.start(a, &p);
        }
        e.hashed = Some(Box::new(p));
    }

    /// Output ids of entry `i`: appended (`delta`) or replacing the earlier ones.
    fn add_output(&mut self, i: usize, delta: bool, ids: &[u32]) {
        let e = &mut self.entries[i];
        match self.hasher.as_mut() {
            None => match (delta, e.output_tokens.as_mut()) {
                (true, Some(sofar)) => sofar.extend_from_slice(ids),
                _ => e.output_tokens = Some(ids.to_vec()),
            },
            Some(h) => {
                let a = e.answer.get_or_insert_default();
                h.answer(a, e.hashed.as_deref(), ids, delta);
            }
        }
    }

    /// The entry a request line for `id` fills: the current one unless it already has this kind
    /// of line (then the id was reused by a new request).
    fn entry_for(&mut self, id: String, is_details: bool) -> &mut Pending {
        let i = self.entry_index(id, is_details);
        &mut self.entries[i]
    }

    fn entry_index(&mut self, id: String, is_details: bool) -> usize {
        let reuse = match self.by_id.get(&id) {
            Some(&i) => {
                let e = &self.entries[i];
                let taken = if is_details {
                    e.has_details
                } else {
                    e.has_received
                };
                (!taken).then_some(i)
            }
            None => None,
        };
        match reuse {
            Some(i) => i,
            None => {
                let i = self.entries.len();
                self.by_id.insert(id.clone(), i);
                self.entries.push(Pending {
                    id,
                    ..Default::default()
                });
                i
            }
        }
    }
}

/// A request-logger message, parsed; its id lists are `L`s (`None`: the log says `None` or has
/// no list): [`IdList`]s as the line is parsed, ranges of the id arena once they are read.
enum Message<L = Range<usize>> {
    /// `Request ID details: prompt: ..., prompt_token_ids: [...]`.
    Details {
        id: String,
        prompt_chars: Option<usize>,
        ids: Option<L>,
    },
    /// `Received request ID: ...`; `prompt`: the old format's prompt (characters, ids).
    Received {
        id: String,
        max_tokens: Option<u32>,
        prompt: Option<(Option<usize>, Option<L>)>,
    },
    /// `Generated response ID ...`.
    Generated {
        id: String,
        delta: bool,
        ids: Option<L>,
    },
    /// `Finished sending KV transfer for request ID` (the engine's id).
    KvSent { id: String },
}

/// An id list of a parsed line: read (a range of the id arena), or its text kept for the
/// thread that applies the line to read (a range of the chunk's list text; which list it is).
enum IdList {
    At(Range<usize>),
    Text(Range<usize>, &'static str),
}

impl Message<IdList> {
    /// Read the id lists whose text was kept (`text`) into `arena`: the message as applied.
    /// An error is the one reading the list where it was would have given.
    fn read_lists(self, arena: &mut Vec<u32>, text: &[u8]) -> Result<Message, String> {
        let mut read = |l: Option<IdList>| match l {
            None => Ok(None),
            Some(IdList::At(r)) => Ok(Some(r)),
            Some(IdList::Text(r, what)) => parse_id_list(&text[r], what, arena).map(|(_, r)| r),
        };
        Ok(match self {
            Message::Details {
                id,
                prompt_chars,
                ids,
            } => Message::Details {
                id,
                prompt_chars,
                ids: read(ids)?,
            },
            Message::Received {
                id,
                max_tokens,
                prompt,
            } => Message::Received {
                id,
                max_tokens,
                prompt: match prompt {
                    Some((chars, ids)) => Some((chars, read(ids)?)),
                    None => None,
                },
            },
            Message::Generated { id, delta, ids } => Message::Generated {
                id,
                delta,
                ids: read(ids)?,
            },
            Message::KvSent { id } => Message::KvSent { id },
        })
    }
}

/// The id list at the start of `s` (`[1, 2]` or `None`): read into `arena`, or, with `text`,
/// its bytes up to the first `]` (the line's end without one) copied there for later: reading
/// them gives what reading `s` gives (the parsers stop at the first `]`).
fn id_list(
    s: &str,
    what: &'static str,
    arena: &mut Vec<u32>,
    text: Option<&mut Vec<u8>>,
) -> Result<Option<IdList>, String> {
    match text {
        Some(text) if !s.starts_with("None") => {
            let b = s.as_bytes();
            let end = memchr::memchr(b']', b).map_or(b.len(), |i| i + 1);
            let start = text.len();
            text.extend_from_slice(&b[..end]);
            Ok(Some(IdList::Text(start..text.len(), what)))
        }
        _ => Ok(parse_id_list(s.as_bytes(), what, arena)?.1.map(IdList::At)),
    }
}

/// Parse one request-related message, its id lists read into `arena` (or, with `text`, kept
/// there: [`id_list`]). `Ok(None)`: not a request line.
fn parse_message(
    msg: &str,
    arena: &mut Vec<u32>,
    text: Option<&mut Vec<u8>>,
) -> Result<Option<Message<IdList>>, String> {
    if let Some(rest) = msg.strip_prefix("Request ") {
        // Request ID details: prompt: ..., prompt_token_ids: [...], prompt_embeds shape: ...
        let Some(sp) = rest.find(' ') else {
            return Ok(None);
        };
        let (id, after) = (&rest[..sp], &rest[sp..]);
        let Some(body) = after.strip_prefix(" details: prompt: ") else {
            return Ok(None);
        };
        let (used, prompt_chars) = scan_repr(body)?;
        let Some(list) = body[used..].strip_prefix(", prompt_token_ids: ") else {
            return Err("no \", prompt_token_ids: \" after the prompt".into());
        };
        let ids = id_list(list, "prompt_token_ids", arena, text)?;
        return Ok(Some(Message::Details {
            id: id.to_string(),
            prompt_chars,
            ids,
        }));
    }
    if let Some(rest) = msg.strip_prefix("Received request ") {
        let Some(colon) = rest.find(": ") else {
            return Err("no \": \" after the request id".into());
        };
        let (id, body) = (&rest[..colon], &rest[colon + 2..]);
        if let Some(prompt) = body.strip_prefix("prompt: ") {
            // Old format: everything on this line.
            let (used, prompt_chars) = scan_repr(prompt)?;
            let after = &prompt[used..];
            let marker = memmem::rfind(after.as_bytes(), b"prompt_token_ids: ")
                .ok_or("no prompt_token_ids after the prompt")?;
            let ids = id_list(
                &after[marker + "prompt_token_ids: ".len()..],
                "prompt_token_ids",
                arena,
                text,
            )?;
            return Ok(Some(Message::Received {
                id: id.to_string(),
                max_tokens: max_tokens(&after[..marker]),
                prompt: Some((prompt_chars, ids)),
            }));
        }
        return Ok(Some(Message::Received {
            id: id.to_string(),
            max_tokens: max_tokens(body),
            prompt: None,
        }));
    }
    if let Some(rest) = msg.strip_prefix("Generated response ") {
        let end = rest
            .find([' ', ':'])
            .ok_or("no request id after \"Generated response\"")?;
        let id = &rest[..end];
        let mut body = &rest[end..];
        let mut delta = false;
        if let Some(b) = body.strip_prefix(" (streaming delta)") {
            delta = true;
            body = b;
        } else if let Some(b) = body.strip_prefix(" (streaming complete)") {
            body = b;
        }
        let ids = if let Some(list) = body.strip_prefix(" details: output_token_ids: ") {
            id_list(list, "output_token_ids", arena, text)?
        } else if let Some(out) = body.strip_prefix(": output: ") {
            let (used, _) = scan_repr(out)?;
            match out[used..].strip_prefix(", output_token_ids: ") {
                Some(list) => id_list(list, "output_token_ids", arena, text)?,
                None => None,
            }
        } else {
            return Ok(None);
        };
        return Ok(Some(Message::Generated {
            id: id.to_string(),
            delta,
            ids,
        }));
    }
    if let Some(id) = msg.strip_prefix(KV_SENT) {
        return Ok(Some(Message::KvSent {
            id: id.trim_end().to_string(),
        }));
    }
    Ok(None)
}

impl Collected {
    /// Apply a parsed request message logged at `time` (its id lists in `arena`).
    fn apply(&mut self, m: Message, arena: &[u32], time: Tick) {
        let arrive = |e: &mut Pending| e.arrival = Some(e.arrival.map_or(time, |a| a.min(time)));
        match m {
            Message::Details {
                id,
                prompt_chars,
                ids,
            } => {
                let i = self.entry_index(id, true);
                self.set_prompt(i, ids.map(|r| &arena[r]));
                let e = &mut self.entries[i];
                e.has_details = true;
                arrive(e);
                e.prompt_chars = prompt_chars;
            }
            Message::Received {
                id,
                max_tokens,
                prompt: Some((prompt_chars, ids)),
            } => {
                let i = self.entry_index(id, false);
                self.set_prompt(i, ids.map(|r| &arena[r]));
                let e = &mut self.entries[i];
                e.has_received = true;
                e.has_details = true;
                arrive(e);
                e.prompt_chars = prompt_chars;
                e.max_tokens = max_tokens;
            }
            Message::Received {
                id,
                max_tokens,
                prompt: None,
            } => {
                let e = self.entry_for(id, false);
                e.has_received = true;
                arrive(e);
                e.max_tokens = max_tokens;
            }
            Message::KvSent { id } => {
                // the engine's id is the API's plus `-` and a random suffix (vLLM >= 0.11)
                let i = self.by_id.get(&id).or_else(|| {
                    let (api, _) = id.rsplit_once('-')?;
                    self.by_id.get(api)
                });
                if let Some(&i) = i {
                    let e = &mut self.entries[i];
                    e.kv_sent = Some(e.kv_sent.map_or(time, |t| t.max(time)));
                }
            }
            Message::Generated { id, delta, ids } => {
                let Some(&i) = self.by_id.get(&id) else {
                    self.orphan_responses += 1;
                    return;
                };
                let e = &mut self.entries[i];
                e.finish = Some(e.finish.map_or(time, |f| f.max(time)));
                if let Some(r) = ids {
                    let ids = &arena[r];
                    if delta {
                        e.deltas.push((time, ids.len() as u32));
                    }
                    self.add_output(i, delta, ids);
                }
            }
        }
    }
}

pub fn parse(path: &Path, text: &str, opts: &ReadOptions) -> TraceResult<Trace> {
    let mut p = LineParser::new(
        path,
        opts,
        memmem::find(text.as_bytes(), b" 02-29 ").is_some(),
        None,
    );
    let mut arena = Vec::new();
    for (line_no, raw) in numbered_lines(text) {
        arena.clear();
        let line = parse_line(line_no, raw, &mut arena, None);
        p.apply(line, &mut arena, &[])?;
    }
    p.finish()
}

/// Parse a log line by line from `reader` (issue 19): the text is never held whole, only what
/// each request needs. `leap_day` says whether a ` 02-29 ` occurs in the log (the year the
/// month-day stamps are read in must have the log's leap day; [`parse`] looks for it in the
/// text); `None`: find out from the lines' stamps as they are read (the stamps are read in a
/// leap year, and moved to a common year at the end when no line was stamped 02-29).
/// `text_bytes` counts the bytes read.
/// With `hash_block`, token ids are hashed into blocks of that many tokens as they are read and
/// never kept ([`Content::Hashed`]).
///
/// Two threads share the work: one reads the text in chunks of a few MB, splits it into lines
/// and parses each line on its own (stamp, request id, token id lists: [`parse_line`]); this
/// one takes the parsed lines in order and does what needs the lines before (the clock, the
/// requests, hashing). At most [`CHUNKS_IN_FLIGHT`] chunks wait between them.
pub fn parse_reader(
    path: &Path,
    reader: &mut (dyn std::io::Read + Send),
    opts: &ReadOptions,
    leap_day: Option<bool>,
    hash_block: Option<u32>,
    text_bytes: &mut u64,
) -> TraceResult<Trace> {
    let mut p = LineParser::new(path, opts, leap_day.unwrap_or(true), hash_block);
    p.find_leap_day = leap_day.is_none();
    read_lines(&mut p, reader, CHUNK_BYTES, None, text_bytes)?;
    if p.lines == 0 {
        return Err(TraceError::invalid(path, 0, "the file is empty"));
    }
    p.finish()
}

/// What one line says, parsed on its own (no state of the lines before): what the reader
/// thread of [`parse_reader`] does. Its id lists are in the arena it was parsed with.
pub(super) struct ParsedLine {
    line_no: usize,
    /// Stamped 02-29.
    leap_day: bool,
    kind: LineKind,
    /// An `LMCache ... Reqid:` line (looked for on every line but a request message).
    lmcache: Option<Result<(String, LmcacheLookup), String>>,
}

enum LineKind {
    Other,
    /// A request-logger line whose prefix cannot be read.
    BadPrefix,
    /// A message that starts like a request-logger one: its stamp counts in the log's order
    /// whether it parses or not.
    Request(Stamp, Result<Option<Message<IdList>>, String>),
}

/// Parse one non-blank line (`\r` and `\n` removed), 1-based `line_no`, its id lists appended
/// to `arena`.
pub(super) fn parse_line(
    line_no: usize,
    raw: &str,
    arena: &mut Vec<u32>,
    lists: Option<&mut Vec<u8>>,
) -> ParsedLine {
    let cleaned;
    let line = if memchr::memchr(b'\x1b', raw.as_bytes()).is_some() {
        cleaned = strip_ansi(raw);
        cleaned.as_str()
    } else {
        raw
    };
    let prefix = parse_prefix(line);
    let leap_day = prefix
        .as_ref()
        .is_some_and(|l| l.stamp.month == 2 && l.stamp.day == 29);
    let kind = match prefix {
        // a request line whose level and time cannot be read would be lost silently (and its
        // request then blamed on VLLM_LOGGING_LEVEL)
        None if looks_like_request_line(line) => LineKind::BadPrefix,
        Some(l)
            if l.msg.starts_with("Request ")
                || l.msg.starts_with("Received request ")
                || l.msg.starts_with("Generated response ")
                || l.msg.starts_with(KV_SENT) =>
        {
            LineKind::Request(l.stamp, parse_message(l.msg, arena, lists))
        }
        _ => LineKind::Other,
    };
    let lmcache = match &kind {
        LineKind::Other | LineKind::Request(_, Ok(None))
            if memmem::find(line.as_bytes(), b"Reqid: ").is_some()
                && memmem::find(line.as_bytes(), b"LMCache").is_some() =>
        {
            Some(parse_lmcache(line))
        }
        _ => None,
    };
    ParsedLine {
        line_no,
        leap_day,
        kind,
        lmcache,
    }
}

/// The line loop of [`parse`] and [`parse_reader`]: one parsed line at a time, in order, then
/// [`Self::finish`].
pub(super) struct LineParser<'a> {
    pub(super) path: &'a Path,
    opts: &'a ReadOptions,
    trace: Trace,
    c: Collected,
    clock: LogClock,
    lmcache_lines: usize,
    lines: usize,
    /// The stamps are read in a leap year until a line stamped 02-29 shows the log has one; at
    /// the end, without one, every time moves to the matching common year.
    find_leap_day: bool,
    leap_day_stamped: bool,
}

impl<'a> LineParser<'a> {
    fn new(
        path: &'a Path,
        opts: &'a ReadOptions,
        leap_day_seen: bool,
        hash_block: Option<u32>,
    ) -> Self {
        LineParser {
            path,
            opts,
            trace: Trace::default(),
            c: Collected {
                hasher: hash_block.map(Hasher::new),
                ..Default::default()
            },
            clock: LogClock::new(leap_day_seen),
            lmcache_lines: 0,
            lines: 0,
            find_leap_day: false,
            leap_day_stamped: false,
        }
    }

    /// One parsed non-blank line, its id lists in `arena`.
    pub(super) fn apply(
        &mut self,
        line: ParsedLine,
        arena: &mut Vec<u32>,
        lists: &[u8],
    ) -> TraceResult<()> {
        let (path, opts) = (self.path, self.opts);
        let line_no = line.line_no;
        self.lines += 1;
        self.leap_day_stamped |= line.leap_day;
        match line.kind {
            LineKind::BadPrefix => {
                let err = TraceError::invalid(
                    path,
                    line_no,
                    "a request line whose prefix is not `[(APIServer pid=N) ]LEVEL MM-DD \
                     HH:MM:SS[.f] [file.py:N] `: fix or remove the line (or --skip-invalid)",
                );
                return opts.skip_or_fail(&mut self.trace, err);
            }
            LineKind::Request(stamp, message) => {
                self.clock.line = line_no;
                let time = self.c.runs.tick(self.clock.at(&stamp), stamp.resolution);
                match message.and_then(|m| m.map(|m| m.read_lists(arena, lists)).transpose()) {
                    Ok(Some(m)) => {
                        self.c.apply(m, arena, time);
                        return Ok(());
                    }
                    Ok(None) => {}
                    Err(reason) => {
                        let err = TraceError::invalid(path, line_no, reason);
                        return opts.skip_or_fail(&mut self.trace, err);
                    }
                }
            }
            LineKind::Other => {}
        }
        if let Some(lookup) = line.lmcache {
            self.lmcache_lines += 1;
            match lookup {
                Ok(r) => self.c.lmcache.push(r),
                Err(reason) => {
                    let err = TraceError::invalid(path, line_no, reason);
                    opts.skip_or_fail(&mut self.trace, err)?;
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> TraceResult<Trace> {
        let LineParser {
            path,
            mut trace,
            mut c,
            clock,
            lmcache_lines,
            find_leap_day,
            leap_day_stamped,
            ..
        } = self;
        if find_leap_day && !leap_day_stamped {
            for e in &mut c.entries {
                let ticks = e
                    .arrival
                    .iter_mut()
                    .chain(&mut e.finish)
                    .chain(&mut e.kv_sent);
                for t in ticks.chain(e.deltas.iter_mut().map(|(t, _)| t)) {
                    t.time = to_common_year(t.time);
                }
            }
        }
        if let Some(first) = clock.stepped_back_from {
            trace.notes.push(format!(
                "{} request lines are stamped more than half a year after the line before them \
                 (first: line {first}), which only an out-of-order stamp across a year end does: \
                 they were read as the year before; check the log's stamps",
                clock.stepped_back
            ));
        }
        build(path, &mut trace, c, lmcache_lines)?;
        Ok(trace)
    }
}

/// A request-logger line, whatever its prefix.
fn looks_like_request_line(line: &str) -> bool {
    let b = line.as_bytes();
    (memmem::find(b, b"] Request ").is_some() && memmem::find(b, b" details: prompt").is_some())
        || memmem::find(b, b"] Received request ").is_some()
        || memmem::find(b, b"] Generated response ").is_some()
}

fn build(path: &Path, trace: &mut Trace, c: Collected, lmcache_lines: usize) -> TraceResult<()> {
    let Collected {
        entries,
        lmcache,
        orphan_responses,
        runs,
        hasher,
        ..
    } = c;
    let logged: Vec<Pending> = entries
        .into_iter()
        .filter(|e| e.arrival.is_some())
        .collect();
    let without_tokens = check_logged(path, &logged, lmcache_lines)?;
    let base = logged
        .iter()
        .filter_map(|e| e.arrival)
        .map(|t| runs.ns(t))
        .min()
        .unwrap_or(0);
    let secs = |t: i128| (t - base) as f64 / NS as f64;
    if !logged.is_empty() {
        trace.clock_origin = Some(crate::lmcache_log::MonthDayTime::from_unix_ns(base));
    }
    let mut max_tokens_used = 0usize;
    let mut requests = Vec::with_capacity(logged.len());
    // (prompt chars, tokens) per request, aligned with `requests`, for truncation detection.
    let mut prompt_chars = Vec::with_capacity(logged.len());
    // hashed prompts: the order they were read in, for the follow-up window's check
    let mut read_order: Vec<u32> = Vec::new();
    let mut max_token_id: Option<u32> = None;
    for e in logged {
        let logged_output = match (&e.output_tokens, &e.answer) {
            (Some(ids), _) => Some(ids.len() as u32),
            (None, Some(a)) => Some(a.len()),
            (None, None) => None,
        };
        let (input_length, content) = match (e.tokens, e.hashed) {
            (Some(tokens), _) => (tokens.len() as u32, Content::Tokens(tokens)),
            (None, Some(p)) => {
                read_order.push(p.seq);
                let answer = e.answer.as_deref();
                max_token_id = max_token_id
                    .max(p.max_id)
                    .max(answer.and_then(AnswerChain::max_id));
                let HashedPrompt {
                    len,
                    blocks,
                    prompt,
                    extends,
                    ..
                } = *p;
                let hashed = HashedTokens {
                    blocks,
                    answer: e.answer.map(|a| a.ids),
                    prompt,
                    extends,
                };
                (len, Content::Hashed(hashed))
            }
            (None, None) => continue,
        };
        let output_length = match logged_output {
            Some(n) => n,
            None => {
                max_tokens_used += 1;
                e.max_tokens.unwrap_or(0)
            }
        };
        let arrival = e.arrival.map_or(base, |t| runs.ns(t));
        // one time per output token when streaming deltas carried all of them
        let delta_tokens: u32 = e.deltas.iter().map(|&(_, n)| n).sum();
        let output_times = (!e.deltas.is_empty() && delta_tokens == output_length).then(|| {
            e.deltas
                .iter()
                .flat_map(|&(t, n)| std::iter::repeat_n(secs(runs.ns(t).max(arrival)), n as usize))
                .collect()
        });
        prompt_chars.push(e.prompt_chars);
        if let Some(t) = e.kv_sent {
            trace
                .kv_sent_s
                .insert(e.id.clone(), secs(runs.ns(t).max(arrival)));
        }
        requests.push(Request {
            id: e.id,
            timestamp: secs(arrival),
            finish_time: e.finish.map(|f| secs(runs.ns(f).max(arrival))),
            conversation: None,
            turn: 0,
            input_length,
            output_length,
            kind: None,
            content,
            output_tokens: e.output_tokens,
            output_times,
        });
    }
    if let Some(h) = &hasher {
        trace.hashing = Some(Hashing {
            block_size: h.block_size(),
            num_ids: h.num_ids(),
        });
        trace.hashed_max_token_id = max_token_id;
    }
    if without_tokens > 0 {
        trace.notes.push(format!(
            "{without_tokens} requests have no logged prompt_token_ids (logged while \
             VLLM_LOGGING_LEVEL was above DEBUG?) and were left out"
        ));
    }
    if max_tokens_used > 0 {
        trace.notes.push(format!(
            "{max_tokens_used} requests have no logged output token ids: their output length is \
             max_tokens from SamplingParams (an upper bound; 0 when unset). vLLM logs exact \
             outputs with --enable-log-outputs"
        ));
    }
    if orphan_responses > 0 {
        trace.notes.push(format!(
            "{orphan_responses} \"Generated response\" lines name a request that was not logged \
             before them (the log starts mid-run?) and were ignored"
        ));
    }
    // Stable sort by arrival, keeping the prompt lengths aligned.
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by(|&a, &b| requests[a].timestamp.total_cmp(&requests[b].timestamp));
    let mut slots: Vec<Option<Request>> = requests.into_iter().map(Some).collect();
    trace.requests = order.iter().filter_map(|&i| slots[i].take()).collect();
    let prompt_chars: Vec<Option<usize>> = order.iter().map(|&i| prompt_chars[i]).collect();
    if hasher.is_some() {
        let sorted: Vec<u32> = order.iter().map(|&i| read_order[i]).collect();
        let far = vllm_hashing::out_of_window(&sorted);
        if far > 0 {
            trace.notes.push(format!(
                "{far} requests' prompts were logged more than {} prompts after a request that \
                 arrived later: whether that request's prompt starts with theirs (the follow-up \
                 that supplies answer blocks without logged outputs, --answer-blocks) was not \
                 checked for them",
                vllm_hashing::WINDOW
            ));
        }
    }
    attach_lmcache(trace, lmcache);
    if let Some(note) = truncation_note(trace, &prompt_chars) {
        trace.notes.push(note);
    }
    Ok(())
}

/// The requests a log holds are enough to simulate: some request lines, some with token ids.
/// The count of those without (left out, with a note).
fn check_logged(path: &Path, logged: &[Pending], lmcache_lines: usize) -> TraceResult<usize> {
    if logged.is_empty() {
        return Err(TraceError::invalid(
            path,
            0,
            format!(
                "no request lines (\"Received request ...\", \"Request ... details\") found{}: start \
                 vLLM with --enable-log-requests and VLLM_LOGGING_LEVEL=DEBUG so it logs every \
                 prompt's token ids",
                if lmcache_lines > 0 {
                    " (only LMCache lines)"
                } else {
                    ""
                }
            ),
        ));
    }
    let without_tokens = logged
        .iter()
        .filter(|e| e.tokens.is_none() && e.hashed.is_none())
        .count();
    if without_tokens == logged.len() {
        return Err(TraceError::invalid(
            path,
            0,
            format!(
                "{} requests are logged but none with its prompt_token_ids: vLLM >= 0.10 logs \
                 them at DEBUG level only. Restart vLLM with VLLM_LOGGING_LEVEL=DEBUG and \
                 --enable-log-requests, and log the workload again",
                logged.len()
            ),
        ));
    }
    Ok(without_tokens)
}

/// Resolve LMCache `Reqid`s to request ids (exact, or the API id plus `-suffix`s the engine
/// adds) and keep the last lookup per request.
fn attach_lmcache(trace: &mut Trace, lookups: Vec<(String, LmcacheLookup)>) {
    if lookups.is_empty() {
        return;
    }
    let ids: FxHashMap<&str, ()> = trace.requests.iter().map(|r| (r.id.as_str(), ())).collect();
    let resolve = |reqid: &str| -> Option<String> {
        let mut candidate = reqid;
        for _ in 0..3 {
            if ids.contains_key(candidate) {
                return Some(candidate.to_string());
            }
            candidate = candidate.rsplit_once('-')?.0;
        }
        None
    };
    let mut out: Vec<LmcacheLookup> = Vec::new();
    let mut index: FxHashMap<String, usize> = FxHashMap::default();
    let mut unmatched = 0usize;
    for (reqid, mut lookup) in lookups {
        match resolve(&reqid) {
            Some(id) => {
                lookup.request_id = id;
                lookup.matched = true;
            }
            None => unmatched += 1,
        }
        match index.get(&lookup.request_id) {
            Some(&i) => out[i] = lookup,
            None => {
                index.insert(lookup.request_id.clone(), out.len());
                out.push(lookup);
            }
        }
    }
    if unmatched > 0 {
        trace.notes.push(format!(
            "{unmatched} LMCache lookup lines name a request id that is not in the log's \
             request lines; they are kept unmatched"
        ));
    }
    trace.lmcache = out;
}

/// Detect `--max-log-len` truncation (vLLM cuts the prompt string and the token id list to
/// `max_log_len` items) and describe it.
fn truncation_note(trace: &Trace, prompt_chars: &[Option<usize>]) -> Option<String> {
    let lens: Vec<usize> = trace
        .requests
        .iter()
        .map(|r| match &r.content {
            Content::Tokens(t) => t.len(),
            Content::Hashed(_) => r.input_length as usize,
            _ => 0,
        })
        .collect();
    let longest = *lens.iter().max()?;
    if longest == 0 {
        return None;
    }
    let at_max: Vec<usize> = (0..lens.len()).filter(|&i| lens[i] == longest).collect();
    // Short prompts can have as many characters as tokens by chance (and `'<elided>'` has 8).
    let prompt_cut = at_max
        .iter()
        .filter(|&&i| longest >= 16 && prompt_chars[i] == Some(longest))
        .count();
    let total_of: FxHashMap<&str, u32> = trace
        .lmcache
        .iter()
        .filter(|l| l.matched)
        .map(|l| (l.request_id.as_str(), l.total_tokens))
        .collect();
    let lmcache_longer = trace
        .requests
        .iter()
        .zip(&lens)
        .filter(|(r, &n)| total_of.get(r.id.as_str()).is_some_and(|&t| t as usize > n))
        .count();
    let identical_cut = {
        // a prompt is its tokens, or its identity when they were hashed at read time
        let mut seen: FxHashMap<Result<&[u32], u32>, ()> = FxHashMap::default();
        at_max.iter().any(|&i| match &trace.requests[i].content {
            Content::Tokens(t) => seen.insert(Ok(t.as_slice()), ()).is_some(),
            Content::Hashed(h) => seen.insert(Err(h.prompt), ()).is_some(),
            _ => false,
        })
    };
    let spike =
        at_max.len() >= 2 && at_max.len() < lens.len() && (identical_cut || at_max.len() >= 3);
    let mut evidence = Vec::new();
    if prompt_cut > 0 {
        evidence.push(format!(
            "{prompt_cut} of them have their prompt text cut at exactly {longest} characters too"
        ));
    }
    if identical_cut {
        evidence.push("some of them log identical token ids (turns of one conversation cut to the same prefix)".to_string());
    }
    if lmcache_longer > 0 {
        evidence.push(format!(
            "LMCache saw more tokens than were logged for {lmcache_longer} requests"
        ));
    }
    if prompt_cut == 0 && lmcache_longer == 0 && !spike {
        return None;
    }
    Some(format!(
        "{} of {} requests log exactly {longest} prompt token ids, the most of any request ({}): \
         vLLM was started with --max-log-len {longest}, which cuts the logged prompt and its \
         token ids to {longest}. Their input lengths, and so the simulated prefix hits and hit \
         ratios, are underestimated. Fix: restart vLLM without --max-log-len (or with a value \
         above the longest prompt) and log the workload again",
        at_max.len(),
        lens.len(),
        evidence.join("; ")
    ))
}

#[cfg(test)]
mod tests;
