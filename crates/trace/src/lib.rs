//! The request/trace model of InferenceLab: readers for every supported input format, the native
//! JSONL trace writer, chained block hashing of token ids, re-blocking of id traces and next-use
//! annotation. No async, no HTTP: everything here is plain synchronous data work.

pub mod blocks;
pub mod checked;
pub mod conversations;
pub mod error;
pub mod fsutil;
pub mod hash;
pub mod input;
pub mod lmcache_log;
pub mod model;
pub mod readers;
pub mod rng;
pub mod sequences;
pub mod time;
pub mod vllm_log;

pub use blocks::{BlockedTrace, Blocking};
pub use conversations::infer_conversations;
pub use error::{TraceError, TraceResult};
pub use model::{Content, Format, HashedTokens, Hashing, LmcacheLookup, Request, Trace};
pub use readers::{detect_format, read_trace, read_trace_hashed, ReadOptions};
pub use sequences::{AnswerBlocks, AnswerSources, SequenceBlocks};
