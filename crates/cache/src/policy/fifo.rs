//! Placeholder: being written.
use super::{Access, EntryId, EvictionPolicy, Pins};

#[derive(Debug, Clone, Default)]
pub struct Fifo;

impl EvictionPolicy for Fifo {
    fn on_insert(&mut self, _e: EntryId, _a: &Access) {}
    fn on_hit(&mut self, _e: EntryId, _a: &Access) {}
    fn evict(&mut self, _pins: Pins<'_>) -> Option<EntryId> {
        unimplemented!("policy not written yet")
    }
    fn on_remove(&mut self, _e: EntryId) {}
}
