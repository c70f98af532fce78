//! MRU: evict the most recently used unpinned entry (good for looping scans larger than the
//! cache, bad for almost everything else; here as a bound and for LMCache's `MRU` option).
//!
//! Source: libCacheSim `libCacheSim/cache/eviction/MRU.c` (insert and hits move to the head,
//! evict the head); the list is [`Lru`](super::lru::Lru)'s with the other end popped.
//!
//! Pins: as in LRU, a pinned entry leaves the list and re-enters at the most recent end when its
//! pin count drops to zero (vLLM semantics: freeing a block is its last use), so the blocks a
//! finished request just released are the first victims. O(1) whatever the number of pins.

use super::list::List;
use super::{ensure, Access, EntryId, EvictionPolicy, Pins};

#[derive(Debug, Clone, Default)]
pub struct Mru {
    /// unpinned entries, least recently used first (the victim is the last)
    list: List,
    /// entries taken out of the list while pinned
    pinned: Vec<bool>,
}

impl Mru {
    /// Unpinned entries from least to most recently used (the victim is the last).
    pub fn order(&self) -> Vec<EntryId> {
        self.list.iter().collect()
    }

    #[inline]
    fn is_out(&self, e: EntryId) -> bool {
        self.pinned.get(e as usize).copied().unwrap_or(false)
    }
}

impl EvictionPolicy for Mru {
    #[inline]
    fn on_insert(&mut self, e: EntryId, _a: &Access) {
        self.list.push_back(e);
    }

    #[inline]
    fn on_hit(&mut self, e: EntryId, _a: &Access) {
        if !self.is_out(e) {
            self.list.move_to_back(e);
        }
    }

    fn on_pin(&mut self, e: EntryId) {
        if !self.is_out(e) {
            self.list.remove(e);
            ensure(&mut self.pinned, e, false);
            self.pinned[e as usize] = true;
        }
    }

    fn on_unpin(&mut self, e: EntryId, _now: u64) {
        if self.is_out(e) {
            self.pinned[e as usize] = false;
            self.list.push_back(e);
        } else {
            self.list.move_to_back(e);
        }
    }

    #[inline]
    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        // pinned entries are out of the list; the check only guards unannounced pins
        let mut cur = self.list.tail();
        while let Some(e) = cur {
            if !pins.is_pinned(e) {
                self.list.remove(e);
                return Some(e);
            }
            cur = self.list.prev_of(e);
        }
        None
    }

    fn on_remove(&mut self, e: EntryId) {
        if self.is_out(e) {
            self.pinned[e as usize] = false;
        } else {
            self.list.remove(e);
        }
    }

    fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        self.list.validate()?;
        let n = self
            .pinned
            .len()
            .max(self.list.iter().max().map_or(0, |m| m as usize + 1));
        for e in 0..n as EntryId {
            if self.list.contains(e) && self.is_out(e) {
                return Err(format!("entry {e} is both listed and pinned"));
            }
            let tracked = self.list.contains(e) || self.is_out(e);
            if tracked != live(e) {
                return Err(format!("entry {e}: tracked={tracked} live={}", live(e)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{run, Script};

    #[test]
    fn evicts_most_recent() {
        // capacity 3                (left = least recent, right = most recent = next victim)
        // 1 2 3 in:                 [1 2 3]
        // hit 1:                    [2 3 1]
        // 4 in, 1 out:              [2 3 4]
        // 5 in, 4 out:              [2 3 5]
        let s = Script::new().refs(&[1, 2, 3, 1, 4, 5]);
        assert_eq!(run(Mru::default(), 3, &s), [1, 4]);
    }

    #[test]
    fn unpinned_entry_is_most_recent() {
        // capacity 3
        // 1* 2 3 in:                [2 3]   1 pinned, out of the list
        // 4 in, 3 out:              [2 4]
        // unpin 1:                  [2 4 1]
        // 5 in, 1 out
        let s = Script::new().pin(1).refs(&[2, 3, 4]).unpin(1).refs(&[5]);
        assert_eq!(run(Mru::default(), 3, &s), [3, 1]);
    }
}
