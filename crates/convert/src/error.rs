//! Typed errors of the convert crate: each names the file and, for a bad row, its 1-based line.

use std::path::PathBuf;

pub type ConvertResult<T> = Result<T, ConvertError>;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    // The io error is part of the message and deliberately not a `source`: `{:#}` would print
    // it twice.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// A bad CSV row or header; `line` 0 means the file as a whole.
    #[error("{}{}: {reason}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Csv {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("tokenizer {}: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    /// A bad option value (named in the message).
    #[error("{0}")]
    Config(String),
}

impl ConvertError {
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        ConvertError::Io {
            path: path.into(),
            err,
        }
    }

    pub fn csv(path: impl Into<PathBuf>, line: usize, reason: impl Into<String>) -> Self {
        ConvertError::Csv {
            path: path.into(),
            line,
            reason: reason.into(),
        }
    }
}
