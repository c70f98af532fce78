//! What a policy is to the cache structure: the reference it sees ([`Access`]), the pin counts
//! it must respect ([`Pins`]), the [`EvictionPolicy`] trait, and [`Registered`], what a policy
//! file adds to be listed in the registry (`policy/mod.rs`).

use serde::{de::DeserializeOwned, Deserialize, Serialize};

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
    /// Request `request` (its `Access::request`) finished after generating `output_tokens`
    /// tokens; the unpins of its blocks follow. Only what a serving engine knows at that
    /// moment: policies that learn how requests are followed up use it. Default: nothing.
    fn on_finish(&mut self, _request: u32, _output_tokens: u32) {}
    /// Whether the policy reads the waiting queue ([`on_wanted`](EvictionPolicy::on_wanted));
    /// the engine tracks it only then. Default: false.
    fn uses_waiting_queue(&self) -> bool {
        false
    }
    /// Tracked entry `e` is wanted by requests that arrived and wait to be admitted, the
    /// earliest of them `rank`-th in arrival order (`None`: by none now). Only what a serving
    /// engine knows: vLLM hashes a request's prompt blocks when it arrives. Told when the
    /// earliest such request changes and when a wanted block is inserted. Default: nothing.
    fn on_wanted(&mut self, _e: EntryId, _rank: Option<u64>) {}
    /// What the judge of an adaptive policy (LRU as a second expert) decided so far; `None`
    /// for a policy without one.
    fn judge(&self) -> Option<JudgeCounts> {
        None
    }
    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId>;
    fn on_remove(&mut self, e: EntryId);
    /// Check internal invariants: the tracked set must equal the entries for which `live` is true.
    fn validate(&self, _live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        Ok(())
    }
}

/// What the judge of an adaptive policy decided ("LRU as a second expert",
/// `learned::shadow`): where its two experts wanted different victims, who chose, and what
/// each expert's shadow cache earned (leading-run hits of the blocks it simulates: every block
/// in a small cache, a hashed sample in a large one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeCounts {
    /// Evictions where the prediction and LRU disagreed that the prediction decided.
    pub decided_by_prediction: u64,
    /// Evictions where they disagreed that LRU decided.
    pub decided_by_lru: u64,
    /// Leading-run hits of the shadow that evicts by the prediction alone.
    pub prediction_shadow_hits: u64,
    /// Leading-run hits of the shadow that evicts by LRU.
    pub lru_shadow_hits: u64,
}

impl JudgeCounts {
    /// The share of the disagreements the prediction decided (NaN without any).
    pub fn prediction_share(&self) -> f64 {
        let n = self.decided_by_prediction + self.decided_by_lru;
        self.decided_by_prediction as f64 / n as f64
    }
}

/// Grow a per-entry `Vec` so that index `e` exists.
#[inline]
pub(crate) fn ensure<T: Clone>(v: &mut Vec<T>, e: EntryId, fill: T) {
    if v.len() <= e as usize {
        v.resize(e as usize + 1, fill);
    }
}

/// A policy the registry lists: its configuration type and how to build it. Implemented once,
/// in the policy's own file, beside its [`EvictionPolicy`] impl.
pub trait Registered: EvictionPolicy + Sized {
    /// The parameters users may give (YAML keys beside `name`); [`NoParams`] when there are
    /// none. `Default` is what the bare name means.
    type Config: std::fmt::Debug + Clone + PartialEq + Default + Serialize + DeserializeOwned;
    /// Other names `--eviction-policy` accepts (compared without case, `-` and `_`).
    const ALIASES: &'static [&'static str] = &[];
    /// True for the infinite cache (the tier's capacity is ignored).
    const UNBOUNDED: bool = false;
    /// True when the policy needs `Access::next_use` (an offline oracle).
    const ORACLE: bool = false;
    /// The policy for a cache of `capacity` entries.
    fn build(config: &Self::Config, capacity: u64) -> Self;
}

/// The configuration of a policy without parameters: `{name: lru}`; any other key is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}
