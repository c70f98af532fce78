//! Human-readable tables on stdout.

use std::io::Write;

use inferencelab_sim::ResultRow;
use inferencelab_trace::Trace;

/// The reader's notes on stderr: what it noticed, and how many records `--skip-invalid` skipped.
pub fn print_read_notes(trace: &Trace) {
    for note in &trace.notes {
        eprintln!("note: {note}");
    }
    if trace.skipped > 0 {
        eprintln!(
            "note: skipped {} invalid records (--skip-invalid)",
            trace.skipped
        );
    }
}

/// `print!` through [`out`].
macro_rules! out {
    ($($t:tt)*) => {
        $crate::output::out(&format!($($t)*))
    };
}

/// `println!` through [`out`].
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::output::out(&format!("{}\n", format_args!($($t)*)))
    };
}

/// Print to stdout for the commands that keep SIGPIPE ignored (they write to sockets; `main`):
/// a closed stdout (`inferencelab bench ... | head -3`) ends the process quietly with 141, as a
/// shell reports a SIGPIPE death, instead of panicking in `print!`. Call it after the results
/// are written.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("warning: writing to stdout: {e}");
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn si(x: f64) -> String {
    let (v, unit) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{v:.1}{unit}")
}

/// Seconds of queueing, short: two decimals under 10 s, whole seconds above.
pub fn secs(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.0}")
    }
}

/// What the warning says when an engine model falls behind its trace
/// ([`inferencelab_sim::queueing::falls_behind`]): the worst point's queueing, and what the
/// engine is asked to prefill against what it can.
pub struct Backlog<'a> {
    /// The worst point, e.g. `lru at 2234 GPU blocks`.
    pub point: String,
    /// Points that fall behind, of how many.
    pub behind: usize,
    pub points: usize,
    pub p50_s: f64,
    pub p90_s: f64,
    /// The measured requests' prompt tokens, those of them no cache served, and the seconds
    /// of trace time over which they arrive.
    pub prompt_tokens: u64,
    pub uncached_tokens: u64,
    pub span_s: f64,
    /// Engines serving them (`--replicas`; 1 for one engine) and each one's prefill rate.
    pub engines: usize,
    pub prefill_tokens_per_s: f64,
    /// The flags that model a faster engine (or more of them).
    pub fix: &'a str,
}

/// The warning (without its `warning: ` prefix) for a run that falls behind its trace.
pub fn falls_behind_warning(b: &Backlog<'_>) -> String {
    let where_ = if b.points > 1 {
        format!("at {} of {} points; worst: {}", b.behind, b.points, b.point)
    } else {
        b.point.clone()
    };
    let capacity = b.prefill_tokens_per_s * b.engines as f64;
    let engine = if b.engines > 1 {
        format!(
            "the {} engines prefill {:.0} tokens/s each, {:.0} in all",
            b.engines, b.prefill_tokens_per_s, capacity
        )
    } else {
        format!(
            "the engine model prefills {:.0} tokens/s",
            b.prefill_tokens_per_s
        )
    };
    let rates = if b.span_s > 0.0 {
        let rate = |t: u64| t as f64 / b.span_s;
        let (all, uncached) = (rate(b.prompt_tokens), rate(b.uncached_tokens));
        let reason = if uncached > capacity {
            format!(
                "it cannot keep up (it would need more than {:.0} tokens/s{})",
                uncached / b.engines as f64,
                if b.engines > 1 { " each" } else { "" }
            )
        } else {
            "enough for the prefill on average: requests also wait for GPU blocks, bursts and \
             decode steps"
                .to_string()
        };
        format!(
            " The trace's prompt tokens arrive at {all:.0} tokens/s ({uncached:.0} not cached \
             at this point) and {engine}: {reason}."
        )
    } else {
        String::new()
    };
    format!(
        "the engine model falls behind the trace: requests wait a median {} s (p90 {} s) \
         between arrival and admission ({where_}); hit ratios describe an engine with that \
         queue.{rates} Model a faster engine with {}. (Falling behind: a median wait above {} \
         s.)",
        secs(b.p50_s),
        secs(b.p90_s),
        b.fix,
        inferencelab_sim::queueing::FALLS_BEHIND_MEDIAN_S
    )
}

pub fn print_simulation_table(trace: &Trace, model: &str, rows: &[ResultRow]) {
    let first = match rows.first() {
        Some(r) => r,
        None => return,
    };
    // a --cpu-cache-gb grid: the LMCache tier's size per row
    let cpu_column = rows.iter().any(|r| r.cpu_chunks != first.cpu_chunks);
    println!(
        "{} ({}): {} requests, {} prompt tokens; block size {}, {}; model {model}; {} hits{}",
        trace.source.display(),
        trace.format.map(|f| f.name()).unwrap_or("?"),
        trace.requests.len(),
        trace.total_prompt_tokens(),
        first.block_size,
        match (first.chunk_size, first.cpu_chunks) {
            (Some(c), Some(_)) if cpu_column => format!("LMCache chunk {c}"),
            (Some(c), Some(n)) => format!("LMCache chunk {c}, {n} CPU chunks"),
            _ => "no LMCache tier".into(),
        },
        first.hit_semantics,
        if first.pinning {
            ", pinning on"
        } else {
            ", no pinning"
        },
    );
    let mut header = vec![
        "policy",
        "gpu_blocks",
        "gpu_GiB",
        "block_hit",
        "token_hit",
        "cpu_hit",
        "total_hit",
        "req_hit",
        "compute_saved",
        "gpu_evict",
        "cpu_evict",
        "refs/s",
    ];
    // the engine model's queueing (0 by construction without its schedule)
    let queueing = first.schedule.is_some();
    if queueing {
        header.push("queue_p50/p90_s");
    }
    if cpu_column {
        header.insert(3, "cpu_chunks");
    }
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let mut row = vec![
            if r.unbounded {
                format!("{} (inf)", r.policy)
            } else {
                r.policy.clone()
            },
            r.gpu_blocks.to_string(),
            r.gpu_cache_gb.map_or("-".into(), |g| format!("{g:.2}")),
            format!("{:.4}", r.block_hit_ratio),
            pct(r.token_hit_ratio),
            pct(r.cpu_token_hit_ratio + r.disk_token_hit_ratio),
            pct(r.total_token_hit_ratio),
            pct(r.request_hit_rate),
            r.compute_saved_ratio.map_or("-".into(), pct),
            r.gpu_evictions.to_string(),
            r.cpu_evictions.to_string(),
            si(r.block_refs_per_second),
        ];
        if queueing {
            row.push(format!(
                "{}/{}",
                secs(r.queue_delay_p50_s),
                secs(r.queue_delay_p90_s)
            ));
        }
        if cpu_column {
            row.insert(3, r.cpu_chunks.map_or("-".into(), |n| n.to_string()));
        }
        table.push(row);
    }
    print_table(&table);
}

/// Print `table` (first row: the header) in aligned columns: the first left-aligned, the rest
/// right-aligned, two spaces apart, a rule of dashes under the header.
pub fn print_table(table: &[Vec<String>]) {
    let cols = table.first().map_or(0, |r| r.len());
    let widths: Vec<usize> = (0..cols)
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    for (i, row) in table.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("{}", rule.join("  "));
        }
    }
}
