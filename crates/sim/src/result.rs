//! The result row of one simulation point: every figure carries the parameters it came from.

use inferencelab_cache::JudgeCounts;
use serde::{Deserialize, Serialize};

/// One window of the time series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Window start, seconds of trace time.
    pub start: f64,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub block_refs: u64,
    pub gpu_hit_blocks: u64,
    pub gpu_hit_tokens: u64,
    pub cpu_hit_tokens: u64,
    pub disk_hit_tokens: u64,
    /// (gpu + cpu + disk hit tokens) / prompt tokens in this window.
    pub token_hit_ratio: f64,
}

/// The figures of one simulation point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    // --- parameters
    pub policy: String,
    pub cpu_policy: Option<String>,
    pub hit_semantics: String,
    pub pinning: bool,
    pub model: Option<String>,
    pub block_size: u32,
    pub chunk_size: Option<u32>,
    /// GPU capacity in blocks (for `ideal`: the capacity of the grid point; the cache itself is
    /// unbounded, see `unbounded`).
    pub gpu_blocks: u64,
    pub unbounded: bool,
    pub gpu_cache_gb: Option<f64>,
    pub cpu_chunks: Option<u64>,
    pub cpu_cache_gb: Option<f64>,
    pub disk_chunks: Option<u64>,
    // --- counts
    pub requests: u64,
    pub prompt_tokens: u64,
    /// GPU blocks looked up.
    pub block_refs: u64,
    pub gpu_hit_blocks: u64,
    /// gpu_hit_blocks / block_refs.
    pub block_hit_ratio: f64,
    /// vLLM's `prefix_cache_hits`: sum over requests of min(hit_blocks*B, floor((L-1)/B)*B).
    pub gpu_hit_tokens: u64,
    /// vLLM's token-weighted hit rate: gpu_hit_tokens / prompt_tokens.
    pub token_hit_ratio: f64,
    /// LMCache chunks looked up / hit (leading run).
    pub chunk_refs: u64,
    pub cpu_hit_chunks: u64,
    /// Tokens loaded from the LMCache CPU tier beyond the GPU hit (`need to load`).
    pub cpu_hit_tokens: u64,
    pub cpu_token_hit_ratio: f64,
    pub disk_hit_tokens: u64,
    pub disk_token_hit_ratio: f64,
    /// All tiers: tokens not recomputed.
    pub prefill_tokens_saved: u64,
    pub total_token_hit_ratio: f64,
    /// Share of requests with at least one token served from cache.
    pub request_hit_rate: f64,
    pub bytes_loaded_from_cpu: Option<u64>,
    pub bytes_loaded_from_disk: Option<u64>,
    pub prefill_flops_total: Option<f64>,
    pub prefill_flops_saved: Option<f64>,
    /// prefill_flops_saved / prefill_flops_total: position-aware compute saved.
    pub compute_saved_ratio: Option<f64>,
    pub gpu_evictions: u64,
    pub cpu_evictions: u64,
    pub disk_evictions: u64,
    /// GPU admissions refused: with `--hit-semantics any`, blocks that found every slot pinned;
    /// with vLLM's rules, requests whose sequence can never fit in the pool (dropped, as vLLM
    /// refuses them).
    pub gpu_rejections: u64,
    /// `simulator` when the LMCache tier followed the rules of LMCache's own lookup-log
    /// simulator (`--lmcache-rules simulator`); absent: LMCache's engine rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmcache_rules: Option<String>,
    /// `mp` when the LMCache tier followed its multi-process server (`--lmcache-mode mp`);
    /// absent: the in-process connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmcache_mode: Option<String>,
    /// Multi-process mode: the server's L1 counters (`lmcache_mp_*` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmcache_mp: Option<LmcacheMpFigures>,
    /// How requests were scheduled (`trace` or `vllm`, prefix semantics only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The answer-block mode and how many requests took their answer blocks from each source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_blocks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_sources: Option<inferencelab_trace::AnswerSources>,
    /// GPU blocks usable for KV: vLLM's `num_gpu_blocks - 1` (block 0 is the null block).
    #[serde(default)]
    pub usable_gpu_blocks: u64,
    /// vLLM preemptions (scheduler mode).
    #[serde(default)]
    pub preemptions: u64,
    /// Requests admitted after their arrival (waiting for a step in flight, for blocks or for
    /// the token budget).
    #[serde(default)]
    pub queued_requests: u64,
    /// The engine model's queueing: median and 90th percentile of the requests' admission
    /// delay (arrival to first admission, seconds of trace time; refused requests left out).
    /// 0 where requests are admitted at arrival (`--hit-semantics any`, `--gpu-model
    /// abstract`). The names of a fleet row's (`simulate --replicas`).
    #[serde(default)]
    pub queue_delay_p50_s: f64,
    #[serde(default)]
    pub queue_delay_p90_s: f64,
    /// Most GPU blocks pinned at once.
    pub max_pinned_blocks: u64,
    /// An adaptive GPU policy's judge (`conversation_aware`, `lightgbm`): where the prediction
    /// and LRU wanted different victims, who chose, and the two experts' shadow hits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_judge: Option<JudgeCounts>,
    // --- speed
    /// Wall time of the simulation itself (parsing and preparation excluded).
    pub sim_seconds: f64,
    pub block_refs_per_second: f64,
    pub windows: Vec<Window>,
}

pub(crate) fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// LMCache's multi-process L1 over a run, under the names of the server's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LmcacheMpFigures {
    /// `lmcache_mp_lookup_requested_tokens_total`: full prompt chunks asked for, every lookup.
    pub lookup_requested_tokens: u64,
    /// `lmcache_mp_lookup_hit_tokens_total`: their leading run in L1.
    pub lookup_hit_tokens: u64,
    /// `lmcache_mp_l1_write_chunks_total`.
    pub l1_write_chunks: u64,
    /// `lmcache_mp_l1_read_chunks_total`.
    pub l1_read_chunks: u64,
    /// Chunks evicted by the watermark passes.
    pub l1_evicted_chunks: u64,
    /// Stores refused whole (not enough free L1 for all their new chunks).
    pub refused_stores: u64,
    /// `lmcache_mp_l1_usage_ratio` at the end.
    pub l1_usage_ratio: f64,
}
