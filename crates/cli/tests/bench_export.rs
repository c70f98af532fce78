//! `bench --input-file LOOKUP_LOG --export-custom-dataset FILE` (issue 16): an LMCache
//! lookup-hash log as a `vllm bench serve --dataset-name custom` JSONL with its prefix structure.

use std::path::Path;
use std::process::Command;

mod common;

/// Three lookups of 4-token chunks: [a b] + 2 tail tokens, [a] + 2, [a b] exactly.
const LOG: &str = r#"{"chunk_hashes":["0xa","0xb"],"chunk_size":4,"dtypes":["bfloat16"],"model_name":"m","request_id":"r1","seq_len":10,"shapes":[[2,4,8]],"timestamp":1.0}
{"chunk_hashes":["0xa"],"chunk_size":4,"dtypes":["bfloat16"],"model_name":"m","request_id":"r2","seq_len":6,"shapes":[[2,4,8]],"timestamp":2.0}
{"chunk_hashes":["0xa","0xb"],"chunk_size":4,"dtypes":["bfloat16"],"model_name":"m","request_id":"r3","seq_len":8,"shapes":[[2,4,8]],"timestamp":3.0}
"#;

fn export(dir: &Path, extra: &[&str]) -> (Vec<serde_json::Value>, String) {
    let log = dir.join("lookup_hashes_20260101_000000_000000.jsonl");
    std::fs::write(&log, LOG).unwrap();
    let out = dir.join("dataset.jsonl");
    let run = Command::new(common::BIN)
        .current_dir(dir)
        .args(["bench", "--input-file"])
        .arg(&log)
        .arg("--export-custom-dataset")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{stderr}");
    let lines = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, stderr)
}

fn words(v: &serde_json::Value) -> Vec<String> {
    // every token is one ` word` of the vocabulary
    v["prompt"]
        .as_str()
        .unwrap()
        .split(' ')
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
fn a_lookup_log_becomes_a_custom_dataset_with_its_shared_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, stderr) = export(dir.path(), &[]);
    assert_eq!(lines.len(), 3);
    let w: Vec<Vec<String>> = lines.iter().map(words).collect();
    assert_eq!(
        w.iter().map(Vec::len).collect::<Vec<_>>(),
        [10, 6, 8],
        "seq_len tokens each"
    );
    assert_eq!(w[0][..8], w[2][..8], "the same two chunks");
    assert_eq!(w[0][..4], w[1][..4], "the same first chunk");
    assert_ne!(
        w[0][4..6],
        w[1][4..6],
        "the unfull tails are each request's own"
    );
    for l in &lines {
        assert_eq!(l["output_tokens"], 128, "LMCache's gen-dataset default");
        assert_eq!(l.as_object().unwrap().len(), 2, "{l}");
    }
    assert!(
        stderr.contains("3 prompts, 24 prompt tokens (4-token chunks)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("note:"),
        "words re-tokenize exactly: {stderr}"
    );

    // the same log again: the same file
    let (again, _) = export(dir.path(), &[]);
    assert_eq!(again, lines);
}

#[test]
fn output_length_and_tokenizer_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, stderr) = export(
        dir.path(),
        &["--custom-output-len", "7", "--tokenizer", "o200k-chatml"],
    );
    assert!(lines.iter().all(|l| l["output_tokens"] == 7));
    assert!(stderr.contains("o200k_base"), "{stderr}");
    assert!(!stderr.contains("note:"), "{stderr}");
    let w: Vec<Vec<String>> = lines.iter().map(words).collect();
    assert_eq!(w[0][..8], w[2][..8]);
    assert_eq!(w[0].len(), 10);
}

#[test]
fn the_export_needs_an_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(common::BIN)
        .current_dir(dir.path())
        .args(["bench", "--export-custom-dataset", "x.jsonl"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--input-file"));
}
