//! Grids: `batch` (simulation grids from YAML, in parallel, resumable, shardable) and the
//! experiment runner. Library code never prints: progress and results go through callbacks and
//! files.

pub mod batch;
pub mod error;
pub mod experiment;

pub use error::{RunnerError, RunnerResult};
