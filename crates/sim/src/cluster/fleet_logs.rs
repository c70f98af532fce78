//! A fleet's logs read together (issue 21): one vLLM log per replica, merged into one trace by
//! time, with the replica each request actually went to, so `simulate --replicas N --router P`
//! can report, beside its own routing, the assignment that happened.
//!
//! Each log's request times count from its own first request; the merge places every log on
//! one clock by the stamp of its first `Received request` line (`MM-DD HH:MM:SS[.frac]`, no
//! year: logs that cross New Year's Eve are not supported). Requests of the same instant (vLLM
//! stamps whole seconds) are ordered by the client's index when every id carries one (`bench`
//! sends `X-Request-Id: bench-<run>-<index>`, which vLLM puts in its `cmpl-`/`chatcmpl-` id),
//! else by replica, then by their order in their log. This is `scripts/router_check.sh`'s
//! merge (by second, then the bench's index).
//!
//! The logs must carry token ids as text (read without hashing, [`Content::Tokens`]): hashed
//! block ids are numbered per file and would not mean the same across logs.

use std::io::BufRead;

use inferencelab_trace::{Content, Trace};

/// A merged fleet: the requests of every log in one trace, and each one's replica (the index
/// of its log).
#[derive(Debug)]
pub struct FleetTrace {
    pub trace: Trace,
    pub actual: Vec<usize>,
}

/// Seconds since the start of the (common) year of a vLLM stamp `MM-DD HH:MM:SS[.frac]`.
fn stamp_seconds(s: &str) -> Option<f64> {
    const DAYS_BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let b = s.as_bytes();
    if b.len() < 14 || b[2] != b'-' || b[5] != b' ' || b[8] != b':' || b[11] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (month, day) = (num(0..2)?, num(3..5)?);
    let (h, m) = (num(6..8)?, num(9..11)?);
    let sec: f64 = {
        let end = s[12..]
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .map_or(s.len(), |i| 12 + i);
        s[12..end].parse().ok()?
    };
    if !(1..=12).contains(&month) || day == 0 || day > 31 {
        return None;
    }
    let days = DAYS_BEFORE[month as usize - 1] + day - 1;
    Some(f64::from(days * 86_400 + h * 3_600 + m * 60) + sec)
}

/// The stamp (seconds within the year) of the first `Received request` line of a vLLM log.
pub fn first_request_stamp(reader: impl BufRead) -> Option<f64> {
    for line in reader.lines() {
        let line = line.ok()?;
        let Some(at) = line.find("Received request") else {
            continue;
        };
        // the stamp follows the level: `INFO 12-04 19:14:00 [...]`
        let head = &line[..at];
        let i = head.find("INFO ").map(|i| i + 5)?;
        return stamp_seconds(&head[i..]);
    }
    None
}

/// The client's index in a request id: `cmpl-bench-<run>-<index>` (also `chatcmpl-`).
fn bench_index(id: &str) -> Option<u64> {
    let rest = id.split("bench-").nth(1)?;
    let (_, index) = rest.split_once('-')?;
    index.parse().ok()
}

/// Merge the replicas' traces (`parts[k]`: replica k's trace and the stamp of its first
/// request, [`first_request_stamp`]) into one, in arrival order.
pub fn merge(parts: Vec<(Trace, f64)>) -> Result<FleetTrace, String> {
    if parts.is_empty() {
        return Err("no replica logs to merge".into());
    }
    for (k, (t, _)) in parts.iter().enumerate() {
        if t.requests
            .iter()
            .any(|r| matches!(r.content, Content::Hashed(_)))
        {
            return Err(format!(
                "replica log {k} ({}) was read with hashed token ids; a fleet's logs must keep \
                 their token ids (block ids are numbered per file)",
                t.source.display()
            ));
        }
    }
    let origin = parts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let with_index = parts
        .iter()
        .all(|(t, _)| t.requests.iter().all(|r| bench_index(&r.id).is_some()));
    // (time, client index, replica, position)
    let mut order: Vec<(f64, u64, usize, usize)> = Vec::new();
    // each log's first request time on its own clock
    let t0s: Vec<f64> = parts
        .iter()
        .map(|(t, _)| t.requests.first().map_or(0.0, |r| r.timestamp))
        .collect();
    for (k, (t, first)) in parts.iter().enumerate() {
        let t0 = t0s[k];
        for (i, r) in t.requests.iter().enumerate() {
            let at = first - origin + (r.timestamp - t0);
            let index = if with_index {
                bench_index(&r.id).unwrap_or(0)
            } else {
                0
            };
            order.push((at, index, k, i));
        }
    }
    order.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    let mut parts = parts;
    // the settings of the first log with requests (a replica may have got none)
    let meta = parts
        .iter()
        .find(|p| !p.0.requests.is_empty())
        .map_or(&parts[0].0, |p| &p.0);
    let mut merged = Trace {
        source: parts[0].0.source.clone(),
        format: meta.format,
        block_size: meta.block_size,
        partial_last_block: meta.partial_last_block,
        ..Trace::default()
    };
    // conversations stay apart across logs
    let mut conv_base = 0u64;
    let mut bases = Vec::with_capacity(parts.len());
    for (t, _) in &parts {
        bases.push(conv_base);
        let max = t.requests.iter().filter_map(|r| r.conversation).max();
        conv_base += max.map_or(0, |m| m + 1);
    }
    let mut taken: Vec<Vec<Option<inferencelab_trace::Request>>> = parts
        .iter_mut()
        .map(|(t, _)| {
            std::mem::take(&mut t.requests)
                .into_iter()
                .map(Some)
                .collect()
        })
        .collect();
    let mut actual = Vec::with_capacity(order.len());
    for &(at, _, k, i) in &order {
        let mut r = taken[k][i].take().expect("each request once");
        let shift = at - r.timestamp;
        r.timestamp = at;
        r.finish_time = r.finish_time.map(|f| f + shift);
        r.output_times = r
            .output_times
            .map(|ts| ts.into_iter().map(|x| x + shift).collect());
        r.conversation = r.conversation.map(|c| c + bases[k]);
        merged.requests.push(r);
        actual.push(k);
    }
    for (k, (t, first)) in parts.into_iter().enumerate() {
        // vLLM's `Finished sending KV transfer` times (LMCache's mp connector), on the one clock
        let t0 = t0s[k];
        merged.kv_sent_s.extend(
            t.kv_sent_s
                .into_iter()
                .map(|(id, s)| (id, first - origin + (s - t0))),
        );
        merged
            .notes
            .extend(t.notes.into_iter().map(|n| format!("replica {k}: {n}")));
        merged.lmcache.extend(t.lmcache);
        merged.skipped += t.skipped;
        merged.input_bytes += t.input_bytes;
        merged.text_bytes += t.text_bytes;
    }
    Ok(FleetTrace {
        trace: merged,
        actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferencelab_trace::Request;

    #[test]
    fn stamps_and_client_indexes() {
        assert_eq!(stamp_seconds("01-01 00:00:01"), Some(1.0));
        assert_eq!(
            stamp_seconds("12-04 19:14:00.250 [x]"),
            Some(f64::from((334 + 3) * 86_400 + 19 * 3_600 + 14 * 60) + 0.25)
        );
        assert_eq!(stamp_seconds("13-01 00:00:00"), None);
        let log = "(APIServer pid=1) INFO 12-04 19:14:00 [api_server.py:1] start\n\
                   (APIServer pid=1) INFO 12-04 19:14:03 [logger.py:43] Received request \
                   cmpl-bench-5f-7: params\n";
        assert_eq!(
            first_request_stamp(log.as_bytes()),
            stamp_seconds("12-04 19:14:03")
        );
        assert_eq!(bench_index("chatcmpl-bench-00005f30-12"), Some(12));
        assert_eq!(bench_index("cmpl-abc"), None);
    }

    fn req(id: &str, t: f64) -> Request {
        Request {
            id: id.into(),
            timestamp: t,
            finish_time: Some(t + 0.5),
            conversation: None,
            turn: 0,
            input_length: 3,
            output_length: 1,
            kind: None,
            content: Content::Tokens(vec![1, 2, 3]),
            output_tokens: None,
            output_times: None,
        }
    }

    fn trace(reqs: Vec<Request>) -> Trace {
        Trace {
            requests: reqs,
            ..Trace::default()
        }
    }

    #[test]
    fn logs_merge_on_one_clock_and_same_second_requests_by_the_clients_index() {
        // replica 0 started 2 s after replica 1; both logged whole seconds
        let mut a = trace(vec![req("cmpl-bench-1-3", 0.0), req("cmpl-bench-1-5", 1.0)]);
        let b = trace(vec![req("cmpl-bench-1-0", 0.0), req("cmpl-bench-1-4", 2.0)]);
        // vLLM's `Finished sending KV transfer` time of 1-5, on replica 0's clock
        a.kv_sent_s.insert("cmpl-bench-1-5".into(), 1.75);
        let f = merge(vec![(a, 102.0), (b, 100.0)]).unwrap();
        let ids: Vec<&str> = f.trace.requests.iter().map(|r| r.id.as_str()).collect();
        // 1-3 and 1-4 share second 102: the client's index orders them
        assert_eq!(
            ids,
            [
                "cmpl-bench-1-0",
                "cmpl-bench-1-3",
                "cmpl-bench-1-4",
                "cmpl-bench-1-5"
            ]
        );
        assert_eq!(f.actual, [1, 0, 1, 0]);
        let ts: Vec<f64> = f.trace.requests.iter().map(|r| r.timestamp).collect();
        assert_eq!(ts, [0.0, 2.0, 2.0, 3.0]);
        assert_eq!(f.trace.requests[3].finish_time, Some(3.5));
        // moved with its request (1.0 -> 3.0)
        assert_eq!(f.trace.kv_sent_s.get("cmpl-bench-1-5"), Some(&3.75));
        // hashed ids are refused
        let mut h = trace(vec![req("x", 0.0)]);
        h.requests[0].content = Content::Hashed(inferencelab_trace::HashedTokens {
            blocks: vec![1],
            answer: None,
            prompt: 0,
            extends: Vec::new(),
        });
        assert!(merge(vec![(h, 0.0)]).unwrap_err().contains("hashed"));
    }
}
