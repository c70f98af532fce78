//! A GPU-tier replay through the driver's tier (`inferencelab_sim::GpuTier`: vLLM's
//! leading-run hits, pins held until the request finishes, hit blocks pinned head first and the
//! rest admitted tail first, freed chain tail first), generic over the policy, that counts hits
//! (at most `n - 1` tokens) separately before and after a split time. `sweep` and `train` fit
//! on the part before the split and report the part after it; the cache runs through the whole
//! trace, so the test part starts warm (with what the policy chose to keep), exactly as a
//! deployed policy would. A test checks that its totals equal `inferencelab_sim::run`'s with
//! the abstract prefix model (`--gpu-model abstract`): sweeps and training do not yet follow
//! vLLM's engine rules (answer blocks, null block, admission), which `simulate` does by default.

use inferencelab_cache::{Access, BlockCache, EntryId, EvictionPolicy, ObjId, Pins, NEVER};
use inferencelab_sim::{GpuTier, Prepared, TimingModel};

/// Hit counts of one part of the trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub hit_tokens: u64,
    pub block_refs: u64,
    pub hit_blocks: u64,
    /// The engine model's queueing on this part: median and p90 of the requests' admission
    /// delay (arrival to first admission, s; `simulate`'s `queue_delay_*`). 0 in this replay,
    /// which admits every request at its arrival (the abstract prefix model).
    pub queue_delay_p50_s: f64,
    pub queue_delay_p90_s: f64,
}

impl Counts {
    /// vLLM's token-weighted prefix-cache hit rate.
    pub fn token_hit_ratio(&self) -> f64 {
        if self.prompt_tokens == 0 {
            0.0
        } else {
            self.hit_tokens as f64 / self.prompt_tokens as f64
        }
    }
}

/// Counts before and after the split, and of the validation part (the end of the train part,
/// from `ReplayConfig::validation_from` to the split) on which `sweep` and `train` choose.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SplitCounts {
    pub train: Counts,
    pub validation: Counts,
    pub test: Counts,
}

/// What one replay needs besides the policy.
#[derive(Debug, Clone, Copy)]
pub struct ReplayConfig {
    pub capacity: u64,
    pub pinning: bool,
    pub timing: TimingModel,
    /// Requests at or after this trace time count as test.
    pub split: f64,
    /// Train requests at or after this trace time also count as validation.
    pub validation_from: f64,
    /// Stop after the requests before this trace time (successive halving's small budgets).
    pub until: f64,
}

/// Replay the GPU tier of `prepared` through a cache of `config.capacity` blocks run by
/// `policy`. `oracle` is the prefix next-use annotation (`BlockedTrace::next_use_by_request`)
/// for policies that need it. Returns the counts and the policy (to read its state).
pub fn replay<P: EvictionPolicy>(
    prepared: &Prepared<'_>,
    policy: P,
    config: &ReplayConfig,
    oracle: Option<&[u64]>,
) -> (SplitCounts, P) {
    let reqs = &prepared.trace.requests;
    let bs = prepared.gpu.block_size as u64;
    let mut gpu = GpuTier::new(BlockCache::new(config.capacity, policy));
    let mut out = SplitCounts::default();
    let kinds = prepared.trace.kind_ids();
    for (i, r) in reqs.iter().enumerate() {
        if r.timestamp >= config.until {
            break;
        }
        gpu.finish_until(r.timestamp);
        let keys = prepared.gpu.request(i);
        let offset = prepared.gpu.offsets[i];
        let len = r.input_length as u64;
        let cap_tokens = len.saturating_sub(1) / bs * bs;
        let (lead, pinned) = gpu.serve_prefix(keys, config.pinning, |obj, depth, time| Access {
            obj,
            time,
            timestamp: r.timestamp,
            request: i as u32,
            conversation: r.conversation.unwrap_or(u64::MAX),
            turn: r.turn,
            kind: kinds[i],
            depth: depth as u32,
            next_use: oracle.map_or(NEVER, |o| o[offset + depth]),
        });
        let hit_tokens = (lead * bs).min(cap_tokens);
        let test = r.timestamp >= config.split;
        let validation = !test && r.timestamp >= config.validation_from;
        for (part, counted) in [
            (&mut out.test, test),
            (&mut out.train, !test),
            (&mut out.validation, validation),
        ] {
            if counted {
                part.requests += 1;
                part.prompt_tokens += len;
                part.hit_tokens += hit_tokens;
                part.block_refs += keys.len() as u64;
                part.hit_blocks += lead;
            }
        }
        if config.pinning {
            gpu.hold(
                config.timing.finish_time(r, hit_tokens),
                i as u64,
                r.output_length,
                pinned,
            );
        }
    }
    debug_assert!(gpu.cache.validate().is_ok());
    (out, gpu.cache.policy)
}

/// A policy wrapper that logs its victims as `(request of the reference that evicted, object)`:
/// the decisions the no-peeking test compares.
#[derive(Debug, Clone)]
pub struct Recording<P> {
    pub inner: P,
    obj_of: Vec<ObjId>,
    request: u32,
    pub victims: Vec<(u32, ObjId)>,
}

impl<P> Recording<P> {
    pub fn new(inner: P) -> Self {
        Recording {
            inner,
            obj_of: Vec::new(),
            request: 0,
            victims: Vec::new(),
        }
    }

    fn note(&mut self, e: EntryId, a: &Access) {
        if self.obj_of.len() <= e as usize {
            self.obj_of.resize(e as usize + 1, ObjId::MAX);
        }
        self.obj_of[e as usize] = a.obj;
        self.request = a.request;
    }
}

impl<P: EvictionPolicy> EvictionPolicy for Recording<P> {
    fn needs_oracle(&self) -> bool {
        self.inner.needs_oracle()
    }
    fn on_insert(&mut self, e: EntryId, a: &Access) {
        self.note(e, a);
        self.inner.on_insert(e, a);
    }
    fn on_hit(&mut self, e: EntryId, a: &Access) {
        self.note(e, a);
        self.inner.on_hit(e, a);
    }
    fn on_miss(&mut self, a: &Access) {
        self.request = a.request;
        self.inner.on_miss(a);
    }
    fn on_pin(&mut self, e: EntryId) {
        self.inner.on_pin(e);
    }
    fn on_unpin(&mut self, e: EntryId, now: u64) {
        self.inner.on_unpin(e, now);
    }
    fn on_time(&mut self, timestamp: f64) {
        self.inner.on_time(timestamp);
    }
    fn on_finish(&mut self, request: u32, output_tokens: u32) {
        self.inner.on_finish(request, output_tokens);
    }
    fn judge(&self) -> Option<inferencelab_cache::JudgeCounts> {
        self.inner.judge()
    }
    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        let v = self.inner.evict(pins)?;
        self.victims.push((self.request, self.obj_of[v as usize]));
        Some(v)
    }
    fn on_remove(&mut self, e: EntryId) {
        self.inner.on_remove(e);
    }
    fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        self.inner.validate(live)
    }
}
