//! LRU: evict the least recently used unpinned entry.
//!
//! This is exactly vLLM V1's free block queue (`vllm/v1/core/block_pool.py`,
//! `kv_cache_utils.py::FreeKVCacheBlockQueue`): the queue holds only unpinned blocks (a hit on a
//! free block takes it out, `ref_cnt` 0 -> 1), ordered by the last time a block was referenced
//! *or freed*; a finished request frees its blocks chain tail first, so with equal recency the
//! deeper block goes first. Eviction pops the head: O(1) whatever the number of pinned blocks.

use super::list::List;
use super::{Access, EntryId, EvictionPolicy, Pins};

/// A recency list of the unpinned entries that evicts its least recently used end (LRU) or,
/// with `MOST_RECENT`, its most recently used end ([`Mru`](super::mru::Mru)): the pin
/// bookkeeping is the same.
#[derive(Debug, Clone, Default)]
pub struct Recency<const MOST_RECENT: bool> {
    /// unpinned entries, least recently used first
    list: List,
    /// entries taken out of the list while pinned
    pinned: Vec<bool>,
}

/// LRU (module docs).
pub type Lru = Recency<false>;

impl<const MOST_RECENT: bool> Recency<MOST_RECENT> {
    /// Unpinned entries from least to most recently used (for LRU, vLLM's free queue order).
    pub fn order(&self) -> Vec<EntryId> {
        self.list.iter().collect()
    }

    #[inline]
    fn is_out(&self, e: EntryId) -> bool {
        self.pinned.get(e as usize).copied().unwrap_or(false)
    }
}

impl<const MOST_RECENT: bool> EvictionPolicy for Recency<MOST_RECENT> {
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

    #[inline]
    fn on_pin(&mut self, e: EntryId) {
        if !self.is_out(e) {
            self.list.remove(e);
            super::ensure(&mut self.pinned, e, false);
            self.pinned[e as usize] = true;
        }
    }

    #[inline]
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
        // pinned entries are out of the list; the check only guards callers that never
        // announced a pin
        let mut cur = if MOST_RECENT {
            self.list.tail()
        } else {
            self.list.head()
        };
        while let Some(e) = cur {
            if !pins.is_pinned(e) {
                self.list.remove(e);
                return Some(e);
            }
            cur = if MOST_RECENT {
                self.list.prev_of(e)
            } else {
                self.list.next_of(e)
            };
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
            let tracked = self.list.contains(e) || self.is_out(e);
            if self.list.contains(e) && self.is_out(e) {
                return Err(format!("entry {e} is both in the free list and pinned"));
            }
            if tracked != live(e) {
                return Err(format!("entry {e}: tracked={tracked} live={}", live(e)));
            }
        }
        Ok(())
    }
}

impl super::Registered for Lru {
    type Config = super::NoParams;
    fn build(_config: &Self::Config, _capacity: u64) -> Self {
        Self::default()
    }
}
