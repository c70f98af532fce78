//! vLLM server logs, read and written in one place (DESIGN.md section 6; issue 18): the lines
//! vLLM's request logger prints (`--enable-log-requests`, outputs with `--enable-log-outputs`,
//! token ids at `VLLM_LOGGING_LEVEL=DEBUG`), LMCache's lookup lines and the periodic engine
//! stats.
//!
//! - [`read`]: the reader, line by line, token ids kept or hashed as they are read
//!   ([`crate::read_trace_hashed`]; `hashing` holds that part).
//! - [`write`]: the line formats, byte for byte, used by `convert` (a CSV of conversations to a
//!   log) and the emulator (`serve`'s log), and by the synthetic log generator of
//!   `scripts/scale_bench.sh`. A test reads back what it writes.

mod chunks;
mod hashing;
pub mod read;
pub mod write;

pub use read::{parse, parse_reader};
