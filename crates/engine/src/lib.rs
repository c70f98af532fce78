//! The engines' own rules, stepped in virtual time: vLLM V1's scheduler over its block pool
//! ([`vllm`], [`pool`]) and LMCache's local storage ([`lmcache`]). It knows no files, clocks or
//! HTTP: `simulate` drives it on trace time, `serve` on the (scaled) real clock.

pub mod lmcache;
pub mod lmcache_mp;
pub mod pool;
pub mod vllm;

pub use lmcache::{Bound, ChunkSource, Connector, LmcacheTier, Lookup, Retrieved};
pub use lmcache_mp::{LmcacheMode, LoggedLoop, MpCounters, MpEviction};
pub use pool::{KvPool, Slot};
pub use vllm::{KvConnector, NoConnector, Scheduler, SchedulerConfig, SeqState, StepPlan};
