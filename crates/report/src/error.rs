//! Typed errors of the report crate: each names the file (and line) or the chart it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading a result file or writing a chart/report failed.
    /// (The io error is part of the message and deliberately not a `source`: `{:#}` would
    /// print it twice.)
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// A line of a result file is not what we expect (JSON syntax, a row that is not an object).
    #[error("{}:{line}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The file as a whole is not a result file (no `results` array, no rows).
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    /// Nothing to draw or report: the row list is empty.
    #[error(
        "no result rows to plot: give the summary JSON of `simulate`/`batch` or a results.jsonl"
    )]
    NoRows,
    /// The drawing library failed on a chart.
    #[error("drawing chart {chart}: {reason}")]
    Render { chart: String, reason: String },
    /// The embedded font could not be loaded (a build problem, not a user one).
    #[error("the embedded chart font is invalid: {0}")]
    Font(String),
}

impl ReportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            err: source,
        }
    }
}
