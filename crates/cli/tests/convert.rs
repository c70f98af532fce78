//! CLI tests of `inferencelab convert`: the real binary on the bundled demo CSV, then
//! `simulate` on what it wrote; tokenizer selection; `file:line` errors; the demo generator.
//! Every run points HF_HUB_CACHE at an empty (or prepared) directory so a developer's own
//! Hugging Face cache cannot change the results.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

mod common;
use common::repo;

const DEMO: &str = "data/test_data.csv";

fn inferencelab(hf_cache: &Path) -> Command {
    let mut c = common::bin();
    c.env("HF_HUB_CACHE", hf_cache).env_remove("HF_HOME");
    c
}

struct Converted {
    _dir: tempfile::TempDir,
    out: PathBuf,
    stderr: String,
    stdout: String,
}

fn convert(csv: &Path, model: &str, extra: &[&str], hf_cache: Option<&Path>) -> Converted {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("hf-cache");
    std::fs::create_dir_all(&empty).unwrap();
    let out = dir.path().join("logs");
    let run = inferencelab(hf_cache.unwrap_or(&empty))
        .arg("convert")
        .arg(csv)
        .arg(model)
        .args(["--tokens-per-second", "100", "--output-dir"])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "convert failed: {stderr}");
    Converted {
        _dir: dir,
        out,
        stderr,
        stdout: String::from_utf8_lossy(&run.stdout).into_owned(),
    }
}

fn simulate(input: &Path, policies: &str) -> Value {
    common::simulate_json(&[
        "--input-file",
        input.to_str().unwrap(),
        "--eviction-policy",
        policies,
        "--gpu-blocks",
        "1000",
        "--no-cpu-tier",
    ])
}

fn token_hit(doc: &Value, policy: &str) -> f64 {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["policy"] == policy)
        .unwrap_or_else(|| panic!("no {policy} row"))["token_hit_ratio"]
        .as_f64()
        .unwrap()
}

#[test]
fn demo_csv_converts_and_simulates_with_hits() {
    let c = convert(&repo(DEMO), "qwen-8b", &[], None);
    let log = c.out.join("server_qwen-8b.log");
    assert!(log.is_file() && c.out.join("trace_qwen-8b.jsonl").is_file());
    // exactly one line says the embedded tokenizer is used
    let lines: Vec<&str> = c.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", c.stderr);
    assert!(
        lines[0].contains("o200k_base") && lines[0].contains("Qwen/Qwen3-8B"),
        "{}",
        lines[0]
    );
    assert!(c.stdout.contains("200 conversations"), "{}", c.stdout);

    let doc = simulate(&log, "lru,belady,ideal");
    let (lru, belady, ideal) = (
        token_hit(&doc, "lru"),
        token_hit(&doc, "belady"),
        token_hit(&doc, "ideal"),
    );
    assert!(lru > 0.2, "multi-turn prefixes hit: lru {lru}");
    assert!(belady >= lru, "belady {belady} >= lru {lru}");
    assert!(ideal >= belady, "ideal {ideal} >= belady {belady}");
    // the native trace next to the log: the same requests, exact times instead of the log's
    // whole seconds (which move pin lifetimes a little)
    let native = simulate(&c.out.join("trace_qwen-8b.jsonl"), "lru,ideal");
    assert_eq!(token_hit(&native, "ideal"), ideal);
    assert!((token_hit(&native, "lru") - lru).abs() < 0.01);
}

/// The README's path: `convert` without the model's tokenizer.json (o200k_base ids, beyond
/// Qwen3-8B's vocabulary), then `simulate` with the default `--model qwen-8b`: no warning that
/// the log was served by another model, since its start-up line names the model and the
/// stand-in tokenizer. Another `--model` is still caught, by the model's name.
#[test]
fn simulate_on_a_converted_log_warns_only_of_another_model() {
    let c = convert(&repo(DEMO), "qwen-8b", &[], None);
    let log = c.out.join("server_qwen-8b.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.contains(
            "non-default args: {'model_tag': 'Qwen/Qwen3-8B', 'model': 'Qwen/Qwen3-8B', \
             'tokenizer': 'o200k_base', "
        ),
        "{first}"
    );
    let run = |model: &str| {
        let out = tempfile::tempdir().unwrap();
        let o = common::bin()
            .arg("simulate")
            .arg("--input-file")
            .arg(&log)
            .args(["--gpu-blocks", "1000", "-q", "--model", model, "--output"])
            .arg(out.path().join("s.json"))
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let own = run("qwen-8b");
    assert!(!own.contains("warning"), "{own}");
    let other = run("llama-8b");
    assert!(
        other.contains("warning: the log's server ran model 'Qwen/Qwen3-8B', not --model llama-8b"),
        "{other}"
    );
    assert!(!other.contains("beyond --model"), "{other}");
    // the check is not vacuous: the demo's ids do go beyond Qwen3-8B's vocabulary (151,936)...
    let ids: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split("prompt_token_ids: [").nth(1))
        .flat_map(|l| {
            l[..l.find(']').unwrap()]
                .split(", ")
                .map(|x| x.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(ids.iter().any(|&t| t >= 151_936));
    // ...and without the start-up line the same log is warned about
    let cut = c.out.join("cut.log");
    std::fs::write(&cut, text.split_once('\n').unwrap().1).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = common::bin()
        .arg("simulate")
        .arg("--input-file")
        .arg(&cut)
        .args(["--gpu-blocks", "1000", "-q", "--output"])
        .arg(out.path().join("s.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("beyond --model qwen-8b's vocabulary"),
        "{stderr}"
    );
}

const TINY_TOKENIZER: &str = r#"{"version": "1.0", "truncation": null, "padding": null,
 "added_tokens": [
  {"id": 0, "content": "<|begin_of_text|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
  {"id": 1, "content": "<|start_header_id|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
  {"id": 2, "content": "<|end_header_id|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
  {"id": 3, "content": "<|eot_id|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
 "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
 "model": {"type": "WordLevel", "unk_token": "[UNK]", "vocab": {"<|begin_of_text|>": 0,
  "<|start_header_id|>": 1, "<|end_header_id|>": 2, "<|eot_id|>": 3, "[UNK]": 4, "user": 5,
  "assistant": 6, "system": 7, "hello": 8}}}"#;

const SMALL_CSV: &str = "conversation_id,timestamp,user_message,assistant_response\n\
    c1,2025-06-02T09:00:00Z,hello there,hello\n\
    c1,2025-06-02T09:00:30Z,hello again,bye\n";

/// The first logged prompt's token ids.
fn first_prompt_ids(log: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(" details: prompt: "))
        .unwrap();
    let list = line.split("prompt_token_ids: [").nth(1).unwrap();
    let list = &list[..list.find(']').unwrap()];
    list.split(", ").map(|x| x.parse().unwrap()).collect()
}

#[test]
fn tokenizer_json_from_the_flag_and_from_the_hf_cache() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("small.csv");
    std::fs::write(&csv, SMALL_CSV).unwrap();
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(&tok, TINY_TOKENIZER).unwrap();
    // Llama 3.1 template through a word-level tokenizer: specials map to their ids, the date
    // header's words are unknown (4)
    let want_head = [0, 1, 7, 2];
    let c = convert(
        &csv,
        "llama-8b",
        &["--tokenizer", tok.to_str().unwrap()],
        None,
    );
    assert_eq!(c.stderr, "", "no fallback note with --tokenizer");
    let ids = first_prompt_ids(&c.out.join("server_llama-8b.log"));
    assert_eq!(&ids[..4], want_head);
    // the model's own tokenizer: the start-up line names the model and no other tokenizer
    let text = std::fs::read_to_string(c.out.join("server_llama-8b.log")).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.contains("'model': 'meta-llama/Llama-3.1-8B-Instruct'")
            && !first.contains("'tokenizer'"),
        "{first}"
    );
    // ... user turn ends with <|eot_id|>, then the generation prompt
    assert_eq!(&ids[ids.len() - 4..], [3, 1, 6, 2]);

    // the same file found in a Hugging Face cache layout for the model's hf_id
    let cache = dir.path().join("hub");
    let snap = cache.join("models--meta-llama--Llama-3.1-8B-Instruct/snapshots/abc123");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::copy(&tok, snap.join("tokenizer.json")).unwrap();
    let c2 = convert(&csv, "llama-8b", &[], Some(&cache));
    assert_eq!(c2.stderr, "", "found in the cache: no fallback note");
    assert_eq!(first_prompt_ids(&c2.out.join("server_llama-8b.log")), ids);
}

fn convert_fails(csv_text: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, csv_text).unwrap();
    let run = inferencelab(dir.path())
        .arg("convert")
        .arg(&csv)
        .arg("qwen-8b")
        .arg("--output-dir")
        .arg(dir.path().join("out"))
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "convert must fail");
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    // the message names the file (bad.csv:LINE: ...)
    assert!(stderr.contains("bad.csv"), "{stderr}");
    stderr
}

#[test]
fn bad_csvs_give_file_line_and_reason() {
    let e = convert_fails("id,user_message,assistant_response\n1,a,b\n", &[]);
    assert!(
        e.contains("bad.csv:1: no column \"conversation_id\"")
            && e.contains("--column-conversation"),
        "{e}"
    );
    let head = "conversation_id,timestamp,user_message,assistant_response\n";
    let e = convert_fails(
        &format!("{head}1,2025-06-02 09:00:00,hi,ok\n1,09:01,hi,ok\n"),
        &[],
    );
    assert!(
        e.contains("bad.csv:3: timestamp: \"09:01\" is not a time"),
        "{e}"
    );
    let e = convert_fails(&format!("{head}1,0,hi,ok\n2,1,,ok\n"), &[]);
    assert!(e.contains("bad.csv:3: empty user_message"), "{e}");
}

#[test]
fn mapped_columns_convert() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("mapped.csv");
    std::fs::write(
        &csv,
        "Session,Question,Answer,When\ns1,hi,hello,0\ns1,and?,bye,40\n",
    )
    .unwrap();
    let c = convert(
        &csv,
        "mistral-7b",
        &[
            "--column-conversation",
            "Session",
            "--column-user",
            "Question",
            "--column-assistant",
            "Answer",
            "--column-timestamp",
            "When",
        ],
        None,
    );
    let log = std::fs::read_to_string(c.out.join("server_mistral-7b.log")).unwrap();
    assert!(log.contains("prompt: '<s>[INST] hi[/INST]'"), "{log}");
    assert_eq!(
        log.lines().count(),
        1 + 8,
        "the start-up line, then 4 lines per request"
    );
}

#[test]
fn the_bundled_demo_csv_is_what_the_documented_command_makes() {
    let empty = tempfile::tempdir().unwrap();
    let run = inferencelab(empty.path())
        .args(["convert", "--generate-demo", "200", "--seed", "42"])
        .output()
        .unwrap();
    assert!(run.status.success());
    let bundled = std::fs::read(repo(DEMO)).unwrap();
    assert!(
        run.stdout == bundled,
        "data/test_data.csv differs from `inferencelab convert --generate-demo 200 --seed 42`; \
         regenerate it (data/README.md)"
    );
    assert!(bundled.len() < 2 << 20, "under 2 MB");
}
