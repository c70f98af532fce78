//! MRU: evict the most recently used unpinned entry (good for looping scans larger than the
//! cache, bad for almost everything else; here as a bound and for LMCache's `MRU` option).
//!
//! Source: libCacheSim `libCacheSim/cache/eviction/MRU.c` (insert and hits move to the head,
//! evict the head); the list is [`Lru`](super::lru::Lru)'s with the other end popped.
//!
//! Pins: as in LRU, a pinned entry leaves the list and re-enters at the most recent end when its
//! pin count drops to zero (vLLM semantics: freeing a block is its last use), so the blocks a
//! finished request just released are the first victims. O(1) whatever the number of pins.

/// MRU (module docs): LRU's list and pin bookkeeping, evicting the other end.
pub type Mru = super::lru::Recency<true>;

impl super::Registered for Mru {
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
