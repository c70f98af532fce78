//! WEKA agentic coding sessions (github `callanjfox/kv-cache-tester`, `traces/*.json`): one JSON
//! document per session, `{"id", "block_size": 64, "hash_id_scope": "local", "requests": [...]}`;
//! a request is `{"t" (s since the session start), "type" ("s" streaming, "n" non-streaming),
//! "in", "out", "hash_ids": [...], ...}` with optional fields we ignore (`model`, `ttft`,
//! `think_time`, `input_types`, `stop`, ...), except `api_time`, which gives the finish time.
//! Ids cover full blocks only: `len(hash_ids) == floor(in / block_size)`.
//!
//! A `"type": "subagent"` entry has its own `t` and nested `requests` whose `t` count from the
//! subagent's start (kv-cache-tester `flatten_requests`); we flatten them into the session in
//! time order (stable) and keep their own type. Request ids are `<file stem>:<path>`, the path
//! being the index in `requests` (`5.2` = request 2 of the subagent at index 5).
//!
//! `hash_id_scope: "local"` ids mean something only inside their session, so every id becomes
//! `(session_index << 40) | id` (ids must be below 2^40); `"global"` ids are kept as they are.
//! Conversation = session index, turn = position of the request in its session's time order.
//!
//! A directory is read as one trace: every `*.json` file, sorted by name, is one session
//! (session index = position in that order). Each session keeps its own clock starting at
//! `t = 0`, so sessions overlap as concurrent users do in kv-cache-tester's replay; the merged
//! requests are sorted by time (stable: ties keep session order).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::{numbered_lines, text_of, ReadOptions};
use crate::error::{TraceError, TraceResult};
use crate::model::{Content, Format, Request, Trace};

/// Bits of a namespaced id left to the session's own id.
pub const SESSION_SHIFT: u32 = 40;
/// kv-cache-tester's default when a file has no `block_size`.
pub const DEFAULT_BLOCK_SIZE: u32 = 64;

#[derive(Deserialize)]
struct Session {
    #[serde(default)]
    block_size: Option<u32>,
    #[serde(default)]
    hash_id_scope: Option<String>,
    requests: Vec<Value>,
}

#[derive(Deserialize)]
struct Entry {
    t: f64,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(rename = "in", default)]
    input: Option<u32>,
    #[serde(default)]
    out: Option<u32>,
    #[serde(default)]
    hash_ids: Vec<u64>,
    #[serde(default)]
    api_time: Option<f64>,
    #[serde(default)]
    requests: Option<Vec<Value>>,
}

/// What one session file declared.
struct SessionInfo {
    block_size: u32,
    global_ids: bool,
}

/// One flattened request before it becomes a `Request`.
struct Flat {
    t: f64,
    finish: Option<f64>,
    input: u32,
    out: u32,
    kind: Option<String>,
    ids: Vec<u64>,
    path: String,
}

/// Read one session file's text as a trace (session index 0).
pub fn parse(path: &Path, text: &str, opts: &ReadOptions) -> TraceResult<Trace> {
    let mut trace = Trace::default();
    match parse_session(path, text, 0, opts, &mut trace)? {
        Some(info) => trace.block_size = Some(info.block_size),
        None => trace.block_size = Some(DEFAULT_BLOCK_SIZE),
    }
    Ok(trace)
}

/// Read every `*.json` session in `dir` (sorted by name) into one trace; see the module docs.
/// A session file: `*.json`, or `*.json.gz` / `*.json.zst` (read decompressed).
fn is_session_file(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    [".json", ".json.gz", ".json.zst"]
        .iter()
        .any(|ext| name.ends_with(ext))
        && p.is_file()
}

/// Whether `dir` holds WEKA session files (else it may be a directory of rotated logs).
pub fn is_session_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| is_session_file(&e.path()))
    })
}

pub fn read_dir(dir: &Path, opts: &ReadOptions) -> TraceResult<Trace> {
    let entries = std::fs::read_dir(dir).map_err(|e| TraceError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let p = entry.map_err(|e| TraceError::io(dir, e))?.path();
        if is_session_file(&p) {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(TraceError::invalid(
            dir,
            0,
            "has no *.json session files; a WEKA trace directory holds one session per .json \
             file (kv-cache-tester traces/)",
        ));
    }
    let mut trace = Trace {
        format: Some(Format::Weka),
        source: dir.to_path_buf(),
        ..Default::default()
    };
    // (block size, global ids, the file that set them)
    let mut first: Option<(u32, bool, &Path)> = None;
    for (index, file) in files.iter().enumerate() {
        let bytes = crate::fsutil::read_input(file).map_err(|e| TraceError::io(file, e))?;
        let text = match text_of(file, &bytes) {
            Ok(t) => t,
            Err(err) => {
                opts.skip_or_fail(&mut trace, err)?;
                continue;
            }
        };
        let Some(info) = parse_session(file, text, index, opts, &mut trace)? else {
            continue;
        };
        match first {
            None => first = Some((info.block_size, info.global_ids, file)),
            Some((bs, global, first_file)) => {
                if bs != info.block_size {
                    return Err(TraceError::invalid(
                        file,
                        0,
                        format!(
                            "block_size {} differs from {bs} in {}; sessions of one trace must \
                             share a block size",
                            info.block_size,
                            first_file.display()
                        ),
                    ));
                }
                if global != info.global_ids {
                    return Err(TraceError::invalid(
                        file,
                        0,
                        format!(
                            "hash_id_scope {} differs from {}; local and global ids cannot be \
                             mixed in one trace",
                            scope_name(info.global_ids),
                            first_file.display()
                        ),
                    ));
                }
            }
        }
    }
    trace.block_size = Some(first.map_or(DEFAULT_BLOCK_SIZE, |f| f.0));
    trace
        .requests
        .sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    if trace.requests.is_empty() {
        return Err(TraceError::invalid(
            dir,
            0,
            format!(
                "no requests found in its {} session files{}",
                files.len(),
                if trace.skipped > 0 {
                    format!(" ({} invalid records skipped)", trace.skipped)
                } else {
                    String::new()
                }
            ),
        ));
    }
    trace.notes.push(format!(
        "{} WEKA sessions merged from {}: each keeps its own clock starting at t = 0, so they \
         overlap like concurrent users; block ids are namespaced per session",
        files.len(),
        dir.display()
    ));
    Ok(trace)
}

fn scope_name(global: bool) -> &'static str {
    if global {
        "\"global\""
    } else {
        "\"local\""
    }
}

/// Parse one session and append its requests (sorted by time) to `trace`. `Ok(None)`: the whole
/// document was invalid and skipped.
fn parse_session(
    path: &Path,
    text: &str,
    index: usize,
    opts: &ReadOptions,
    trace: &mut Trace,
) -> TraceResult<Option<SessionInfo>> {
    let session: Session = match serde_json::from_str(text) {
        Ok(s) => s,
        Err(e) => {
            let line = if e.line() > 0 {
                e.line()
            } else {
                first_line(text)
            };
            let err = TraceError::invalid(
                path,
                line,
                format!("not a WEKA session (one JSON object per file): {e}"),
            );
            opts.skip_or_fail(trace, err)?;
            return Ok(None);
        }
    };
    let block_size = session.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    if block_size == 0 {
        return Err(TraceError::invalid(
            path,
            first_line(text),
            "block_size 0 is not a block size",
        ));
    }
    if (index as u64) >= 1 << (64 - SESSION_SHIFT) {
        return Err(TraceError::invalid(
            path,
            0,
            format!(
                "more than 2^{} sessions cannot be namespaced",
                64 - SESSION_SHIFT
            ),
        ));
    }
    let global_ids = session.hash_id_scope.as_deref() == Some("global");
    let mut flat = Vec::new();
    let mut at = Vec::new();
    flatten(
        path,
        text,
        &session.requests,
        0.0,
        block_size,
        &mut at,
        opts,
        trace,
        &mut flat,
    )?;
    flat.sort_by(|a, b| a.t.total_cmp(&b.t));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("session{index}"));
    let namespace = (index as u64) << SESSION_SHIFT;
    for (turn, f) in flat.into_iter().enumerate() {
        let ids = if global_ids {
            f.ids
        } else {
            f.ids.into_iter().map(|id| namespace | id).collect()
        };
        trace.requests.push(Request {
            id: format!("{stem}:{}", f.path),
            timestamp: f.t,
            finish_time: f.finish,
            conversation: Some(index as u64),
            turn: turn as u32,
            input_length: f.input,
            output_length: f.out,
            kind: f.kind,
            content: Content::HashIds(ids),
            output_tokens: None,
            output_times: None,
        });
    }
    Ok(Some(SessionInfo {
        block_size,
        global_ids,
    }))
}

#[allow(clippy::too_many_arguments)]
fn flatten(
    path: &Path,
    text: &str,
    entries: &[Value],
    base_t: f64,
    block_size: u32,
    at: &mut Vec<usize>,
    opts: &ReadOptions,
    trace: &mut Trace,
    out: &mut Vec<Flat>,
) -> TraceResult<()> {
    for (i, value) in entries.iter().enumerate() {
        at.push(i);
        let result = check_entry(value, base_t, block_size);
        match result {
            Err(reason) => {
                let err = TraceError::invalid(
                    path,
                    line_of_entry(text, at),
                    format!("{}: {reason}", json_path(at)),
                );
                opts.skip_or_fail(trace, err)?;
            }
            Ok(Checked::Subagent(t, requests)) => {
                flatten(path, text, requests, t, block_size, at, opts, trace, out)?;
            }
            Ok(Checked::Request(mut f)) => {
                f.path = at
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(".");
                out.push(f);
            }
        }
        at.pop();
    }
    Ok(())
}

enum Checked<'a> {
    Request(Flat),
    Subagent(f64, &'a [Value]),
}

fn check_entry(value: &Value, base_t: f64, block_size: u32) -> Result<Checked<'_>, String> {
    let e = Entry::deserialize(value).map_err(|e| format!("not a WEKA request: {e}"))?;
    let t = base_t + e.t;
    if !e.t.is_finite() || !t.is_finite() || t < 0.0 {
        return Err(format!(
            "t {} is not a non-negative number of seconds since the session start",
            e.t
        ));
    }
    if e.kind.as_deref() == Some("subagent") || e.requests.is_some() {
        // The nested values are borrowed from `value`, not from `e`.
        let nested = value
            .get("requests")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        return Ok(Checked::Subagent(t, nested));
    }
    let (Some(input), Some(out)) = (e.input, e.out) else {
        return Err("a request needs \"in\" and \"out\" token counts".into());
    };
    let expected = (input / block_size) as usize;
    if e.hash_ids.len() != expected {
        return Err(format!(
            "{} hash_ids for in = {input} (expected floor({input}/{block_size}) = {expected}: \
             full blocks only)",
            e.hash_ids.len()
        ));
    }
    if let Some(&id) = e.hash_ids.iter().find(|&&id| id >> SESSION_SHIFT != 0) {
        return Err(format!(
            "hash id {id} does not fit the {SESSION_SHIFT} bits a session's ids keep when \
             sessions are namespaced"
        ));
    }
    let finish = e
        .api_time
        .map(|a| t + a)
        .filter(|f| f.is_finite() && *f >= t);
    Ok(Checked::Request(Flat {
        t,
        finish,
        input,
        out,
        kind: e.kind,
        ids: e.hash_ids,
        path: String::new(),
    }))
}

fn json_path(at: &[usize]) -> String {
    at.iter()
        .map(|i| format!("requests[{i}]"))
        .collect::<Vec<_>>()
        .join(".")
}

fn first_line(text: &str) -> usize {
    numbered_lines(text).next().map_or(1, |(l, _)| l)
}

/// The 1-based line where `requests[at[0]].requests[at[1]]...` starts, found by a small JSON
/// scanner (the document already parsed, so only errors pay for this).
fn line_of_entry(text: &str, at: &[usize]) -> usize {
    let b = text.as_bytes();
    let mut pos = skip_ws(b, 0);
    for &i in at {
        let Some(arr) = find_key(b, pos, b"requests") else {
            return first_line(text);
        };
        let Some(elem) = nth_element(b, arr, i) else {
            return first_line(text);
        };
        pos = elem;
    }
    b[..pos.min(b.len())]
        .iter()
        .filter(|&&c| c == b'\n')
        .count()
        + 1
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The position after the JSON value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b']' | b'}') && !b[j].is_ascii_whitespace()
            {
                j += 1;
            }
            Some(j)
        }
    }
}

fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// In the object starting at `obj`, the position of the value of `key`.
fn find_key(b: &[u8], obj: usize, key: &[u8]) -> Option<usize> {
    if *b.get(obj)? != b'{' {
        return None;
    }
    let mut i = obj + 1;
    loop {
        i = skip_ws(b, i);
        if *b.get(i)? != b'"' {
            return None;
        }
        let end = skip_string(b, i)?;
        let name = &b[i + 1..end - 1];
        i = skip_ws(b, end);
        if *b.get(i)? != b':' {
            return None;
        }
        i = skip_ws(b, i + 1);
        if name == key {
            return Some(i);
        }
        i = skip_ws(b, skip_value(b, i)?);
        if *b.get(i)? != b',' {
            return None;
        }
        i += 1;
    }
}

/// In the array starting at `arr`, the position of element `n`.
fn nth_element(b: &[u8], arr: usize, n: usize) -> Option<usize> {
    if *b.get(arr)? != b'[' {
        return None;
    }
    let mut i = skip_ws(b, arr + 1);
    for _ in 0..n {
        i = skip_ws(b, skip_value(b, i)?);
        if *b.get(i)? != b',' {
            return None;
        }
        i = skip_ws(b, i + 1);
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "trace_0001.json";

    fn ids(t: &Trace, i: usize) -> Vec<u64> {
        match &t.requests[i].content {
            Content::HashIds(ids) => ids.clone(),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn reads_a_session_with_a_subagent_in_time_order() {
        let text = r#"{"id":"x","block_size":64,"hash_id_scope":"local","requests":[
            {"t":0.0,"type":"s","in":130,"out":5,"hash_ids":[1,2],"api_time":1.5,"ttft":0.2},
            {"t":10.0,"type":"subagent","requests":[
                {"t":0.0,"type":"n","in":64,"out":1,"hash_ids":[9]},
                {"t":30.0,"type":"s","in":70,"out":1,"hash_ids":[9]}]},
            {"t":20.0,"type":"n","in":200,"out":7,"hash_ids":[1,2,3],"think_time":8.5}
        ]}"#;
        let t = parse(Path::new(P), text, &ReadOptions::default()).unwrap();
        let got: Vec<_> = t
            .requests
            .iter()
            .map(|r| (r.id.as_str(), r.timestamp, r.turn, r.kind.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("trace_0001:0", 0.0, 0, Some("s")),
                ("trace_0001:1.0", 10.0, 1, Some("n")),
                ("trace_0001:2", 20.0, 2, Some("n")),
                ("trace_0001:1.1", 40.0, 3, Some("s")),
            ]
        );
        assert_eq!(t.requests[0].finish_time, Some(1.5));
        assert_eq!(t.requests[0].conversation, Some(0));
        assert_eq!(ids(&t, 2), [1, 2, 3]);
        assert_eq!(t.block_size, Some(64));
        assert!(!t.partial_last_block);
    }

    #[test]
    fn bad_requests_name_line_and_json_path() {
        let text = "{\"block_size\": 64, \"requests\": [\n  {\"t\": 0, \"in\": 64, \"out\": 1, \"hash_ids\": [1]},\n  {\"t\": 1, \"in\": 128, \"out\": 1, \"hash_ids\": [1]}\n]}";
        let err = parse(Path::new(P), text, &ReadOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "trace_0001.json:3: requests[1]: 1 hash_ids for in = 128 (expected floor(128/64) = 2: \
             full blocks only)"
        );
        let opts = ReadOptions {
            skip_invalid: true,
            ..Default::default()
        };
        let t = parse(Path::new(P), text, &opts).unwrap();
        assert_eq!((t.requests.len(), t.skipped), (1, 1));

        let nested = "{\"requests\": [{\"t\": 0, \"type\": \"subagent\", \"requests\": [\n{\"t\": -5, \"in\": 1, \"out\": 1}]}]}";
        let err = parse(Path::new(P), nested, &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("trace_0001.json:2: requests[0].requests[0]: t -5"),
            "{err}"
        );
        let missing = "{\"requests\": [{\"t\": 0, \"out\": 1}]}";
        let err = parse(Path::new(P), missing, &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("needs \"in\" and \"out\""),
            "{err}"
        );
        let huge =
            "{\"requests\": [{\"t\": 0, \"in\": 64, \"out\": 1, \"hash_ids\": [1099511627776]}]}";
        let err = parse(Path::new(P), huge, &ReadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("40 bits"), "{err}");
    }

    #[test]
    fn broken_json_maps_to_the_file_line() {
        let text = "{\"block_size\": 64,\n \"requests\": [\n {\"t\": 0, \"in\": 64 \"out\": 1}]}";
        let err = parse(Path::new(P), text, &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("trace_0001.json:3: not a WEKA session"),
            "{err}"
        );
        let err = parse(Path::new(P), "{\"requests\": [", &ReadOptions::default()).unwrap_err();
        assert!(err.to_string().starts_with("trace_0001.json:1:"), "{err}");
        let err = parse(Path::new(P), "[1, 2]", &ReadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("not a WEKA session"), "{err}");
    }

    #[test]
    fn directory_sessions_are_namespaced_and_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let s = |t: f64, id: u64| {
            format!(
                "{{\"hash_id_scope\":\"local\",\"requests\":[{{\"t\":{t},\"type\":\"s\",\"in\":64,\"out\":1,\"hash_ids\":[{id}]}}]}}"
            )
        };
        std::fs::write(dir.path().join("b.json"), s(0.0, 1)).unwrap();
        std::fs::write(dir.path().join("a.json"), s(5.0, 1)).unwrap();
        std::fs::write(dir.path().join("c.JSON"), s(0.0, 1)).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a session").unwrap();
        let t = read_dir(dir.path(), &ReadOptions::default()).unwrap();
        let got: Vec<_> = t
            .requests
            .iter()
            .map(|r| (r.id.as_str(), r.timestamp, r.conversation))
            .collect();
        assert_eq!(
            got,
            [
                ("b:0", 0.0, Some(1)),
                ("c:0", 0.0, Some(2)),
                ("a:0", 5.0, Some(0))
            ]
        );
        assert_eq!(ids(&t, 0), [1 << 40 | 1]);
        assert_eq!(ids(&t, 2), [1]);
        assert_eq!(t.format, Some(Format::Weka));
        assert!(t.notes[0].starts_with("3 WEKA sessions"), "{:?}", t.notes);

        std::fs::write(
            dir.path().join("d.json"),
            "{\"block_size\": 32, \"requests\": []}",
        )
        .unwrap();
        let err = read_dir(dir.path(), &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("block_size 32 differs from 64"),
            "{err}"
        );
        std::fs::write(dir.path().join("d.json"), "{oops").unwrap();
        let err = read_dir(dir.path(), &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("d.json:1: not a WEKA session"),
            "{err}"
        );
        let opts = ReadOptions {
            skip_invalid: true,
            ..Default::default()
        };
        let t = read_dir(dir.path(), &opts).unwrap();
        assert_eq!((t.requests.len(), t.skipped), (3, 1));

        let empty = tempfile::tempdir().unwrap();
        let err = read_dir(empty.path(), &ReadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("no *.json session files"), "{err}");
    }

    #[test]
    fn global_ids_are_kept_and_cannot_mix_with_local() {
        let dir = tempfile::tempdir().unwrap();
        let g = "{\"hash_id_scope\":\"global\",\"requests\":[{\"t\":0,\"in\":64,\"out\":1,\"hash_ids\":[7]}]}";
        std::fs::write(dir.path().join("a.json"), g).unwrap();
        std::fs::write(dir.path().join("b.json"), g).unwrap();
        let t = read_dir(dir.path(), &ReadOptions::default()).unwrap();
        assert_eq!(ids(&t, 1), [7]);
        std::fs::write(
            dir.path().join("c.json"),
            "{\"requests\":[{\"t\":0,\"in\":64,\"out\":1,\"hash_ids\":[7]}]}",
        )
        .unwrap();
        let err = read_dir(dir.path(), &ReadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("cannot be mixed"), "{err}");
    }
}
