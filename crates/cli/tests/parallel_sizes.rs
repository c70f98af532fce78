//! `simulate --tensor-parallel-size/--pipeline-parallel-size`: GiB sizes are one rank's, as in
//! vLLM and LMCache 0.5.6 (chunks per GiB measured with LMCache's own allocator: qwen-8b 28, 56,
//! 113 at TP 1, 2, 4; DeepSeek-V2-Lite, MLA, 134 at TP 1 and 2).

use std::process::Command;

use serde_json::Value;

mod common;

fn sizes(args: &[&str]) -> (u64, u64) {
    let log = common::repo("data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN)
        .current_dir(dir.path())
        .args(["simulate", "--input-file"])
        .arg(&log)
        .args(["--json", "-q"])
        .args(["--gpu-cache-gb", "1", "--cpu-cache-gb", "1"])
        .args(args)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &doc["results"][0];
    (
        row["gpu_blocks"].as_u64().unwrap(),
        row["cpu_chunks"].as_u64().unwrap(),
    )
}

#[test]
fn tensor_parallel_ranks_hold_their_share_of_the_kv_heads() {
    // 1 GiB / (36 layers x 8 KV heads x 128 x 2 (K, V) x 2 B x 16 tokens) = 455 GPU blocks
    assert_eq!(sizes(&[]), (455, 28));
    assert_eq!(sizes(&["--tensor-parallel-size", "2"]), (910, 56));
    assert_eq!(sizes(&["--tensor-parallel-size", "4"]), (1820, 113));
}

#[test]
fn an_mla_latent_is_not_split_over_tensor_parallel_ranks() {
    for tp in ["1", "2"] {
        let (_, cpu) = sizes(&["-m", "deepseek-v2-lite", "--tensor-parallel-size", tp]);
        assert_eq!(cpu, 134, "TP {tp}");
    }
}

#[test]
fn pipeline_stages_hold_their_share_of_the_layers() {
    // 36 layers over 4 stages: 9 each, a quarter of the bytes per token
    assert_eq!(sizes(&["--pipeline-parallel-size", "4"]), (1820, 113));
}
