//! The judge of "LRU as a second expert" ([`NextUseOrder::adaptive`]): two shadow caches fed
//! the same references as the real one, one evicting by LRU and one by the prediction alone,
//! each counting the hits a prefix cache would really get (the leading run of each request's
//! blocks: vLLM and LMCache hit only up to the first miss). The real cache follows the shadow
//! with more hits lately, so when the prediction loses it hands the cache to LRU.
//!
//! This is set dueling (Qureshi et al., "Adaptive insertion policies", ISCA'07: DIP) with
//! whole-cache shadows instead of sampled sets, in the form of miniature simulations
//! (Waldspurger et al., ATC'17) at sampling rate 1. The experts are judged by what they would
//! earn, hits of leading runs, so the prefix structure is part of the verdict: an expert that
//! evicts the middle of a prefix loses every hit behind it. (The first judge compared victims
//! pairwise, whichever of two blocks was referenced first, as Belady would: that verdict is
//! blind to the blocks a victim takes with it, and lost 5.5 points to LRU on WEKA.)
//!
//! Deviations and approximations, all shared by both shadows:
//! - The shadows see the references the real cache sees (a block the real cache holds beyond a
//!   request's leading run is not referenced by the engine, so a shadow cannot count it); a
//!   request's run ends at a skipped depth.
//! - Each shadow holds as many blocks as the real cache held when it last had to evict (the
//!   policy is not told the capacity; before the first eviction the shadows hold what the real
//!   cache holds). Blocks a running request holds without a hash are not modelled.
//! - Pins are mirrored by object: a block pinned in the real cache is pinned in each shadow that
//!   holds it. When every block of a shadow is pinned, it overflows until one is freed.
//! - LRU is the incumbent: the prediction decides only while its lead is significant. The
//!   references are cut into batches of one cache fill (`capacity` references); each batch
//!   gives the difference of the two shadows' hits, and the prediction decides while the decayed
//!   mean of those differences is more than [`LEAD_STANDARD_ERRORS`] standard errors above zero
//!   (batch means, the usual test for a correlated series: one request's blocks hit or miss
//!   together). The decay keeps about the last [`EVIDENCE_FILLS`] batches. Both constants are
//!   chosen a priori, not fitted to any trace.
//!
//! [`NextUseOrder::adaptive`]: super::order::NextUseOrder::adaptive

use super::order::NextUseOrder;
use crate::policy::api::{ObjId, Pins};

/// About how many cache fills of references the judge remembers (module docs). A priori: the
/// difference between two policies shows over several turnovers of the cache, and a workload
/// that drifts should be re-judged within tens of them.
pub const EVIDENCE_FILLS: f64 = 16.0;

/// How many standard errors the prediction's lead over LRU must be for it to decide (module
/// docs): the textbook two.
pub const LEAD_STANDARD_ERRORS: f64 = 2.0;

const NIL: u32 = u32::MAX;
const ABSENT: u8 = 0;
const LISTED: u8 = 1;
const HELD: u8 = 2;

/// A shadow LRU over object ids: an intrusive list (head = least recent), O(1) per reference.
#[derive(Debug, Clone, Default)]
struct ShadowLru {
    prev: Vec<u32>,
    next: Vec<u32>,
    state: Vec<u8>,
    head: u32,
    tail: u32,
    /// resident objects, pinned ones included
    len: usize,
}

impl ShadowLru {
    fn new() -> Self {
        ShadowLru {
            head: NIL,
            tail: NIL,
            ..Default::default()
        }
    }

    #[inline]
    fn grow(&mut self, o: ObjId) {
        let n = o as usize + 1;
        if self.state.len() < n {
            self.prev.resize(n, NIL);
            self.next.resize(n, NIL);
            self.state.resize(n, ABSENT);
        }
    }

    #[inline]
    fn contains(&self, o: ObjId) -> bool {
        self.state.get(o as usize).is_some_and(|&s| s != ABSENT)
    }

    #[inline]
    fn unlink(&mut self, o: ObjId) {
        let i = o as usize;
        let (p, n) = (self.prev[i], self.next[i]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
    }

    #[inline]
    fn push_back(&mut self, o: ObjId) {
        let i = o as usize;
        self.prev[i] = self.tail;
        self.next[i] = NIL;
        if self.tail == NIL {
            self.head = o;
        } else {
            self.next[self.tail as usize] = o;
        }
        self.tail = o;
        self.state[i] = LISTED;
    }

    /// Reference `o`: most recent (a held block stays held).
    #[inline]
    fn touch(&mut self, o: ObjId) {
        self.grow(o);
        match self.state[o as usize] {
            LISTED => self.unlink(o),
            HELD => return,
            _ => self.len += 1,
        }
        self.push_back(o);
    }

    #[inline]
    fn pop_lru(&mut self) -> bool {
        if self.head == NIL {
            return false;
        }
        let o = self.head;
        self.unlink(o);
        self.state[o as usize] = ABSENT;
        self.len -= 1;
        true
    }

    #[inline]
    fn pin(&mut self, o: ObjId) {
        if self.state.get(o as usize) == Some(&LISTED) {
            self.unlink(o);
            self.state[o as usize] = HELD;
        }
    }

    /// A freed block counts as most recent (vLLM appends it to the free queue).
    #[inline]
    fn unpin(&mut self, o: ObjId) {
        if self.state.get(o as usize) == Some(&HELD) {
            self.push_back(o);
        }
    }
}

/// Per request: the next depth expected and whether each shadow's leading run is still alive.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    next_depth: u32,
    lru_alive: bool,
    predicted_alive: bool,
}

/// The two shadows and the judge (module docs).
#[derive(Debug, Clone)]
pub struct Shadows {
    lru: ShadowLru,
    predicted: NextUseOrder,
    runs: Vec<Run>,
    /// Blocks each shadow may hold (0 until the real cache first evicts).
    capacity: usize,
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
    pub fn new(overdue_factor: f64, ranking: super::order::Ranking) -> Self {
        Shadows {
            lru: ShadowLru::new(),
            predicted: NextUseOrder::with_ranking(overdue_factor, ranking),
            runs: Vec::new(),
            capacity: 0,
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

    /// The real cache holds `resident` blocks and must evict: the shadows may hold as many.
    #[inline]
    pub fn observe_capacity(&mut self, resident: usize) {
        if resident > self.capacity {
            self.capacity = resident;
        }
    }

    /// The prediction's lead in hits over LRU is significant (module docs).
    #[inline]
    pub fn follow_prediction(&self) -> bool {
        self.follow
    }

    /// Close a batch of references and re-judge.
    fn close_batch(&mut self) {
        let keep = 1.0 - 1.0 / EVIDENCE_FILLS;
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
        let run = &mut self.runs[r];
        if depth == 0 {
            run.lru_alive = true;
            run.predicted_alive = true;
        } else if depth != run.next_depth {
            run.lru_alive = false;
            run.predicted_alive = false;
        }
        run.next_depth = depth + 1;
        let lru_hit = run.lru_alive && self.lru.contains(obj);
        let predicted_hit = run.predicted_alive && self.predicted.is_tracked(obj);
        run.lru_alive = lru_hit;
        run.predicted_alive = predicted_hit;
        self.batch_lead += predicted_hit as u8 as f64 - lru_hit as u8 as f64;
        if self.capacity > 0 {
            self.batch_refs += 1;
            if self.batch_refs >= self.capacity {
                self.close_batch();
            }
        }
        self.lru_hits += lru_hit as u64;
        self.predicted_hits += predicted_hit as u64;

        if !self.lru.contains(obj) && self.capacity > 0 {
            // more than one when it overflowed while every block was pinned
            while self.lru.len >= self.capacity && self.lru.pop_lru() {}
        }
        self.lru.touch(obj);
        if !self.predicted.is_tracked(obj) && self.capacity > 0 {
            while self.predicted.resident() >= self.capacity
                && self.predicted.evict(Pins(&[]), now).is_some()
            {}
        }
        self.predicted.touch(obj, next_use, now, depth);
    }

    /// The real cache pinned `obj` (its pin count rose from zero).
    #[inline]
    pub fn pin(&mut self, obj: ObjId) {
        self.lru.pin(obj);
        if self.predicted.is_tracked(obj) {
            self.predicted.pin(obj);
        }
    }

    /// The real cache freed `obj` at trace time `now`.
    #[inline]
    pub fn unpin(&mut self, obj: ObjId, now: f64) {
        self.lru.unpin(obj);
        if self.predicted.is_pinned(obj) {
            self.predicted.unpin(obj, now);
        }
    }

    /// The shadows' own invariants: the LRU list agrees with its states and length, the
    /// predicted shadow's sets with its own.
    pub fn validate(&self) -> Result<(), String> {
        let mut listed = 0usize;
        let mut o = self.lru.head;
        while o != NIL {
            listed += 1;
            if listed > self.lru.len {
                return Err("the shadow LRU list is longer than its length".into());
            }
            o = self.lru.next[o as usize];
        }
        let held = self.lru.state.iter().filter(|&&s| s == HELD).count();
        if listed + held != self.lru.len {
            return Err(format!(
                "shadow LRU: {listed} listed + {held} held != {}",
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
        assert!(sh.lru.contains(10) && sh.predicted.is_tracked(10));
        sh.unpin(10, 5.0);
        sh.validate().unwrap();
    }
}
