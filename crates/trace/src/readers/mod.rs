//! Readers for every input format (DESIGN.md section 6), format auto-detection, and the
//! native trace writer. Every reader works on the whole text of a file, so fuzz targets and
//! tests can feed it bytes directly; bad records give `file:line: reason` errors, or are counted
//! in `Trace::skipped` under `ReadOptions::skip_invalid`.

use std::io::Read;
use std::path::Path;

use crate::error::{TraceError, TraceResult};
use crate::model::{Format, Trace};

pub mod azure;
pub mod bailian;
pub mod lmcache_lookup;
pub mod mooncake;
pub mod native;
/// The vLLM log reader lives in [`crate::vllm_log`], beside its writer.
pub use crate::vllm_log::read as vllm_log;
pub mod weka;

/// How to read an input.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Force a format instead of detecting it.
    pub format: Option<Format>,
    /// Skip (and count) bad records instead of stopping at the first one.
    pub skip_invalid: bool,
}

impl ReadOptions {
    /// Either record `err` as skipped (under `skip_invalid`) or return it.
    pub(crate) fn skip_or_fail(&self, trace: &mut Trace, err: TraceError) -> TraceResult<()> {
        if self.skip_invalid {
            trace.skipped += 1;
            Ok(())
        } else {
            Err(err)
        }
    }
}

/// Read a trace file (or, for WEKA sessions, a directory of session files; `-` is stdin). Only
/// regular files are read: a FIFO or a device is refused ([`crate::fsutil::read_input`]). Every
/// format may be gzip or zstd compressed (told by magic bytes, [`crate::input`]). A directory
/// that holds neither WEKA sessions nor LMCache lookup files is a directory of rotated logs,
/// read oldest first as one file ([`crate::input::rotated_files`]).
pub fn read_trace(path: &Path, opts: &ReadOptions) -> TraceResult<Trace> {
    read(path, opts, None)
}

/// [`read_trace`], hashing token ids into `hash_block`-token blocks as they are read and never
/// keeping them (issue 19): a vLLM log's requests come back as [`crate::Content::Hashed`], which
/// the simulator cuts into blocks of any multiple of `hash_block` tokens (give the gcd of the
/// GPU block size and the LMCache chunk size). Formats without token ids read as they do in
/// [`read_trace`]; so do native traces (read whole: their token lists are kept).
pub fn read_trace_hashed(path: &Path, opts: &ReadOptions, hash_block: u32) -> TraceResult<Trace> {
    if hash_block == 0 {
        return Err(TraceError::Unsupported(
            "the hashing block size must be positive".into(),
        ));
    }
    read(path, opts, Some(hash_block))
}

fn read(path: &Path, opts: &ReadOptions, hash_block: Option<u32>) -> TraceResult<Trace> {
    if path.is_dir() {
        match opts.format {
            Some(Format::LmcacheLookup) => {
                return lmcache_lookup::read(path, opts, &Default::default()).map(|l| l.trace)
            }
            None if lmcache_lookup::is_lookup_dir(path) => {
                return lmcache_lookup::read(path, opts, &Default::default()).map(|l| l.trace)
            }
            Some(Format::Weka) => return weka::read_dir(path, opts),
            None if weka::is_session_dir(path) => return weka::read_dir(path, opts),
            _ => {}
        }
    }
    let input = crate::input::open(path).map_err(|e| TraceError::io(path, e))?;
    let raw = input.raw_bytes.clone();
    let mut reader = input.reader;
    // the head tells the format; a vLLM log is then read line by line, never held whole
    let mut head = Vec::with_capacity(HEAD_BYTES);
    (&mut reader)
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| TraceError::io(path, e))?;
    let format = match opts.format {
        Some(f) => f,
        None => {
            // a head cut inside a character is fine; an invalid byte is not text
            let (upto, invalid) = match std::str::from_utf8(&head) {
                Ok(_) => (head.len(), false),
                Err(e) => (e.valid_up_to(), e.error_len().is_some()),
            };
            let head_text = std::str::from_utf8(&head[..upto]).unwrap_or("");
            if head_text.trim().is_empty() || invalid || head_text.contains('\0') {
                // empty or not text: the whole-text path gives the message
                text_of(path, &head)?;
            }
            detect_format(path, head_text)?
        }
    };
    if format == Format::VllmLog {
        let mut text_bytes = 0u64;
        let mut stream = head.as_slice().chain(reader);
        let mut trace =
            vllm_log::parse_reader(path, &mut stream, opts, None, hash_block, &mut text_bytes)?;
        trace.format = Some(format);
        trace.source = path.to_path_buf();
        trace.input_bytes = raw.get();
        trace.text_bytes = text_bytes;
        return Ok(trace);
    }
    let mut bytes = head;
    if path.as_os_str() == "-" {
        let limit = crate::fsutil::MAX_STDIN_BYTES.saturating_sub(bytes.len() as u64);
        bytes.extend(
            crate::fsutil::read_limited(reader, limit).map_err(|e| TraceError::io(path, e))?,
        );
    } else {
        if path.is_file() {
            let size = path.metadata().map_or(0, |m| m.len()) as usize;
            bytes.reserve(size.saturating_sub(bytes.len()) + 1);
        }
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| TraceError::io(path, e))?;
    }
    let text = text_of(path, &bytes)?;
    let mut trace = parse_str(format, path, text, opts)?;
    trace.format = Some(format);
    trace.source = path.to_path_buf();
    trace.input_bytes = raw.get();
    trace.text_bytes = bytes.len() as u64;
    Ok(trace)
}

/// How much of an input is read to tell its format.
const HEAD_BYTES: usize = 1 << 16;

/// Parse already-loaded text as `format`. `path` only labels errors.
pub fn parse_str(
    format: Format,
    path: &Path,
    text: &str,
    opts: &ReadOptions,
) -> TraceResult<Trace> {
    let mut trace = match format {
        Format::Mooncake => mooncake::parse(path, text, opts)?,
        Format::Bailian => bailian::parse(path, text, opts)?,
        Format::Weka => weka::parse(path, text, opts)?,
        Format::Azure => azure::parse(path, text, opts)?,
        Format::VllmLog => vllm_log::parse(path, text, opts)?,
        Format::Native => native::parse(path, text, opts)?,
        Format::LmcacheLookup => lmcache_lookup::parse(path, text, opts)?,
    };
    trace.format = Some(format);
    trace.source = path.to_path_buf();
    if trace.requests.is_empty() {
        return Err(TraceError::invalid(
            path,
            0,
            format!(
                "no requests found when reading it as {format}{}; check --input-format",
                if trace.skipped > 0 {
                    format!(" ({} invalid records skipped)", trace.skipped)
                } else {
                    String::new()
                }
            ),
        ));
    }
    Ok(trace)
}

/// The file's bytes as UTF-8 text, or a clear error for empty and binary files.
pub fn text_of<'a>(path: &Path, bytes: &'a [u8]) -> TraceResult<&'a str> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(TraceError::invalid(path, 0, "the file is empty"));
    }
    match std::str::from_utf8(bytes) {
        Ok(t) if !t.contains('\0') => Ok(t),
        Ok(t) => Err(TraceError::invalid(
            path,
            line_of_offset(t, t.find('\0').unwrap_or(0)),
            "contains NUL bytes: this looks like a binary file, not a trace",
        )),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            Err(TraceError::invalid(
                path,
                line,
                "is not UTF-8 text: this looks like a binary (or compressed) file, not a trace; \
                 decompress it first",
            ))
        }
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Guess the format from the file's name and first non-empty line.
pub fn detect_format(path: &Path, text: &str) -> TraceResult<Format> {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    // A pretty-printed JSON document (WEKA) opens with a lone `{`: look further into the text.
    let head: String = if first == "{" {
        text.trim_start().chars().take(4096).collect()
    } else {
        first.chars().take(4096).collect()
    };
    if head.starts_with('{') {
        if head.contains("\"inferencelab_trace\"") {
            return Ok(Format::Native);
        }
        if head.contains("\"hash_id_scope\"") || head.contains("\"requests\"") {
            return Ok(Format::Weka);
        }
        if head.contains("\"chunk_hashes\"") {
            return Ok(Format::LmcacheLookup);
        }
        if head.contains("\"chat_id\"") {
            return Ok(Format::Bailian);
        }
        if head.contains("\"hash_ids\"") {
            return Ok(Format::Mooncake);
        }
    }
    if head.to_ascii_uppercase().starts_with("TIMESTAMP,") {
        return Ok(Format::Azure);
    }
    let sample: String = text.chars().take(1 << 16).collect();
    if sample.contains("INFO ") || sample.contains("DEBUG ") || sample.contains("WARNING ") {
        return Ok(Format::VllmLog);
    }
    Err(TraceError::invalid(
        path,
        1,
        format!(
            "cannot tell the input format from the first line ({:?}); pass --input-format \
             (one of {})",
            first.chars().take(80).collect::<String>(),
            Format::ALL.map(|f| f.name()).join(", ")
        ),
    ))
}

/// Iterate over `(1-based line number, line)` of non-blank lines.
pub(crate) fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_binary_files_are_refused_clearly() {
        let p = Path::new("x.jsonl");
        assert!(text_of(p, b"  \n")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(text_of(p, &[0x1f, 0x8b, 0xff, 0x00])
            .unwrap_err()
            .to_string()
            .contains("binary"));
        assert!(text_of(p, b"abc\n\0def")
            .unwrap_err()
            .to_string()
            .contains("x.jsonl:2"));
    }

    #[test]
    fn detects_formats_from_first_line() {
        let p = Path::new("f");
        let cases = [
            (
                r#"{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1]}"#,
                Format::Mooncake,
            ),
            (
                r#"{"chat_id": 1, "parent_chat_id": -1, "hash_ids": [1]}"#,
                Format::Bailian,
            ),
            (
                r#"{"id":"x","block_size":64,"hash_id_scope":"local","requests":[]}"#,
                Format::Weka,
            ),
            ("TIMESTAMP,ContextTokens,GeneratedTokens", Format::Azure),
            (r#"{"inferencelab_trace": 1}"#, Format::Native),
            (
                r#"{"timestamp": 1.5, "request_id": "r", "chunk_size": 256, "seq_len": 9, "chunk_hashes": []}"#,
                Format::LmcacheLookup,
            ),
            (
                "(APIServer pid=1) INFO 08-12 12:00:00 [x.py:1] hi",
                Format::VllmLog,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(detect_format(p, line).unwrap(), want, "{line}");
        }
        assert!(detect_format(p, "hello").is_err());
    }
}
