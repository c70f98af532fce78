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
