//! CSV -> (vLLM log, native trace) -> our own readers: both give the same requests (ids, token
//! ids, order, lengths) and the same times up to the log's one-second stamps; and the log looks
//! line for line like the bundled vLLM sample.

use std::path::{Path, PathBuf};

use inferencelab_convert::{
    build_workload, read_csv, write_demo_csv, write_outputs, ChatTemplate, ColumnNames,
    TextTokenizer, TimelineConfig, Workload,
};
use inferencelab_trace::{read_trace, Content, Format, ReadOptions, Trace};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn convert(dir: &Path, conversations: usize, cfg: &TimelineConfig) -> (Workload, Trace, Trace) {
    let csv = dir.join("demo.csv");
    write_demo_csv(conversations, 5, std::fs::File::create(&csv).unwrap()).unwrap();
    let set = read_csv(&csv, &ColumnNames::default()).unwrap();
    let tok = TextTokenizer::embedded();
    let w = build_workload(set, &tok, ChatTemplate::ChatMl, cfg).unwrap();
    let out = write_outputs(&w, dir, "qwen-8b", "Qwen/Qwen3-8B", cfg.seed).unwrap();
    assert_eq!(out.log, dir.join("server_qwen-8b.log"));
    let log = read_trace(&out.log, &ReadOptions::default()).unwrap();
    assert_eq!(log.format, Some(Format::VllmLog), "detected as a vLLM log");
    let native = read_trace(&out.trace, &ReadOptions::default()).unwrap();
    assert_eq!(native.format, Some(Format::Native));
    (w, log, native)
}

fn tokens(c: &Content) -> &[u32] {
    match c {
        Content::Tokens(t) => t,
        _ => panic!("token content expected"),
    }
}

#[test]
fn log_and_native_trace_read_back_to_the_same_requests() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TimelineConfig {
        seed: 11,
        ..Default::default()
    };
    let (w, log, native) = convert(dir.path(), 60, &cfg);
    assert!(
        log.notes.is_empty(),
        "no truncation or other notes: {:?}",
        log.notes
    );
    assert_eq!(
        native.requests, w.trace.requests,
        "the native trace is exact"
    );
    assert_eq!(log.requests.len(), native.requests.len());
    for (l, n) in log.requests.iter().zip(&native.requests) {
        assert_eq!(l.id, n.id, "same order");
        assert_eq!(tokens(&l.content), tokens(&n.content), "{}", n.id);
        assert_eq!(l.input_length, n.input_length);
        assert_eq!(l.output_length, n.output_length);
        assert!(
            (l.timestamp - n.timestamp).abs() < 1.0,
            "{} {} vs {}",
            n.id,
            l.timestamp,
            n.timestamp
        );
        let (lf, nf) = (l.finish_time.unwrap(), n.finish_time.unwrap());
        assert!((lf - nf).abs() < 1.0, "{} finish {lf} vs {nf}", n.id);
    }
    // multi-turn prefixes really are shared: some request extends an earlier one's prompt
    let reuse = native.requests.iter().filter(|r| r.turn > 0).count();
    assert!(reuse > 0);
}

#[test]
fn synthetic_timeline_round_trips_too() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TimelineConfig {
        think_time: Some(3.0),
        arrival_rate: 2.0,
        tokens_per_second: 400.0,
        seed: 3,
        ..Default::default()
    };
    let (_w, log, native) = convert(dir.path(), 25, &cfg);
    let ids = |t: &Trace| t.requests.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&log), ids(&native));
    for (l, n) in log.requests.iter().zip(&native.requests) {
        assert!((l.timestamp - n.timestamp).abs() < 1.0);
    }
}

fn stamp_secs(line: &str) -> u32 {
    // "(APIServer pid=N) LEVEL MM-DD HH:MM:SS [...": the stamp follows the level
    let rest = line.split_once(") ").unwrap().1;
    let stamp = &rest[rest.find(' ').unwrap() + 1..][..14];
    let n = |a: usize| stamp[a..a + 2].parse::<u32>().unwrap();
    ((n(0) * 31 + n(3)) * 24 + n(6)) * 3600 + n(9) * 60 + n(12)
}

#[test]
fn lines_are_in_time_order_and_responses_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TimelineConfig {
        tokens_per_second: 5.0, // slow: long requests overlap later ones
        ..Default::default()
    };
    convert(dir.path(), 40, &cfg);
    let text = std::fs::read_to_string(dir.path().join("server_qwen-8b.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines
        .windows(2)
        .all(|p| stamp_secs(p[0]) <= stamp_secs(p[1])));
    // some request is received between another one's request and response lines
    let mut open = 0usize;
    let mut max_open = 0;
    for l in &lines {
        if l.contains("] Received request ") {
            open += 1;
        } else if l.contains(" INFO ") && l.contains("] Generated response ") {
            open -= 1;
        }
        max_open = max_open.max(open);
    }
    assert!(
        max_open >= 2,
        "concurrent requests interleave (max {max_open} open)"
    );
    assert_eq!(open, 0);
}

/// Replace the values in a request-logger line by placeholders.
fn shape(line: &str) -> String {
    let subs = [
        (r"pid=\d+", "pid=P"),
        (r"\d\d-\d\d \d\d:\d\d:\d\d", "MM-DD HH:MM:SS"),
        (r"chatcmpl-[0-9a-f]{32}", "ID"),
        (r"\[[0-9, ]*\]", "[IDS]"),
        (
            r#"(prompt|output): ('([^'\\]|\\.)*'|"([^"\\]|\\.)*")"#,
            "$1: REPR",
        ),
        (r"max_tokens=\d+", "max_tokens=N"),
    ];
    let mut s = line.to_string();
    for (re, to) in subs {
        s = regex::Regex::new(re)
            .unwrap()
            .replace_all(&s, to)
            .into_owned();
    }
    s
}

#[test]
fn lines_have_the_shape_of_the_vllm_sample() {
    let sample = std::fs::read_to_string(repo(
        "data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log",
    ))
    .unwrap();
    let sample: Vec<String> = sample
        .lines()
        .filter(|l| l.contains("request_logger.py"))
        .take(4)
        .map(shape)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    convert(dir.path(), 3, &TimelineConfig::default());
    let ours = std::fs::read_to_string(dir.path().join("server_qwen-8b.log")).unwrap();
    // the start-up line first (vLLM's `non-default args`), then the request logger's lines
    assert!(ours.lines().next().unwrap().contains(
        "non-default args: {'model_tag': 'Qwen/Qwen3-8B', 'model': 'Qwen/Qwen3-8B', \
         'tokenizer': 'o200k_base', "
    ));
    let ours: Vec<String> = ours.lines().skip(1).take(4).map(shape).collect();
    assert_eq!(ours, sample);
    assert!(ours[0]
        .contains("details: prompt: REPR, prompt_token_ids: [IDS], prompt_embeds shape: None."));
}
