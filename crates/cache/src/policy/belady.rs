//! Belady (MIN/OPT): evict the entry whose next use is farthest in the future. An offline bound:
//! it reads [`Access::next_use`], which the caller fills from an annotated trace.
//!
//! Source: L. A. Belady, "A study of replacement algorithms for a virtual-storage computer", IBM
//! Systems Journal 1966; libCacheSim `libCacheSim/cache/eviction/Belady.c` (the Python binding's
//! `Belady`): a priority queue on the next access time, refreshed on every hit, popped at the
//! farthest; the incoming object is always admitted (no bypass), eviction happens before it.
//!
//! Ties: entries are ordered by `(next_use, depth, entry)` and the largest goes first, so among
//! equal next uses (every [`NEVER`](super::NEVER), or blocks next used by the same request) the
//! deepest block in its prefix chain goes first, which keeps cached prefixes closed, then the
//! larger entry id. On a flat trace with one reference per position, next uses of distinct
//! objects differ unless they are `NEVER`, and which never-used-again entry goes first cannot
//! change a hit, so libCacheSim's heap order and ours give the same hits.
//!
//! Pins: a pinned entry leaves the ordered set (it can't be a victim) and re-enters with its
//! latest next use when its pin count drops to zero. O(log n) per operation.

use std::collections::BTreeSet;

use super::{ensure, Access, EntryId, EvictionPolicy, Pins};

const UNTRACKED: u8 = 0;
const ORDERED: u8 = 1;
const PINNED: u8 = 2;

#[derive(Debug, Clone, Default)]
pub struct Belady {
    /// unpinned entries as (next use, depth, entry): the last is the victim
    order: BTreeSet<(u64, u32, EntryId)>,
    /// (next use, depth) per entry
    key: Vec<(u64, u32)>,
    state: Vec<u8>,
}

impl Belady {
    #[inline]
    fn state(&self, e: EntryId) -> u8 {
        self.state.get(e as usize).copied().unwrap_or(UNTRACKED)
    }

    #[inline]
    fn item(&self, e: EntryId) -> (u64, u32, EntryId) {
        let (n, d) = self.key[e as usize];
        (n, d, e)
    }

    /// Unpinned entries, next victim first, with their next use.
    pub fn order(&self) -> Vec<(EntryId, u64)> {
        self.order.iter().rev().map(|&(n, _, e)| (e, n)).collect()
    }
}

impl EvictionPolicy for Belady {
    fn needs_oracle(&self) -> bool {
        true
    }

    #[inline]
    fn on_insert(&mut self, e: EntryId, a: &Access) {
        ensure(&mut self.key, e, (0, 0));
        ensure(&mut self.state, e, UNTRACKED);
        self.key[e as usize] = (a.next_use, a.depth);
        self.state[e as usize] = ORDERED;
        self.order.insert(self.item(e));
    }

    #[inline]
    fn on_hit(&mut self, e: EntryId, a: &Access) {
        let ordered = self.state(e) == ORDERED;
        if ordered {
            self.order.remove(&self.item(e));
        }
        self.key[e as usize] = (a.next_use, a.depth);
        if ordered {
            self.order.insert(self.item(e));
        }
    }

    fn on_pin(&mut self, e: EntryId) {
        if self.state(e) == ORDERED {
            self.order.remove(&self.item(e));
            self.state[e as usize] = PINNED;
        }
    }

    fn on_unpin(&mut self, e: EntryId, _now: u64) {
        if self.state(e) == PINNED {
            self.order.insert(self.item(e));
            self.state[e as usize] = ORDERED;
        }
    }

    #[inline]
    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        // pinned entries are out of the set; the check only guards unannounced pins
        let item = *self
            .order
            .iter()
            .rev()
            .find(|&&(_, _, e)| !pins.is_pinned(e))?;
        self.order.remove(&item);
        self.state[item.2 as usize] = UNTRACKED;
        Some(item.2)
    }

    fn on_remove(&mut self, e: EntryId) {
        if self.state(e) == ORDERED {
            self.order.remove(&self.item(e));
        }
        if let Some(s) = self.state.get_mut(e as usize) {
            *s = UNTRACKED;
        }
    }

    fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        let mut ordered = 0;
        for e in 0..self.state.len() as EntryId {
            let st = self.state(e);
            let in_set = st != UNTRACKED && self.order.contains(&self.item(e));
            if in_set != (st == ORDERED) {
                return Err(format!(
                    "entry {e}: state {st} but in the ordered set={in_set}"
                ));
            }
            ordered += (st == ORDERED) as usize;
            if (st != UNTRACKED) != live(e) {
                return Err(format!("entry {e}: state {st} but live={}", live(e)));
            }
        }
        if ordered != self.order.len() {
            return Err(format!(
                "ordered set holds {} items for {ordered} entries",
                self.order.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::Script;
    use crate::{BlockCache, NEVER};

    #[test]
    fn farthest_next_use_goes_first() {
        // capacity 2; the trace is  a b c b a  (positions 0..4), next uses in brackets
        // a[4] b[3] in
        // c[NEVER] in: a is next used farthest (4 > 3): a out
        // b[NEVER] hit; a[NEVER] in: c and b are never used again, equal next use and depth:
        //   the larger entry id goes: c took a's entry 0, b has entry 1 -> b out
        let s = Script::new()
            .oracle(1, 4, 0)
            .oracle(2, 3, 0)
            .oracle(3, NEVER, 0)
            .oracle(2, NEVER, 0)
            .oracle(1, NEVER, 0);
        let mut c = BlockCache::new(2, Belady::default());
        assert_eq!(s.play(&mut c), [1, 2]);
    }

    #[test]
    fn ties_evict_the_deepest_block() {
        // capacity 3: a request's chain 10 -> 11 -> 12, all next used by request 7
        // 13 in: 10 11 12 tie on next use 7 -> deepest (12) out, then 11 for 14
        let s = Script::new()
            .oracle(10, 7, 0)
            .oracle(11, 7, 1)
            .oracle(12, 7, 2)
            .oracle(13, 5, 0)
            .oracle(14, 5, 0);
        let mut c = BlockCache::new(3, Belady::default());
        assert_eq!(s.play(&mut c), [12, 11]);
    }

    #[test]
    fn pinned_entries_are_skipped_then_restored() {
        // capacity 2
        // 1*[NEVER] 2[5] in; 3[6] in: 1 is farthest but pinned -> 2 out
        // unpin 1: back in the order with NEVER; 4[7] in: 1 out
        let s = Script::new()
            .pin(1)
            .oracle(2, 5, 0)
            .oracle(3, 6, 0)
            .unpin(1)
            .oracle(4, 7, 0);
        let mut c = BlockCache::new(2, Belady::default());
        assert_eq!(s.play(&mut c), [2, 1]);
    }
}
