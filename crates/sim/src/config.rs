//! What one simulation point is: tiers, capacities, policies, semantics and the time model.

use inferencelab_cache::PolicyConfig;
use serde::{Deserialize, Serialize};

use inferencelab_trace::AnswerBlocks;

use inferencelab_models::ModelSpec;

/// Which cached blocks count as hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HitSemantics {
    /// vLLM's rule: only the leading run of cached blocks hits.
    #[default]
    Prefix,
    /// Every cached block hits, wherever it is (a classic cache simulator on the block stream).
    Any,
}

impl std::str::FromStr for HitSemantics {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prefix" => Ok(HitSemantics::Prefix),
            "any" => Ok(HitSemantics::Any),
            _ => Err(format!(
                "unknown hit semantics '{s}'; expected prefix or any"
            )),
        }
    }
}

impl std::fmt::Display for HitSemantics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HitSemantics::Prefix => "prefix",
            HitSemantics::Any => "any",
        })
    }
}

/// One cache tier's capacity and policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierConfig {
    /// Capacity in entries (GPU blocks or LMCache chunks).
    pub capacity: u64,
    pub policy: PolicyConfig,
}

/// The simple time model used to decide how long a request's GPU blocks stay pinned when the
/// trace does not record finish times: prefill of the uncached tokens at
/// `prefill_tokens_per_s`, then `output_length` decode steps of `decode_ms_per_token`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimingModel {
    pub prefill_tokens_per_s: f64,
    pub decode_ms_per_token: f64,
}

impl Default for TimingModel {
    /// Orders of magnitude of an 8B model on one H100 at moderate batch: ~10k prefill tokens/s,
    /// ~20 ms per decode step. Coarse by design: it only decides pin lifetimes.
    fn default() -> Self {
        TimingModel {
            prefill_tokens_per_s: 10_000.0,
            decode_ms_per_token: 20.0,
        }
    }
}

/// When requests take their GPU blocks and give them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// `trace` when every request has a logged finish time, else `vllm`.
    #[default]
    Auto,
    /// Admitted at arrival (or, when the pool is full, at the first finish that makes room),
    /// finished at the logged finish time or the time model's; decode blocks are allocated
    /// when the request finishes.
    Trace,
    /// Replayed through vLLM's scheduler in virtual time (`inferencelab_engine::vllm`): token
    /// budget, chunked prefill, admission when the whole prompt fits, preemption.
    Vllm,
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Schedule::Auto),
            "trace" => Ok(Schedule::Trace),
            "vllm" => Ok(Schedule::Vllm),
            _ => Err(format!(
                "unknown schedule '{s}'; expected auto, trace or vllm"
            )),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Schedule::Auto => "auto",
            Schedule::Trace => "trace",
            Schedule::Vllm => "vllm",
        })
    }
}

/// Whose rules the LMCache tier follows (docs/semantics.md, "LMCache: engine rules and the
/// lookup-log simulator's rules").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LmcacheRules {
    /// LMCache 0.5.6's engine (`crates/engine/src/lmcache.rs`): the lookup pins and refreshes
    /// the leading run last chunk first, stores allocate every slot first and stop when nothing
    /// is evictable, a full-prompt hit recomputes one token. The default for every input.
    #[default]
    Engine,
    /// LMCache's own `lmcache tool cache-simulator` (`lmcache/tools/cache_simulator/`): one
    /// cache over chunks, every chunk of a lookup touched head first (hits refreshed, misses
    /// inserted), hit tokens = leading run x chunk size (no -1), no store truncation, no GPU
    /// tier. For parity with that tool on its lookup-hash logs.
    Simulator,
}

impl std::str::FromStr for LmcacheRules {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "engine" => Ok(LmcacheRules::Engine),
            "simulator" => Ok(LmcacheRules::Simulator),
            _ => Err(format!(
                "unknown LMCache rules '{s}'; expected engine (LMCache's engine, the default) or \
                 simulator (LMCache's `lmcache tool cache-simulator`)"
            )),
        }
    }
}

impl std::fmt::Display for LmcacheRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LmcacheRules::Engine => "engine",
            LmcacheRules::Simulator => "simulator",
        })
    }
}

/// Which LMCache the CPU tier is (docs/semantics.md, "LMCache's multi-process mode").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LmcacheMode {
    /// The in-process connector (`LMCacheConnectorV1`, `crates/engine/src/lmcache.rs`); the
    /// only one with a disk tier. The default.
    #[default]
    Inprocess,
    /// `lmcache server` + vLLM's `LMCacheMPConnector` (`crates/engine/src/lmcache_mp.rs`):
    /// L1 evicted by a watermark pass, all-or-nothing stores, lookups that do not refresh.
    Mp,
}

impl std::str::FromStr for LmcacheMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inprocess" => Ok(LmcacheMode::Inprocess),
            "mp" => Ok(LmcacheMode::Mp),
            _ => Err(format!(
                "unknown LMCache mode '{s}'; expected inprocess (LMCacheConnectorV1, the \
                 default) or mp (lmcache server + LMCacheMPConnector)"
            )),
        }
    }
}

impl std::fmt::Display for LmcacheMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LmcacheMode::Inprocess => "inprocess",
            LmcacheMode::Mp => "mp",
        })
    }
}

/// How the GPU tier follows vLLM's engine (DESIGN.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineModel {
    /// vLLM's engine rules for the GPU tier (null block, partial-tail and answer blocks,
    /// admission, preemption). Off: the abstract prefix model (LRU-style over prompt blocks, the
    /// partial last block an entry, every request admitted at arrival), the model published
    /// prefix-cache figures and `mrc` curves use.
    pub rules: bool,
    pub schedule: Schedule,
    /// Which answer blocks a request caches.
    pub answers: AnswerBlocks,
    /// vLLM `--max-num-batched-tokens` (scheduler mode).
    pub max_num_batched_tokens: u32,
    /// vLLM `--max-num-seqs` (scheduler mode).
    pub max_num_seqs: u32,
    /// Whose rules the LMCache tier follows.
    pub lmcache_rules: LmcacheRules,
    /// In-process LMCache or its multi-process server.
    pub lmcache_mode: LmcacheMode,
    /// `lmcache server --eviction-trigger-watermark` (multi-process mode).
    pub mp_trigger_watermark: f64,
    /// `lmcache server --eviction-ratio` (multi-process mode).
    pub mp_eviction_ratio: f64,
    /// Multi-process mode: L1's size in chunks, unrounded (GiB x 2^30 / chunk bytes; 0: the
    /// CPU tier's chunk count). Its usage ratio is over this.
    pub mp_l1_size_chunks: f64,
}

impl EngineModel {
    /// The engine crate's LMCache mode for this configuration.
    pub fn lmcache_engine_mode(&self) -> inferencelab_engine::LmcacheMode {
        match self.lmcache_mode {
            LmcacheMode::Inprocess => inferencelab_engine::LmcacheMode::InProcess,
            LmcacheMode::Mp => {
                inferencelab_engine::LmcacheMode::Mp(inferencelab_engine::MpEviction {
                    trigger_watermark: self.mp_trigger_watermark,
                    eviction_ratio: self.mp_eviction_ratio,
                    l1_size_chunks: self.mp_l1_size_chunks,
                })
            }
        }
    }
}

impl Default for EngineModel {
    fn default() -> Self {
        EngineModel {
            rules: true,
            schedule: Schedule::Auto,
            answers: AnswerBlocks::Auto,
            max_num_batched_tokens: 8192,
            max_num_seqs: 256,
            lmcache_rules: LmcacheRules::Engine,
            lmcache_mode: LmcacheMode::Inprocess,
            mp_trigger_watermark: 0.8,
            mp_eviction_ratio: 0.2,
            mp_l1_size_chunks: 0.0,
        }
    }
}

/// One simulation point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    pub gpu: TierConfig,
    /// LMCache's CPU tier; `None` = off.
    pub cpu: Option<TierConfig>,
    /// LMCache's local disk tier; `None` = off.
    pub disk: Option<TierConfig>,
    pub hit_semantics: HitSemantics,
    /// Pin the GPU blocks of running requests (vLLM's `ref_cnt`); off = every request finishes
    /// before the next arrives.
    pub pinning: bool,
    pub timing: TimingModel,
    /// Width of the time-series windows, seconds of trace time.
    pub window_seconds: f64,
    /// For byte and FLOP figures.
    pub model: Option<ModelSpec>,
    /// The engine rules of the GPU tier (prefix semantics only).
    #[serde(default)]
    pub engine: EngineModel,
}

impl SimConfig {
    /// A point with the GPU tier only: `capacity` entries evicted by `policy`, vLLM's prefix
    /// hits, pinning, the default time model and engine model, one-minute windows, no model
    /// for bytes and FLOPs. Tests, examples and benches start from it and set what they vary.
    pub fn gpu_only(capacity: u64, policy: PolicyConfig) -> Self {
        SimConfig {
            gpu: TierConfig { capacity, policy },
            cpu: None,
            disk: None,
            hit_semantics: HitSemantics::Prefix,
            pinning: true,
            timing: TimingModel::default(),
            window_seconds: 60.0,
            model: None,
            engine: EngineModel::default(),
        }
    }
}
