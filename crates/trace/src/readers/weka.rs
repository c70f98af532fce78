//! Placeholder: being written.
use std::path::Path;

use super::ReadOptions;
use crate::error::{TraceError, TraceResult};
use crate::model::Trace;

pub fn parse(_path: &Path, _text: &str, _opts: &ReadOptions) -> TraceResult<Trace> {
    Err(TraceError::Unsupported("reader not written yet".into()))
}

pub fn read_dir(_path: &Path, _opts: &ReadOptions) -> TraceResult<Trace> {
    Err(TraceError::Unsupported("reader not written yet".into()))
}
