//! SIEVE: one FIFO queue, a visited bit per entry and a hand that sweeps from the oldest entry
//! towards the newest, clearing visited bits and evicting the first unvisited entry it meets;
//! the hand stays where it stopped.
//!
//! Source: Zhang et al., "SIEVE is Simpler than LRU: an Efficient Turn-Key Eviction Algorithm
//! for Web Caches", NSDI'24, and libCacheSim `libCacheSim/cache/eviction/Sieve.c` (the Python
//! binding's `Sieve`): new entries go to the newest end unvisited, a hit sets the bit, the hand
//! starts at the oldest entry when it has none, wraps from the newest end back to the oldest, and
//! after an eviction rests on the victim's newer neighbour (none if the victim was the newest).
//! Removing the entry under the hand moves the hand the same way. O(1) amortized, no hashing.
//!
//! Pins: the hand steps over a pinned entry without touching its visited bit (a pinned entry is
//! in use; its bit keeps recording real hits only, so a one-hit block released by its request is
//! still a one-hit block). Unpinning changes nothing. If the hand meets only pinned entries for a
//! whole turn, every entry is pinned and `evict` returns `None`.

use super::list::List;
use super::{ensure, Access, EntryId, EvictionPolicy, Pins};

#[derive(Debug, Clone, Default)]
pub struct Sieve {
    /// oldest first (libCacheSim's tail) to newest (its head)
    queue: List,
    visited: Vec<bool>,
    /// where the next sweep starts; `None` = at the oldest entry
    hand: Option<EntryId>,
}

impl Sieve {
    /// Entries oldest first, with their visited bit.
    pub fn order(&self) -> Vec<(EntryId, bool)> {
        self.queue
            .iter()
            .map(|e| (e, self.visited[e as usize]))
            .collect()
    }

    /// The entry the next sweep starts from.
    pub fn hand(&self) -> Option<EntryId> {
        self.hand.or(self.queue.head())
    }
}

impl EvictionPolicy for Sieve {
    #[inline]
    fn on_insert(&mut self, e: EntryId, _a: &Access) {
        ensure(&mut self.visited, e, false);
        self.visited[e as usize] = false;
        self.queue.push_back(e);
    }

    #[inline]
    fn on_hit(&mut self, e: EntryId, _a: &Access) {
        self.visited[e as usize] = true;
    }

    #[inline]
    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        let mut cur = self.hand.or(self.queue.head())?;
        let mut pinned_run = 0usize;
        loop {
            if pins.is_pinned(cur) {
                pinned_run += 1;
                if pinned_run >= self.queue.len() {
                    return None;
                }
            } else if self.visited[cur as usize] {
                self.visited[cur as usize] = false;
                pinned_run = 0;
            } else {
                self.hand = self.queue.next_of(cur);
                self.queue.remove(cur);
                return Some(cur);
            }
            cur = match self.queue.next_of(cur) {
                Some(n) => n,
                None => self.queue.head().expect("non-empty"),
            };
        }
    }

    fn on_remove(&mut self, e: EntryId) {
        if self.hand == Some(e) {
            self.hand = self.queue.next_of(e);
        }
        self.queue.remove(e);
    }

    fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        self.queue.validate_members(live, self.visited.len())?;
        if let Some(h) = self.hand {
            if !self.queue.contains(h) {
                return Err(format!("hand on entry {h}, which is not in the queue"));
            }
        }
        Ok(())
    }
}

impl super::Registered for Sieve {
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
    fn hand_clears_visited_and_stays() {
        // capacity 4        queue oldest -> newest, * = visited, ^ = hand
        // 1 2 3 4 in:       [1 2 3 4]
        // hit 1, hit 3:     [1* 2 3* 4]
        // 5 in: hand clears 1, evicts 2, rests on 3:      [1 3*^ 4 5]
        // 6 in: hand clears 3, evicts 4, rests on 5:      [1 3 5^ 6]
        // hit 5; 7 in: clears 5, 6 is unvisited: out     [1 3 5 7], hand wraps to none
        // 8 in: hand from the oldest: 1 unvisited, out
        let s = Script::new().refs(&[1, 2, 3, 4, 1, 3, 5, 6, 5, 7, 8]);
        assert_eq!(run(Sieve::default(), 4, &s), [2, 4, 6, 1]);
    }

    #[test]
    fn all_visited_wraps_around() {
        // capacity 3
        // 1 2 3 in, all hit:  [1* 2* 3*]
        // 4 in: the hand clears 1 2 3, wraps, evicts 1
        let s = Script::new().refs(&[1, 2, 3, 1, 2, 3, 4]);
        assert_eq!(run(Sieve::default(), 3, &s), [1]);
    }

    #[test]
    fn hand_skips_pinned_without_clearing() {
        // capacity 3
        // 1* 2 3 in; hit 1, hit 2:   [1*p 2* 3]   (p = pinned)
        // 4 in: skips 1 (bit kept), clears 2, evicts 3:   [1*p 2 4]
        // unpin 1; 5 in: hand wrapped (3 was newest) -> starts at 1: clears 1, evicts 2
        let s = Script::new()
            .pin(1)
            .refs(&[2, 3, 1, 2, 4])
            .unpin(1)
            .refs(&[5]);
        assert_eq!(run(Sieve::default(), 3, &s), [3, 2]);
    }

    #[test]
    fn removing_the_entry_under_the_hand_moves_the_hand_on() {
        // capacity 3
        // 1 2 3 in, hit 1; 4 in: clears 1, evicts 2, hand on 3:   [1 3^ 4]
        // remove 3: the hand moves to its newer neighbour:         [1 4^]
        // 5 in fills the cache; 6 in: 4 is unvisited -> out (not 1)
        let s = Script::new().refs(&[1, 2, 3, 1, 4]).remove(3).refs(&[5, 6]);
        assert_eq!(run(Sieve::default(), 3, &s), [2, 4]);
    }

    #[test]
    fn everything_pinned_rejects() {
        let s = Script::new().pin(1).pin(2).refs(&[3]);
        let mut cache = crate::BlockCache::new(2, Sieve::default());
        assert!(s.play(&mut cache).is_empty());
        assert_eq!(cache.rejections, 1);
    }
}
