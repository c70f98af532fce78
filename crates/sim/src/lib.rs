//! The simulation driver: two-tier (vLLM GPU prefix cache + LMCache CPU/disk) replay of a
//! trace with any eviction policy, the model registry and cost model, metrics and grids.
//! Synchronous and deterministic; no printing (the CLI prints).

pub mod cluster;
pub mod config;
pub mod driver;
pub mod engine_run;
pub mod error;
pub mod gpu_tier;
pub mod grid;
pub mod lmcache_simulator;
pub mod mrc;
pub mod plan;
pub mod queueing;
pub mod resolve;
pub mod result;

pub use config::{
    EngineModel, HitSemantics, LmcacheMode, LmcacheRules, Schedule, SimConfig, TierConfig,
    TimingModel,
};
pub use driver::{run, Prepared};
pub use error::{SimError, SimResult};
pub use gpu_tier::GpuTier;
pub use result::{ResultRow, Window};
