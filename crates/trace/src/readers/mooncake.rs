//! Mooncake (Kimi, FAST'25) JSONL: `{"timestamp": ms, "input_length", "output_length",
//! "hash_ids": [...]}`; 512-token prefix-chained block ids, the partial last block has an id.
//! Timestamps are coarse and tie often: file order is kept; a decreasing timestamp is an error.

use std::path::Path;

use serde::Deserialize;

use super::{numbered_lines, ReadOptions};
use crate::error::{TraceError, TraceResult};
use crate::model::{Content, Request, Trace};

pub const BLOCK_SIZE: u32 = 512;

#[derive(Deserialize)]
struct Record {
    timestamp: f64,
    input_length: u32,
    output_length: u32,
    hash_ids: Vec<u64>,
}

pub fn parse(path: &Path, text: &str, opts: &ReadOptions) -> TraceResult<Trace> {
    let mut trace = Trace {
        block_size: Some(BLOCK_SIZE),
        partial_last_block: true,
        ..Default::default()
    };
    let mut last_ts = f64::NEG_INFINITY;
    for (line, l) in numbered_lines(text) {
        let rec: Record = match serde_json::from_str(l) {
            Ok(r) => r,
            Err(e) => {
                let err = TraceError::invalid(path, line, format!("not a Mooncake record: {e}"));
                opts.skip_or_fail(&mut trace, err)?;
                continue;
            }
        };
        let problem = if !rec.timestamp.is_finite() || rec.timestamp < 0.0 {
            Some(format!(
                "timestamp {} is not a non-negative number of ms",
                rec.timestamp
            ))
        } else if rec.timestamp < last_ts {
            Some(format!(
                "timestamp {} ms goes back in time (previous {last_ts} ms); Mooncake traces are \
                 sorted by time: sort the file or pass --skip-invalid",
                rec.timestamp
            ))
        } else if rec.hash_ids.len() as u64 != (rec.input_length as u64).div_ceil(BLOCK_SIZE as u64)
        {
            Some(format!(
                "{} hash_ids for input_length {} (expected ceil({}/512) = {})",
                rec.hash_ids.len(),
                rec.input_length,
                rec.input_length,
                (rec.input_length as u64).div_ceil(BLOCK_SIZE as u64)
            ))
        } else {
            None
        };
        if let Some(reason) = problem {
            opts.skip_or_fail(&mut trace, TraceError::invalid(path, line, reason))?;
            continue;
        }
        last_ts = rec.timestamp;
        trace.requests.push(Request {
            id: format!("{}", trace.requests.len()),
            timestamp: rec.timestamp / 1000.0,
            finish_time: None,
            conversation: None,
            turn: 0,
            input_length: rec.input_length,
            output_length: rec.output_length,
            kind: None,
            content: Content::HashIds(rec.hash_ids),
            output_tokens: None,
            output_times: None,
        });
    }
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "t.jsonl";

    #[test]
    fn reads_records_in_file_order() {
        let text = "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [0, 1]}\n\
                    {\"timestamp\": 0, \"input_length\": 512, \"output_length\": 2, \"hash_ids\": [0]}\n";
        let t = parse(Path::new(P), text, &ReadOptions::default()).unwrap();
        assert_eq!(t.requests.len(), 2);
        assert_eq!(t.requests[0].content, Content::HashIds(vec![0, 1]));
        assert_eq!(t.requests[1].input_length, 512);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let text = "{\"timestamp\": 5, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [0]}\n\
                    {\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [0]}\n";
        let err = parse(Path::new(P), text, &ReadOptions::default()).unwrap_err();
        assert!(err.to_string().starts_with("t.jsonl:2: timestamp"), "{err}");
        let truncated = "{\"timestamp\": 5, \"input_length\": 10, \"outp";
        let err = parse(Path::new(P), truncated, &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("t.jsonl:1: not a Mooncake record"),
            "{err}"
        );
        let opts = ReadOptions {
            skip_invalid: true,
            ..Default::default()
        };
        let t = parse(Path::new(P), text, &opts).unwrap();
        assert_eq!((t.requests.len(), t.skipped), (1, 1));
    }

    #[test]
    fn wrong_number_of_ids_is_an_error() {
        let text = "{\"timestamp\": 0, \"input_length\": 1025, \"output_length\": 1, \"hash_ids\": [0, 1]}";
        let err = parse(Path::new(P), text, &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("expected ceil(1025/512) = 3"),
            "{err}"
        );
    }
}
