//! `inferencelab bench`: an HTTP/SSE load generator for OpenAI-compatible servers (vLLM with
//! LMCache, our emulator, anything that streams the OpenAI way).
//!
//! The parts, kept apart (STYLE.md, the load generator):
//! - *when* to send: [`arrival`] (Poisson/gamma with vLLM's normalization, constant, ramp,
//!   closed loop, the trace's own timestamps);
//! - *what* to send: [`workload`] (traces, random prompts, conversations replayed faithfully);
//! - *how* to send: [`executor`] (HTTP/SSE, or a fake for tests);
//! - *until when*: the limits of [`runner::RunConfig`];
//! - *what happened*: [`record::RequestRecord`], one per request, summarized by [`metrics`]
//!   with `vllm bench serve`'s definitions and written by [`output`].
//!
//! [`runner::run`] is the one dispatch loop. [`prom`] scrapes `/metrics` alongside;
//! [`session::run`] is one whole run (warm-up, scraping, the loop) as the CLI starts it.
//! Library code never prints; the CLI does.

pub mod arrival;
pub mod attribution;
pub mod conversations;
pub mod executor;
pub mod metrics;
pub mod output;
pub mod prom;
pub mod record;
pub mod runner;
pub mod session;
pub mod sse;
pub mod words;
pub mod workload;

pub use arrival::Arrival;
pub use executor::{Endpoint, Executor, FakeExecutor, HttpConfig, HttpExecutor};
pub use record::{ErrorKind, RequestRecord};
pub use runner::{run, RunConfig, RunOutcome, StopReason};
