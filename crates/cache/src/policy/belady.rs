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
//! Pins: a pinned entry leaves the order (it can't be a victim) and re-enters with its latest
//! next use when its pin count drops to zero.
//!
//! The order is a lazy max-heap, as libCacheSim's priority queue: a hit or an unpin pushes the
//! entry's new key and leaves the old item behind; a popped item counts only while it is the
//! entry's current key and the entry is ordered (an item equal to the current key is a
//! harmless duplicate: whichever copy pops first is the right victim). The heap is rebuilt from
//! the ordered entries when stale items outnumber them, so it stays within twice the cache
//! plus a constant. O(log n) amortised per operation.

use std::collections::BinaryHeap;

use super::{ensure, Access, EntryId, EvictionPolicy, Pins};

const UNTRACKED: u8 = 0;
const ORDERED: u8 = 1;
const PINNED: u8 = 2;

/// Stale items tolerated beyond the live ones before a rebuild.
const SLACK: usize = 1024;

#[derive(Debug, Clone, Default)]
pub struct Belady {
    /// (next use, depth, entry) items, the largest is the victim; may hold stale items
    heap: BinaryHeap<(u64, u32, EntryId)>,
    /// (next use, depth) per entry
    key: Vec<(u64, u32)>,
    state: Vec<u8>,
    /// entries in the ORDERED state
    ordered: usize,
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

    /// Whether `item` is its entry's current place in the order.
    #[inline]
    fn is_current(&self, item: &(u64, u32, EntryId)) -> bool {
        let e = item.2;
        self.state(e) == ORDERED && self.key[e as usize] == (item.0, item.1)
    }

    #[inline]
    fn push(&mut self, e: EntryId) {
        if self.heap.len() > 2 * self.ordered + SLACK {
            let items: Vec<_> = (0..self.state.len() as EntryId)
                .filter(|&e| self.state[e as usize] == ORDERED)
                .map(|e| self.item(e))
                .collect();
            self.heap = BinaryHeap::from(items);
        }
        self.heap.push(self.item(e));
    }

    /// Unpinned entries, next victim first, with their next use.
    pub fn order(&self) -> Vec<(EntryId, u64)> {
        let mut items: Vec<_> = self
            .heap
            .iter()
            .filter(|i| self.is_current(i))
            .copied()
            .collect();
        items.sort_unstable_by(|a, b| b.cmp(a));
        items.dedup();
        items.into_iter().map(|(n, _, e)| (e, n)).collect()
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
        self.ordered += 1;
        self.push(e);
    }

    #[inline]
    fn on_hit(&mut self, e: EntryId, a: &Access) {
        self.key[e as usize] = (a.next_use, a.depth);
        if self.state(e) == ORDERED {
            self.push(e);
        }
    }

    fn on_pin(&mut self, e: EntryId) {
        if self.state(e) == ORDERED {
            self.state[e as usize] = PINNED;
            self.ordered -= 1;
        }
    }

    fn on_unpin(&mut self, e: EntryId, _now: u64) {
        if self.state(e) == PINNED {
            self.state[e as usize] = ORDERED;
            self.ordered += 1;
            self.push(e);
        }
    }

    #[inline]
    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        // pinned entries are out of the order; the check only guards unannounced pins
        let mut skipped = Vec::new();
        let victim = loop {
            let Some(item) = self.heap.pop() else {
                break None;
            };
            if !self.is_current(&item) {
                continue;
            }
            if pins.is_pinned(item.2) {
                skipped.push(item);
                continue;
            }
            break Some(item.2);
        };
        self.heap.extend(skipped);
        let e = victim?;
        self.state[e as usize] = UNTRACKED;
        self.ordered -= 1;
        Some(e)
    }

    fn on_remove(&mut self, e: EntryId) {
        if self.state(e) == ORDERED {
            self.ordered -= 1;
        }
        if let Some(s) = self.state.get_mut(e as usize) {
            *s = UNTRACKED;
        }
    }

    fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        let current: std::collections::HashSet<_> =
            self.heap.iter().filter(|i| self.is_current(i)).collect();
        let mut ordered = 0;
        for e in 0..self.state.len() as EntryId {
            let st = self.state(e);
            if st == ORDERED && !current.contains(&self.item(e)) {
                return Err(format!(
                    "entry {e} is ordered but its key is not in the heap"
                ));
            }
            ordered += (st == ORDERED) as usize;
            if (st != UNTRACKED) != live(e) {
                return Err(format!("entry {e}: state {st} but live={}", live(e)));
            }
        }
        if ordered != self.ordered {
            return Err(format!(
                "{} entries counted as ordered, {ordered} are",
                self.ordered
            ));
        }
        Ok(())
    }
}

impl super::Registered for Belady {
    type Config = super::NoParams;
    const ALIASES: &'static [&'static str] = &["opt", "optimal"];
    const ORACLE: bool = true;
    fn build(_config: &Self::Config, _capacity: u64) -> Self {
        Self::default()
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
    fn the_heap_rebuilds_under_many_hits_and_keeps_the_order() {
        // capacity 4: 2 pinned, then 3,000 hits on 1, 3, 4 (no eviction pops the stale items,
        // so the heap is rebuilt, with 2 out of it), 2 unpinned, then 5, 6, 7 evict 2 (never
        // used again) and, with 8, the others by their last next use, farthest first
        let mut s = Script::new().refs(&[1, 3, 4]).pin(2);
        let mut last = std::collections::HashMap::new();
        for i in 0..3_000u64 {
            let obj = [1, 3, 4][(i % 3) as usize];
            let next = 10_000 + (i * 7_919) % 5_000;
            last.insert(obj, next);
            s = s.oracle(obj, next, 0);
        }
        s = s
            .unpin(2)
            .oracle(5, 1, 0)
            .oracle(6, 1, 0)
            .oracle(7, 1, 0)
            .oracle(8, 1, 0);
        let mut rest = vec![1, 3, 4];
        rest.sort_by_key(|o| std::cmp::Reverse(last[o]));
        let mut c = BlockCache::new(4, Belady::default());
        assert_eq!(s.play(&mut c), [vec![2], rest].concat());
        assert!(c.policy.heap.len() < 2 * 4 + SLACK + 2);
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
