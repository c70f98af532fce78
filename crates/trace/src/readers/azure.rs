//! Azure LLM inference trace CSV (Splitwise, ISCA'24; 2023 and 2024 releases):
//! `TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps like `2023-11-16 18:15:46.6805900`
//! (2024: `2024-05-10 00:00:00.009930+00:00`). Columns are found by name (any order, any case,
//! extra columns ignored). Timestamps become seconds since the first row, computed in integer
//! nanoseconds so the 100 ns resolution survives. The rows are sorted by time: a decreasing
//! timestamp is an error.
//!
//! The trace has no session ids and no content ids: lengths and timing only, so it carries no
//! prefix reuse at all (`Content::None`), which a note on the trace says.

use std::path::Path;

use super::{numbered_lines, ReadOptions};
use crate::error::{TraceError, TraceResult};
use crate::model::{Content, Request, Trace};
use crate::time::parse_datetime_ns;

pub const NO_REUSE_NOTE: &str = "this Azure trace carries no prefix-reuse information (lengths \
     and timing only): every hit ratio simulated on it is 0 by construction; use it for arrival \
     processes and length distributions, or pick a trace with token or block ids";

struct Columns {
    timestamp: usize,
    context: usize,
    generated: usize,
    count: usize,
}

fn columns(header: &str) -> Result<Columns, String> {
    let names: Vec<String> = header
        .split(',')
        .map(|c| unquote(c).to_ascii_lowercase())
        .collect();
    let find = |want: &str| {
        names.iter().position(|n| n == want).ok_or_else(|| {
            format!(
                "the header has no {want} column (expected TIMESTAMP,ContextTokens,\
                 GeneratedTokens; found {:?})",
                clipped(header)
            )
        })
    };
    Ok(Columns {
        timestamp: find("timestamp")?,
        context: find("contexttokens")?,
        generated: find("generatedtokens")?,
        count: names.len(),
    })
}

/// The start of a header for an error message: a binary or one-line file must not put megabytes
/// on the terminal.
fn clipped(header: &str) -> String {
    const KEEP: usize = 120;
    match header.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{}... ({} bytes)", &header[..cut], header.len()),
        None => header.to_string(),
    }
}

fn unquote(field: &str) -> &str {
    let f = field.trim();
    f.strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .unwrap_or(f)
}

pub fn parse(path: &Path, text: &str, opts: &ReadOptions) -> TraceResult<Trace> {
    let mut trace = Trace::default();
    let mut lines = numbered_lines(text);
    let Some((header_line, header)) = lines.next() else {
        return Err(TraceError::invalid(path, 0, "the file is empty"));
    };
    let cols = columns(header).map_err(|e| TraceError::invalid(path, header_line, e))?;
    let mut first_ns: Option<i128> = None;
    let mut last_ns = i128::MIN;
    for (line, l) in lines {
        let fields: Vec<&str> = l.split(',').map(unquote).collect();
        let row = || -> Result<(i128, u32, u32), String> {
            if fields.len() != cols.count {
                return Err(format!(
                    "{} fields where the header has {}",
                    fields.len(),
                    cols.count
                ));
            }
            let ns = parse_datetime_ns(fields[cols.timestamp])?;
            let count = |i: usize, name: &str| {
                fields[i].parse::<u32>().map_err(|_| {
                    format!(
                        "{name} {:?} is not a token count",
                        fields[i].chars().take(40).collect::<String>()
                    )
                })
            };
            let context = count(cols.context, "ContextTokens")?;
            let generated = count(cols.generated, "GeneratedTokens")?;
            if ns < last_ns {
                return Err(format!(
                    "timestamp {} goes back in time; Azure traces are sorted by time: sort the \
                     file or pass --skip-invalid",
                    fields[cols.timestamp]
                ));
            }
            Ok((ns, context, generated))
        };
        let (ns, context, generated) = match row() {
            Ok(r) => r,
            Err(reason) => {
                opts.skip_or_fail(&mut trace, TraceError::invalid(path, line, reason))?;
                continue;
            }
        };
        last_ns = ns;
        let first = *first_ns.get_or_insert(ns);
        // i128 nanoseconds: any two 4-digit-year stamps differ by far less than 2^127
        trace.requests.push(Request {
            id: trace.requests.len().to_string(),
            timestamp: (ns - first) as f64 / 1e9,
            finish_time: None,
            conversation: None,
            turn: 0,
            input_length: context,
            output_length: generated,
            kind: None,
            content: Content::None,
            output_tokens: None,
            output_times: None,
        });
    }
    trace.notes.push(NO_REUSE_NOTE.to_string());
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "a.csv";

    #[test]
    fn rows_become_requests_relative_to_the_first() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                    2023-11-16 18:15:46.6805900,374,44\n\
                    2023-11-16 18:15:50.9951690,396,109\n\
                    2023-11-17 00:00:00.0000000,1,2\n";
        let t = parse(Path::new(P), text, &ReadOptions::default()).unwrap();
        assert_eq!(t.requests.len(), 3);
        assert_eq!(t.requests[0].timestamp, 0.0);
        assert!((t.requests[1].timestamp - 4.314579).abs() < 1e-9);
        assert!((t.requests[2].timestamp - 20_653.319_41).abs() < 1e-6);
        assert_eq!(
            (t.requests[1].input_length, t.requests[1].output_length),
            (396, 109)
        );
        assert_eq!(t.requests[2].content, Content::None);
        assert!(t.notes[0].contains("0 by construction"));
        assert_eq!(t.block_size, None);
    }

    #[test]
    fn far_future_years_do_not_overflow() {
        // fuzz regression (azure crash-48c0700d): year 3023 overflowed i64 nanoseconds
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                    2023-11-16 18:15:46.0000000,34,6\n\
                    3023-11-16 18:15:46.0000000,34,6\n";
        let t = parse(Path::new(P), text, &ReadOptions::default()).unwrap();
        assert!(
            t.requests[1].timestamp > 3.15e10,
            "{}",
            t.requests[1].timestamp
        );
    }

    #[test]
    fn columns_are_found_by_name() {
        let text = "\"GeneratedTokens\",\"TIMESTAMP\",\"ContextTokens\"\r\n\
                    5,2024-05-10 00:00:00.009930+00:00,100\r\n";
        let t = parse(Path::new(P), text, &ReadOptions::default()).unwrap();
        assert_eq!(
            (t.requests[0].input_length, t.requests[0].output_length),
            (100, 5)
        );
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let head = "TIMESTAMP,ContextTokens,GeneratedTokens\n";
        let cases = [
            (
                "2023-11-16 18:15:46,1\n",
                "a.csv:2: 2 fields where the header has 3",
            ),
            (
                "2023-11-16 18:15:46,x,1\n",
                "a.csv:2: ContextTokens \"x\" is not",
            ),
            (
                "2023-11-16 18:15:46,1,-1\n",
                "a.csv:2: GeneratedTokens \"-1\"",
            ),
            (
                "2023-11-16,1,1\n",
                "a.csv:2: \"2023-11-16\" is not a date-time",
            ),
            (
                "2023-11-16 18:15:46,1,1\n2023-11-16 18:15:45,1,1\n",
                "a.csv:3: timestamp 2023-11-16 18:15:45 goes back in time",
            ),
        ];
        for (rows, want) in cases {
            let text = format!("{head}{rows}");
            let err = parse(Path::new(P), &text, &ReadOptions::default()).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
        let err = parse(Path::new(P), "TIME,In,Out\n", &ReadOptions::default()).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("a.csv:1: the header has no timestamp column"));
        let long = format!("{}\n", "x".repeat(1_000_000));
        let msg = parse(Path::new("a.csv"), &long, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 400 && msg.contains("(1000000 bytes)"), "{msg}");
        let opts = ReadOptions {
            skip_invalid: true,
            ..Default::default()
        };
        let text = format!("{head}2023-11-16 18:15:46,1,1\nnonsense\n2023-11-16 18:15:47,1,1\n");
        let t = parse(Path::new(P), &text, &opts).unwrap();
        assert_eq!((t.requests.len(), t.skipped), (2, 1));
        assert_eq!(t.requests[1].timestamp, 1.0);
    }
}
