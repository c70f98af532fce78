//! What every fuzz target checks: a reader given any bytes returns a trace or an error and never
//! panics, both with and without `--skip-invalid`; and any trace it returns is well formed enough
//! to be written as a native trace and read back unchanged.

use std::path::Path;

use inferencelab_trace::readers::{native, parse_str, text_of};
use inferencelab_trace::{Format, ReadOptions, Trace};

const PATH: &str = "fuzz";

/// Feed `data` to the reader of `format` the two ways the tool does: through `text_of` (which
/// refuses empty and binary files) and, when it is UTF-8, directly.
pub fn check_format(format: Format, data: &[u8]) {
    let path = Path::new(PATH);
    if let Ok(text) = text_of(path, data) {
        check_text(format, text);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_text(format, text);
    }
}

pub fn check_text(format: Format, text: &str) {
    for skip_invalid in [false, true] {
        let opts = ReadOptions {
            format: Some(format),
            skip_invalid,
        };
        if let Ok(trace) = parse_str(format, Path::new(PATH), text, &opts) {
            check_trace(&trace);
        }
    }
}

/// Invariants of every trace a reader returns.
pub fn check_trace(trace: &Trace) {
    assert!(!trace.requests.is_empty(), "parse_str returned an empty trace");
    for w in trace.requests.windows(2) {
        assert!(
            w[0].timestamp <= w[1].timestamp,
            "requests out of arrival order: {} then {}",
            w[0].timestamp,
            w[1].timestamp
        );
    }
    for r in &trace.requests {
        assert!(r.timestamp.is_finite() && r.timestamp >= 0.0, "bad timestamp {}", r.timestamp);
        if let Some(f) = r.finish_time {
            assert!(f.is_finite() && f >= r.timestamp, "bad finish {f} for t {}", r.timestamp);
        }
    }
    let mut buf = Vec::new();
    native::write(trace, &mut buf).expect("a reader's trace can be written as a native trace");
    let text = std::str::from_utf8(&buf).expect("the native writer writes UTF-8");
    let back = parse_str(Format::Native, Path::new(PATH), text, &ReadOptions::default())
        .expect("a written native trace reads back");
    assert_eq!(back.requests, trace.requests, "native round trip changed the requests");
    assert_eq!(back.block_size, trace.block_size);
    assert_eq!(back.partial_last_block, trace.partial_last_block);
    assert_eq!(back.notes, trace.notes);
}

/// The `config` target: what flags and YAML files go through. Every checked number (the value
/// parsers clap calls for `--gpu-cache-gb`, `--window-seconds`, `--request-timeout`,
/// `--time-scale`, ...) either refuses the text or holds a value in its range, read as a flag or
/// as YAML; a model YAML is either refused or sizes caches without overflow; a scorer YAML is
/// either refused or loaded. None of them may panic.
pub fn check_config(text: &str) {
    use inferencelab_trace::checked::{NonNegative, Positive, Scale, Seconds, MAX_SECONDS};

    let first = text.lines().next().unwrap_or("");
    for (as_flag, as_yaml) in [
        (first.parse::<Positive>().ok().map(f64::from), yaml::<Positive>(text).map(f64::from)),
        (first.parse::<NonNegative>().ok().map(f64::from), yaml::<NonNegative>(text).map(f64::from)),
        (first.parse::<Scale>().ok().map(f64::from), yaml::<Scale>(text).map(f64::from)),
    ] {
        for v in [as_flag, as_yaml].into_iter().flatten() {
            assert!(v.is_finite() && v >= 0.0, "a checked number let {v} through");
        }
    }
    for s in [first.parse::<Seconds>().ok(), yaml::<Seconds>(text)].into_iter().flatten() {
        assert!(s.get() <= MAX_SECONDS);
        let _ = s.duration();
    }
    if let Some(model) = yaml::<inferencelab_sim::ModelSpec>(text) {
        if let Ok(m) = model.checked(Path::new("fuzz.yaml")) {
            for tokens in [1, 16, 256, u32::MAX] {
                let _ = m.blocks_in_gib(5.0, tokens);
                let _ = m.lmcache_chunks_in_gib(5.0, tokens);
            }
            let _ = m.prefill_flops(1 << 20);
        }
    }
    let _ = yaml::<inferencelab_cache::policy::conversation_aware::ScorerConfig>(text);
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_norway::from_str(text).ok()
}
