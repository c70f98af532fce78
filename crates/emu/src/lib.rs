//! `inferencelab serve`: an emulated vLLM + LMCache server. The engine ([`engine`]) is the
//! simulator's cache model (the same `inferencelab_cache` structures and policies) under a
//! continuous-batching scheduler with a GPU time model ([`timing`]); the engine core thread
//! ([`core`]) paces it on a scaled real clock and writes vLLM's and LMCache's logs; the server
//! ([`server`]) puts vLLM's OpenAI-compatible HTTP API and Prometheus metrics around it.

pub mod core;
pub mod engine;
pub mod kv_events;
pub mod metrics;
pub mod server;
pub mod timing;
pub mod tokenizer;
