//! Placeholder: being written.
use serde::{Deserialize, Serialize};

use super::{Access, EntryId, EvictionPolicy, Pins};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct S3FifoConfig {}

#[derive(Debug, Clone, Default)]
pub struct S3Fifo;

impl S3Fifo {
    pub fn new(_capacity: u64, _c: &S3FifoConfig) -> Self {
        S3Fifo
    }
}

impl EvictionPolicy for S3Fifo {
    fn on_insert(&mut self, _e: EntryId, _a: &Access) {}
    fn on_hit(&mut self, _e: EntryId, _a: &Access) {}
    fn evict(&mut self, _pins: Pins<'_>) -> Option<EntryId> {
        unimplemented!("policy not written yet")
    }
    fn on_remove(&mut self, _e: EntryId) {}
}
