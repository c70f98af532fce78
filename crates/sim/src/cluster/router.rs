//! What a router sees and decides (the `Router` trait), and the seeded random stream the
//! random routers share.

use inferencelab_cache::ObjId;

/// One request as a router sees it when it arrives.
pub struct RouteRequest<'a> {
    /// Index into the trace.
    pub index: usize,
    /// Arrival, trace seconds.
    pub time: f64,
    /// The request id (the log's, or the record's index).
    pub id: &'a str,
    /// The session key the routers read (vllm-router: the `x-session-id` header, which
    /// `inferencelab bench` sets to the conversation): the trace's conversation, when it has one.
    pub session: Option<String>,
    /// The prompt as a chain of GPU-block keys (the last one the partial tail): two prompts
    /// share a key at depth d exactly when they share their first d + 1 blocks of tokens.
    pub prompt_keys: &'a [ObjId],
    pub prompt_tokens: u64,
    pub block_size: u64,
}

impl RouteRequest<'_> {
    /// Tokens of the prompt key at `depth` (the partial tail is shorter).
    pub fn key_tokens(&self, depth: usize) -> u64 {
        self.prompt_tokens
            .saturating_sub(depth as u64 * self.block_size)
            .min(self.block_size)
    }
}

/// What a router may read of the fleet at the instant a request arrives.
pub trait Fleet {
    fn replicas(&self) -> usize;
    /// The router's in-flight count of replica `k`: requests it sent there that have not
    /// finished (vllm-router's `Worker::load()`).
    fn load(&self, k: usize) -> usize;
    /// Prompt tokens of request `req` replica `k`'s GPU prefix cache holds now.
    fn cached_prefix_tokens(&self, k: usize, req: usize) -> u64;
    /// When request `req`, routed to replica `k` with `new_tokens` prompt tokens to prefill,
    /// has its first token in the time model: its admission + `new_tokens` /
    /// `prefill_tokens_per_s` (at the latest its finish); `None` while it waits for admission.
    fn first_token_s(&self, k: usize, req: usize, new_tokens: u64) -> Option<f64>;
    /// Replica `k`'s URL as the router knows it (the hash routers hash it).
    fn worker_url(&self, k: usize) -> &str;
}

/// A routing policy. The caller guarantees requests come in arrival order and the fleet is
/// advanced to each request's arrival; an implementation returns a replica in
/// `0..fleet.replicas()` and keeps whatever state it needs (trees, sessions, counters).
pub trait Router {
    fn route(&mut self, req: &RouteRequest<'_>, fleet: &dyn Fleet) -> usize;
    /// One replica with the fleet's memory instead of N (the `ideal_pool` bound).
    fn pooled(&self) -> bool {
        false
    }
}

/// The least-loaded replica among `candidates`, the first on ties (Rust's `min_by_key`, as the
/// router's own selections).
pub fn least_loaded(fleet: &dyn Fleet, candidates: impl Iterator<Item = usize>) -> usize {
    candidates.min_by_key(|&k| fleet.load(k)).unwrap_or(0)
}

/// SplitMix64: the seeded stream of the `random` and `power_of_two` routers (vllm-router
/// draws from the thread RNG, so only the distribution is comparable, not the draws).
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}
