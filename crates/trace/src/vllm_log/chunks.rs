//! [`super::read::parse_reader`]'s two threads (issue 19): a reader thread reads the text in
//! chunks of a few MB, splits it into lines and parses each on its own
//! ([`super::read::parse_line`]); the caller's thread applies them in order
//! ([`super::read::LineParser`]).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::read::{parse_line, LineParser, ParsedLine};
use crate::error::{TraceError, TraceResult};

/// [`parse_reader`]'s two threads: the lines of `reader`, read `chunk_bytes` at a time, into
/// `p`. `keep_lists`: whether the reader thread leaves the id lists to this one (`None`: for
/// the chunks it parses while this thread waits for one, so the slower thread sheds work).
pub(super) fn read_lines(
    p: &mut LineParser,
    reader: &mut (dyn std::io::Read + Send),
    chunk_bytes: usize,
    keep_lists: Option<bool>,
    text_bytes: &mut u64,
) -> TraceResult<()> {
    let path = p.path;
    // chunks sent and not yet taken
    let waiting = AtomicUsize::new(0);
    let waiting = &waiting;
    std::thread::scope(|s| -> TraceResult<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Chunk>();
        let splitter = std::thread::Builder::new()
            .name("vllm-log-lines".into())
            .spawn_scoped(s, move || {
                let keep = || keep_lists.unwrap_or_else(|| waiting.load(Ordering::Relaxed) == 0);
                split_lines(path, reader, chunk_bytes, &keep, &tx, &back_rx, waiting)
            })
            .map_err(|e| TraceError::io(path, e))?;
        let mut result = Ok(());
        'chunks: for mut chunk in &rx {
            waiting.fetch_sub(1, Ordering::Relaxed);
            for line in chunk.lines.drain(..) {
                if let Err(e) = p.apply(line, &mut chunk.ids, &chunk.lists) {
                    result = Err(e);
                    break 'chunks;
                }
            }
            if let Some(e) = chunk.end.take() {
                result = Err(e);
                break;
            }
            // the reader thread may have finished: then the chunk is not needed back
            let _ = back_tx.send(chunk);
        }
        // a stop on an error drops the channel: the reader thread's next send fails and it ends
        drop(rx);
        match splitter.join() {
            Ok(bytes) => *text_bytes += bytes,
            Err(panic) => std::panic::resume_unwind(panic),
        }
        result
    })
}

/// Chunks of parsed lines on their way from the reader thread ([`parse_reader`]).
const CHUNKS_IN_FLIGHT: usize = 2;
/// Bytes of text read at a time by the reader thread (more for a longer line).
pub(super) const CHUNK_BYTES: usize = 4 << 20;

/// Lines parsed by the reader thread, in order; their id lists in `ids`, or their text in
/// `lists` (left for the other thread to read, [`IdList`]).
#[derive(Default)]
struct Chunk {
    lines: Vec<ParsedLine>,
    ids: Vec<u32>,
    lists: Vec<u8>,
    /// The error that stopped reading, after `lines`.
    end: Option<TraceError>,
}

/// The reader thread of [`parse_reader`]: read `reader` in `chunk_bytes` pieces, split them
/// into lines, parse each one ([`parse_line`]) and send them on in chunks (taking emptied ones
/// back from `recycled`; `waiting` counts the chunks sent). A chunk's id lists are left as
/// text when `keep_lists()` says so as it starts. Returns the bytes read. Stops at the end of
/// the text, at the first line that is not text (not UTF-8, a NUL byte: sent as the chunk's
/// `end`), or when `tx`'s receiver is gone.
fn split_lines(
    path: &Path,
    reader: &mut (dyn std::io::Read + Send),
    chunk_bytes: usize,
    keep_lists: &dyn Fn() -> bool,
    tx: &std::sync::mpsc::SyncSender<Chunk>,
    recycled: &std::sync::mpsc::Receiver<Chunk>,
    waiting: &AtomicUsize,
) -> u64 {
    let mut buf = vec![0u8; chunk_bytes.max(1)];
    // buf[..end] holds text read and not yet split (the start of an unfinished line first)
    let mut end = 0usize;
    let mut line_no = 0usize;
    let mut bytes = 0u64;
    let mut eof = false;
    while !eof {
        // read at least once (what is left is an unfinished line), then up to half the buffer
        // or more: a read then asks for at least half of it, so a `BufReader` underneath
        // (1 MiB) hands large reads straight through
        let mut reads = 0;
        while reads == 0 || end < buf.len().div_ceil(2) {
            reads += 1;
            if end == buf.len() {
                // one line longer than the buffer
                buf.resize(buf.len() * 2, 0);
            }
            match reader.read(&mut buf[end..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let chunk = Chunk {
                        end: Some(TraceError::io(path, e)),
                        ..Default::default()
                    };
                    waiting.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(chunk);
                    return bytes;
                }
            }
        }
        // whole lines (at the end of the text, the last one without its newline too)
        let whole = if eof {
            end
        } else {
            match memchr::memrchr(b'\n', &buf[..end]) {
                Some(nl) => nl + 1,
                None => continue,
            }
        };
        let mut chunk = recycled.try_recv().unwrap_or_default();
        chunk.lines.clear();
        chunk.ids.clear();
        chunk.lists.clear();
        let keep = keep_lists();
        // the lines up to the first one that is not text, then that line's error
        let (text, bad) = text_lines(&buf[..whole]);
        let good = text.len();
        let mut pos = 0;
        while pos < good {
            let nl = memchr::memchr(b'\n', &text.as_bytes()[pos..]).map_or(good, |n| pos + n);
            line_no += 1;
            let line = text[pos..nl].trim_end_matches('\r');
            if !line.trim().is_empty() {
                let lists = keep.then_some(&mut chunk.lists);
                chunk
                    .lines
                    .push(parse_line(line_no, line, &mut chunk.ids, lists));
            }
            pos = nl + 1;
        }
        bytes += good as u64;
        if let Some(reason) = bad {
            chunk.end = Some(TraceError::invalid(path, line_no + 1, reason));
            waiting.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(chunk);
            return bytes;
        }
        waiting.fetch_add(1, Ordering::Relaxed);
        if tx.send(chunk).is_err() {
            return bytes;
        }
        buf.copy_within(whole..end, 0);
        end -= whole;
    }
    bytes
}

/// The text of `text` (whole lines) up to the first line that is not UTF-8 or holds a NUL
/// byte, and why that line is not text (`None`: all of it is).
fn text_lines(text: &[u8]) -> (&str, Option<&'static str>) {
    let line_start = |at: usize| memchr::memrchr(b'\n', &text[..at]).map_or(0, |n| n + 1);
    let (valid, utf8_bad) = match std::str::from_utf8(text) {
        Ok(t) => (t, None),
        Err(e) => {
            let upto = e.valid_up_to();
            let valid = std::str::from_utf8(&text[..upto]).unwrap_or_default();
            (valid, Some(line_start(upto)))
        }
    };
    let nul_bad = memchr::memchr(0, valid.as_bytes()).map(line_start);
    const NOT_UTF8: &str = "is not UTF-8 text: this looks like a binary file, not a trace";
    const NUL: &str = "contains NUL bytes: this looks like a binary file, not a trace";
    let (cut, reason) = match (utf8_bad, nul_bad) {
        // a line that is both is reported as not UTF-8 (the check made first)
        (Some(u), Some(n)) if n < u => (n, NUL),
        (None, Some(n)) => (n, NUL),
        (Some(u), _) => (u, NOT_UTF8),
        (None, None) => return (valid, None),
    };
    (&valid[..cut], Some(reason))
}
