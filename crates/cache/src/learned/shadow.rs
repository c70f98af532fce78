//! The judge of "LRU as a second expert" ([`NextUseOrder::adaptive`]): two shadow caches fed
//! the same references as the real one, one evicting by LRU and one by the prediction alone,
//! each counting the hits a prefix cache would really get (the leading run of each request's
//! blocks: vLLM and LMCache hit only up to the first miss). The real cache follows the shadow
//! with more hits lately, so when the prediction loses it hands the cache to LRU.
//!
//! This is set dueling (Qureshi et al., "Adaptive insertion policies", ISCA'07: DIP) with
//! shadows of the whole cache instead of dedicated sets, in the form of miniature simulations
//! (Waldspurger et al., ATC'17): each shadow simulates only the blocks whose hashed id falls
//! under a threshold (SHARDS' spatial sampling, Waldspurger et al., FAST'15) in a cache scaled
//! by the same rate, [`sampling_rate`]: 1 up to [`MIN_SHADOW_BLOCKS`], an eighth from 2,048
//! blocks on, so the judge costs a fraction of a second simulation per reference. A request's
//! run is followed through its sampled blocks (an unsampled block can neither end nor extend
//! it). The experts are judged by what they would
//! earn, hits of leading runs, so the prefix structure is part of the verdict: an expert that
//! evicts the middle of a prefix loses every hit behind it. (The first judge compared victims
//! pairwise, whichever of two blocks was referenced first, as Belady would: that verdict is
//! blind to the blocks a victim takes with it, and lost 5.5 points to LRU on WEKA.)
//!
//! Deviations and approximations, all shared by both shadows:
//! - The shadows see the references the real cache sees (a block the real cache holds beyond a
//!   request's leading run is not referenced by the engine, so a shadow cannot count it); a
//!   request's run ends at a skipped depth. A reference deeper than its request's run has
//!   reached (a tier that allocates the uncached blocks deepest first, as `simulate`'s abstract
//!   tier does) is counted when the run reaches its depth, with what each shadow held when it
//!   came.
//! - The real cache's size is taken as the most blocks it held when it had to evict (the policy
//!   is not told the capacity); the sampling rate is fixed at its first eviction (before, the
//!   shadows hold every block the real cache holds). Blocks a running request holds without a
//!   hash are not modelled.
//! - Pins are mirrored by object: a block pinned in the real cache is pinned in each shadow that
//!   holds it. When every block of a shadow is pinned, it overflows until one is freed.
//! - The shadows index their state by a slot per object they have held, not by object id
//!   (at large caches they sample an eighth of the objects, and state indexed by id touched
//!   about 60 bytes of memory per object of the trace; now 4). Slots are given in the order
//!   objects first enter the shadows, which is the order of their ids when the ids are given in
//!   order of first reference (as `BlockCache` does); the slots then break ties exactly as the
//!   ids did. When an object arrives with a smaller id than one that already has a slot, the
//!   shadows go back to indexing by id (renumbering their state), so no decision depends on
//!   the slots.
//! - LRU is the incumbent: the prediction decides only while its lead is significant. The
//!   sampled references are cut into batches of one shadow fill (of [`MIN_SHADOW_BLOCKS`]
//!   references in the larger shadows of caches above 2,048 blocks, [`batches_per_fill`]); each batch
//!   gives the difference of the two shadows' hits, and the prediction decides while the decayed
//!   mean of those differences is more than [`LEAD_STANDARD_ERRORS`] standard errors above zero
//!   (batch means, the usual test for a correlated series: one request's blocks hit or miss
//!   together). The decay keeps about the last [`EVIDENCE_FILLS`] fills. Both constants are
//!   chosen a priori, not fitted to any trace.
//!
//! [`NextUseOrder::adaptive`]: super::order::NextUseOrder::adaptive

use super::chunked::Chunked;
use super::order::{NextUseOrder, Recency};
use crate::policy::api::{ObjId, Pins};

/// About how many cache fills of references the judge remembers (module docs). A priori: the
/// difference between two policies shows over several turnovers of the cache, and a workload
/// that drifts should be re-judged within tens of them.
pub const EVIDENCE_FILLS: f64 = 16.0;

/// How many standard errors the prediction's lead over LRU must be for it to decide (module
/// docs): the textbook two.
pub const LEAD_STANDARD_ERRORS: f64 = 2.0;

/// A shadow LRU over object ids (least recent first); pinned objects are held out of the list.
#[derive(Debug, Clone, Default)]
struct ShadowLru {
    list: Recency,
    held: Vec<bool>,
    /// resident objects, held ones included
    len: usize,
}

impl ShadowLru {
    #[inline]
    fn is_held(&self, o: ObjId) -> bool {
        self.held.get(o as usize).copied().unwrap_or(false)
    }

    #[inline]
    fn contains(&self, o: ObjId) -> bool {
        self.list.contains(o) || self.is_held(o)
    }

    /// Reference `o`: most recent (a held block stays held).
    #[inline]
    fn touch(&mut self, o: ObjId) {
        if self.is_held(o) {
            return;
        }
        if self.list.contains(o) {
            self.list.remove(o);
        } else {
            self.len += 1;
        }
        self.list.push_back(o);
    }

    #[inline]
    fn pop_lru(&mut self) -> bool {
        match self.list.first() {
            Some(o) => {
                self.list.remove(o);
                self.len -= 1;
                true
            }
            None => false,
        }
    }

    #[inline]
    fn pin(&mut self, o: ObjId) {
        if self.list.contains(o) {
            self.list.remove(o);
            if self.held.len() <= o as usize {
                self.held.resize(o as usize + 1, false);
            }
            self.held[o as usize] = true;
        }
    }

    /// A freed block counts as most recent (vLLM appends it to the free queue).
    #[inline]
    fn unpin(&mut self, o: ObjId) {
        if self.is_held(o) {
            self.held[o as usize] = false;
            self.list.push_back(o);
        }
    }
}

/// Shadows hold at least this many blocks (sampling rate 1 for caches up to this size): a
/// miniature simulation needs a few hundred entries to behave like the full cache (Waldspurger
/// et al. ATC'17 recommend a minimum size). A priori.
pub const MIN_SHADOW_BLOCKS: f64 = 256.0;
/// The lowest sampling rate (caches of 2,048 blocks and more): the shadows then cost an eighth
/// of a full simulation per reference. A priori, for speed.
pub const MIN_SAMPLING_RATE: f64 = 1.0 / 8.0;

/// The share of objects the shadows simulate for a cache of `capacity` blocks.
pub fn sampling_rate(capacity: usize) -> f64 {
    (MIN_SHADOW_BLOCKS / capacity.max(1) as f64).clamp(MIN_SAMPLING_RATE, 1.0)
}

/// How many batches the judge cuts one fill of a shadow of `shadow_capacity` blocks into: one
/// per [`MIN_SHADOW_BLOCKS`] blocks (rounded down, at least one). Up to 2,048 blocks the shadows
/// hold about that many, so a batch is one fill as before; a larger cache's shadows hold more
/// (an eighth of the cache) and their fills are rarer, so a batch of one fill left a cache of
/// 13,343 blocks two batches of evidence in a part of a trace, too few for any test. With a
/// batch per minimum shadow's worth of references, the evidence comes at the pace of a cache of
/// 2,048 blocks whatever the size, and the decay still keeps about [`EVIDENCE_FILLS`] fills.
/// A priori (the minimum shadow is the smallest cache the miniature simulation trusts, and the
/// smallest batch the judge already used); the several batches of one fill are then correlated,
/// which the test does not correct for.
pub fn batches_per_fill(shadow_capacity: usize) -> usize {
    (shadow_capacity / MIN_SHADOW_BLOCKS as usize).max(1)
}

/// No slot (`Shadows::slot_of`).
const NO_SLOT: u32 = u32::MAX;

/// Per request: the next depth expected and whether each shadow's leading run is still alive.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    next_depth: u32,
    lru_alive: bool,
    predicted_alive: bool,
}

/// A reference deeper than its request's run has reached (a tier that allocates a request's
/// uncached blocks deepest first, as `simulate`'s abstract tier does after vLLM's free order):
/// whether each shadow held it then, counted once the run reaches its depth.
#[derive(Debug, Clone, Copy)]
struct Early {
    request: u32,
    depth: u32,
    sampled: bool,
    lru_held: bool,
    predicted_held: bool,
}

/// The two shadows and the judge (module docs).
#[derive(Debug, Clone)]
pub struct Shadows {
    /// Both shadows' state is indexed by slot (module docs): `slot_of` per object id, the
    /// object of each slot in `obj_of`; when `by_id`, the slot is the object id.
    slot_of: Chunked<u32>,
    obj_of: Vec<ObjId>,
    by_id: bool,
    lru: ShadowLru,
    predicted: NextUseOrder,
    runs: Vec<Run>,
    /// One request's references ahead of its run, deepest first (so the next depth its run
    /// needs is on top).
    early: Vec<Early>,
    /// Blocks the real cache holds when it must evict (0 until it first does).
    capacity: usize,
    /// Blocks each shadow may hold: `capacity` times the sampling rate.
    shadow_capacity: usize,
    /// Sampled references per batch, and batches per shadow fill ([`batches_per_fill`]).
    batch_len: usize,
    batches_per_fill: f64,
    /// Objects whose hash is below this are sampled (all until the rate is fixed).
    threshold: u64,
    rate_fixed: bool,
    /// The current batch: references and hit difference (prediction - LRU).
    batch_refs: usize,
    batch_lead: f64,
    /// Decayed count, sum and sum of squares of the batches' differences.
    batches: f64,
    lead_sum: f64,
    lead_squares: f64,
    follow: bool,
    /// Leading-run hits of each shadow since the start.
    pub lru_hits: u64,
    pub predicted_hits: u64,
    /// Evictions of the real cache where the two experts wanted different victims, by who chose.
    pub decided_by_prediction: u64,
    pub decided_by_lru: u64,
}

impl Shadows {
    /// What the judge decided so far and what the shadows earned.
    pub fn counts(&self) -> crate::policy::api::JudgeCounts {
        crate::policy::api::JudgeCounts {
            decided_by_prediction: self.decided_by_prediction,
            decided_by_lru: self.decided_by_lru,
            prediction_shadow_hits: self.predicted_hits,
            lru_shadow_hits: self.lru_hits,
        }
    }

    pub fn new(overdue_factor: f64, ranking: super::order::Ranking) -> Self {
        Shadows {
            slot_of: Chunked::new(NO_SLOT),
            obj_of: Vec::new(),
            by_id: false,
            lru: ShadowLru::default(),
            predicted: NextUseOrder::with_ranking(overdue_factor, ranking),
            runs: Vec::new(),
            early: Vec::new(),
            capacity: 0,
            shadow_capacity: 0,
            batch_len: 0,
            batches_per_fill: 1.0,
            threshold: u64::MAX,
            rate_fixed: false,
            batch_refs: 0,
            batch_lead: 0.0,
            batches: 0.0,
            lead_sum: 0.0,
            lead_squares: 0.0,
            follow: false,
            lru_hits: 0,
            predicted_hits: 0,
            decided_by_prediction: 0,
            decided_by_lru: 0,
        }
    }

    /// The real cache holds `resident` blocks and must evict. At its first eviction the
    /// sampling rate is fixed from its size and the shadows drop the objects not sampled.
    #[inline]
    pub fn observe_capacity(&mut self, resident: usize) {
        if resident <= self.capacity {
            return;
        }
        self.capacity = resident;
        if !self.rate_fixed {
            self.rate_fixed = true;
            let rate = sampling_rate(resident);
            self.threshold = if rate >= 1.0 {
                u64::MAX
            } else {
                (rate * u64::MAX as f64) as u64
            };
            self.drop_unsampled();
        }
        let rate = if self.threshold == u64::MAX {
            1.0
        } else {
            self.threshold as f64 / u64::MAX as f64
        };
        self.shadow_capacity = ((resident as f64 * rate).round() as usize).max(1);
        let per_fill = batches_per_fill(self.shadow_capacity);
        self.batches_per_fill = per_fill as f64;
        self.batch_len = self.shadow_capacity.div_ceil(per_fill);
    }

    /// SHARDS' spatial sampling: a fixed hash of the object id against the threshold.
    #[inline]
    fn sampled(&self, obj: ObjId) -> bool {
        self.threshold == u64::MAX
            || (obj as u64 ^ 0x5851_F42D_4C95_7F2D).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                < self.threshold
    }

    /// The slot of `obj`, if it has one.
    #[inline]
    fn slot(&self, obj: ObjId) -> Option<u32> {
        if self.by_id {
            return Some(obj);
        }
        let s = self.slot_of.get(obj as usize);
        (s != NO_SLOT).then_some(s)
    }

    /// The object of slot `s`.
    #[inline]
    fn obj(&self, s: u32) -> ObjId {
        if self.by_id {
            s
        } else {
            self.obj_of[s as usize]
        }
    }

    /// The slot of `obj`, given one if it has none (module docs).
    #[inline]
    fn slot_or_new(&mut self, obj: ObjId) -> u32 {
        if let Some(s) = self.slot(obj) {
            return s;
        }
        if self.obj_of.last().is_some_and(|&last| obj < last) {
            // a new slot would break ties unlike the id: index by id from now on
            self.index_by_id();
            return obj;
        }
        let s = self.obj_of.len() as u32;
        self.obj_of.push(obj);
        *self.slot_of.get_mut(obj as usize) = s;
        s
    }

    /// Renumber the shadows' state from slots to object ids (slots were given in increasing
    /// id order, so the order of every set is kept).
    fn index_by_id(&mut self) {
        let obj_of = std::mem::take(&mut self.obj_of);
        let to_id = |s: u32| obj_of[s as usize];
        self.predicted.renumber(&to_id);
        let listed: Vec<u32> = self.lru.list.iter().collect();
        self.lru.list = Recency::default();
        for s in listed {
            self.lru.list.push_back(to_id(s));
        }
        let held = std::mem::take(&mut self.lru.held);
        for (s, h) in held.into_iter().enumerate() {
            if h {
                let o = to_id(s as u32) as usize;
                if self.lru.held.len() <= o {
                    self.lru.held.resize(o + 1, false);
                }
                self.lru.held[o] = true;
            }
        }
        self.slot_of = Chunked::new(NO_SLOT);
        self.by_id = true;
    }

    fn drop_unsampled(&mut self) {
        let listed: Vec<u32> = self.lru.list.iter().collect();
        for s in listed {
            if !self.sampled(self.obj(s)) {
                self.lru.list.remove(s);
                self.lru.len -= 1;
            }
        }
        for s in 0..self.lru.held.len() {
            if self.lru.held[s] && !self.sampled(self.obj(s as u32)) {
                self.lru.held[s] = false;
                self.lru.len -= 1;
            }
        }
        for s in 0..self.predicted.ids() {
            let s = s as u32;
            if self.predicted.is_tracked(s) && !self.sampled(self.obj(s)) {
                self.predicted.remove(s);
            }
        }
    }

    /// The prediction's lead in hits over LRU is significant (module docs).
    #[inline]
    pub fn follow_prediction(&self) -> bool {
        self.follow
    }

    /// Close a batch of references and re-judge.
    fn close_batch(&mut self) {
        let keep = 1.0 - 1.0 / (EVIDENCE_FILLS * self.batches_per_fill);
        let d = self.batch_lead;
        self.batches = self.batches * keep + 1.0;
        self.lead_sum = self.lead_sum * keep + d;
        self.lead_squares = self.lead_squares * keep + d * d;
        self.batch_refs = 0;
        self.batch_lead = 0.0;
        let n = self.batches;
        let mean = self.lead_sum / n;
        self.follow = if n <= 1.0 || mean <= 0.0 {
            false
        } else {
            // unbiased variance of the batch differences; the standard error of their mean
            let var = ((self.lead_squares / n - mean * mean) * n / (n - 1.0)).max(0.0);
            mean * mean * n > LEAD_STANDARD_ERRORS * LEAD_STANDARD_ERRORS * var
        };
    }

    /// Object `obj` is referenced at depth `depth` of request `request`, at trace time `now`,
    /// and is predicted to be used next at `next_use`: count each shadow's hit, then serve it
    /// there (evicting first when full, as the real cache does).
    #[inline]
    pub fn reference(&mut self, obj: ObjId, request: u32, depth: u32, now: f64, next_use: f64) {
        let r = request as usize;
        if self.runs.len() <= r {
            self.runs.resize(r + 1, Run::default());
        }
        let sampled = self.sampled(obj);
        let slot = if sampled {
            Some(self.slot_or_new(obj))
        } else {
            None
        };
        let run = &mut self.runs[r];
        if depth > run.next_depth && depth > 0 {
            // ahead of the run: what the shadows hold now counts once the run gets here (the
            // run over the request's depths, whatever order its blocks were allocated in)
            if self.early.last().is_some_and(|x| x.request != request) {
                // the previous request's run never reached them
                self.early.clear();
            }
            if sampled {
                // the batches keep counting references as they come
                self.add_to_batch();
            }
            self.early.push(Early {
                request,
                depth,
                sampled,
                lru_held: slot.is_some_and(|s| self.lru.contains(s)),
                predicted_held: slot.is_some_and(|s| self.predicted.is_tracked(s)),
            });
        } else {
            if depth == 0 {
                run.lru_alive = true;
                run.predicted_alive = true;
            } else if depth != run.next_depth {
                run.lru_alive = false;
                run.predicted_alive = false;
            }
            run.next_depth = depth + 1;
            if let Some(s) = slot {
                let (lru_alive, predicted_alive) = (run.lru_alive, run.predicted_alive);
                self.add_to_batch();
                let lru_held = lru_alive && self.lru.contains(s);
                let predicted_held = predicted_alive && self.predicted.is_tracked(s);
                self.count(r, lru_held, predicted_held);
            }
            // the references that were ahead of the run, now in reach
            while let Some(&x) = self.early.last() {
                let run = &mut self.runs[r];
                if x.request != request || x.depth != run.next_depth {
                    break;
                }
                self.early.pop();
                run.next_depth += 1;
                if x.sampled {
                    self.count(r, x.lru_held, x.predicted_held);
                }
            }
        }
        let Some(obj) = slot else {
            return;
        };
        let cap = self.shadow_capacity;
        if !self.lru.contains(obj) && cap > 0 {
            // more than one when it overflowed while every block was pinned
            while self.lru.len >= cap && self.lru.pop_lru() {}
        }
        self.lru.touch(obj);
        if !self.predicted.is_tracked(obj) && cap > 0 {
            while self.predicted.resident() >= cap && self.predicted.evict(Pins(&[]), now).is_some()
            {
            }
        }
        self.predicted.touch(obj, next_use, now, depth);
    }

    /// A sampled reference of request `r` that each shadow held or not: its hits if the
    /// request's runs are alive, and the prediction's lead in the current batch.
    #[inline]
    fn count(&mut self, r: usize, lru_held: bool, predicted_held: bool) {
        let run = &mut self.runs[r];
        let lru_hit = run.lru_alive && lru_held;
        let predicted_hit = run.predicted_alive && predicted_held;
        run.lru_alive = lru_hit;
        run.predicted_alive = predicted_hit;
        self.batch_lead += predicted_hit as u8 as f64 - lru_hit as u8 as f64;
        self.lru_hits += lru_hit as u64;
        self.predicted_hits += predicted_hit as u64;
    }

    /// One more sampled reference in the current batch (closed after one shadow fill).
    #[inline]
    fn add_to_batch(&mut self) {
        if self.shadow_capacity > 0 {
            self.batch_refs += 1;
            if self.batch_refs >= self.batch_len {
                self.close_batch();
            }
        }
    }

    /// The real cache pinned `obj` (its pin count rose from zero).
    #[inline]
    pub fn pin(&mut self, obj: ObjId) {
        let Some(obj) = self.slot(obj) else {
            return;
        };
        self.lru.pin(obj);
        if self.predicted.is_tracked(obj) {
            self.predicted.pin(obj);
        }
    }

    /// The real cache freed `obj` at trace time `now` (with a revised prediction, when given).
    #[inline]
    pub fn unpin(&mut self, obj: ObjId, now: f64, next_use: Option<f64>) {
        let Some(obj) = self.slot(obj) else {
            return;
        };
        self.lru.unpin(obj);
        if self.predicted.is_pinned(obj) {
            self.predicted.unpin_rekeyed(obj, now, next_use);
        }
    }

    /// The shadows' own invariants: the LRU list agrees with its states and length, the
    /// predicted shadow's sets with its own.
    pub fn validate(&self) -> Result<(), String> {
        let listed = self.lru.list.iter().count();
        let held = self.lru.held.iter().filter(|&&h| h).count();
        if listed != self.lru.list.len() || listed + held != self.lru.len {
            return Err(format!(
                "shadow LRU: {listed} listed ({} counted) + {held} held != {}",
                self.lru.list.len(),
                self.lru.len
            ));
        }
        self.predicted
            .validate(&|e| self.predicted.is_tracked(e))
            .map_err(|e| format!("predicted shadow: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learned::order::Ranking;

    impl Shadows {
        /// Both shadows hold `obj`.
        fn holds(&self, obj: ObjId) -> bool {
            self.slot(obj)
                .is_some_and(|s| self.lru.contains(s) && self.predicted.is_tracked(s))
        }
    }

    /// Feed batches of one reference each (capacity 1) with the given hit differences.
    fn judge(leads: &[i32]) -> Shadows {
        let mut sh = Shadows::new(1.0, Ranking::NextUse);
        sh.observe_capacity(1);
        for &d in leads {
            sh.batch_lead = d as f64;
            sh.close_batch();
        }
        sh
    }

    #[test]
    fn large_caches_are_judged_on_a_sample() {
        assert_eq!(sampling_rate(100), 1.0);
        assert_eq!(sampling_rate(512), 0.5);
        assert_eq!(sampling_rate(10_000), 1.0 / 8.0);
        let mut sh = Shadows::new(1.0, Ranking::NextUse);
        for obj in 0..4096 {
            sh.reference(obj, obj, 0, 0.0, 100.0);
        }
        // the real cache is full at 4,096 blocks: rate 1/8, about 512 sampled blocks stay
        sh.observe_capacity(4096);
        assert_eq!(sh.shadow_capacity, 512);
        assert!((448..=576).contains(&sh.lru.len), "{}", sh.lru.len);
        assert_eq!(sh.lru.len, sh.predicted.resident());
        sh.validate().unwrap();
        // new blocks: only sampled ones enter, and the shadows stay within their capacity
        for obj in 4096..20_000 {
            sh.reference(obj, obj, 0, 1.0, 100.0);
        }
        assert!(sh.lru.len <= 512 && sh.predicted.resident() <= 512);
        assert!(sh.lru.len >= 500, "{}", sh.lru.len);
        sh.validate().unwrap();
    }

    /// Slots or ids, the shadows hold the same objects and count the same hits: with ids in
    /// order of first reference (slots kept) and out of it (back to ids midway).
    #[test]
    fn slots_decide_as_ids() {
        for shuffled in [false, true] {
            let mut by_slot = Shadows::new(0.3, Ranking::ExpectedWait);
            let mut by_id = Shadows::new(0.3, Ranking::ExpectedWait);
            by_id.by_id = true;
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            let mut next_new = 0u32;
            for step in 0..60_000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // mostly reuse among the last 3,000 objects, sometimes a new one
                // the i-th object; with `shuffled`, those after the 8,000th in decreasing ids
                let index = if next_new < 10 || x % 4 == 0 {
                    next_new += 1;
                    next_new - 1
                } else {
                    next_new - 1 - (x >> 8) as u32 % next_new.min(3000)
                };
                let obj = if shuffled && index > 8000 {
                    2_000_000 - index
                } else {
                    index
                };
                let (request, depth) = (step / 4, step % 4);
                let (now, next_use) = (step as f64, step as f64 + (x >> 40) as f64 % 5000.0);
                for sh in [&mut by_slot, &mut by_id] {
                    if step == 2000 {
                        sh.observe_capacity(2048);
                    }
                    sh.reference(obj, request, depth, now, next_use);
                    match x % 11 {
                        0 => sh.pin(obj),
                        1 => sh.unpin(obj, now, Some(next_use + 7.0)),
                        _ => {}
                    }
                }
                assert_eq!(
                    (by_slot.lru_hits, by_slot.predicted_hits),
                    (by_id.lru_hits, by_id.predicted_hits),
                    "step {step}"
                );
                if step % 5000 == 0 {
                    by_slot.validate().unwrap();
                    for i in 0..next_new {
                        let o = if shuffled && i > 8000 {
                            2_000_000 - i
                        } else {
                            i
                        };
                        assert_eq!(by_slot.holds(o), by_id.holds(o), "step {step} object {o}");
                    }
                }
            }
            assert_eq!(by_slot.by_id, shuffled);
            assert!(by_slot.lru_hits > 1000 && by_slot.predicted_hits > 1000);
        }
    }

    /// A request's leading run is counted over its depths whatever order its blocks come in:
    /// `simulate`'s abstract tier touches the cached lead first, then allocates the rest deepest
    /// first (vLLM's free order). Counted in arrival order, every block past the lead ended the
    /// run, and the shadows could never see an expert earn more than the real cache's lead.
    #[test]
    fn runs_are_counted_by_depth_when_the_tail_comes_deepest_first() {
        // 10 blocks cached by a first request, then looked up again: in order, or lead 3 in
        // order then 9, 8, ..., 3; and a run that breaks at a block neither shadow holds
        let in_order: Vec<u32> = (0..10).collect();
        let tail_reversed: Vec<u32> = (0..3).chain((3..10).rev()).collect();
        for (second, want) in [(&in_order, 10), (&tail_reversed, 10)] {
            let mut sh = Shadows::new(1.0, Ranking::NextUse);
            for d in 0..10 {
                sh.reference(d, 0, d, 0.0, 100.0);
            }
            for &d in second {
                sh.reference(d, 1, d, 1.0, 100.0);
            }
            assert_eq!((sh.lru_hits, sh.predicted_hits), (want, want), "{second:?}");
            assert!(sh.early.is_empty());
            // the third request's block 5 is new (object 105): its run stops there, whichever
            // order the tail comes in
            for &d in second {
                sh.reference(if d == 5 { 105 } else { d }, 2, d, 2.0, 100.0);
            }
            assert_eq!(
                (sh.lru_hits, sh.predicted_hits),
                (want + 5, want + 5),
                "{second:?}"
            );
        }
    }

    #[test]
    fn the_prediction_decides_only_on_a_significant_lead() {
        // no evidence, one batch, or a lead that is not two standard errors: LRU
        assert!(!judge(&[]).follow_prediction());
        assert!(!judge(&[5]).follow_prediction());
        // mean 1, sd ~3.8 over 4 batches: standard error 1.9
        assert!(!judge(&[5, -3, 5, -3]).follow_prediction());
        assert!(!judge(&[-2, -2, -2, -2]).follow_prediction());
        // a steady lead of 2 +- 1
        assert!(judge(&[3, 1, 3, 1, 2]).follow_prediction());
        // the evidence decays: after a long losing stretch LRU is back
        let mut leads = vec![2; 20];
        leads.extend([-2; 40]);
        assert!(!judge(&leads).follow_prediction());
    }

    #[test]
    fn shadows_count_only_leading_runs_and_mirror_pins() {
        let mut sh = Shadows::new(1.0, Ranking::NextUse);
        // request 0 brings blocks 10, 11, 12 (depths 0-2) at t=0; the real cache is full at 3
        for (d, obj) in [10, 11, 12].into_iter().enumerate() {
            sh.reference(obj, 0, d as u32, 0.0, 100.0);
        }
        sh.observe_capacity(3);
        // request 1: 20 at depth 0 evicts LRU's 10 (the prediction's 12, deepest of equals)
        sh.reference(20, 1, 0, 1.0, 100.0);
        // request 2 asks 10, 11, 12: LRU misses 10, so its 11 and 12 are not hits (vLLM stops
        // at the first miss); the prediction hits 10 and 11 and misses 12
        sh.reference(10, 2, 0, 2.0, 100.0);
        sh.reference(11, 2, 1, 2.0, 100.0);
        sh.reference(12, 2, 2, 2.0, 100.0);
        assert_eq!((sh.lru_hits, sh.predicted_hits), (0, 2));
        // a skipped depth ends the run: request 3 asks 10 then 12 (depth 2, 1 skipped)
        sh.reference(10, 3, 0, 3.0, 100.0);
        sh.reference(12, 3, 2, 3.0, 100.0);
        assert_eq!(sh.predicted_hits, 3);
        sh.validate().unwrap();
        // pins: with 10 pinned and three new blocks coming, neither shadow evicts 10
        sh.pin(10);
        for (i, obj) in [30, 31, 32].into_iter().enumerate() {
            sh.reference(obj, 4 + i as u32, 0, 4.0, 100.0);
        }
        assert!(sh.holds(10));
        sh.unpin(10, 5.0, None);
        sh.validate().unwrap();
    }
}
