//! InferenceLab's own JSONL trace (docs/native-trace.md), versioned. The first line is a header
//! `{"inferencelab_trace": 1, "block_size": 16|null, "partial_last_block": bool,
//! "content": "tokens"|"hash_ids"|"none", "source": "...", "notes": [...]}`, then one request per
//! line: `{"id", "t", "finish", "conv", "turn", "in", "out", "type", "tokens"|"hash_ids"}`.
//! Every reader's output can be written here and read back unchanged (requests, block size,
//! partial-last-block flag, notes); it is the format `convert` writes and the fastest to load.
//!
//! Readers of version N refuse files of a newer version by name; fields unknown to this version
//! are ignored, so adding optional fields does not need a new version.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{numbered_lines, ReadOptions};
use crate::error::{TraceError, TraceResult};
use crate::model::{Content, Request, Trace};

/// The version this build writes and the newest it reads.
pub const VERSION: u64 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    inferencelab_trace: u64,
    #[serde(default)]
    block_size: Option<u32>,
    #[serde(default)]
    partial_last_block: bool,
    content: ContentKind,
    #[serde(default)]
    source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum ContentKind {
    Tokens,
    HashIds,
    None,
}

impl ContentKind {
    fn of(c: &Content) -> Self {
        match c {
            Content::Tokens(_) => ContentKind::Tokens,
            Content::HashIds(_) => ContentKind::HashIds,
            // never written: `write` refuses a hashed trace
            Content::Hashed(_) | Content::None => ContentKind::None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ContentKind::Tokens => "tokens",
            ContentKind::HashIds => "hash_ids",
            ContentKind::None => "none",
        }
    }
}

#[derive(Serialize)]
struct LineOut<'a> {
    id: &'a str,
    t: f64,
    finish: Option<f64>,
    conv: Option<u64>,
    turn: u32,
    #[serde(rename = "in")]
    input: u32,
    out: u32,
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<&'a [u32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_ids: Option<&'a [u64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_tokens: Option<&'a [u32]>,
}

#[derive(Deserialize)]
struct LineIn {
    #[serde(default)]
    id: Option<String>,
    t: f64,
    #[serde(default)]
    finish: Option<f64>,
    #[serde(default)]
    conv: Option<u64>,
    #[serde(default)]
    turn: u32,
    #[serde(rename = "in")]
    input: u32,
    out: u32,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    tokens: Option<Vec<u32>>,
    #[serde(default)]
    hash_ids: Option<Vec<u64>>,
    #[serde(default)]
    output_tokens: Option<Vec<u32>>,
}

fn invalid_data(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Write `trace` as a native trace. Fails (`InvalidData`) on a trace that cannot be read back:
/// mixed content kinds or a non-finite time.
pub fn write<W: Write>(trace: &Trace, w: W) -> std::io::Result<()> {
    if trace.hashing.is_some() {
        return Err(invalid_data(
            "the trace's token ids were hashed as it was read and are gone: read it with \
             read_trace (not read_trace_hashed) to write it as a native trace"
                .to_string(),
        ));
    }
    let mut w = std::io::BufWriter::new(w);
    let content = trace
        .requests
        .first()
        .map_or(ContentKind::None, |r| ContentKind::of(&r.content));
    let header = Header {
        inferencelab_trace: VERSION,
        block_size: trace.block_size,
        partial_last_block: trace.partial_last_block,
        content,
        source: trace.source.display().to_string(),
        notes: trace.notes.clone(),
    };
    serde_json::to_writer(&mut w, &header)?;
    w.write_all(b"\n")?;
    for r in &trace.requests {
        if ContentKind::of(&r.content) != content {
            return Err(invalid_data(format!(
                "request {} carries {} but the trace's first request carries {}: a native trace \
                 has one content kind",
                r.id,
                ContentKind::of(&r.content).name(),
                content.name()
            )));
        }
        let finite = r.timestamp.is_finite() && r.finish_time.is_none_or(f64::is_finite);
        if !finite {
            return Err(invalid_data(format!(
                "request {} has a non-finite time",
                r.id
            )));
        }
        let line = LineOut {
            id: &r.id,
            t: r.timestamp,
            finish: r.finish_time,
            conv: r.conversation,
            turn: r.turn,
            input: r.input_length,
            out: r.output_length,
            kind: r.kind.as_deref(),
            tokens: match &r.content {
                Content::Tokens(t) => Some(t),
                _ => None,
            },
            hash_ids: match &r.content {
                Content::HashIds(h) => Some(h),
                _ => None,
            },
            output_tokens: r.output_tokens.as_deref(),
        };
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

pub fn parse(path: &Path, text: &str, opts: &ReadOptions) -> TraceResult<Trace> {
    let mut lines = numbered_lines(text);
    let Some((header_line, head)) = lines.next() else {
        return Err(TraceError::invalid(path, 0, "the file is empty"));
    };
    let header = parse_header(head).map_err(|e| TraceError::invalid(path, header_line, e))?;
    let mut trace = Trace {
        block_size: header.block_size,
        partial_last_block: header.partial_last_block,
        notes: header.notes.clone(),
        ..Default::default()
    };
    let mut last_t = f64::NEG_INFINITY;
    for (line, l) in lines {
        let rec: LineIn = match serde_json::from_str(l) {
            Ok(r) => r,
            Err(e) => {
                let err =
                    TraceError::invalid(path, line, format!("not a native trace request: {e}"));
                opts.skip_or_fail(&mut trace, err)?;
                continue;
            }
        };
        let index = trace.requests.len();
        match check(rec, index, &header, last_t) {
            Ok(r) => {
                last_t = r.timestamp;
                trace.requests.push(r);
            }
            Err(reason) => {
                opts.skip_or_fail(&mut trace, TraceError::invalid(path, line, reason))?
            }
        }
    }
    Ok(trace)
}

fn parse_header(line: &str) -> Result<Header, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        format!("the first line is not a native trace header ({{\"inferencelab_trace\": {VERSION}, ...}}): {e}")
    })?;
    let version = value.get("inferencelab_trace").ok_or_else(|| {
        format!("the first line has no \"inferencelab_trace\" version: not a native trace header ({{\"inferencelab_trace\": {VERSION}, ...}})")
    })?;
    match version.as_u64() {
        Some(v) if v > VERSION => {
            return Err(format!(
                "native trace version {v} is newer than this build reads (version {VERSION}): \
                 upgrade inferencelab, or write the trace with the version that reads it"
            ))
        }
        Some(v) if v >= 1 => {}
        _ => {
            return Err(format!(
                "\"inferencelab_trace\": {version} is not a native trace version (1..={VERSION})"
            ))
        }
    }
    Header::deserialize(&value).map_err(|e| format!("bad native trace header: {e}"))
}

/// A request line checked against the header; `index` names requests without an id.
fn check(rec: LineIn, index: usize, header: &Header, last_t: f64) -> Result<Request, String> {
    let (block_size, partial_last_block) = (header.block_size, header.partial_last_block);
    if !rec.t.is_finite() || rec.t < 0.0 {
        return Err(format!(
            "t {} is not a non-negative number of seconds",
            rec.t
        ));
    }
    if rec.t < last_t {
        return Err(format!(
            "t {} goes back in time (previous {last_t}); a native trace is sorted by arrival",
            rec.t
        ));
    }
    if let Some(f) = rec.finish {
        if !f.is_finite() || f < rec.t {
            return Err(format!("finish {f} is not a time at or after t {}", rec.t));
        }
    }
    let content = match (header.content, rec.tokens, rec.hash_ids) {
        (ContentKind::Tokens, Some(tokens), None) => {
            // `in` is what every hit ratio divides by: a count that disagrees with the tokens
            // would skew them silently.
            if tokens.len() != rec.input as usize {
                return Err(format!(
                    "in = {} but the request has {} tokens; fix \"in\" (the prompt length) to \
                     match \"tokens\"",
                    rec.input,
                    tokens.len()
                ));
            }
            Content::Tokens(tokens)
        }
        (ContentKind::HashIds, None, Some(ids)) => {
            let Some(bs) = block_size.filter(|&b| b > 0) else {
                return Err("hash_ids need a positive \"block_size\" in the header".into());
            };
            let expected = if partial_last_block {
                rec.input.div_ceil(bs)
            } else {
                rec.input / bs
            } as usize;
            if ids.len() != expected {
                return Err(format!(
                    "{} hash_ids for in = {} at block_size {bs} (expected {expected}{})",
                    ids.len(),
                    rec.input,
                    if partial_last_block {
                        ", the partial last block included"
                    } else {
                        ", full blocks only"
                    }
                ));
            }
            Content::HashIds(ids)
        }
        (ContentKind::None, None, None) => Content::None,
        (k, tokens, ids) => {
            let has = match (tokens.is_some(), ids.is_some()) {
                (true, true) => "both \"tokens\" and \"hash_ids\"",
                (true, false) => "\"tokens\"",
                (false, true) => "\"hash_ids\"",
                (false, false) => "no content",
            };
            return Err(format!(
                "the header says content \"{}\" but this request has {has}",
                k.name()
            ));
        }
    };
    Ok(Request {
        id: rec.id.unwrap_or_else(|| index.to_string()),
        timestamp: rec.t,
        finish_time: rec.finish,
        conversation: rec.conv,
        turn: rec.turn,
        input_length: rec.input,
        output_length: rec.out,
        kind: rec.kind,
        content,
        output_tokens: rec.output_tokens,
        output_times: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "n.jsonl";

    fn sample() -> Trace {
        let req = |id: &str, t: f64, content: Content| Request {
            id: id.into(),
            timestamp: t,
            finish_time: Some(t + 0.25),
            conversation: Some(3),
            turn: 1,
            input_length: 20,
            output_length: 4,
            kind: Some("text".into()),
            content,
            output_tokens: None,
            output_times: None,
        };
        Trace {
            requests: vec![
                req("a", 0.1, Content::HashIds(vec![1, 2])),
                req(
                    "b",
                    0.30000000000000004,
                    Content::HashIds(vec![u64::MAX, 3]),
                ),
            ],
            block_size: Some(16),
            partial_last_block: true,
            notes: vec!["a note".into()],
            ..Default::default()
        }
    }

    fn round_trip(t: &Trace) -> Trace {
        let mut buf = Vec::new();
        write(t, &mut buf).unwrap();
        parse(
            Path::new(P),
            std::str::from_utf8(&buf).unwrap(),
            &ReadOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn writes_and_reads_back_exactly() {
        let t = sample();
        let back = round_trip(&t);
        assert_eq!(back.requests, t.requests);
        assert_eq!(back.block_size, t.block_size);
        assert_eq!(back.partial_last_block, t.partial_last_block);
        assert_eq!(back.notes, t.notes);
        let mut buf = Vec::new();
        write(&t, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.starts_with("{\"inferencelab_trace\":1,\"block_size\":16,\"partial_last_block\":true,\"content\":\"hash_ids\""),
            "{text}"
        );
    }

    #[test]
    fn every_float_reads_back_bit_for_bit() {
        // fuzz regression (azure crash): serde_json's default float parser was one ulp off on
        // 378691209.5825581; the crate enables serde_json's `float_roundtrip`.
        let mut t = sample();
        let mut x = 378_691_209.582_558_1_f64;
        for (i, r) in t.requests.iter_mut().enumerate() {
            r.timestamp = x + i as f64;
            r.finish_time = Some(x * 3.0 + i as f64);
        }
        let back = round_trip(&t);
        assert_eq!(back.requests, t.requests);
        // and a sweep of awkward values
        let mut reqs = Vec::new();
        for i in 0..2000u64 {
            x = f64::from_bits(
                0x41B6_9215_0000_0000 + i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (1 << 40),
            );
            let mut r = t.requests[0].clone();
            r.timestamp = x;
            r.finish_time = Some(x);
            reqs.push(r);
        }
        reqs.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        t.requests = reqs;
        let back = round_trip(&t);
        for (a, b) in back.requests.iter().zip(&t.requests) {
            assert_eq!(a.timestamp.to_bits(), b.timestamp.to_bits());
        }
    }

    #[test]
    fn newer_versions_are_refused_by_name() {
        let text = "{\"inferencelab_trace\": 2, \"whatever\": true}\n{}\n";
        let err = parse(Path::new(P), text, &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "n.jsonl:1: native trace version 2 is newer than this build reads (version 1)"
            ),
            "{err}"
        );
        for bad in [
            "{\"inferencelab_trace\": 0, \"content\": \"none\"}",
            "{\"content\": \"none\"}",
            "[1]",
            "{\"inferencelab_trace\": 1}",
        ] {
            let err = parse(Path::new(P), bad, &ReadOptions::default()).unwrap_err();
            assert!(err.to_string().starts_with("n.jsonl:1: "), "{err}");
        }
    }

    #[test]
    fn bad_requests_name_file_and_line() {
        let head = "{\"inferencelab_trace\": 1, \"block_size\": 16, \"partial_last_block\": false, \"content\": \"hash_ids\"}\n";
        let cases = [
            ("{\"t\": 0, \"in\": 32, \"out\": 1, \"hash_ids\": [1]}", "n.jsonl:2: 1 hash_ids for in = 32 at block_size 16 (expected 2, full blocks only)"),
            ("{\"t\": 0, \"in\": 0, \"out\": 1, \"tokens\": []}", "n.jsonl:2: the header says content \"hash_ids\" but this request has \"tokens\""),
            ("{\"t\": -1, \"in\": 0, \"out\": 1, \"hash_ids\": []}", "n.jsonl:2: t -1 is not"),
            ("{\"t\": 1, \"finish\": 0.5, \"in\": 0, \"out\": 1, \"hash_ids\": []}", "n.jsonl:2: finish 0.5"),
            ("{\"t\": 1, \"in\": 0, \"out\": 1, \"hash_ids\": []}\n{\"t\": 0.5, \"in\": 0, \"out\": 1, \"hash_ids\": []}", "n.jsonl:3: t 0.5 goes back in time"),
            ("{\"t\": 1, \"in\": 0, \"ou", "n.jsonl:2: not a native trace request"),
        ];
        for (body, want) in cases {
            let text = format!("{head}{body}\n");
            let err = parse(Path::new(P), &text, &ReadOptions::default()).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
    }

    #[test]
    fn writer_refuses_what_it_cannot_read_back() {
        let mut t = sample();
        t.requests[1].content = Content::None;
        assert!(write(&t, Vec::new()).is_err());
        let mut t = sample();
        t.requests[1].timestamp = f64::NAN;
        assert!(write(&t, Vec::new()).is_err());
    }

    #[test]
    fn missing_ids_default_to_the_index() {
        let text = "{\"inferencelab_trace\": 1, \"content\": \"none\"}\n{\"t\": 0, \"in\": 5, \"out\": 1}\n";
        let t = parse(Path::new(P), text, &ReadOptions::default()).unwrap();
        assert_eq!(t.requests[0].id, "0");
        assert_eq!(t.requests[0].content, Content::None);
        assert_eq!(t.block_size, None);
    }
}
