//! How fast the trace reader reads one input (issue 19): the whole of `read_trace_hashed` (or
//! `read_trace` with `--tokens`), as `simulate` reads, with the wall clock and the process's
//! CPU time. No simulation: this times reading, parsing and hashing only.
//!
//! ```text
//! cargo run --release -p inferencelab-trace --example read_speed -- server.log [--hash-block 16]
//! vllm_log_generator --gb 5 | read_speed -        # a piped log
//! ```
//!
//! Prints one line: text MB read, wall seconds, user + system CPU seconds (of the whole process,
//! both reader threads), MB/s of wall and of CPU, requests and peak RSS.

use std::path::PathBuf;
use std::time::Instant;

use inferencelab_trace::{read_trace, read_trace_hashed, ReadOptions};

/// `(user, system)` CPU seconds of this process so far, from /proc/self/stat (Linux; zeros
/// elsewhere).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the command's closing parenthesis: state is field 3, utime 14, stime 15
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // clock ticks are 100 per second on Linux
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut path: Option<PathBuf> = None;
    let mut hash_block = Some(16u32);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--hash-block" => {
                hash_block = args.next().and_then(|v| v.parse().ok());
                assert!(hash_block.is_some(), "--hash-block takes a positive number");
            }
            "--tokens" => hash_block = None,
            _ => path = Some(PathBuf::from(a)),
        }
    }
    let Some(path) = path else {
        eprintln!("usage: read_speed FILE|- [--hash-block N | --tokens]");
        std::process::exit(2);
    };
    let opts = ReadOptions::default();
    let start = Instant::now();
    let trace = match hash_block {
        Some(g) => read_trace_hashed(&path, &opts, g),
        None => read_trace(&path, &opts),
    };
    let trace = trace.unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    let wall = start.elapsed().as_secs_f64();
    let (user, sys) = cpu_seconds();
    let mb = trace.text_bytes as f64 / 1e6;
    println!(
        "{mb:.1} MB in {wall:.2} s wall, {user:.2} + {sys:.2} s CPU: {:.0} MB/s of wall, \
         {:.0} MB/s of CPU; {} requests; peak RSS {}",
        mb / wall,
        mb / (user + sys).max(1e-9),
        trace.requests.len(),
        peak_rss_mb().map_or("unknown".into(), |m| format!("{m:.0} MB")),
    );
}
