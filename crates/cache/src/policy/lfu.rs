//! LFU: evict the unpinned entry with the fewest references since it was admitted; among equal
//! counts, the one that reached that count first (FIFO within a count).
//!
//! Source: libCacheSim `libCacheSim/cache/eviction/LFU.c` (the Python binding's `LFU`): a
//! bucket per count, each a FIFO list; admission puts an entry at the tail of bucket 1, a hit
//! moves it to the tail of the next bucket, eviction takes the head of the lowest non-empty
//! bucket. The count is forgotten on eviction (no aging, no ghost). So among equal counts the
//! victim is the least recently *promoted* (or admitted) entry; libCacheSim's own note says its
//! C++ LFU breaks these ties differently and gets different miss ratios, which is why the tie
//! rule matters for parity (`tests/libcachesim_parity.rs` agrees to the single hit).
//!
//! Deviations: buckets live in a `BTreeMap` keyed by count (libCacheSim: a hash map plus a scan
//! upward for the next minimum), so a hit is O(log k) for k distinct counts in use, and empty
//! buckets are dropped.
//!
//! Pins: a pinned entry leaves its bucket (it can't be a victim); hits while pinned still count;
//! when the pin count drops to zero it re-enters the tail of the bucket of its current count (it
//! was in use until now, so it is the newest among its equals).

use std::collections::BTreeMap;

use super::{ensure, Access, EntryId, EvictionPolicy, Pins};

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Default)]
pub struct Lfu {
    /// references per entry since admission; 0 = untracked
    freq: Vec<u32>,
    prev: Vec<u32>,
    next: Vec<u32>,
    /// out of its bucket while pinned
    pinned: Vec<bool>,
    /// count -> (head, tail) of the unpinned entries with that count, oldest arrival first;
    /// only non-empty buckets are kept
    buckets: BTreeMap<u32, (u32, u32)>,
}

impl Lfu {
    #[inline]
    fn grow(&mut self, e: EntryId) {
        ensure(&mut self.freq, e, 0);
        ensure(&mut self.prev, e, NIL);
        ensure(&mut self.next, e, NIL);
        ensure(&mut self.pinned, e, false);
    }

    #[inline]
    fn link_tail(&mut self, e: EntryId, f: u32) {
        let bucket = self.buckets.entry(f).or_insert((NIL, NIL));
        self.prev[e as usize] = bucket.1;
        self.next[e as usize] = NIL;
        if bucket.1 != NIL {
            self.next[bucket.1 as usize] = e;
        } else {
            bucket.0 = e;
        }
        bucket.1 = e;
    }

    #[inline]
    fn unlink(&mut self, e: EntryId, f: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        let bucket = self.buckets.get_mut(&f).expect("entry's bucket exists");
        if p != NIL {
            self.next[p as usize] = n;
        } else {
            bucket.0 = n;
        }
        if n != NIL {
            self.prev[n as usize] = p;
        } else {
            bucket.1 = p;
        }
        if bucket.0 == NIL {
            self.buckets.remove(&f);
        }
        self.prev[e as usize] = NIL;
        self.next[e as usize] = NIL;
    }

    #[inline]
    fn tracked(&self, e: EntryId) -> bool {
        self.freq.get(e as usize).is_some_and(|&f| f > 0)
    }

    /// Unpinned entries in eviction order: (count, entry), lowest count first.
    pub fn order(&self) -> Vec<(u32, EntryId)> {
        let mut v = Vec::new();
        for (&f, &(head, _)) in &self.buckets {
            let mut cur = head;
            while cur != NIL {
                v.push((f, cur));
                cur = self.next[cur as usize];
            }
        }
        v
    }
}

impl EvictionPolicy for Lfu {
    #[inline]
    fn on_insert(&mut self, e: EntryId, _a: &Access) {
        self.grow(e);
        self.freq[e as usize] = 1;
        self.pinned[e as usize] = false;
        self.link_tail(e, 1);
    }

    #[inline]
    fn on_hit(&mut self, e: EntryId, _a: &Access) {
        let f = self.freq[e as usize];
        let g = f.saturating_add(1);
        self.freq[e as usize] = g;
        if !self.pinned[e as usize] {
            self.unlink(e, f);
            self.link_tail(e, g);
        }
    }

    fn on_pin(&mut self, e: EntryId) {
        if !self.pinned[e as usize] {
            self.unlink(e, self.freq[e as usize]);
            self.pinned[e as usize] = true;
        }
    }

    fn on_unpin(&mut self, e: EntryId, _now: u64) {
        if self.pinned[e as usize] {
            self.pinned[e as usize] = false;
            self.link_tail(e, self.freq[e as usize]);
        }
    }

    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        // pinned entries are out of the buckets; the check only guards unannounced pins
        let mut victim = None;
        'buckets: for &(head, _) in self.buckets.values() {
            let mut cur = head;
            while cur != NIL {
                if !pins.is_pinned(cur) {
                    victim = Some(cur);
                    break 'buckets;
                }
                cur = self.next[cur as usize];
            }
        }
        let e = victim?;
        self.unlink(e, self.freq[e as usize]);
        self.freq[e as usize] = 0;
        Some(e)
    }

    fn on_remove(&mut self, e: EntryId) {
        if !self.pinned[e as usize] {
            self.unlink(e, self.freq[e as usize]);
        }
        self.pinned[e as usize] = false;
        self.freq[e as usize] = 0;
    }

    fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        let mut listed = vec![false; self.freq.len()];
        for (&f, &(head, tail)) in &self.buckets {
            if head == NIL {
                return Err(format!("empty bucket {f} kept"));
            }
            let (mut prev, mut cur) = (NIL, head);
            while cur != NIL {
                let i = cur as usize;
                if listed[i] {
                    return Err(format!("entry {cur} listed twice (cycle?)"));
                }
                listed[i] = true;
                if self.freq[i] != f {
                    return Err(format!(
                        "entry {cur} in bucket {f} has count {}",
                        self.freq[i]
                    ));
                }
                if self.prev[i] != prev {
                    return Err(format!("entry {cur} has a wrong prev link"));
                }
                if self.pinned[i] {
                    return Err(format!("pinned entry {cur} is in a bucket"));
                }
                prev = cur;
                cur = self.next[i];
            }
            if prev != tail {
                return Err(format!("bucket {f}: tail does not end the list"));
            }
        }
        for e in 0..self.freq.len() as EntryId {
            let tracked = self.tracked(e);
            if tracked && !listed[e as usize] && !self.pinned[e as usize] {
                return Err(format!("unpinned entry {e} is in no bucket"));
            }
            if !tracked && (listed[e as usize] || self.pinned[e as usize]) {
                return Err(format!("untracked entry {e} is listed or pinned"));
            }
            if tracked != live(e) {
                return Err(format!("entry {e}: tracked={tracked} live={}", live(e)));
            }
        }
        Ok(())
    }
}

impl super::Registered for Lfu {
    type Config = super::NoParams;
    fn build(_config: &Self::Config, _capacity: u64) -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{run, Script};

    #[test]
    fn lowest_count_then_first_to_reach_it() {
        // capacity 3        buckets (count: oldest arrival first)
        // 1 2 3 in:         1: [1 2 3]
        // hit 2, hit 1:     1: [3]      2: [2 1]
        // 4 in, 3 out:      1: [4]      2: [2 1]
        // hit 4:            2: [2 1 4]
        // 5 in, 2 out (count 2, reached it first)
        // 6 in, 5 out (count 1)
        let s = Script::new().refs(&[1, 2, 3, 2, 1, 4, 4, 5, 6]);
        assert_eq!(run(Lfu::default(), 3, &s), [3, 2, 5]);
    }

    #[test]
    fn pinned_entry_keeps_counting_and_reenters_newest() {
        // capacity 3
        // 1* 2 3 in:        1: [2 3]            (1 pinned, count 1, out)
        // hit 1 twice:      1 has count 3, still out
        // hit 2, hit 3:     2: [2 3]
        // unpin 1:          2: [2 3]  3: [1]
        // 4 in, 2 out;  5 in, 4 out (count 1);  6 in, 5 out
        // 3 (count 2) and 1 (count 3) survive
        let s = Script::new()
            .pin(1)
            .refs(&[2, 3, 1, 1, 2, 3])
            .unpin(1)
            .refs(&[4, 5, 6]);
        let mut cache = crate::BlockCache::new(3, Lfu::default());
        assert_eq!(s.play(&mut cache), [2, 4, 5]);
        assert!(cache.contains(1) && cache.contains(3) && cache.contains(6));
    }
}
