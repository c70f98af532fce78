//! Cache structures and eviction policies, shared by the simulator and the emulator (one truth).
//!
//! The structure ([`BlockCache`]) owns lookup, reference (pin) counts and which entries are
//! resident; a policy ([`EvictionPolicy`]) only orders the resident entries and picks victims
//! among the unpinned ones. Entries are dense `u32` ids into the structure's slab, so policies
//! keep their per-entry state in `Vec`s. Pure, synchronous and deterministic.

pub mod block_cache;
pub mod learned;
pub mod policy;

pub use block_cache::{BlockCache, Outcome};
pub use policy::{
    Access, AnyPolicy, EntryId, EvictionPolicy, JudgeCounts, ObjId, Pins, PolicyConfig, NEVER,
};
