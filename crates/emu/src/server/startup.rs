//! What the server writes and shows once at start: vLLM's startup log lines and the labels of
//! `vllm:cache_config_info`.

use std::net::SocketAddr;

use super::{ServerConfig, VLLM_VERSION};
use inferencelab_trace::vllm_log::write::{LogFormat, Stamp};

/// `vllm:cache_config_info`'s labels: vLLM 0.32's CacheConfig fields, ours where we have them.
pub(super) fn cache_config_labels(c: &ServerConfig) -> Vec<(String, String)> {
    let e = &c.engine;
    let tokens = e.num_gpu_blocks.saturating_mul(e.block_size as u64);
    let known: [(&str, String); 8] = [
        ("block_size", e.block_size.to_string()),
        ("effective_attention_block_size", e.block_size.to_string()),
        ("enable_prefix_caching", "True".into()),
        ("num_gpu_blocks", e.num_gpu_blocks.to_string()),
        ("kv_cache_size_tokens", tokens.to_string()),
        (
            "kv_cache_max_concurrency",
            format!("{}", tokens as f64 / c.max_model_len.max(1) as f64),
        ),
        ("prefix_caching_hash_algo", "sha256".into()),
        ("user_specified_block_size", "True".into()),
    ];
    let rest: [(&str, &str); 28] = [
        ("_block_size_resolved", "True"),
        ("cache_dtype", "auto"),
        ("cache_hit_alignment_tokens", "None"),
        ("enable_mamba_shared_prefix_checkpoint", "False"),
        ("gpu_memory_utilization", "0.9"),
        ("hash_block_size", "None"),
        ("is_attention_free", "False"),
        ("kv_cache_dtype_skip_layers", "[]"),
        ("kv_cache_layout", "None"),
        ("kv_cache_memory_bytes", "None"),
        ("kv_offloading_backend", "native"),
        ("kv_offloading_size", "None"),
        ("kv_sharing_fast_prefill", "False"),
        ("mamba_block_size", "None"),
        ("mamba_cache_dtype", "auto"),
        ("mamba_cache_mode", "none"),
        ("mamba_page_size_padded", "None"),
        ("mamba_ssm_cache_dtype", "auto"),
        ("num_cpu_blocks", "None"),
        ("num_gpu_blocks_override", "None"),
        ("prefix_cache_retention_interval", "0"),
        ("prefix_match_unit", "None"),
        ("replayssm_buffer_len", "16"),
        ("skip_page_size_padded", "None"),
        ("sliding_window", "None"),
        ("swa_bounded_replay", "True"),
        ("use_kda_recoverssm", "False"),
        ("use_replayssm", "False"),
    ];
    known
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(
            rest.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .collect()
}

pub(super) fn startup_lines(
    f: &LogFormat,
    at: Stamp,
    c: &ServerConfig,
    addr: SocketAddr,
) -> String {
    let e = &c.engine;
    let mut s = f.info(
        at,
        "entrypoints/openai/api_server.py:1839",
        &format!("vLLM API server version {VLLM_VERSION} (inferencelab emulator)"),
    );
    s.push_str(&f.info(
        at,
        "v1/core/kv_cache_utils.py:1087",
        &format!(
            "GPU KV cache size: {} tokens ({} blocks of {}; eviction policy {})",
            e.num_gpu_blocks.saturating_mul(e.block_size as u64),
            e.num_gpu_blocks,
            e.block_size,
            e.gpu_policy
        ),
    ));
    if let Some(l) = &e.lmcache {
        s.push_str(&f.info(
            at,
            "distributed/kv_transfer/kv_connector/factory.py:53",
            &format!(
                "Creating v1 connector with name: LMCacheConnectorV1 (chunk_size {}, {} CPU \
                 chunks, cache_policy {})",
                l.chunk_size,
                l.num_chunks,
                l.policy.name().to_uppercase()
            ),
        ));
    }
    s.push_str(&f.info(
        at,
        "entrypoints/openai/api_server.py:1912",
        &format!("Starting vLLM API server 0 on http://{addr}"),
    ));
    s
}
