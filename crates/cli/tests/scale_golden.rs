//! Issue 19: the streaming and compressed readers must not move a single figure. `simulate`'s
//! figures on every bundled trace and format, at a few capacities and policies, against golden
//! copies taken before the readers changed (`fixtures/scale_golden.json`), and the same figures
//! again from gzip and zstd copies of each input.
//!
//! Regenerate the golden file (only when a figure is meant to move, saying why in the commit):
//! `INFERENCELAB_UPDATE_GOLDEN=1 cargo test -p inferencelab --test scale_golden`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

mod common;
use common::repo;

fn golden_path() -> PathBuf {
    common::fixture("scale_golden.json")
}

/// The figures of one run that must never move: what hit, what was evicted, what was counted.
const ROW_FIELDS: [&str; 16] = [
    "policy",
    "gpu_blocks",
    "requests",
    "prompt_tokens",
    "block_refs",
    "chunk_refs",
    "gpu_hit_tokens",
    "gpu_hit_blocks",
    "gpu_evictions",
    "gpu_rejections",
    "cpu_hit_tokens",
    "cpu_evictions",
    "disk_hit_tokens",
    "preemptions",
    "queued_requests",
    "answer_sources",
];

fn simulate(input: &Path, args: &[&str]) -> Value {
    let input = ["--input-file", input.to_str().unwrap()];
    let doc = common::simulate_json_in(&repo("."), &[&input[..], args, &["--quiet"]].concat());
    let rows: Vec<Value> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            ROW_FIELDS
                .iter()
                .map(|&k| (k.to_string(), r[k].clone()))
                .collect::<serde_json::Map<_, _>>()
                .into()
        })
        .collect();
    json!({
        "requests": doc["input"]["requests"],
        "prompt_tokens": doc["input"]["prompt_tokens"],
        "distinct_blocks": doc["input"]["distinct_blocks"],
        "block_refs": doc["input"]["block_refs"],
        "rows": rows,
    })
}

/// Every bundled input (the `data/` traces, the reader fixtures, `convert`'s log and native trace
/// of the bundled CSV) with the flags of a few points: LRU and FIFO, the oracles (Belady and
/// `ideal` need next-use annotations), both schedules, with and without the LMCache tier.
fn cases(converted: &Path) -> Vec<(String, PathBuf, Vec<&'static str>)> {
    let trace_fx = |f: &str| repo(&format!("crates/trace/tests/fixtures/{f}"));
    let log = converted.join("server_qwen-8b.log");
    let native = converted.join("trace_qwen-8b.jsonl");
    let c =
        |name: &str, path: PathBuf, args: &[&'static str]| (name.to_string(), path, args.to_vec());
    vec![
        c(
            "mooncake",
            repo("data/traces/mooncake/synthetic_trace.jsonl"),
            &["-p", "lru,belady,ideal", "--gpu-blocks", "1000,10000"],
        ),
        c(
            "mooncake_gpu_only_1024",
            repo("data/traces/mooncake/synthetic_trace.jsonl"),
            &[
                "-p",
                "fifo,belady",
                "--gpu-blocks",
                "500,5000",
                "--no-cpu-tier",
                "--block-size",
                "1024",
            ],
        ),
        c(
            "vllm_200req",
            repo("data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log"),
            &["-p", "lru,belady,ideal", "--gpu-blocks", "200,2000"],
        ),
        c(
            "vllm_200req_schedule_vllm",
            repo("data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log"),
            &[
                "-p",
                "lru",
                "--gpu-blocks",
                "300,3000",
                "--schedule",
                "vllm",
            ],
        ),
        c(
            "vllm_200req_abstract_32",
            repo("data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log"),
            &[
                "-p",
                "lru,belady",
                "--gpu-blocks",
                "100,1000",
                "--gpu-model",
                "abstract",
                "--block-size",
                "32",
            ],
        ),
        c(
            "azure_conv",
            repo("data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv.csv"),
            &["-p", "lru", "--gpu-blocks", "1000"],
        ),
        c(
            "weka_dir",
            repo("data/traces/weka-agentic"),
            &["-p", "lru,belady,ideal", "--gpu-blocks", "500,5000"],
        ),
        c(
            "weka_one",
            repo("data/traces/weka-agentic/trace_0074.json"),
            &["-p", "lru", "--gpu-blocks", "300"],
        ),
        c(
            "converted_log",
            log,
            &["-p", "lru,belady,ideal", "--gpu-blocks", "500,5000,50000"],
        ),
        c(
            "converted_native",
            native,
            &["-p", "lru,belady,ideal", "--gpu-blocks", "500,5000,50000"],
        ),
        c(
            "fixture_bailian",
            trace_fx("bailian_small.jsonl"),
            &["-p", "lru,belady", "--gpu-blocks", "20,200"],
        ),
        c(
            "fixture_mooncake",
            trace_fx("mooncake_small.jsonl"),
            &["-p", "lru,belady", "--gpu-blocks", "20,200"],
        ),
        c(
            "fixture_native",
            trace_fx("tiny.native.jsonl"),
            &["-p", "lru,belady", "--gpu-blocks", "4,40"],
        ),
        c(
            "fixture_vllm_old",
            trace_fx("vllm_old_small.log"),
            &["-p", "lru,ideal", "--gpu-blocks", "4,40"],
        ),
        c(
            "fixture_vllm_new",
            trace_fx("vllm_new_small.log"),
            &["-p", "lru,ideal", "--gpu-blocks", "4,40"],
        ),
        c(
            "fixture_vllm_lmcache",
            trace_fx("vllm_lmcache.log"),
            &["-p", "lru", "--gpu-blocks", "4,40"],
        ),
        c(
            "fixture_weka_dir",
            trace_fx("tiny_weka"),
            &["-p", "lru,belady", "--gpu-blocks", "4,40"],
        ),
        c(
            "fixture_azure",
            trace_fx("azure_small.csv"),
            &["-p", "lru", "--gpu-blocks", "10"],
        ),
        c(
            "lmcache_lookup_vllm",
            repo("crates/cli/tests/fixtures/lmcache_lookup/vllm"),
            &["-p", "lru"],
        ),
        c(
            "lmcache_lookup_mooncake",
            repo("crates/cli/tests/fixtures/lmcache_lookup/mooncake"),
            &["-p", "lru"],
        ),
    ]
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn convert_demo(dir: &Path) {
    let out = common::bin()
        .current_dir(repo("."))
        .args(["convert", "data/test_data.csv", "qwen-8b", "--output-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "convert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn figures_match_the_golden_copy_taken_before_the_streaming_readers() {
    let converted = tempfile::tempdir().unwrap();
    convert_demo(converted.path());
    let mut got = serde_json::Map::new();
    for (name, path, args) in cases(converted.path()) {
        got.insert(name, simulate(&path, &args));
    }
    let got = Value::Object(got);
    if std::env::var_os("INFERENCELAB_UPDATE_GOLDEN").is_some() {
        let mut f = std::fs::File::create(golden_path()).unwrap();
        writeln!(f, "{}", serde_json::to_string_pretty(&got).unwrap()).unwrap();
        return;
    }
    let want: Value = serde_json::from_slice(&std::fs::read(golden_path()).unwrap()).unwrap();
    for (name, w) in want.as_object().unwrap() {
        assert_eq!(&got[name], w, "case {name} moved");
    }
    assert_eq!(
        got.as_object().unwrap().len(),
        want.as_object().unwrap().len(),
        "every case has a golden copy"
    );
}

/// The same figures from gzip and zstd copies of every file input (names without a `.gz` or
/// `.zst`: compression is told by magic bytes), from a directory of rotated copies of the
/// converted log, and from a gzip stream on stdin.
#[test]
fn compressed_rotated_and_piped_inputs_give_the_golden_figures() {
    let want: Value = serde_json::from_slice(&std::fs::read(golden_path()).unwrap()).unwrap();
    let converted = tempfile::tempdir().unwrap();
    convert_demo(converted.path());
    let packed = tempfile::tempdir().unwrap();
    let mut files = 0;
    for (name, path, args) in cases(converted.path()) {
        if !path.is_file() {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&path).unwrap();
        let file_name = path.file_name().unwrap().to_owned();
        for (kind, data) in [("gzip", gzip(&bytes)), ("zstd", zstd(&bytes))] {
            let dir = packed.path().join(format!("{name}-{kind}"));
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join(&file_name);
            std::fs::write(&p, data).unwrap();
            assert_eq!(
                simulate(&p, &args),
                want[&name],
                "{kind} copy of case {name}"
            );
        }
    }
    assert!(files >= 15, "only {files} file inputs");

    // logrotate's layout: server.log.2.gz (oldest), server.log.1.zst, server.log (newest)
    let log = std::fs::read_to_string(converted.path().join("server_qwen-8b.log")).unwrap();
    let cut = |frac: usize| log[..log.len() * frac / 3].rfind('\n').unwrap() + 1;
    let (a, b) = (cut(1), cut(2));
    let rotated = packed.path().join("rotated");
    std::fs::create_dir_all(&rotated).unwrap();
    std::fs::write(rotated.join("server.log.2.gz"), gzip(&log.as_bytes()[..a])).unwrap();
    std::fs::write(
        rotated.join("server.log.1.zst"),
        zstd(&log.as_bytes()[a..b]),
    )
    .unwrap();
    std::fs::write(rotated.join("server.log"), &log[b..]).unwrap();
    let args = ["-p", "lru,belady,ideal", "--gpu-blocks", "500,5000,50000"];
    assert_eq!(
        simulate(&rotated, &args),
        want["converted_log"],
        "rotated directory"
    );

    // stdin: `zcat`-free piping of a compressed log
    let out_dir = tempfile::tempdir().unwrap();
    let out = common::bin()
        .args(["simulate", "--input-file", "-", "--json", "--quiet"])
        .args(args)
        .arg("--output")
        .arg(out_dir.path().join("s.json"))
        .write_stdin(gzip(log.as_bytes()))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["results"][0]["gpu_hit_tokens"],
        want["converted_log"]["rows"][0]["gpu_hit_tokens"]
    );
}

/// `batch`, `mrc` and `sweep` read a vLLM log hashed at read time too (issue 19). On the bundled
/// log: mrc's LRU curve (block sizes 16 and 32) and batch's LRU figures (block sizes 16 and 32
/// from one read hashed at their gcd, LMCache chunks of 256 and 512 tokens) as the token read
/// gave them (taken with the build before the switch, 2026-12-04); and sweep, which replays cut
/// copies of the hashed trace (successive halving), runs.
#[test]
fn batch_mrc_and_sweep_read_a_vllm_log_hashed_as_the_token_read_did() {
    let log = repo("data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log");
    let run = |args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let out = common::bin()
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, out.stdout)
    };
    let log_arg = log.to_str().unwrap();
    for (bs, caps, want) in [
        ("16", "100,1000,5000", vec![70_144, 205_088, 229_088]),
        ("32", "100,1000", vec![111_040, 227_840]),
    ] {
        let args = ["mrc", "--input-file", log_arg, "--json", "--block-size", bs];
        let (_dir, stdout) = run(&[&args[..], &["--gpu-blocks", caps]].concat());
        let doc: Value = serde_json::from_slice(&stdout).unwrap();
        let hits: Vec<u64> = doc["curve"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["gpu_hit_tokens"].as_u64().unwrap())
            .collect();
        assert_eq!(hits, want, "mrc at block size {bs}");
    }
    let grid = tempfile::tempdir().unwrap();
    let yaml = grid.path().join("grid.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: t\ntraces:\n  - path: {}\n    name: vlog\ngpu_blocks: [200, 1000]\n\
             cpu_cache_gb: [0, 1]\nblock_sizes: [16, 32]\nchunk_sizes: [256, 512]\n\
             policies: [lru]\n",
            log.display()
        ),
    )
    .unwrap();
    let out_dir = grid.path().join("out");
    let (_dir, _) = run(&[
        "batch",
        "--no-plot",
        "-q",
        "--yaml",
        yaml.to_str().unwrap(),
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    let rows = std::fs::read_to_string(out_dir.join("results.jsonl")).unwrap();
    let mut got: Vec<(u64, u64, bool, u64, u64, u64)> = rows
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            assert!(r["error"].is_null(), "{l}");
            let n = |k: &str| r[k].as_u64().unwrap();
            let cpu = !r["cpu_cache_gb"].is_null();
            let chunk = n("requested_chunk_size");
            let (bs, gpu) = (n("block_size"), n("gpu_blocks"));
            (
                bs,
                chunk,
                cpu,
                gpu,
                n("gpu_hit_tokens"),
                n("cpu_hit_tokens"),
            )
        })
        .collect();
    got.sort();
    // (block size, chunk size, CPU tier, GPU blocks, GPU hit tokens, CPU hit tokens)
    let mut want = Vec::new();
    for (bs, gpu_hits) in [(16, [93_744, 218_832]), (32, [154_816, 253_888])] {
        for chunk in [256, 512] {
            let cpu_hit = match (bs, chunk) {
                (16, 256) => 58_096,
                (16, _) => 52_512,
                (_, 256) => 13_984,
                _ => 14_208,
            };
            for cpu in [false, true] {
                want.push((
                    bs,
                    chunk,
                    cpu,
                    200,
                    gpu_hits[0],
                    if cpu { cpu_hit } else { 0 },
                ));
                want.push((bs, chunk, cpu, 1000, gpu_hits[1], 0));
            }
        }
    }
    want.sort();
    assert_eq!(got, want, "batch's LRU figures");
    let (dir, _) = run(&[
        "sweep",
        "--input-file",
        log_arg,
        "--infer-conversations",
        "--budget",
        "2",
        "-q",
    ]);
    drop(dir);
}
