//! ARC: two LRU lists, T1 (seen once recently) and T2 (seen at least twice), two ghost lists of
//! the ids they evicted (B1, B2), and a target size `p` for T1 that a ghost hit moves: a hit in
//! B1 grows it, a hit in B2 shrinks it.
//!
//! Source: Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache", FAST'03,
//! as implemented by libCacheSim `libCacheSim/cache/eviction/ARC.c` (the Python binding's
//! `ARC`), which we follow step for step, including where it is more specific than the paper:
//! - `p` is a float and `delta` = max(|B2| / |B1|, 1) (resp. |B1| / |B2|) in floating point;
//! - REPLACE takes T1's LRU if `|T1| > 0 && (|T1| > p || (|T1| == p && x in B2))`, *or if T2 is
//!   empty*; otherwise T2's LRU;
//! - case IV's ghost trimming and REPLACE run only when the cache is full (when libCacheSim
//!   evicts), which is the paper's rule until the caller removes objects; a ghost hit (cases
//!   II, III) skips case IV's trimming;
//! - case IV.A with B1 empty drops T1's LRU without remembering it (as the paper).
//!
//! Ghost lists hold object ids ([`Access::obj`]): entry ids are reused. Ghost hits are detected
//! in [`EvictionPolicy::on_miss`], before the eviction they influence.
//!
//! Pins: as in [`Lru`](super::lru::Lru), a pinned entry leaves its list (T1 or T2) but keeps
//! counting in |T1| / |T2| (the sizes ARC adapts on), and re-enters at the MRU end of its list
//! when its pin count drops to zero (freeing a block is its last use). A hit while pinned still
//! promotes a T1 entry to T2. When REPLACE picks a list whose entries are all pinned, it takes
//! the other list's LRU (remembered in that list's ghost). O(1) per operation.

use super::list::List;
use super::{ensure, Access, EntryId, EvictionPolicy, ObjId, Pins};

const UNTRACKED: u8 = 0;
const T1: u8 = 1;
const T2: u8 = 2;

#[derive(Debug, Clone)]
pub struct Arc {
    capacity: u64,
    /// unpinned entries seen once recently, LRU first
    t1: List,
    /// unpinned entries seen at least twice recently, LRU first
    t2: List,
    /// ids of objects evicted from T1 / T2, LRU first
    b1: List,
    b2: List,
    /// list of each entry (T1, T2 or UNTRACKED)
    which: Vec<u8>,
    /// out of its list while pinned
    pinned: Vec<bool>,
    t1_pinned: u64,
    t2_pinned: u64,
    obj_of: Vec<ObjId>,
    /// target size of T1
    p: f64,
    /// the current miss was found in B1 (`T1`) or B2 (`T2`), else UNTRACKED
    ghost_hit: u8,
}

impl Arc {
    pub fn new(capacity: u64) -> Self {
        Arc {
            capacity,
            t1: List::new(),
            t2: List::new(),
            b1: List::new(),
            b2: List::new(),
            which: Vec::new(),
            pinned: Vec::new(),
            t1_pinned: 0,
            t2_pinned: 0,
            obj_of: Vec::new(),
            p: 0.0,
            ghost_hit: UNTRACKED,
        }
    }

    /// The adaptive target size of T1.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// |T1|, |T2|, |B1|, |B2| (pinned entries included in T1 and T2).
    pub fn sizes(&self) -> (u64, u64, u64, u64) {
        (
            self.t1.len() as u64 + self.t1_pinned,
            self.t2.len() as u64 + self.t2_pinned,
            self.b1.len() as u64,
            self.b2.len() as u64,
        )
    }

    /// Unpinned entries of T1 and T2, LRU first.
    pub fn lists(&self) -> (Vec<EntryId>, Vec<EntryId>) {
        (self.t1.iter().collect(), self.t2.iter().collect())
    }

    /// Ghost object ids of B1 and B2, LRU first.
    pub fn ghosts(&self) -> (Vec<ObjId>, Vec<ObjId>) {
        (self.b1.iter().collect(), self.b2.iter().collect())
    }

    fn list_mut(&mut self, which: u8) -> &mut List {
        if which == T1 {
            &mut self.t1
        } else {
            &mut self.t2
        }
    }

    /// The paper's REPLACE: move the LRU entry of T1 or T2 to its ghost list.
    fn replace(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        let (t1, t2, _, _) = self.sizes();
        let t1f = t1 as f64;
        let from_t1 =
            (t1 > 0 && (t1f > self.p || (t1f == self.p && self.ghost_hit == T2))) || t2 == 0;
        let order = if from_t1 { [T1, T2] } else { [T2, T1] };
        for which in order {
            let list = if which == T1 { &self.t1 } else { &self.t2 };
            if let Some(e) = first_unpinned(list, pins) {
                self.list_mut(which).remove(e);
                self.which[e as usize] = UNTRACKED;
                let obj = self.obj_of[e as usize];
                if which == T1 {
                    self.b1.push_back(obj);
                } else {
                    self.b2.push_back(obj);
                }
                return Some(e);
            }
        }
        None
    }
}

/// The first entry of `list` that is not pinned (pinned entries are out of the lists; this only
/// guards unannounced pins).
#[inline]
fn first_unpinned(list: &List, pins: Pins<'_>) -> Option<EntryId> {
    let mut cur = list.head();
    while let Some(e) = cur {
        if !pins.is_pinned(e) {
            return Some(e);
        }
        cur = list.next_of(e);
    }
    None
}

impl EvictionPolicy for Arc {
    fn on_miss(&mut self, a: &Access) {
        self.ghost_hit = UNTRACKED;
        let (b1, b2) = (self.b1.len() as f64, self.b2.len() as f64);
        if self.b1.contains(a.obj) {
            // case II
            self.ghost_hit = T1;
            let delta = (b2 / b1).max(1.0);
            self.p = (self.p + delta).min(self.capacity as f64);
            self.b1.remove(a.obj);
        } else if self.b2.contains(a.obj) {
            // case III
            self.ghost_hit = T2;
            let delta = (b1 / b2).max(1.0);
            self.p = (self.p - delta).max(0.0);
            self.b2.remove(a.obj);
        }
    }

    fn on_insert(&mut self, e: EntryId, a: &Access) {
        ensure(&mut self.which, e, UNTRACKED);
        ensure(&mut self.pinned, e, false);
        ensure(&mut self.obj_of, e, 0);
        self.obj_of[e as usize] = a.obj;
        self.pinned[e as usize] = false;
        // a ghost hit enters T2, anything else T1
        let which = if std::mem::replace(&mut self.ghost_hit, UNTRACKED) != UNTRACKED {
            T2
        } else {
            T1
        };
        // The directory bounds (|T1| + |B1| <= c, all four lists <= 2c) are kept by case IV in
        // `evict`, which runs before an insert into a full cache. A slot can also come free
        // without an eviction (a removal; a reserved slot given back in the engine's block pool,
        // whose eviction made a ghost earlier), and then an insert would grow the directory:
        // trim it here as the paper's case IV.B does for a cache that is not full.
        let (t1, t2, b1, b2) = self.sizes();
        if which == T1 && t1 + b1 >= self.capacity && b1 > 0 {
            self.b1.pop_front();
        } else if t1 + t2 + b1 + b2 >= self.capacity.saturating_mul(2) {
            if b2 > 0 {
                self.b2.pop_front();
            } else if b1 > 0 {
                self.b1.pop_front();
            }
        }
        self.which[e as usize] = which;
        self.list_mut(which).push_back(e);
    }

    fn on_hit(&mut self, e: EntryId, _a: &Access) {
        let pinned = self.pinned[e as usize];
        match self.which[e as usize] {
            T1 => {
                self.which[e as usize] = T2;
                if pinned {
                    self.t1_pinned -= 1;
                    self.t2_pinned += 1;
                } else {
                    self.t1.remove(e);
                    self.t2.push_back(e);
                }
            }
            _ if !pinned => self.t2.move_to_back(e),
            _ => {}
        }
    }

    fn on_pin(&mut self, e: EntryId) {
        if self.pinned[e as usize] {
            return;
        }
        self.pinned[e as usize] = true;
        if self.which[e as usize] == T1 {
            self.t1.remove(e);
            self.t1_pinned += 1;
        } else {
            self.t2.remove(e);
            self.t2_pinned += 1;
        }
    }

    fn on_unpin(&mut self, e: EntryId, _now: u64) {
        if !self.pinned[e as usize] {
            return;
        }
        self.pinned[e as usize] = false;
        if self.which[e as usize] == T1 {
            self.t1_pinned -= 1;
            self.t1.push_back(e);
        } else {
            self.t2_pinned -= 1;
            self.t2.push_back(e);
        }
    }

    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        if self.t1.is_empty() && self.t2.is_empty() {
            return None; // everything is pinned: refuse before touching the ghosts
        }
        if self.ghost_hit != UNTRACKED {
            // cases II and III
            return self.replace(pins);
        }
        // case IV
        let (t1, t2, b1, b2) = self.sizes();
        if t1 + b1 + 1 > self.capacity {
            if b1 > 0 {
                self.b1.pop_front();
                return self.replace(pins);
            }
            if let Some(e) = first_unpinned(&self.t1, pins) {
                self.t1.remove(e);
                self.which[e as usize] = UNTRACKED;
                return Some(e);
            }
            return self.replace(pins);
        }
        if t1 + b1 + t2 + b2 >= self.capacity.saturating_mul(2) && b2 > 0 {
            self.b2.pop_front();
        }
        self.replace(pins)
    }

    fn on_remove(&mut self, e: EntryId) {
        let which = self.which[e as usize];
        if self.pinned[e as usize] {
            self.pinned[e as usize] = false;
            if which == T1 {
                self.t1_pinned -= 1;
            } else {
                self.t2_pinned -= 1;
            }
        } else {
            self.list_mut(which).remove(e);
        }
        self.which[e as usize] = UNTRACKED;
    }

    fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        for l in [&self.t1, &self.t2, &self.b1, &self.b2] {
            l.validate()?;
        }
        let (mut t1_pinned, mut t2_pinned) = (0, 0);
        for e in 0..self.which.len() as EntryId {
            let (w, pinned) = (self.which[e as usize], self.pinned[e as usize]);
            let (in1, in2) = (self.t1.contains(e), self.t2.contains(e));
            let ok = match (w, pinned) {
                (UNTRACKED, false) => !in1 && !in2,
                (T1, false) => in1 && !in2,
                (T2, false) => !in1 && in2,
                (T1 | T2, true) => !in1 && !in2,
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "entry {e}: list {w}, pinned {pinned}, in T1 {in1}, in T2 {in2}"
                ));
            }
            if pinned {
                if w == T1 {
                    t1_pinned += 1;
                } else {
                    t2_pinned += 1;
                }
            }
            let tracked = w != UNTRACKED;
            if tracked != live(e) {
                return Err(format!("entry {e}: tracked={tracked} live={}", live(e)));
            }
            let obj = self.obj_of[e as usize];
            if tracked && (self.b1.contains(obj) || self.b2.contains(obj)) {
                return Err(format!("resident object {obj} is also in a ghost list"));
            }
        }
        if self
            .t1
            .iter()
            .chain(self.t2.iter())
            .any(|e| e as usize >= self.which.len())
        {
            return Err("a listed entry has no state".into());
        }
        if (t1_pinned, t2_pinned) != (self.t1_pinned, self.t2_pinned) {
            return Err(format!(
                "pinned counts ({}, {}) but ({t1_pinned}, {t2_pinned}) pinned entries",
                self.t1_pinned, self.t2_pinned
            ));
        }
        if let Some(o) = self.b1.iter().find(|&o| self.b2.contains(o)) {
            return Err(format!("object {o} is in both ghost lists"));
        }
        let c = self.capacity;
        if !(0.0..=c as f64).contains(&self.p) {
            return Err(format!("p = {} outside [0, {c}]", self.p));
        }
        let (t1, t2, b1, b2) = self.sizes();
        if t1 + t2 > c {
            return Err(format!(
                "|T1| + |T2| = {} exceeds the capacity {c}",
                t1 + t2
            ));
        }
        if t1 + t2 + b1 + b2 > c.saturating_mul(2) {
            return Err(format!(
                "|T1| + |T2| + |B1| + |B2| = {} exceeds twice the capacity {c}",
                t1 + t2 + b1 + b2
            ));
        }
        Ok(())
    }
}

impl super::Registered for Arc {
    type Config = super::NoParams;
    fn build(_config: &Self::Config, capacity: u64) -> Self {
        Arc::new(capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::Script;
    use crate::BlockCache;

    fn objs(c: &BlockCache<Arc>, l: &[EntryId]) -> Vec<ObjId> {
        l.iter().map(|&e| c.object(e).unwrap()).collect()
    }

    #[test]
    fn ghost_hits_move_p_and_enter_t2() {
        // capacity 2, p = 0                    T1 / T2 / B1 / B2, LRU first
        // 1 2 in:                              [1 2] / [] / [] / []
        // 3 in (case IV.A, B1 empty): 1 dropped without a ghost
        //                                      [2 3] / [] / [] / []
        // hit 3 (T1 -> T2):                    [2] / [3] / [] / []
        // 4 in (case IV.B): REPLACE: |T1| = 1 > p = 0 -> 2 to B1
        //                                      [4] / [3] / [2] / []
        // 2 again: B1 hit, p = 0 + max(0/1, 1) = 1; REPLACE: |T1| = 1 = p, not a B2 hit,
        //   T2 not empty -> 3 to B2; 2 enters T2    [4] / [2] / [] / [3]
        // 3 again: B2 hit, p = max(1 - max(0/1, 1), 0) = 0; REPLACE: |T1| = 1 > 0 -> 4 to B1;
        //   3 enters T2                        [] / [2 3] / [4] / []
        let s = Script::new().refs(&[1, 2, 3, 3, 4, 2, 3]);
        let mut c = BlockCache::new(2, Arc::new(2));
        assert_eq!(s.play(&mut c), [1, 2, 3, 4]);
        let (t1, t2) = c.policy.lists();
        assert_eq!((objs(&c, &t1), objs(&c, &t2)), (vec![], vec![2, 3]));
        assert_eq!(c.policy.ghosts(), (vec![4], vec![]));
        assert_eq!(c.policy.p(), 0.0);
    }

    #[test]
    fn case_iv_b_trims_b2_at_twice_the_capacity() {
        // capacity 2                           T1 / T2 / B1 / B2, LRU first
        // 1 2 in, hit both:                    [] / [1 2] / [] / []
        // 3 in: REPLACE, |T1| = 0 -> T2's LRU to B2      [3] / [2] / [] / [1]
        // hit 3:                               [] / [2 3] / [] / [1]
        // 4 in: total 3 < 4; REPLACE -> 2 to B2; hit 4:  [] / [3 4] / [] / [1 2]
        // 5 in: |T1| + |B1| + 1 = 1 <= 2 and total 4 >= 2 * 2 -> B2's LRU (1) forgotten;
        //   REPLACE -> 3 to B2                 [5] / [4] / [] / [2 3]
        let s = Script::new().refs(&[1, 2, 1, 2, 3, 3, 4, 4, 5]);
        let mut c = BlockCache::new(2, Arc::new(2));
        assert_eq!(s.play(&mut c), [1, 2, 3]);
        assert_eq!(c.policy.ghosts(), (vec![], vec![2, 3]));
    }

    #[test]
    fn pinned_entries_count_but_are_skipped() {
        // capacity 2
        // 1* 2 in:            T1 = [2] + 1 pinned
        // 3 in (case IV.A, B1 empty): T1's unpinned LRU is 2 -> dropped
        // unpin 1: back at T1's MRU end:        [3 1]
        // 4 in: 3 dropped
        let s = Script::new().pin(1).refs(&[2, 3]).unpin(1).refs(&[4]);
        let mut c = BlockCache::new(2, Arc::new(2));
        assert_eq!(s.play(&mut c), [2, 3]);
        assert_eq!(c.policy.sizes(), (2, 0, 0, 0));
    }

    #[test]
    fn slots_freed_without_an_insert_do_not_grow_the_ghosts() {
        // the engine's block pool: requests reserve slots (evicting when full), pin the blocks
        // they hit or fill, and give slots back without inserting anything; a later insert
        // then lands in a cache that is not full
        let mut c = BlockCache::new(8, Arc::new(8));
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut reserved, mut pinned, mut clock) = (0u32, Vec::new(), 0u64);
        for _ in 0..5_000 {
            clock += 1;
            match next() % 4 {
                0 if c.reserve() => reserved += 1,
                1 if reserved > 0 => {
                    c.unreserve();
                    reserved -= 1;
                }
                2 => {
                    let obj = (next() % 40) as ObjId;
                    if let crate::block_cache::Outcome::Hit(e)
                    | crate::block_cache::Outcome::Inserted(e) =
                        c.access(&crate::Access::at(obj, clock), true)
                    {
                        pinned.push(e);
                    }
                }
                _ if !pinned.is_empty() => {
                    let e = pinned.swap_remove((next() as usize) % pinned.len());
                    c.unpin(e, clock);
                }
                _ => {}
            }
            c.validate().unwrap();
        }
    }

    #[test]
    fn replace_falls_back_to_the_other_list() {
        // capacity 2
        // 1* in (T1, pinned), 2 in, hit 2:     T1 = [] + 1 pinned, T2 = [2]
        // 3 in (case IV.B): REPLACE picks T1 (|T1| = 1 > p = 0) but it has only pinned
        //   entries -> T2's LRU 2 goes, to B2   T1 = [3] + 1 pinned, T2 = [], B2 = [2]
        let s = Script::new().pin(1).refs(&[2, 2, 3]);
        let mut c = BlockCache::new(2, Arc::new(2));
        assert_eq!(s.play(&mut c), [2]);
        assert_eq!(c.policy.ghosts(), (vec![], vec![2]));
        assert_eq!(c.policy.sizes(), (2, 0, 0, 1));
    }
}
