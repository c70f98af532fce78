//! Typed errors of the simulation crate.

pub type SimResult<T> = Result<T, SimError>;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Trace(#[from] inferencelab_trace::TraceError),
    /// A bad configuration: the message names the flag or key and the fix.
    #[error("{0}")]
    Config(String),
}
