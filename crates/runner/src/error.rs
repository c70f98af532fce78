//! Typed errors of the runner.

use std::path::PathBuf;

pub type RunnerResult<T> = Result<T, RunnerError>;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    // The io error is part of the message and deliberately not a `source`: `{:#}` would print
    // it twice.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// A bad grid file: names the file, the line when known, the key and the fix.
    #[error("{0}")]
    Config(String),
}

impl RunnerError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RunnerError::Io {
            path: path.into(),
            err: source,
        }
    }
}
