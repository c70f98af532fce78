//! LMCache's lookup-hash logs: the JSONL files LMCache 0.5.x's `LookupHashLoggingSubscriber`
//! writes (`lmcache/v1/mp_observability/subscribers/logging/lookup_hash.py`), named
//! `lookup_hashes_YYYYMMDD_HHMMSS_NNNNNN.jsonl`, one line per lookup:
//!
//! ```text
//! {"timestamp": 1711929600.123, "request_id": "req-abc", "model_name": "DeepSeek-V3",
//!  "chunk_size": 256, "seq_len": 1024, "dtypes": ["float8_e4m3fn"],
//!  "shapes": [[32, 256, 128]], "chunk_hashes": ["0xab...", ...]}
//! ```
//!
//! `chunk_hashes` are the prefix-chained hashes of the full chunks only (the unfull tail of
//! `seq_len` has none). Read as LMCache's own simulator reads them
//! (`lmcache/tools/cache_simulator/simulator.py::load_lookup_events`): a directory is globbed for
//! `lookup_hashes_*.jsonl` (files in name order), events are filtered by `model_name` when asked,
//! stably sorted by `timestamp` and cut to the first `max_samples`; a line with neither hashes nor
//! tokens is skipped (the simulator skips it too). Unlike it, a malformed line is an error at its
//! file and line (or skipped and counted under `--skip-invalid`), and so are a line whose hashes
//! cover more tokens than `seq_len` and a `chunk_size` that changes within the log.
//!
//! Each lookup becomes a request with `Content::HashIds`: the hash strings interned to dense ids
//! (equal strings, equal ids: exactly the simulator's dictionary keys), at `chunk_size`-token
//! blocks, no id for the partial last chunk. The log has no output lengths: 1 token is assumed.

use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use serde::Deserialize;

use super::{numbered_lines, text_of, ReadOptions};
use crate::error::{TraceError, TraceResult};
use crate::model::{Content, Format, Request, Trace};
use crate::rng::splitmix64;

/// The file names LMCache writes (and its simulator globs in a directory).
pub const FILE_PREFIX: &str = "lookup_hashes_";
pub const FILE_SUFFIX: &str = ".jsonl";

/// Bytes per element of the dtypes LMCache's simulator knows (`simulator.py::_DTYPE_BYTES`);
/// any other dtype counts 0 bytes there, and here.
pub fn dtype_bytes(dtype: &str) -> u64 {
    match dtype {
        "float32" | "int32" => 4,
        "float16" | "bfloat16" => 2,
        "float8_e4m3fn" | "float8_e5m2" | "int8" => 1,
        "int64" => 8,
        _ => 0,
    }
}

/// Which lookups to keep, as the simulator's `--model` and `--max-samples`.
#[derive(Debug, Clone, Default)]
pub struct LookupFilter {
    /// Keep only lookups whose `model_name` is exactly this.
    pub model: Option<String>,
    /// Keep the first N lookups after sorting by time.
    pub max_samples: Option<usize>,
}

/// A lookup log read as a trace, plus what only this format carries.
#[derive(Debug, Clone)]
pub struct LookupLog {
    pub trace: Trace,
    /// The log's chunk size in tokens.
    pub chunk_size: u32,
    /// KV bytes of one chunk from the first lookup's `shapes` and `dtypes`
    /// (`compute_kv_bytes_per_chunk`); 0 when they are empty or of unknown dtypes.
    pub kv_bytes_per_chunk: u64,
    /// The distinct `model_name`s kept, in order of first appearance.
    pub models: Vec<String>,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default)]
    timestamp: f64,
    #[serde(default, borrow)]
    request_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    model_name: Option<std::borrow::Cow<'a, str>>,
    chunk_size: u64,
    seq_len: u64,
    #[serde(default, borrow)]
    dtypes: Vec<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    shapes: Vec<Vec<u64>>,
    #[serde(default, borrow)]
    chunk_hashes: Vec<std::borrow::Cow<'a, str>>,
}

/// One lookup before sorting.
struct Event {
    timestamp: f64,
    request_id: String,
    model: u32,
    chunk_size: u32,
    seq_len: u32,
    ids: Vec<u64>,
    kv_bytes_per_chunk: u64,
    /// (file, line) for errors found after sorting.
    at: (usize, usize),
}

/// Interns hash strings and model names across the files of one log.
#[derive(Default)]
struct Reader {
    hashes: FxHashMap<String, u64>,
    models: Vec<String>,
    events: Vec<Event>,
    files: Vec<PathBuf>,
    skipped_empty: usize,
}

impl Reader {
    fn intern_model(&mut self, name: &str) -> u32 {
        match self.models.iter().position(|m| m == name) {
            Some(i) => i as u32,
            None => {
                self.models.push(name.to_string());
                (self.models.len() - 1) as u32
            }
        }
    }

    fn parse_file(
        &mut self,
        path: &Path,
        text: &str,
        opts: &ReadOptions,
        filter: &LookupFilter,
        trace: &mut Trace,
    ) -> TraceResult<()> {
        let file = self.files.len();
        self.files.push(path.to_path_buf());
        for (line, l) in numbered_lines(text) {
            let rec: Line<'_> = match serde_json::from_str(l) {
                Ok(r) => r,
                Err(e) => {
                    let err = TraceError::invalid(
                        path,
                        line,
                        format!("not an LMCache lookup-hash record: {e}"),
                    );
                    opts.skip_or_fail(trace, err)?;
                    continue;
                }
            };
            let model = rec.model_name.as_deref().unwrap_or("");
            if filter.model.as_deref().is_some_and(|m| m != model) {
                continue;
            }
            let covered = rec.chunk_hashes.len() as u64 * rec.chunk_size;
            let problem = if !rec.timestamp.is_finite() {
                Some(format!("timestamp {} is not a number", rec.timestamp))
            } else if rec.chunk_size == 0 || rec.chunk_size > u32::MAX as u64 {
                Some(format!(
                    "chunk_size {} is not a number of tokens",
                    rec.chunk_size
                ))
            } else if rec.seq_len > u32::MAX as u64 {
                Some(format!("seq_len {} is too long", rec.seq_len))
            } else if covered > rec.seq_len {
                Some(format!(
                    "{} chunk_hashes of {} tokens cover {covered} tokens, more than seq_len {}; \
                     LMCache logs the full chunks of the sequence only",
                    rec.chunk_hashes.len(),
                    rec.chunk_size,
                    rec.seq_len
                ))
            } else {
                None
            };
            if let Some(reason) = problem {
                opts.skip_or_fail(trace, TraceError::invalid(path, line, reason))?;
                continue;
            }
            if rec.chunk_hashes.is_empty() && rec.seq_len == 0 {
                self.skipped_empty += 1;
                continue;
            }
            let mut ids = Vec::with_capacity(rec.chunk_hashes.len());
            for h in &rec.chunk_hashes {
                let next = self.hashes.len() as u64;
                let id = match self.hashes.get(h.as_ref()) {
                    Some(&id) => id,
                    None => {
                        self.hashes.insert(h.to_string(), next);
                        next
                    }
                };
                ids.push(id);
            }
            let kv_bytes_per_chunk = rec
                .shapes
                .iter()
                .zip(&rec.dtypes)
                .map(|(shape, dt)| {
                    shape
                        .iter()
                        .fold(1u64, |p, &d| p.saturating_mul(d))
                        .saturating_mul(dtype_bytes(dt))
                })
                .fold(0u64, u64::saturating_add);
            let model = self.intern_model(model);
            self.events.push(Event {
                timestamp: rec.timestamp,
                request_id: rec.request_id.map(|s| s.into_owned()).unwrap_or_default(),
                model,
                chunk_size: rec.chunk_size as u32,
                seq_len: rec.seq_len as u32,
                ids,
                kv_bytes_per_chunk,
                at: (file, line),
            });
        }
        Ok(())
    }

    fn finish(
        mut self,
        source: &Path,
        opts: &ReadOptions,
        filter: &LookupFilter,
        mut trace: Trace,
    ) -> TraceResult<LookupLog> {
        // the simulator's `all_events.sort(key=timestamp)`: stable, so ties keep file order
        self.events
            .sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        if let Some(n) = filter.max_samples.filter(|&n| n > 0) {
            self.events.truncate(n);
        }
        let chunk_size = self.events.first().map_or(0, |e| e.chunk_size);
        let kv_bytes_per_chunk = self.events.first().map_or(0, |e| e.kv_bytes_per_chunk);
        let t0 = self.events.first().map_or(0.0, |e| e.timestamp);
        let mut used_models = vec![false; self.models.len()];
        for (i, e) in self.events.into_iter().enumerate() {
            if e.chunk_size != chunk_size {
                let err = TraceError::invalid(
                    &self.files[e.at.0],
                    e.at.1,
                    format!(
                        "chunk_size {} differs from the log's {chunk_size}: one log, one chunk \
                         size (filter one model with --lookup-model)",
                        e.chunk_size
                    ),
                );
                opts.skip_or_fail(&mut trace, err)?;
                continue;
            }
            used_models[e.model as usize] = true;
            trace.requests.push(Request {
                id: if e.request_id.is_empty() {
                    i.to_string()
                } else {
                    e.request_id
                },
                timestamp: e.timestamp - t0,
                finish_time: None,
                conversation: None,
                turn: 0,
                input_length: e.seq_len,
                output_length: 1,
                kind: None,
                content: Content::HashIds(e.ids),
                output_tokens: None,
                output_times: None,
            });
        }
        let models: Vec<String> = self
            .models
            .into_iter()
            .zip(used_models)
            .filter_map(|(m, used)| used.then_some(m))
            .collect();
        trace.block_size = Some(chunk_size.max(1));
        trace.partial_last_block = false;
        trace.format = Some(Format::LmcacheLookup);
        trace.source = source.to_path_buf();
        trace.notes.push(
            "LMCache lookup-hash log: prompts as chunk hashes only; no output lengths (1 token \
             assumed) and no finish times"
                .to_string(),
        );
        if self.skipped_empty > 0 {
            trace.notes.push(format!(
                "{} lookups with no chunk hashes and seq_len 0 skipped (as LMCache's simulator \
                 does)",
                self.skipped_empty
            ));
        }
        if self.files.len() > 1 {
            trace.notes.push(format!(
                "{} lookup-hash files read from {}",
                self.files.len(),
                source.display()
            ));
        }
        Ok(LookupLog {
            trace,
            chunk_size,
            kv_bytes_per_chunk,
            models,
        })
    }
}

/// The `lookup_hashes_*.jsonl` files of a directory, in name order.
pub fn files_in(dir: &Path) -> TraceResult<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| TraceError::io(dir, e))? {
        let entry = entry.map_err(|e| TraceError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Whether `dir` holds LMCache lookup-hash files.
pub fn is_lookup_dir(dir: &Path) -> bool {
    files_in(dir).is_ok_and(|f| !f.is_empty())
}

/// Read a lookup-hash file, or a directory of them, with a filter.
pub fn read(path: &Path, opts: &ReadOptions, filter: &LookupFilter) -> TraceResult<LookupLog> {
    let files = if path.is_dir() {
        let files = files_in(path)?;
        if files.is_empty() {
            return Err(TraceError::invalid(
                path,
                0,
                format!(
                    "has no {FILE_PREFIX}*{FILE_SUFFIX} files (LMCache's lookup-hash logger \
                     writes them to its output_dir)"
                ),
            ));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut reader = Reader::default();
    let mut trace = Trace::default();
    for file in &files {
        let bytes = crate::fsutil::read_input(file).map_err(|e| TraceError::io(file, e))?;
        let text = match text_of(file, &bytes) {
            Ok(t) => t,
            Err(err) => {
                opts.skip_or_fail(&mut trace, err)?;
                continue;
            }
        };
        reader.parse_file(file, text, opts, filter, &mut trace)?;
    }
    let log = reader.finish(path, opts, filter, trace)?;
    if log.trace.requests.is_empty() {
        return Err(TraceError::invalid(
            path,
            0,
            match &filter.model {
                Some(m) => format!("no lookups of model_name {m:?} (--lookup-model)"),
                None => "no lookups found".to_string(),
            },
        ));
    }
    Ok(log)
}

/// Parse one file's text (for [`super::parse_str`]).
pub fn parse(path: &Path, text: &str, opts: &ReadOptions) -> TraceResult<Trace> {
    let mut reader = Reader::default();
    let mut trace = Trace::default();
    let filter = LookupFilter::default();
    reader.parse_file(path, text, opts, &filter, &mut trace)?;
    Ok(reader.finish(path, opts, &filter, trace)?.trace)
}

/// How [`write_dir`] lays a trace out as a lookup-hash log.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// LMCache chunk size in tokens (id traces: a multiple of their block size).
    pub chunk_size: u32,
    /// Copies of the trace, one after the other in time, each with its own chunk hashes (a
    /// copy shares nothing with the others; use it to reach a size, e.g. 100k lookups).
    pub copies: u32,
    pub model_name: String,
    /// One chunk's tensors as LMCache logs them, e.g. `[[2, layers, chunk, kv_heads * head_dim]]`
    /// with `["bfloat16"]`: their bytes are the chunk's KV bytes for LMCache's simulator.
    pub shapes: Vec<Vec<u64>>,
    pub dtypes: Vec<String>,
    /// Unix time of the first lookup.
    pub start_unix_s: f64,
    /// Start a new file past this many bytes (LMCache's `rotation_max_size`, 100 MB).
    pub rotate_bytes: u64,
}

/// What [`write_dir`] wrote.
#[derive(Debug, Clone, Default)]
pub struct WriteSummary {
    pub lookups: u64,
    pub files: Vec<PathBuf>,
}

/// `YYYYMMDD_HHMMSS` of a unix time (UTC), as LMCache names its files.
fn stamp(unix_s: f64) -> String {
    let t = crate::time::Utc::from_unix_secs(unix_s.max(0.0) as i64);
    format!(
        "{:04}{:02}{:02}_{:02}{:02}{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Write `trace` as LMCache lookup-hash files in `dir` (one lookup per request, in trace order):
/// the full chunks' prefix-chained ids as hex hash strings, `seq_len` = the prompt length.
pub fn write_dir(trace: &Trace, dir: &Path, opts: &WriteOptions) -> TraceResult<WriteSummary> {
    use std::io::Write;
    let blocks = crate::BlockedTrace::build(
        trace,
        crate::Blocking {
            block_size: opts.chunk_size,
            include_partial: false,
        },
    )?;
    std::fs::create_dir_all(dir).map_err(|e| TraceError::io(dir, e))?;
    let reqs = &trace.requests;
    let t0 = reqs.first().map_or(0.0, |r| r.timestamp);
    let span = reqs.iter().map(|r| r.timestamp - t0).fold(0.0, f64::max);
    let mut summary = WriteSummary::default();
    let mut out: Option<(std::io::BufWriter<std::fs::File>, u64)> = None;
    let mut line = String::new();
    for copy in 0..opts.copies.max(1) {
        for (i, r) in reqs.iter().enumerate() {
            let ts = opts.start_unix_s + f64::from(copy) * (span + 1.0) + (r.timestamp - t0);
            let hashes: Vec<String> = blocks
                .request(i)
                .iter()
                // splitmix64 is a bijection on u64: distinct (chunk, copy) pairs get distinct hashes
                .map(|&k| {
                    format!(
                        "0x{:016x}",
                        splitmix64(u64::from(k) | u64::from(copy) << 32)
                    )
                })
                .collect();
            line.clear();
            line.push_str(
                &serde_json::json!({
                    "timestamp": ts,
                    "request_id": format!("{}-{copy}", r.id),
                    "model_name": opts.model_name,
                    "chunk_size": opts.chunk_size,
                    "seq_len": r.input_length,
                    "dtypes": opts.dtypes,
                    "shapes": opts.shapes,
                    "chunk_hashes": hashes,
                })
                .to_string(),
            );
            line.push('\n');
            if out.as_ref().is_none_or(|(_, n)| *n >= opts.rotate_bytes) {
                if let Some((mut w, _)) = out.take() {
                    w.flush().map_err(|e| TraceError::io(dir, e))?;
                }
                let path = dir.join(format!(
                    "{FILE_PREFIX}{}_{:06}{FILE_SUFFIX}",
                    stamp(ts),
                    summary.files.len()
                ));
                let f = std::fs::File::create(&path).map_err(|e| TraceError::io(&path, e))?;
                summary.files.push(path);
                out = Some((std::io::BufWriter::new(f), 0));
            }
            let (w, n) = out.as_mut().expect("opened above");
            w.write_all(line.as_bytes())
                .map_err(|e| TraceError::io(dir, e))?;
            *n += line.len() as u64;
            summary.lookups += 1;
        }
    }
    if let Some((mut w, _)) = out {
        w.flush().map_err(|e| TraceError::io(dir, e))?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "lookup_hashes_20260401_000000_000000.jsonl";

    fn line(ts: f64, id: &str, model: &str, seq: u64, hashes: &[&str]) -> String {
        serde_json::json!({
            "timestamp": ts, "request_id": id, "model_name": model, "chunk_size": 4,
            "seq_len": seq, "dtypes": ["bfloat16"], "shapes": [[2, 3, 4, 8]],
            "chunk_hashes": hashes,
        })
        .to_string()
    }

    #[test]
    fn events_sorted_by_time_ties_in_file_order_hashes_interned() {
        let text = [
            line(5.0, "b", "m", 9, &["0xa", "0xb"]),
            line(2.0, "a", "m", 4, &["0xa"]),
            line(5.0, "c", "m", 3, &[]),
        ]
        .join("\n");
        let t = parse(Path::new(P), &text, &ReadOptions::default()).unwrap();
        let ids: Vec<&str> = t.requests.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        // "0xa" was met first on the first line of the file: id 0
        assert_eq!(t.requests[0].content, Content::HashIds(vec![0]));
        assert_eq!(t.requests[1].content, Content::HashIds(vec![0, 1]));
        assert_eq!(t.requests[2].content, Content::HashIds(vec![]));
        assert_eq!(
            t.requests.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
            [0.0, 3.0, 3.0]
        );
        assert_eq!(t.block_size, Some(4));
        assert!(!t.partial_last_block);
    }

    #[test]
    fn chunk_bytes_filter_and_empty_lookups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path()
                .join("lookup_hashes_20260401_000000_000001.jsonl"),
            [
                line(3.0, "x", "other", 8, &["0x1", "0x2"]),
                line(4.0, "y", "m", 0, &[]),
            ]
            .join("\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path()
                .join("lookup_hashes_20260401_000000_000000.jsonl"),
            line(1.0, "z", "m", 5, &["0x1"]),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a log").unwrap();
        assert!(is_lookup_dir(dir.path()));
        let filter = LookupFilter {
            model: Some("m".into()),
            max_samples: None,
        };
        let log = read(dir.path(), &ReadOptions::default(), &filter).unwrap();
        assert_eq!(
            log.trace.requests.len(),
            1,
            "other model dropped, empty one skipped"
        );
        assert_eq!(log.kv_bytes_per_chunk, 2 * 3 * 4 * 8 * 2);
        assert_eq!(log.models, ["m"]);
        assert!(log
            .trace
            .notes
            .iter()
            .any(|n| n.contains("1 lookups with no")));
        let all = read(
            dir.path(),
            &ReadOptions::default(),
            &LookupFilter::default(),
        )
        .unwrap();
        assert_eq!(all.trace.requests.len(), 2);
        let first = LookupFilter {
            model: None,
            max_samples: Some(1),
        };
        let one = read(dir.path(), &ReadOptions::default(), &first).unwrap();
        assert_eq!(one.trace.requests[0].id, "z");
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let p = Path::new(P);
        let text = format!(
            "{}\n{}",
            line(1.0, "a", "m", 4, &["0xa"]),
            line(2.0, "b", "m", 7, &["0xa", "0xb"])
        );
        let err = parse(p, &text, &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains(&format!("{P}:2: 2 chunk_hashes")),
            "{err}"
        );
        let text = format!("{}\n{{\"seq_len\": 4", line(1.0, "a", "m", 4, &["0xa"]));
        let err = parse(p, &text, &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains(":2: not an LMCache lookup-hash record"),
            "{err}"
        );
        let mixed = format!(
            "{}\n{}",
            line(1.0, "a", "m", 4, &["0xa"]),
            line(2.0, "b", "m", 8, &["0xa"]).replace("\"chunk_size\":4", "\"chunk_size\":8")
        );
        let err = parse(p, &mixed, &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains(":2: chunk_size 8 differs"),
            "{err}"
        );
        let opts = ReadOptions {
            skip_invalid: true,
            ..Default::default()
        };
        let t = parse(p, &mixed, &opts).unwrap();
        assert_eq!((t.requests.len(), t.skipped), (1, 1));
    }

    #[test]
    fn written_logs_read_back_with_the_same_prefix_structure() {
        let text = [
            line(1.0, "a", "m", 9, &["0xa", "0xb"]),
            line(2.0, "b", "m", 5, &["0xa"]),
        ]
        .join("\n");
        let t = parse(Path::new(P), &text, &ReadOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = WriteOptions {
            chunk_size: 4,
            copies: 2,
            model_name: "m".into(),
            shapes: vec![vec![2, 4]],
            dtypes: vec!["float32".into()],
            start_unix_s: 1_775_000_000.0,
            rotate_bytes: 300,
        };
        let s = write_dir(&t, dir.path(), &opts).unwrap();
        assert_eq!(s.lookups, 4);
        assert!(s.files.len() > 1, "rotated: {:?}", s.files);
        assert!(s.files[0]
            .to_string_lossy()
            .ends_with("lookup_hashes_20260331_233320_000000.jsonl"));
        let back = read(
            dir.path(),
            &ReadOptions::default(),
            &LookupFilter::default(),
        )
        .unwrap();
        assert_eq!(back.kv_bytes_per_chunk, 32);
        let ids: Vec<_> = back
            .trace
            .requests
            .iter()
            .map(|r| r.content.clone())
            .collect();
        // copy 0 then copy 1: the second lookup repeats the first's head, copies share nothing
        assert_eq!(
            ids,
            [
                Content::HashIds(vec![0, 1]),
                Content::HashIds(vec![0]),
                Content::HashIds(vec![2, 3]),
                Content::HashIds(vec![2]),
            ]
        );
        assert_eq!(back.trace.requests[2].timestamp, 2.0);
    }
}
