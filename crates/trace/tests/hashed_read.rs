//! Hashing token ids at read time (issue 19) changes nothing the simulator sees: on every vLLM
//! log in the repository, the blocks, chunks and sequences (prompt + answer, every answer mode)
//! cut from a trace read with `read_trace_hashed` equal those cut from the same trace read with
//! its token ids, at several block sizes and hashing block sizes.

use std::path::{Path, PathBuf};

use inferencelab_trace::{
    infer_conversations, read_trace, read_trace_hashed, AnswerBlocks, BlockedTrace, Blocking,
    Content, ReadOptions, SequenceBlocks, Trace,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Plain-text vLLM logs with token ids under `dir`.
fn logs_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            logs_under(&p, out);
        } else if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read(&p).unwrap_or_default();
            if memchr_find(&text, b"prompt_token_ids: [") {
                out.push(p);
            }
        }
    }
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn all_logs() -> Vec<PathBuf> {
    let mut logs = Vec::new();
    logs_under(&repo().join("data"), &mut logs);
    for c in ["trace", "cli", "runner", "sim", "emu"] {
        logs_under(&repo().join("crates").join(c).join("tests"), &mut logs);
    }
    logs.sort();
    logs
}

fn assert_same(path: &Path, tokens: &Trace, hashed: &Trace, g: u32) {
    let what = format!("{} hashed at {g}", path.display());
    assert_eq!(tokens.requests.len(), hashed.requests.len(), "{what}");
    for (a, b) in tokens.requests.iter().zip(&hashed.requests) {
        assert_eq!(
            (
                &a.id,
                a.timestamp,
                a.finish_time,
                a.input_length,
                a.output_length
            ),
            (
                &b.id,
                b.timestamp,
                b.finish_time,
                b.input_length,
                b.output_length
            ),
            "{what}"
        );
        assert_eq!(a.output_times, b.output_times, "{what}");
        assert!(matches!(b.content, Content::Hashed(_)), "{what}");
        assert!(b.output_tokens.is_none(), "{what}: no token ids kept");
    }
    assert_eq!(tokens.notes, hashed.notes, "{what}");
    assert_eq!(tokens.lmcache, hashed.lmcache, "{what}");
    assert_eq!(tokens.max_token_id(), hashed.max_token_id(), "{what}");
    for bs in [g, 2 * g, 16 * g, 256] {
        if bs % g != 0 {
            continue;
        }
        for include_partial in [true, false] {
            let blocking = Blocking {
                block_size: bs,
                include_partial,
            };
            let x = BlockedTrace::build(tokens, blocking).unwrap();
            let y = BlockedTrace::build(hashed, blocking).unwrap();
            assert_eq!(x.offsets, y.offsets, "{what}, blocks of {bs}");
            assert_eq!(x.keys, y.keys, "{what}, blocks of {bs}");
            assert_eq!(x.num_objects, y.num_objects, "{what}, blocks of {bs}");
            assert_eq!(x.next_use_by_request(), y.next_use_by_request(), "{what}");
        }
        for answers in [
            AnswerBlocks::Auto,
            AnswerBlocks::NextPrompt,
            AnswerBlocks::Fresh,
            AnswerBlocks::Off,
        ] {
            let x = SequenceBlocks::build(tokens, bs, answers).unwrap();
            let y = SequenceBlocks::build(hashed, bs, answers).unwrap();
            let at = format!("{what}, sequences of {bs}, answers {answers}");
            assert_eq!(x.blocks.offsets, y.blocks.offsets, "{at}");
            assert_eq!(x.blocks.keys, y.blocks.keys, "{at}");
            assert_eq!(x.prompt_blocks, y.prompt_blocks, "{at}");
            assert_eq!(x.sources, y.sources, "{at}");
        }
    }
}

#[test]
fn every_vllm_log_cuts_the_same_blocks_and_sequences_hashed_at_read() {
    let logs = all_logs();
    assert!(logs.len() >= 6, "found only {logs:?}");
    for path in &logs {
        let opts = ReadOptions::default();
        let Ok(tokens) = read_trace(path, &opts) else {
            continue; // a fixture of a bad log: the error tests cover it
        };
        for g in [16, 8, 1] {
            let hashed = read_trace_hashed(path, &opts, g).unwrap();
            assert_eq!(hashed.hashing.map(|h| h.block_size), Some(g));
            assert_same(path, &tokens, &hashed, g);
        }
    }
}

/// Lines of a log: (stamp, request line).
fn log(lines: &[(&str, String)]) -> String {
    lines
        .iter()
        .map(|(stamp, msg)| {
            format!("(APIServer pid=1) DEBUG 08-12 {stamp} [request_logger.py:56] {msg}\n")
        })
        .collect()
}

fn details(id: &str, tokens: &[u32]) -> String {
    let list: Vec<String> = tokens.iter().map(u32::to_string).collect();
    format!(
        "Request {id} details: prompt: 'p', prompt_token_ids: [{}], prompt_embeds shape: None.",
        list.join(", ")
    )
}

fn output(id: &str, tokens: &[u32], delta: bool) -> String {
    let list: Vec<String> = tokens.iter().map(u32::to_string).collect();
    let kind = if delta {
        "streaming delta"
    } else {
        "streaming complete"
    };
    format!(
        "Generated response {id} ({kind}) details: output_token_ids: [{}]",
        list.join(", ")
    )
}

fn check_text(name: &str, text: &str) {
    let dir = std::env::temp_dir().join(format!("hashed_read_{}_{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("server.log");
    std::fs::write(&path, text).unwrap();
    let tokens = read_trace(&path, &ReadOptions::default()).unwrap();
    for g in [16, 4, 3, 1] {
        let hashed = read_trace_hashed(&path, &ReadOptions::default(), g).unwrap();
        assert_same(&path, &tokens, &hashed, g);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn follow_ups_logged_out_of_arrival_order_and_streamed_answers_match() {
    // a: 20 tokens; b starts with a (a's tail included) but is logged first with a later
    // stamp; c shares a's first block only; d repeats a; answers come as deltas, one replaced
    let a: Vec<u32> = (0..20).collect();
    let b: Vec<u32> = (0..45).collect();
    let c: Vec<u32> = (0..16).chain(100..110).collect();
    let text = log(&[
        ("12:00:05", details("b", &b)),
        ("12:00:01", details("a", &a)),
        ("12:00:02", output("a", &[20, 21, 22], true)),
        ("12:00:03", output("a", &[23, 24], true)),
        ("12:00:06", details("c", &c)),
        ("12:00:06", output("c", &[7, 7, 7, 7, 7], true)),
        (
            "12:00:07",
            output("c", &(100..140).collect::<Vec<_>>(), false),
        ),
        ("12:00:08", details("d", &a)),
        (
            "12:00:09",
            output("b", &(45..80).collect::<Vec<_>>(), false),
        ),
    ]);
    check_text("order", &text);
}

#[test]
fn outputs_logged_before_their_prompt_and_whole_block_prompts_match() {
    let a: Vec<u32> = (0..32).collect();
    let b: Vec<u32> = (0..48).collect();
    let text = log(&[
        (
            "12:00:01",
            "Received request a: params: SamplingParams(max_tokens=9), lora_request: None."
                .to_string(),
        ),
        ("12:00:02", output("a", &[32, 33, 34, 35], true)),
        ("12:00:02", details("a", &a)),
        ("12:00:03", output("a", &(36..60).collect::<Vec<_>>(), true)),
        ("12:00:04", details("b", &b)),
        ("12:00:05", details("e", &[])),
    ]);
    check_text("early", &text);
}

/// `--infer-conversations` on ids hashed at read time at any g dividing 16 finds what it finds
/// from the token ids (its keys are 16-token prefixes): on every vLLM log, and on prompts that
/// share 24 of 48 tokens (a follow-up in 8-token blocks, not in 16-token ones).
#[test]
fn conversations_inferred_from_hashed_ids_are_those_of_the_tokens() {
    let dir = std::env::temp_dir().join(format!("hashed_read_{}_conv", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shared = dir.join("server.log");
    let a: Vec<u32> = (0..48).collect();
    let b: Vec<u32> = (0..24).chain(100..124).collect();
    let text = log(&[
        ("12:00:01", details("a", &a)),
        ("12:00:02", details("b", &b)),
    ]);
    std::fs::write(&shared, text).unwrap();
    let mut logs = all_logs();
    logs.push(shared.clone());
    let turns = |t: &Trace| -> Vec<(Option<u64>, u32)> {
        t.requests
            .iter()
            .map(|r| (r.conversation, r.turn))
            .collect()
    };
    for path in &logs {
        let opts = ReadOptions::default();
        let Ok(mut tokens) = read_trace(path, &opts) else {
            continue;
        };
        let want = infer_conversations(&mut tokens);
        for g in [16, 8, 4, 1] {
            let mut hashed = read_trace_hashed(path, &opts, g).unwrap();
            let got = infer_conversations(&mut hashed);
            let what = format!("{} hashed at {g}", path.display());
            assert_eq!(got, want, "{what}");
            assert_eq!(turns(&hashed), turns(&tokens), "{what}");
        }
    }
    let mut t = read_trace(&shared, &ReadOptions::default()).unwrap();
    assert_eq!(infer_conversations(&mut t).unwrap().follow_ups, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
