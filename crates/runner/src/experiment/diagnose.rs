//! Reading a server's log for why a point failed: the exception lines of Python tracebacks
//! (vLLM's prefixes stripped), and LMCache running degraded.

use std::path::Path;

/// A healthy vLLM whose LMCache failed to start runs without it, 0 hits forever: the in-process
/// connector on a CPU vLLM logs `RuntimeError: No supported cpu connector found.`
/// (`lmcache/v1/gpu_connector/__init__.py:247`: CUDA, XPU, MUSA, HPU only) and recomputes
/// (`integration/vllm/vllm_v1_adapter.py:787`); the multi-process adapter logs `LMCache server
/// is unhealthy — entering degraded mode` (`vllm_multi_process_adapter.py:614`). Such a point
/// fails with the log's line.
pub(super) fn lmcache_check(log_path: &Path) -> Result<(), String> {
    let text = std::fs::read(log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    match lmcache_degraded(&String::from_utf8_lossy(&text)) {
        Some(line) => Err(format!(
            "LMCache runs degraded (vLLM recomputes, 0 LMCache hits): {line}; see {} (on a CPU \
             vLLM only LMCache's multi-process server works)",
            log_path.display()
        )),
        None => Ok(()),
    }
}

pub(super) fn lmcache_degraded(log: &str) -> Option<String> {
    log.lines()
        .map(log_content)
        .find(|l| {
            // the exception's line, not the traceback's source line
            // (`raise RuntimeError(f"No supported {torch_device_type} connector found.")`)
            (l.contains("No supported ")
                && l.contains(" connector found")
                && !l.trim_start().starts_with("raise "))
                || l.contains("degraded mode")
        })
        .map(|l| l.trim().chars().take(300).collect())
}

/// How much of a log's end is searched for the failure (a traceback sits at the end; a DEBUG
/// log of a long replay can be large).
const LOG_TAIL_BYTES: usize = 1 << 20;

/// Why a server failed, from its log: the exception line of the last Python traceback, plus the
/// first traceback's when it differs (vLLM's API server ends with `RuntimeError: Engine core
/// initialization failed. See root cause above.`; the root cause is the engine core's). Without
/// a traceback, the last non-empty line. Each at most 400 characters.
pub(super) fn failure_reason(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    failure_reason_in(&String::from_utf8_lossy(
        &text[text.len().saturating_sub(LOG_TAIL_BYTES)..],
    ))
}

pub(super) fn failure_reason_in(tail: &str) -> Option<String> {
    let clip = |l: &str| l.trim().chars().take(400).collect::<String>();
    let errors = traceback_errors(tail);
    match (errors.first(), errors.last()) {
        (Some(first), Some(last)) if first != last => Some(format!(
            "error: {} (root cause: {})",
            clip(last),
            clip(first)
        )),
        (_, Some(last)) => Some(format!("error: {}", clip(last))),
        _ => tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!("last log line: {:?}", clip(l))),
    }
}

/// The exception line (`ValueError: ...`) of every traceback in a log, in order, duplicates next
/// to each other removed (vLLM logs an engine core's traceback, then multiprocessing prints it
/// again). Log lines of other processes may be interleaved with a traceback, so the exception
/// line is the first line after `Traceback (most recent call last):` that looks like one.
pub(super) fn traceback_errors(log: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_traceback = false;
    for line in log.lines() {
        let content = log_content(line);
        if content.trim_end() == "Traceback (most recent call last):" {
            in_traceback = true;
        } else if in_traceback && is_exception_line(content) {
            in_traceback = false;
            if out.last().map(String::as_str) != Some(content.trim_end()) {
                out.push(content.trim_end().to_string());
            }
        }
    }
    out
}

/// A log line without vLLM's prefixes: the process (`(EngineCore pid=3071) `) and the logger's
/// (`ERROR 12-04 12:42:53 [v1/engine/core.py:1510] `, vLLM's `NewLineFormatter` repeats it on
/// every line of a logged traceback).
fn log_content(line: &str) -> &str {
    let mut rest = line;
    if let Some(after) = rest.strip_prefix('(') {
        if let Some((inside, r)) = after.split_once(") ") {
            if inside.len() <= 80 && !inside.contains('(') {
                rest = r;
            }
        }
    }
    let level = rest.split(' ').next().unwrap_or("");
    if ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level) {
        if let Some((head, r)) = rest.split_once("] ") {
            if head.contains(" [") {
                rest = r;
            }
        }
    }
    rest
}

/// `ValueError: ...`, `torch.OutOfMemoryError: ...`, `KeyboardInterrupt`: a dotted name ending in
/// Error, Exception, Interrupt or Exit at the start of the line, alone or before `: `.
pub(super) fn is_exception_line(content: &str) -> bool {
    let name = content.split(": ").next().unwrap_or("").trim_end();
    !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && ["Error", "Exception", "Interrupt", "Exit"]
            .iter()
            .any(|s| name.ends_with(s))
}
