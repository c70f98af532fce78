//! The infinite cache: never evicts (the structure is built unbounded for it). Gives the ideal
//! (compulsory-miss-only) hit ratio of a trace.

use super::{Access, EntryId, EvictionPolicy, Pins};

#[derive(Debug, Clone, Copy, Default)]
pub struct Ideal;

impl EvictionPolicy for Ideal {
    fn on_insert(&mut self, _e: EntryId, _a: &Access) {}
    fn on_hit(&mut self, _e: EntryId, _a: &Access) {}
    fn evict(&mut self, _pins: Pins<'_>) -> Option<EntryId> {
        None
    }
    fn on_remove(&mut self, _e: EntryId) {}
}
