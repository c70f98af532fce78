//! The eviction-policy trait every tier uses, the registry of policies (a serde enum of configs
//! and one `match` that builds the concrete type) and enum dispatch over them.
//!
//! Adding a policy = one new file here + one arm in [`PolicyConfig`] and in `policies!` below.

use serde::{Deserialize, Serialize};

pub mod arc;
pub mod belady;
pub mod conversation_aware;
pub mod fifo;
pub mod ideal;
pub mod lfu;
pub mod lightgbm;
pub mod list;
pub mod lru;
pub mod mru;
pub mod s3fifo;
pub mod sieve;
#[cfg(test)]
pub(crate) mod testing;

/// A dense entry id into the cache structure's slab (`0..` number of entries ever allocated).
pub type EntryId = u32;
/// A dense object id (a block or chunk key interned by the caller).
pub type ObjId = u32;
/// `Access::next_use` of an object that is never used again.
pub const NEVER: u64 = u64::MAX;

/// Everything a policy may know about one reference. Only `next_use` looks into the future, and
/// it is only filled for policies whose [`EvictionPolicy::needs_oracle`] is true.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Access {
    /// The object referenced.
    pub obj: ObjId,
    /// The tier's logical clock: strictly increasing per reference.
    pub time: u64,
    /// Trace time in seconds.
    pub timestamp: f64,
    /// Index of the request in the trace.
    pub request: u32,
    /// Conversation id (`u64::MAX` when the trace has none).
    pub conversation: u64,
    /// Turn within the conversation.
    pub turn: u32,
    /// The request's type as a dense id (`Trace::kind_ids`; `u32::MAX` when it has none).
    pub kind: u32,
    /// Position of the block in the request's prefix chain (0 = first block).
    pub depth: u32,
    /// Oracle: when the object is next referenced (larger = later; [`NEVER`]).
    pub next_use: u64,
}

impl Access {
    /// A bare reference: only the object and the clock (classic cache simulation).
    pub fn at(obj: ObjId, time: u64) -> Self {
        Access {
            obj,
            time,
            timestamp: 0.0,
            request: 0,
            conversation: u64::MAX,
            turn: 0,
            kind: u32::MAX,
            depth: 0,
            next_use: NEVER,
        }
    }
}

/// The structure's pin counts, indexed by entry id. Pinned entries must never be evicted.
#[derive(Clone, Copy)]
pub struct Pins<'a>(pub &'a [u32]);

impl Pins<'_> {
    #[inline]
    pub fn is_pinned(&self, e: EntryId) -> bool {
        self.0.get(e as usize).is_some_and(|&p| p > 0)
    }
}

/// An eviction policy: orders the resident entries of one cache and picks victims.
///
/// The caller (the cache structure) guarantees:
/// - `on_insert(e, ..)` is called once when `e` becomes resident; `e` is not tracked before it.
/// - `on_hit(e, ..)` is called only for tracked entries.
/// - `on_miss(a)` is called for every reference to an object that is not resident (capacity
///   above zero), before the `evict` it may cause and before its `on_insert`. The admission may
///   still be refused (every entry pinned); then no `on_insert` follows.
/// - `on_pin(e)` is called when a tracked entry's pin count rises from zero (after its
///   `on_insert`/`on_hit`).
/// - `on_unpin(e, ..)` is called when a tracked entry's pin count drops to zero (vLLM: a finished
///   request frees its blocks, chain tail first). Without pinning it is never called.
/// - `evict` is called only when the cache is full.
/// - Entry ids are reused after eviction or removal.
///
/// An implementation must:
/// - return from `evict` only a tracked entry `e` with `!pins.is_pinned(e)`, and stop tracking it;
///   return `None` only when every tracked entry is pinned;
/// - stop tracking `e` on `on_remove(e)`;
/// - be deterministic (any randomness comes from a seed in its config).
pub trait EvictionPolicy {
    /// True when the policy needs `Access::next_use` (an offline oracle).
    fn needs_oracle(&self) -> bool {
        false
    }
    fn on_insert(&mut self, e: EntryId, a: &Access);
    fn on_hit(&mut self, e: EntryId, a: &Access);
    /// A reference missed (see the contract above). Policies whose victim depends on the incoming
    /// object use it: ARC adapts its target and picks its REPLACE case when the object is in a
    /// ghost list, S3-FIFO takes the object out of its ghost queue before an eviction refills it.
    /// Default: nothing.
    fn on_miss(&mut self, _a: &Access) {}
    /// The entry's pin count rose from zero (it can no longer be evicted). Default: nothing
    /// (the policy then skips pinned entries in `evict`).
    fn on_pin(&mut self, _e: EntryId) {}
    /// The entry became evictable again at logical time `now`. Default: nothing.
    fn on_unpin(&mut self, _e: EntryId, _now: u64) {}
    /// Trace time reached `timestamp` between references: a running request finished then, and
    /// the unpins of its blocks follow. Policies that reason in trace time (the predicted-next-use
    /// ones) take it as the time those blocks became evictable. Default: nothing.
    fn on_time(&mut self, _timestamp: f64) {}
    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId>;
    fn on_remove(&mut self, e: EntryId);
    /// Check internal invariants: the tracked set must equal the entries for which `live` is true.
    fn validate(&self, _live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        Ok(())
    }
}

/// Grow a per-entry `Vec` so that index `e` exists.
#[inline]
pub(crate) fn ensure<T: Clone>(v: &mut Vec<T>, e: EntryId, fill: T) {
    if v.len() <= e as usize {
        v.resize(e as usize + 1, fill);
    }
}

/// The configuration of a policy: what users write in `--eviction-policy` and YAML grids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    Lru,
    Fifo,
    Lfu,
    Mru,
    Arc,
    S3fifo(s3fifo::S3FifoConfig),
    Sieve,
    Belady,
    Ideal,
    ConversationAware(conversation_aware::ScorerConfig),
    Lightgbm(lightgbm::LightGbmConfig),
}

impl PolicyConfig {
    pub const NAMES: [&'static str; 11] = [
        "lru",
        "fifo",
        "lfu",
        "mru",
        "arc",
        "s3fifo",
        "sieve",
        "belady",
        "ideal",
        "conversation_aware",
        "lightgbm",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            PolicyConfig::Lru => "lru",
            PolicyConfig::Fifo => "fifo",
            PolicyConfig::Lfu => "lfu",
            PolicyConfig::Mru => "mru",
            PolicyConfig::Arc => "arc",
            PolicyConfig::S3fifo(_) => "s3fifo",
            PolicyConfig::Sieve => "sieve",
            PolicyConfig::Belady => "belady",
            PolicyConfig::Ideal => "ideal",
            PolicyConfig::ConversationAware(_) => "conversation_aware",
            PolicyConfig::Lightgbm(_) => "lightgbm",
        }
    }

    /// True for the infinite cache (capacity is ignored).
    pub fn is_unbounded(&self) -> bool {
        matches!(self, PolicyConfig::Ideal)
    }

    pub fn needs_oracle(&self) -> bool {
        matches!(self, PolicyConfig::Belady)
    }

    /// Build the policy for a cache of `capacity` entries.
    pub fn build(&self, capacity: u64) -> AnyPolicy {
        match self {
            PolicyConfig::Lru => AnyPolicy::Lru(lru::Lru::default()),
            PolicyConfig::Fifo => AnyPolicy::Fifo(fifo::Fifo::default()),
            PolicyConfig::Lfu => AnyPolicy::Lfu(lfu::Lfu::default()),
            PolicyConfig::Mru => AnyPolicy::Mru(mru::Mru::default()),
            PolicyConfig::Arc => AnyPolicy::Arc(arc::Arc::new(capacity)),
            PolicyConfig::S3fifo(c) => AnyPolicy::S3fifo(s3fifo::S3Fifo::new(capacity, c)),
            PolicyConfig::Sieve => AnyPolicy::Sieve(sieve::Sieve::default()),
            PolicyConfig::Belady => AnyPolicy::Belady(belady::Belady::default()),
            PolicyConfig::Ideal => AnyPolicy::Ideal(ideal::Ideal),
            PolicyConfig::ConversationAware(c) => {
                AnyPolicy::ConversationAware(conversation_aware::ConversationAware::new(c))
            }
            PolicyConfig::Lightgbm(c) => AnyPolicy::Lightgbm(lightgbm::LightGbm::new(c)),
        }
    }
}

impl std::str::FromStr for PolicyConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
        Ok(match s.as_str() {
            "lru" => PolicyConfig::Lru,
            "fifo" => PolicyConfig::Fifo,
            "lfu" => PolicyConfig::Lfu,
            "mru" => PolicyConfig::Mru,
            "arc" => PolicyConfig::Arc,
            "s3fifo" => PolicyConfig::S3fifo(Default::default()),
            "sieve" => PolicyConfig::Sieve,
            "belady" | "opt" | "optimal" => PolicyConfig::Belady,
            "ideal" | "infinite" => PolicyConfig::Ideal,
            "conversationaware" => PolicyConfig::ConversationAware(Default::default()),
            // the model trained by `inferencelab train` (a YAML policy can name another)
            "lightgbm" => PolicyConfig::Lightgbm(lightgbm::LightGbmConfig::load_default()?),
            _ => {
                return Err(format!(
                    "unknown eviction policy '{s}'; expected one of: {}",
                    Self::NAMES.join(", ")
                ))
            }
        })
    }
}

impl std::fmt::Display for PolicyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! policies {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// Enum dispatch over every built-in policy: no virtual call in the hot loop.
        #[derive(Debug, Clone)]
        pub enum AnyPolicy { $($variant($ty)),* }

        impl EvictionPolicy for AnyPolicy {
            #[inline]
            fn needs_oracle(&self) -> bool { match self { $(AnyPolicy::$variant(p) => p.needs_oracle()),* } }
            #[inline]
            fn on_insert(&mut self, e: EntryId, a: &Access) { match self { $(AnyPolicy::$variant(p) => p.on_insert(e, a)),* } }
            #[inline]
            fn on_hit(&mut self, e: EntryId, a: &Access) { match self { $(AnyPolicy::$variant(p) => p.on_hit(e, a)),* } }
            #[inline]
            fn on_miss(&mut self, a: &Access) { match self { $(AnyPolicy::$variant(p) => p.on_miss(a)),* } }
            #[inline]
            fn on_pin(&mut self, e: EntryId) { match self { $(AnyPolicy::$variant(p) => p.on_pin(e)),* } }
            #[inline]
            fn on_unpin(&mut self, e: EntryId, now: u64) { match self { $(AnyPolicy::$variant(p) => p.on_unpin(e, now)),* } }
            #[inline]
            fn on_time(&mut self, t: f64) { match self { $(AnyPolicy::$variant(p) => p.on_time(t)),* } }
            #[inline]
            fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> { match self { $(AnyPolicy::$variant(p) => p.evict(pins)),* } }
            #[inline]
            fn on_remove(&mut self, e: EntryId) { match self { $(AnyPolicy::$variant(p) => p.on_remove(e)),* } }
            fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> { match self { $(AnyPolicy::$variant(p) => p.validate(live)),* } }
        }
    };
}

policies!(
    Lru(lru::Lru),
    Fifo(fifo::Fifo),
    Lfu(lfu::Lfu),
    Mru(mru::Mru),
    Arc(arc::Arc),
    S3fifo(s3fifo::S3Fifo),
    Sieve(sieve::Sieve),
    Belady(belady::Belady),
    Ideal(ideal::Ideal),
    ConversationAware(conversation_aware::ConversationAware),
    Lightgbm(lightgbm::LightGbm),
);
