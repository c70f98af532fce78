//! Every fixture through `read_trace` with format detection; the tiny workload read from every
//! format it is written in gives the same requests and the same block structure; every reader's
//! output survives a native round trip; and the real shared data (when present) loads with the
//! numbers its README states.

use std::path::{Path, PathBuf};

use inferencelab_trace::readers::{native, parse_str};
use inferencelab_trace::{
    read_trace, BlockedTrace, Blocking, Content, Format, ReadOptions, Request, Trace,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Trace {
    read_trace(&fixture(name), &ReadOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ids(r: &Request) -> &[u64] {
    match &r.content {
        Content::HashIds(ids) => ids,
        c => panic!("{c:?}"),
    }
}

fn tokens(r: &Request) -> &[u32] {
    match &r.content {
        Content::Tokens(t) => t,
        c => panic!("{c:?}"),
    }
}

#[test]
fn every_fixture_is_detected_and_read() {
    let cases = [
        ("mooncake_small.jsonl", Format::Mooncake, 30),
        ("azure_small.csv", Format::Azure, 20),
        ("bailian_small.jsonl", Format::Bailian, 20),
        ("weka_small.json", Format::Weka, 7),
        ("tiny_weka", Format::Weka, 5),
        ("vllm_new_small.log", Format::VllmLog, 5),
        ("vllm_old_small.log", Format::VllmLog, 5),
        ("vllm_truncated.log", Format::VllmLog, 5),
        ("vllm_lmcache.log", Format::VllmLog, 5),
        ("tiny.native.jsonl", Format::Native, 5),
        ("tiny_bailian.jsonl", Format::Bailian, 5),
        ("tiny_azure.csv", Format::Azure, 5),
    ];
    for (name, format, n) in cases {
        let t = read(name);
        assert_eq!(t.format, Some(format), "{name}");
        assert_eq!(t.requests.len(), n, "{name}");
        assert_eq!(t.source, fixture(name), "{name}");
        assert_eq!(t.skipped, 0, "{name}");
    }
}

#[test]
fn mooncake_fixture_first_values() {
    let t = read("mooncake_small.jsonl");
    let r = &t.requests[0];
    assert_eq!(
        (r.timestamp, r.input_length, r.output_length),
        (0.0, 40160, 6)
    );
    assert_eq!(ids(r).len(), 79);
    assert_eq!(&ids(r)[..3], [0, 1, 2]);
    assert_eq!(t.requests[1].input_length, 36640);
    assert_eq!(t.block_size, Some(512));
}

#[test]
fn azure_fixture_first_values() {
    let t = read("azure_small.csv");
    let r = &t.requests[1];
    assert!((r.timestamp - 4.314579).abs() < 1e-9, "{}", r.timestamp);
    assert_eq!((r.input_length, r.output_length), (396, 109));
    assert!(!t.has_reuse_info());
    assert!(t.notes[0].contains("no prefix-reuse information"));
}

#[test]
fn bailian_fixture_first_values() {
    let t = read("bailian_small.jsonl");
    let r = &t.requests[0];
    assert_eq!(r.id, "5000");
    assert_eq!(
        (r.timestamp, r.input_length, r.output_length),
        (1.002, 329, 28)
    );
    assert_eq!(ids(r).len(), 21);
    assert_eq!(r.kind.as_deref(), Some("text"));
    let convs: std::collections::BTreeSet<_> =
        t.requests.iter().filter_map(|r| r.conversation).collect();
    assert_eq!(convs.len(), 5);
    assert_eq!(t.requests.iter().map(|r| r.turn).max(), Some(4));
    // turns of one conversation share their prefix ids
    let c0: Vec<&Request> = t
        .requests
        .iter()
        .filter(|r| r.conversation == Some(0))
        .collect();
    assert!(c0.len() > 1);
    assert_eq!(ids(c0[1])[..18], ids(c0[0])[..18]);
}

#[test]
fn weka_fixture_flattens_its_subagent() {
    let t = read("weka_small.json");
    let got: Vec<_> = t
        .requests
        .iter()
        .map(|r| (r.id.as_str(), r.timestamp, r.turn))
        .collect();
    assert_eq!(
        got,
        [
            ("weka_small:0", 0.0, 0),
            ("weka_small:1.0", 5.0, 1),
            ("weka_small:2", 10.0, 2),
            ("weka_small:1.1", 10.5, 3),
            ("weka_small:1.2", 15.6, 4),
            ("weka_small:3", 29.4, 5),
            ("weka_small:4", 48.9, 6),
        ]
    );
    assert_eq!(t.requests[0].input_length, 764);
    assert_eq!(ids(&t.requests[0]).len(), 11);
    assert_eq!(t.requests[0].finish_time, Some(1.5));
    assert_eq!(t.block_size, Some(64));
    assert!(!t.partial_last_block);
}

#[test]
fn vllm_fixtures_notes_and_lmcache() {
    let t = read("vllm_new_small.log");
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    // the second line with its stamp: a microsecond after it
    assert_eq!(t.requests[2].finish_time, Some(3.000001));
    assert!(t.lmcache.is_empty());

    let t = read("vllm_old_small.log");
    assert!(t.requests.iter().all(|r| r.finish_time.is_none()));
    assert!(t.notes[0].starts_with("5 requests have no logged output token ids"));

    let t = read("vllm_truncated.log");
    assert!(t.requests.iter().all(|r| r.input_length == 32));
    let note = t
        .notes
        .iter()
        .find(|n| n.contains("--max-log-len 32"))
        .expect("truncation note");
    assert!(
        note.starts_with("5 of 5 requests log exactly 32 prompt token ids"),
        "{note}"
    );

    let t = read("vllm_lmcache.log");
    assert_eq!(t.lmcache.len(), 5);
    assert!(t.lmcache.iter().all(|l| l.matched));
    let ids: Vec<&str> = t.requests.iter().map(|r| r.id.as_str()).collect();
    assert!(t
        .lmcache
        .iter()
        .all(|l| ids.contains(&l.request_id.as_str())));
    assert_eq!(t.lmcache[1].engine_computed_tokens, None);
    assert_eq!(t.lmcache[2].engine_computed_tokens, Some(32));
    assert_eq!(t.lmcache[3].need_to_load, 32);
}

/// Block keys of a trace at `block_size`, full blocks only: equal for every format of one
/// workload when the formats agree on which prefixes are equal.
fn keys(t: &Trace, block_size: u32) -> Vec<Vec<u32>> {
    let b = BlockedTrace::build(
        t,
        Blocking {
            block_size,
            include_partial: false,
        },
    )
    .unwrap();
    (0..b.num_requests())
        .map(|i| b.request(i).to_vec())
        .collect()
}

#[test]
fn the_tiny_workload_is_the_same_in_every_format() {
    let reference = read("vllm_new_small.log");
    let shape = |t: &Trace| -> Vec<(f64, u32, u32)> {
        t.requests
            .iter()
            // to the millisecond: lines that share a vLLM stamp are a microsecond apart, and
            // the formats write different numbers of lines
            .map(|r| {
                (
                    (r.timestamp * 1e3).round() / 1e3,
                    r.input_length,
                    r.output_length,
                )
            })
            .collect()
    };
    for name in [
        "vllm_old_small.log",
        "vllm_lmcache.log",
        "tiny.native.jsonl",
        "tiny_bailian.jsonl",
        "tiny_weka",
        "tiny_azure.csv",
    ] {
        let t = read(name);
        assert_eq!(shape(&t), shape(&reference), "{name}");
        if t.has_reuse_info() {
            for bs in [16, 32, 48] {
                assert_eq!(keys(&t, bs), keys(&reference, bs), "{name} at {bs}");
            }
        }
    }
    // the native fixture is exactly what the vLLM reader makes of the log, but for the
    // microseconds that keep lines sharing a stamp in order
    let stamps = |t: Trace| -> Vec<_> {
        t.requests
            .into_iter()
            .map(|mut r| {
                r.timestamp = (r.timestamp * 1e3).round() / 1e3;
                r.finish_time = r.finish_time.map(|f| (f * 1e3).round() / 1e3);
                r
            })
            .collect()
    };
    assert_eq!(stamps(read("tiny.native.jsonl")), stamps(reference.clone()));
    // a shared system prompt and growing conversations: real reuse at 16
    let k = keys(&reference, 16);
    assert_eq!(
        k[1][0], k[0][0],
        "system prompt block shared across conversations"
    );
    assert_eq!(k[2][..2], k[0][..2], "turn 2 of A extends turn 1");
    let bailian = read("tiny_bailian.jsonl");
    let turns: Vec<_> = bailian
        .requests
        .iter()
        .map(|r| (r.conversation, r.turn))
        .collect();
    assert_eq!(
        turns,
        [
            (Some(0), 0),
            (Some(1), 0),
            (Some(0), 1),
            (Some(1), 1),
            (Some(0), 2)
        ]
    );
    let weka = read("tiny_weka");
    assert_eq!(
        weka.requests
            .iter()
            .map(|r| (r.conversation, r.turn))
            .collect::<Vec<_>>(),
        turns
    );
}

fn round_trip(t: &Trace) -> Trace {
    let mut buf = Vec::new();
    native::write(t, &mut buf).unwrap();
    let text = std::str::from_utf8(&buf).unwrap();
    parse_str(
        Format::Native,
        Path::new("rt.jsonl"),
        text,
        &ReadOptions::default(),
    )
    .unwrap()
}

#[test]
fn every_fixture_survives_a_native_round_trip() {
    for name in [
        "mooncake_small.jsonl",
        "azure_small.csv",
        "bailian_small.jsonl",
        "weka_small.json",
        "tiny_weka",
        "vllm_new_small.log",
        "vllm_old_small.log",
        "vllm_truncated.log",
        "vllm_lmcache.log",
        "tiny.native.jsonl",
    ] {
        let t = read(name);
        let back = round_trip(&t);
        assert_eq!(back.requests, t.requests, "{name}");
        assert_eq!(back.block_size, t.block_size, "{name}");
        assert_eq!(back.partial_last_block, t.partial_last_block, "{name}");
        assert_eq!(back.notes, t.notes, "{name}");
        assert_eq!(back.format, Some(Format::Native));
        let again = round_trip(&back);
        assert_eq!(again.requests, t.requests, "{name} twice");
    }
}

#[test]
fn token_contents_survive_reading() {
    let t = read("vllm_new_small.log");
    assert_eq!(tokens(&t.requests[0]).len(), 34);
    assert_eq!(tokens(&t.requests[0])[..20], tokens(&t.requests[1])[..20]);
}

/// The shared real data, when this machine has it (skipped with a message otherwise).
#[test]
fn real_shared_data_loads() {
    let root = Path::new("/work/shared/data");
    if !root.is_dir() {
        eprintln!("skipping: {} is not here", root.display());
        return;
    }
    let opts = ReadOptions::default();
    let mooncake = root.join("mooncake/synthetic_trace.jsonl");
    if mooncake.is_file() {
        let t = read_trace(&mooncake, &opts).unwrap();
        assert_eq!(t.format, Some(Format::Mooncake));
        assert_eq!(t.requests.len(), 3_993);
        let refs: usize = t.requests.iter().map(|r| ids(r).len()).sum();
        assert_eq!(refs, 121_877);
    } else {
        eprintln!("skipping: {} is not here", mooncake.display());
    }
    let log = root.join("vllm-logs/server_vllm-0.33_synthetic_200req.log");
    if log.is_file() {
        let t = read_trace(&log, &opts).unwrap();
        assert_eq!(t.format, Some(Format::VllmLog));
        assert_eq!(t.requests.len(), 200);
        assert!(t.notes.is_empty(), "{:?}", t.notes);
        assert!(t
            .requests
            .iter()
            .all(|r| r.finish_time.is_some_and(|f| f >= r.timestamp)));
        assert!(t
            .requests
            .windows(2)
            .all(|w| w[0].timestamp <= w[1].timestamp));
        assert_eq!(t.requests.iter().map(|r| r.input_length).max(), Some(3557));
    } else {
        eprintln!("skipping: {} is not here", log.display());
    }
    let weka = root.join("weka-agentic");
    if weka.is_dir() {
        let mut total = 0;
        let mut files: Vec<_> = std::fs::read_dir(&weka)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in &files {
            let t = read_trace(f, &opts).unwrap();
            assert_eq!(t.format, Some(Format::Weka), "{}", f.display());
            assert!(!t.requests.is_empty());
            total += t.requests.len();
        }
        let all = read_trace(&weka, &opts).unwrap();
        assert_eq!(all.requests.len(), total);
        assert_eq!(total, 20 + 6 + 48 + 143);
        assert_eq!(all.block_size, Some(64));
        let convs: std::collections::BTreeSet<_> =
            all.requests.iter().filter_map(|r| r.conversation).collect();
        assert_eq!(convs.len(), files.len());
    } else {
        eprintln!("skipping: {} is not here", weka.display());
    }
    for (name, rows) in [
        ("azure-llm-2023/AzureLLMInferenceTrace_conv.csv", 19_366),
        ("azure-llm-2023/AzureLLMInferenceTrace_code.csv", 8_819),
    ] {
        let p = root.join(name);
        if p.is_file() {
            let t = read_trace(&p, &opts).unwrap();
            assert_eq!(t.requests.len(), rows, "{name}");
        } else {
            eprintln!("skipping: {} is not here", p.display());
        }
    }
}

#[test]
fn forced_formats_and_directories() {
    let opts = ReadOptions {
        format: Some(Format::Bailian),
        ..Default::default()
    };
    // a directory read as another format is a directory of rotated files, one stream
    let err = read_trace(&fixture("tiny_weka"), &opts).unwrap_err();
    assert!(
        err.to_string()
            .contains("tiny_weka:1: not a Bailian record"),
        "{err}"
    );
    let err = read_trace(&fixture("vllm_new_small.log"), &opts).unwrap_err();
    assert!(
        err.to_string()
            .contains("vllm_new_small.log:1: not a Bailian record"),
        "{err}"
    );
}

/// Rewrites the native fixture from the vLLM log (run with `--ignored` after a reader change).
#[test]
#[ignore]
fn regenerate_native_fixture() {
    let t = read("vllm_new_small.log");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny.native.jsonl");
    let old = std::fs::read_to_string(&path).unwrap();
    let source = old.lines().next().unwrap().to_string();
    let mut buf = Vec::new();
    native::write(&t, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[0] = &source;
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}
