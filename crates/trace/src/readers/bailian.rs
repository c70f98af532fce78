//! Alibaba Bailian (Qwen serving traces) JSONL: `{"chat_id", "parent_chat_id" (-1 for a root),
//! "timestamp" (s), "input_length", "output_length", "type", "turn", "hash_ids": [...]}`;
//! 16-token prefix-chained block ids, the partial last block has an id (unstable across turns:
//! the next turn's prompt extends that block, so its id changes).
//!
//! Conversations are chat trees: a root chat starts a conversation, a child joins its parent's.
//! Conversation ids are dense, in order of first appearance. A child whose parent is not in the
//! file (a window cut from a longer trace) starts a conversation of its own and is counted in a
//! note. `turn` is 1-based in the released traces (a root has turn 1); `Request::turn` is
//! 0-based, so it is the field minus one. Without a `turn` field, the depth in the chat tree is
//! used. Timestamps must not decrease (the traces are sorted by arrival); ties keep file order.

use std::path::Path;

use rustc_hash::FxHashMap;
use serde::Deserialize;

use super::{numbered_lines, ReadOptions};
use crate::error::{TraceError, TraceResult};
use crate::model::{Content, Request, Trace};

pub const BLOCK_SIZE: u32 = 16;

#[derive(Deserialize)]
struct Record {
    chat_id: i64,
    parent_chat_id: i64,
    timestamp: f64,
    input_length: u32,
    output_length: u32,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    turn: Option<u32>,
    hash_ids: Vec<u64>,
}

/// Where a chat went: its conversation, its 0-based turn and the line that defined it.
struct Chat {
    conversation: u64,
    turn: u32,
    line: usize,
}

pub fn parse(path: &Path, text: &str, opts: &ReadOptions) -> TraceResult<Trace> {
    let mut trace = Trace {
        block_size: Some(BLOCK_SIZE),
        partial_last_block: true,
        ..Default::default()
    };
    let mut chats: FxHashMap<i64, Chat> = FxHashMap::default();
    let mut next_conversation = 0u64;
    let mut orphans = 0usize;
    let mut last_ts = f64::NEG_INFINITY;
    for (line, l) in numbered_lines(text) {
        let rec: Record = match serde_json::from_str(l) {
            Ok(r) => r,
            Err(e) => {
                let err = TraceError::invalid(path, line, format!("not a Bailian record: {e}"));
                opts.skip_or_fail(&mut trace, err)?;
                continue;
            }
        };
        let expected_ids = (rec.input_length as u64).div_ceil(BLOCK_SIZE as u64);
        let problem = if !rec.timestamp.is_finite() || rec.timestamp < 0.0 {
            Some(format!(
                "timestamp {} is not a non-negative number of seconds",
                rec.timestamp
            ))
        } else if rec.timestamp < last_ts {
            Some(format!(
                "timestamp {} s goes back in time (previous {last_ts} s); Bailian traces are \
                 sorted by time: sort the file or pass --skip-invalid",
                rec.timestamp
            ))
        } else if rec.parent_chat_id < -1 {
            Some(format!(
                "parent_chat_id {} is neither -1 (a root chat) nor a chat id",
                rec.parent_chat_id
            ))
        } else if let Some(first) = chats.get(&rec.chat_id) {
            Some(format!(
                "chat_id {} appears twice (first on line {})",
                rec.chat_id, first.line
            ))
        } else if rec.hash_ids.len() as u64 != expected_ids {
            Some(format!(
                "{} hash_ids for input_length {} (expected ceil({}/16) = {expected_ids})",
                rec.hash_ids.len(),
                rec.input_length,
                rec.input_length,
            ))
        } else {
            None
        };
        if let Some(reason) = problem {
            opts.skip_or_fail(&mut trace, TraceError::invalid(path, line, reason))?;
            continue;
        }
        last_ts = rec.timestamp;
        let parent = if rec.parent_chat_id == -1 {
            None
        } else {
            let parent = chats.get(&rec.parent_chat_id);
            if parent.is_none() {
                orphans += 1;
            }
            parent
        };
        let (conversation, depth) = match parent {
            Some(p) => (p.conversation, p.turn.saturating_add(1)),
            None => {
                next_conversation += 1;
                (next_conversation - 1, 0)
            }
        };
        let turn = rec.turn.map_or(depth, |t| t.saturating_sub(1));
        chats.insert(
            rec.chat_id,
            Chat {
                conversation,
                turn,
                line,
            },
        );
        trace.requests.push(Request {
            id: rec.chat_id.to_string(),
            timestamp: rec.timestamp,
            finish_time: None,
            conversation: Some(conversation),
            turn,
            input_length: rec.input_length,
            output_length: rec.output_length,
            kind: rec.kind,
            content: Content::HashIds(rec.hash_ids),
            output_tokens: None,
            output_times: None,
        });
    }
    if orphans > 0 {
        trace.notes.push(format!(
            "{orphans} chats name a parent_chat_id that is not in the file (a window cut from a \
             longer trace?); each of them starts a conversation of its own"
        ));
    }
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "b.jsonl";

    fn rec(chat: i64, parent: i64, ts: f64, len: u32, turn: u32, ids: &[u64]) -> String {
        format!(
            "{{\"chat_id\": {chat}, \"parent_chat_id\": {parent}, \"timestamp\": {ts}, \
             \"input_length\": {len}, \"output_length\": 7, \"type\": \"text\", \"turn\": {turn}, \
             \"hash_ids\": {ids:?}}}\n"
        )
    }

    #[test]
    fn chat_trees_become_conversations() {
        let text = [
            rec(10, -1, 0.5, 20, 1, &[1, 2]),
            rec(11, -1, 0.75, 16, 1, &[1]),
            rec(12, 10, 1.0, 40, 2, &[1, 3, 4]),
            rec(13, 12, 2.0, 50, 3, &[1, 3, 5, 6]),
            rec(14, 11, 2.0, 17, 2, &[1, 7]),
        ]
        .concat();
        let t = parse(Path::new(P), &text, &ReadOptions::default()).unwrap();
        let convs: Vec<_> = t.requests.iter().map(|r| r.conversation).collect();
        assert_eq!(convs, [Some(0), Some(1), Some(0), Some(0), Some(1)]);
        let turns: Vec<_> = t.requests.iter().map(|r| r.turn).collect();
        assert_eq!(turns, [0, 0, 1, 2, 1]);
        assert_eq!(t.requests[2].id, "12");
        assert_eq!(t.requests[2].kind.as_deref(), Some("text"));
        assert_eq!(t.requests[3].timestamp, 2.0);
        assert_eq!(t.block_size, Some(16));
        assert!(t.partial_last_block);
        assert!(t.notes.is_empty());
    }

    #[test]
    fn orphans_start_their_own_conversation_and_are_noted() {
        let text = [rec(5, 99, 0.0, 1, 4, &[1]), rec(6, 5, 1.0, 1, 5, &[1])].concat();
        let t = parse(Path::new(P), &text, &ReadOptions::default()).unwrap();
        assert_eq!(t.requests[1].conversation, Some(0));
        assert_eq!(t.requests[1].turn, 4);
        assert!(
            t.notes[0].starts_with("1 chats name a parent_chat_id"),
            "{:?}",
            t.notes
        );
    }

    #[test]
    fn missing_turn_is_the_depth_in_the_tree() {
        let text = "{\"chat_id\": 1, \"parent_chat_id\": -1, \"timestamp\": 0, \"input_length\": 0, \"output_length\": 1, \"hash_ids\": []}\n\
                    {\"chat_id\": 2, \"parent_chat_id\": 1, \"timestamp\": 0, \"input_length\": 0, \"output_length\": 1, \"hash_ids\": []}\n";
        let t = parse(Path::new(P), text, &ReadOptions::default()).unwrap();
        assert_eq!(t.requests[1].turn, 1);
        assert_eq!(t.requests[1].kind, None);
    }

    #[test]
    fn bad_records_name_file_and_line() {
        let cases = [
            (
                [rec(1, -1, 5.0, 1, 1, &[1]), rec(2, -1, 4.0, 1, 1, &[1])].concat(),
                "b.jsonl:2: timestamp 4 s goes back in time",
            ),
            (
                [rec(1, -1, 0.0, 1, 1, &[1]), rec(1, -1, 0.0, 1, 1, &[1])].concat(),
                "b.jsonl:2: chat_id 1 appears twice (first on line 1)",
            ),
            (
                rec(1, -1, 0.0, 33, 1, &[1, 2]),
                "b.jsonl:1: 2 hash_ids for input_length 33 (expected ceil(33/16) = 3)",
            ),
            (rec(1, -7, 0.0, 1, 1, &[1]), "b.jsonl:1: parent_chat_id -7"),
            (
                "\n\n{\"chat_id\": 1, \"parent_ch".to_string(),
                "b.jsonl:3: not a Bailian record",
            ),
        ];
        for (text, want) in cases {
            let err = parse(Path::new(P), &text, &ReadOptions::default()).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
        let opts = ReadOptions {
            skip_invalid: true,
            ..Default::default()
        };
        let text = [rec(1, -1, 5.0, 1, 1, &[1]), rec(2, -1, 4.0, 1, 1, &[1])].concat();
        let t = parse(Path::new(P), &text, &opts).unwrap();
        assert_eq!((t.requests.len(), t.skipped), (1, 1));
    }
}
