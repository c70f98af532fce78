//! Turning user-level sizes (GiB or entries, "the trace's default block size") into the exact
//! numbers of a simulation point. Shared by `simulate` and `batch`, so both resolve a point the
//! same way.

use inferencelab_trace::{Content, Trace};
use serde::{Deserialize, Serialize};

use inferencelab_models::ModelSpec;

/// LMCache's default `max_local_cpu_size` (GB).
pub const LMCACHE_DEFAULT_CPU_GB: f64 = 5.0;
/// LMCache's default `chunk_size` (tokens).
pub const LMCACHE_DEFAULT_CHUNK: u32 = 256;
/// vLLM's default `--block-size` (tokens).
pub const VLLM_DEFAULT_BLOCK: u32 = 16;

/// True when the trace carries block ids (which fix the finest block size).
pub fn has_ids(trace: &Trace) -> bool {
    trace
        .requests
        .iter()
        .any(|r| matches!(r.content, Content::HashIds(_)))
}

/// vLLM's block size for token traces; the trace's own block size for id traces.
pub fn default_block_size(trace: &Trace) -> u32 {
    match trace.block_size {
        Some(native) if has_ids(trace) => native,
        _ => VLLM_DEFAULT_BLOCK,
    }
}

/// LMCache's chunk size for token traces; for id traces the smallest multiple of the trace's
/// block size that is at least LMCache's default.
pub fn default_chunk_size(trace: &Trace) -> u32 {
    match trace.block_size {
        Some(native) if has_ids(trace) => native * LMCACHE_DEFAULT_CHUNK.div_ceil(native),
        _ => LMCACHE_DEFAULT_CHUNK,
    }
}

/// A cache size as users give it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capacity {
    /// Entries (GPU blocks or LMCache chunks).
    Entries(u64),
    /// GiB of KV memory, converted with the model's bytes per token.
    Gib(f64),
}

impl Capacity {
    /// GPU blocks of `unit_tokens` tokens (one rank's memory).
    pub fn entries(self, model: &ModelSpec, unit_tokens: u32) -> u64 {
        match self {
            Capacity::Entries(n) => n,
            Capacity::Gib(g) => model.blocks_in_gib(g, unit_tokens),
        }
    }

    /// LMCache chunks of `chunk_size` tokens (one worker's pool, chunks 4 KiB-aligned as
    /// LMCache's allocator makes them).
    pub fn chunks(self, model: &ModelSpec, chunk_size: u32) -> u64 {
        match self {
            Capacity::Entries(n) => n,
            Capacity::Gib(g) => model.lmcache_chunks_in_gib(g, chunk_size),
        }
    }
}
