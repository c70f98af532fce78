//! vLLM's GPU prefix-cache tier as the replays run it (DESIGN.md section 3), generic over the
//! policy: only the leading run of cached blocks hits; with pinning, the hit blocks are touched
//! (pinned) head first, then the rest allocated tail first, and a request's blocks stay pinned
//! until it finishes, when they are freed chain tail first (vLLM's reverse-order free).
//! Without pinning every request finishes before the next and its blocks are referenced tail
//! first, so the head of the prompt ends most recent.
//!
//! `driver::run` (with the LMCache tiers around it) and `inferencelab_learn::replay` (split
//! counts for `sweep` and `train`) both serve their requests through it.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use inferencelab_cache::{Access, BlockCache, EntryId, EvictionPolicy, ObjId, Outcome};
use inferencelab_trace::Request;

use crate::config::TimingModel;

/// A request whose GPU blocks are pinned until it finishes.
struct Running {
    finish: f64,
    seq: u64,
    /// the tokens it generates (told to the policy when it finishes)
    output_tokens: u32,
    /// entries pinned, head first
    entries: Vec<EntryId>,
}

impl PartialEq for Running {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Running {}
impl PartialOrd for Running {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Running {
    // min-heap on (finish, seq)
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .finish
            .total_cmp(&self.finish)
            .then(other.seq.cmp(&self.seq))
    }
}

/// The GPU tier: the cache, its logical clock and the running requests' pins.
pub struct GpuTier<P> {
    pub cache: BlockCache<P>,
    /// logical time of the last reference (one tick per block reference)
    pub clock: u64,
    running: BinaryHeap<Running>,
    pinned_now: u64,
}

impl<P: EvictionPolicy> GpuTier<P> {
    pub fn new(cache: BlockCache<P>) -> Self {
        GpuTier {
            cache,
            clock: 0,
            running: BinaryHeap::new(),
            pinned_now: 0,
        }
    }

    /// Finish (unpin) every running request done by `now`, chain tail first.
    #[inline]
    pub fn finish_until(&mut self, now: f64) {
        while self.running.peek().is_some_and(|run| run.finish <= now) {
            let run = self.running.pop().unwrap();
            self.cache.policy.on_time(run.finish);
            self.cache
                .policy
                .on_finish(run.seq as u32, run.output_tokens);
            for &e in run.entries.iter().rev() {
                self.cache.unpin(e, self.clock);
            }
            self.pinned_now -= run.entries.len() as u64;
        }
    }

    /// Serve one request's blocks `keys` (head first) with prefix hits; `access(obj, depth,
    /// time)` makes each reference. Returns the leading hit blocks and, with `pinning`, the
    /// entries to hold (head first) until the request finishes.
    #[inline]
    pub fn serve_prefix(
        &mut self,
        keys: &[ObjId],
        pinning: bool,
        access: impl Fn(ObjId, usize, u64) -> Access,
    ) -> (u64, Vec<EntryId>) {
        let lead = keys.iter().take_while(|&&k| self.cache.contains(k)).count();
        let mut pinned: Vec<EntryId> = Vec::new();
        if pinning {
            // vLLM touches (pins) the computed blocks first, then allocates the rest
            for (d, &k) in keys[..lead].iter().enumerate() {
                self.clock += 1;
                if let Outcome::Hit(e) = self.cache.access(&access(k, d, self.clock), true) {
                    pinned.push(e);
                }
            }
            let mut rest: Vec<EntryId> = Vec::with_capacity(keys.len() - lead);
            for d in (lead..keys.len()).rev() {
                self.clock += 1;
                match self.cache.access(&access(keys[d], d, self.clock), true) {
                    Outcome::Hit(e) | Outcome::Inserted(e) => rest.push(e),
                    Outcome::Rejected => {}
                }
            }
            pinned.extend(rest.into_iter().rev());
        } else {
            for d in (0..keys.len()).rev() {
                self.clock += 1;
                self.cache.access(&access(keys[d], d, self.clock), false);
            }
        }
        (lead as u64, pinned)
    }

    /// Hold `entries` pinned until `finish` (trace seconds); `seq` orders equal finishes.
    pub fn hold(&mut self, finish: f64, seq: u64, output_tokens: u32, entries: Vec<EntryId>) {
        if entries.is_empty() {
            return;
        }
        self.pinned_now += entries.len() as u64;
        self.running.push(Running {
            finish,
            seq,
            output_tokens,
            entries,
        });
    }

    /// Blocks pinned by running requests now.
    pub fn pinned_now(&self) -> u64 {
        self.pinned_now
    }
}

impl TimingModel {
    /// When `r` finishes: its logged finish time, else its arrival plus the prefill of the
    /// tokens not served from a cache and its decode steps.
    pub fn finish_time(&self, r: &Request, cached_tokens: u64) -> f64 {
        r.finish_time.unwrap_or_else(|| {
            let uncached = (r.input_length as u64).saturating_sub(cached_tokens) as f64;
            r.timestamp
                + uncached / self.prefill_tokens_per_s
                + r.output_length as f64 * self.decode_ms_per_token / 1000.0
        })
    }
}
