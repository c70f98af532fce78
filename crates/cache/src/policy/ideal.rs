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

impl super::Registered for Ideal {
    type Config = super::NoParams;
    const ALIASES: &'static [&'static str] = &["infinite"];
    const UNBOUNDED: bool = true;
    fn build(_config: &Self::Config, _capacity: u64) -> Self {
        Ideal
    }
}
