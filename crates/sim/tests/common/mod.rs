//! Shared by the sim crate's integration tests.

use inferencelab_sim::config::Schedule;
use inferencelab_trace::{Content, Request, Trace};

/// The three GPU-tier replays, as (`engine.rules`, `engine.schedule`): vLLM's rules under the
/// trace's own schedule, vLLM's rules under its scheduler, and the abstract tier.
pub const REPLAYS: [(bool, Schedule); 3] = [
    (true, Schedule::Trace),
    (true, Schedule::Vllm),
    (false, Schedule::Trace),
];

/// 400 conversations, one starting every 2 s, each with a first request of 8 blocks of 16
/// tokens. Every third one is answered in 4 tokens and followed 30 s later by a second
/// request repeating its prompt plus 2 blocks; the others are answered in 60 tokens and never
/// followed.
pub fn answer_length_workload() -> Trace {
    let mut requests = Vec::new();
    let mut next_id = 0u64;
    for c in 0..400u64 {
        let t = c as f64 * 2.0;
        let ids: Vec<u64> = (0..8).map(|k| next_id + k).collect();
        next_id += 8;
        let short = c % 3 == 0;
        let output = if short { 4 } else { 60 };
        requests.push(Request {
            id: format!("{c}-0"),
            timestamp: t,
            finish_time: Some(t + 0.5 + output as f64 * 0.002),
            conversation: Some(c),
            turn: 0,
            input_length: 8 * 16,
            output_length: output,
            kind: None,
            content: Content::HashIds(ids.clone()),
            output_tokens: None,
            output_times: None,
        });
        if short {
            let mut more = ids;
            more.extend([next_id, next_id + 1]);
            next_id += 2;
            requests.push(Request {
                id: format!("{c}-1"),
                timestamp: t + 30.0,
                finish_time: Some(t + 31.0),
                conversation: Some(c),
                turn: 1,
                input_length: 10 * 16,
                output_length: 8,
                kind: None,
                content: Content::HashIds(more),
                output_tokens: None,
                output_times: None,
            });
        }
    }
    requests.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    Trace {
        requests,
        block_size: Some(16),
        ..Default::default()
    }
}
