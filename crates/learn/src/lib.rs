//! Training and tuning of the learned eviction policies (`conversation_aware`, `lightgbm`):
//! a GPU-tier replay that scores a train/test split (`replay`, `eval`), the scorer sweep
//! (`sweep`), feature rows for the learned policy (`dataset`) and a pure-Rust gradient-boosting
//! trainer writing LightGBM text models (`boost`). Synchronous, deterministic, no printing.

pub mod boost;
pub mod calibrate;
pub mod dataset;
pub mod eval;
pub mod online;
pub mod replay;
pub mod sweep;
