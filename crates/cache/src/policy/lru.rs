//! LRU: evict the least recently used unpinned entry.
//!
//! This is exactly vLLM V1's free block queue (`vllm/v1/core/block_pool.py`,
//! `kv_cache_utils.py::FreeKVCacheBlockQueue`): the list is ordered by the last time an entry was
//! referenced *or freed*; a request's blocks are freed chain tail first, so with equal recency the
//! deeper block goes first. Pinned entries (blocks of running requests, which vLLM removes from
//! the free queue) are skipped when looking for a victim.

use super::list::List;
use super::{Access, EntryId, EvictionPolicy, Pins};

#[derive(Debug, Clone)]
pub struct Lru {
    list: List,
}

impl Default for Lru {
    fn default() -> Self {
        Lru { list: List::new() }
    }
}

impl Lru {
    /// Entries from least to most recently used (for tests and the emulator's introspection).
    pub fn order(&self) -> Vec<EntryId> {
        self.list.iter().collect()
    }
}

impl EvictionPolicy for Lru {
    #[inline]
    fn on_insert(&mut self, e: EntryId, _a: &Access) {
        self.list.push_back(e);
    }

    #[inline]
    fn on_hit(&mut self, e: EntryId, _a: &Access) {
        self.list.move_to_back(e);
    }

    #[inline]
    fn on_unpin(&mut self, e: EntryId, _now: u64) {
        self.list.move_to_back(e);
    }

    #[inline]
    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        let mut cur = self.list.head();
        while let Some(e) = cur {
            if !pins.is_pinned(e) {
                self.list.remove(e);
                return Some(e);
            }
            cur = self.list.next_of(e);
        }
        None
    }

    fn on_remove(&mut self, e: EntryId) {
        self.list.remove(e);
    }

    fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        self.list.validate_members(live, 0)
    }
}
