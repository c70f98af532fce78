//! Typed errors of the trace crate. Every error that comes from an input names the file and,
//! where there is one, the 1-based line, plus the reason and (where known) the fix.

use std::path::PathBuf;

pub type TraceResult<T> = Result<T, TraceError>;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    // The io error is part of the message and deliberately not a `source`: `{:#}` would print
    // it twice ("f: No such file or directory (os error 2): No such file ...").
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// A bad record. `line` is 1-based; 0 means "the file as a whole".
    #[error("{}{}: {reason}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The trace cannot be used the way it was asked (e.g. refining block ids).
    #[error("{0}")]
    Unsupported(String),
}

impl TraceError {
    pub fn invalid(path: impl Into<PathBuf>, line: usize, reason: impl Into<String>) -> Self {
        TraceError::Invalid {
            path: path.into(),
            line,
            reason: reason.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TraceError::Io {
            path: path.into(),
            err: source,
        }
    }

    /// The 1-based line of an `Invalid` error, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            TraceError::Invalid { line, .. } if *line > 0 => Some(*line),
            _ => None,
        }
    }
}
