//! The cache structure: a fixed-capacity set of cached objects (vLLM KV blocks, LMCache chunks)
//! with pin counts. A pinned entry (pin count > 0, vLLM: `ref_cnt > 0`, a block of a running
//! request) can never be evicted; the policy orders the rest.
//!
//! Slots can also be *reserved* without an object: vLLM's blocks that hold KV but no hash yet
//! (a prompt's partial tail, a decode block being filled) and LMCache's allocated-but-not-yet-put
//! chunks. They count against the capacity like pinned entries, and the policy never sees them.

use crate::policy::{Access, EntryId, EvictionPolicy, ObjId, Pins};

const NONE: u32 = u32::MAX;

/// What happened to one referenced object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was cached: a hit.
    Hit(EntryId),
    /// It was not cached and has been admitted (evicting a victim if the cache was full).
    Inserted(EntryId),
    /// It was not cached and could not be admitted: the cache is full and every entry is pinned
    /// (vLLM would make the request wait; the simulator records it and carries on).
    Rejected,
}

/// A cache of at most `capacity` objects, keyed by dense object ids.
#[derive(Debug, Clone)]
pub struct BlockCache<P> {
    capacity: u64,
    /// object id -> entry id, or NONE
    slot_of: Vec<u32>,
    /// entry id -> object id, or NONE when the entry is free
    obj_of: Vec<ObjId>,
    /// entry id -> pin count
    pins: Vec<u32>,
    free: Vec<EntryId>,
    len: u64,
    /// Slots held without an object (see the module doc).
    reserved: u64,
    /// Entries with a pin count above zero.
    pinned_entries: u64,
    pub policy: P,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Admissions refused because every entry was pinned.
    pub rejections: u64,
}

impl<P: EvictionPolicy> BlockCache<P> {
    /// A cache holding at most `capacity` objects (`u64::MAX`: unbounded).
    pub fn new(capacity: u64, policy: P) -> Self {
        let prealloc = capacity.min(1 << 20) as usize;
        BlockCache {
            capacity,
            slot_of: Vec::new(),
            obj_of: Vec::with_capacity(prealloc),
            pins: Vec::with_capacity(prealloc),
            free: Vec::new(),
            len: 0,
            reserved: 0,
            pinned_entries: 0,
            policy,
            evictions: 0,
            rejections: 0,
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pinned entries.
    pub fn pinned(&self) -> usize {
        self.pinned_entries as usize
    }

    /// Slots reserved without an object.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Slots a new object or reservation can take now: empty ones plus those of unpinned
    /// entries (vLLM's `get_num_free_blocks`: the free queue holds cached blocks too).
    pub fn free_slots(&self) -> u64 {
        self.capacity
            .saturating_sub(self.reserved)
            .saturating_sub(self.pinned_entries)
    }

    /// Whether `e` is pinned.
    pub fn is_pinned(&self, e: EntryId) -> bool {
        self.pins.get(e as usize).is_some_and(|&p| p > 0)
    }

    /// Take one slot without an object, evicting the policy's victim when the cache is full.
    /// False (nothing changed) when every slot is pinned or reserved.
    pub fn reserve(&mut self) -> bool {
        if self.len + self.reserved >= self.capacity {
            match self.policy.evict(Pins(&self.pins)) {
                Some(victim) => {
                    // the policy forgot its victim when it chose it, as in `access`
                    debug_assert_eq!(self.pins[victim as usize], 0);
                    self.release_entry(victim);
                    self.evictions += 1;
                }
                None => return false,
            }
        }
        self.reserved += 1;
        true
    }

    /// Give back a slot taken by [`reserve`](BlockCache::reserve).
    pub fn unreserve(&mut self) {
        debug_assert!(self.reserved > 0, "unreserve without a reservation");
        self.reserved = self.reserved.saturating_sub(1);
    }

    #[inline]
    pub fn lookup(&self, obj: ObjId) -> Option<EntryId> {
        match self.slot_of.get(obj as usize) {
            Some(&e) if e != NONE => Some(e),
            _ => None,
        }
    }

    #[inline]
    pub fn contains(&self, obj: ObjId) -> bool {
        self.lookup(obj).is_some()
    }

    /// The object an entry holds.
    pub fn object(&self, e: EntryId) -> Option<ObjId> {
        self.obj_of.get(e as usize).copied().filter(|&o| o != NONE)
    }

    /// Reference `a.obj`: a hit refreshes it, a miss admits it, evicting the policy's victim if
    /// the cache is full. With `pin`, the entry's pin count is raised (release with [`unpin`]).
    ///
    /// [`unpin`]: BlockCache::unpin
    #[inline]
    pub fn access(&mut self, a: &Access, pin: bool) -> Outcome {
        if let Some(e) = self.lookup(a.obj) {
            self.policy.on_hit(e, a);
            if pin {
                self.pins[e as usize] += 1;
                if self.pins[e as usize] == 1 {
                    self.pinned_entries += 1;
                    self.policy.on_pin(e);
                }
            }
            return Outcome::Hit(e);
        }
        if self.capacity == 0 {
            self.rejections += 1;
            return Outcome::Rejected;
        }
        self.policy.on_miss(a);
        if self.len + self.reserved >= self.capacity {
            match self.policy.evict(Pins(&self.pins)) {
                Some(victim) => {
                    debug_assert_eq!(
                        self.pins[victim as usize], 0,
                        "policy evicted a pinned entry"
                    );
                    self.release_entry(victim);
                    self.evictions += 1;
                }
                None => {
                    self.rejections += 1;
                    return Outcome::Rejected;
                }
            }
        }
        let e = match self.free.pop() {
            Some(e) => e,
            None => {
                self.obj_of.push(NONE);
                self.pins.push(0);
                (self.obj_of.len() - 1) as EntryId
            }
        };
        if self.slot_of.len() <= a.obj as usize {
            self.slot_of.resize(a.obj as usize + 1, NONE);
        }
        self.slot_of[a.obj as usize] = e;
        self.obj_of[e as usize] = a.obj;
        self.pins[e as usize] = pin as u32;
        self.len += 1;
        self.policy.on_insert(e, a);
        if pin {
            self.pinned_entries += 1;
            self.policy.on_pin(e);
        }
        Outcome::Inserted(e)
    }

    /// Lower an entry's pin count; at zero it becomes evictable again and the policy hears of
    /// it (vLLM: the block is appended to the free queue).
    #[inline]
    pub fn unpin(&mut self, e: EntryId, now: u64) {
        let p = &mut self.pins[e as usize];
        debug_assert!(*p > 0, "unpin of an unpinned entry");
        *p = p.saturating_sub(1);
        if *p == 0 {
            self.pinned_entries -= 1;
            self.policy.on_unpin(e, now);
        }
    }

    /// Evict the policy's victim now, full or not (a background eviction pass); counted in
    /// `evictions`. None when every entry is pinned or the cache is empty.
    pub fn evict_one(&mut self) -> Option<ObjId> {
        if self.len == 0 {
            return None;
        }
        let victim = self.policy.evict(Pins(&self.pins))?;
        debug_assert_eq!(
            self.pins[victim as usize], 0,
            "policy evicted a pinned entry"
        );
        let obj = self.obj_of[victim as usize];
        self.release_entry(victim);
        self.evictions += 1;
        Some(obj)
    }

    /// Drop an unpinned object from the cache (not counted as an eviction).
    pub fn remove(&mut self, obj: ObjId) -> bool {
        match self.lookup(obj) {
            Some(e) if self.pins[e as usize] == 0 => {
                self.policy.on_remove(e);
                self.release_entry(e);
                true
            }
            _ => false,
        }
    }

    fn release_entry(&mut self, e: EntryId) {
        let obj = self.obj_of[e as usize];
        self.slot_of[obj as usize] = NONE;
        self.obj_of[e as usize] = NONE;
        self.pins[e as usize] = 0;
        self.free.push(e);
        self.len -= 1;
    }

    /// Check the structure's invariants (tests call it after every operation).
    pub fn validate(&self) -> Result<(), String> {
        let mut live = 0u64;
        for (e, &obj) in self.obj_of.iter().enumerate() {
            if obj == NONE {
                if self.pins[e] != 0 {
                    return Err(format!("free entry {e} has pin count {}", self.pins[e]));
                }
                continue;
            }
            live += 1;
            if self.slot_of.get(obj as usize) != Some(&(e as u32)) {
                return Err(format!(
                    "entry {e} holds object {obj} but the index disagrees"
                ));
            }
        }
        if live != self.len {
            return Err(format!("len {} but {live} live entries", self.len));
        }
        if self.len.saturating_add(self.reserved) > self.capacity {
            return Err(format!(
                "len {} + reserved {} exceeds capacity {}",
                self.len, self.reserved, self.capacity
            ));
        }
        let pinned = self.pins.iter().filter(|&&p| p > 0).count() as u64;
        if pinned != self.pinned_entries {
            return Err(format!(
                "{pinned} pinned entries, counter says {}",
                self.pinned_entries
            ));
        }
        let indexed = self.slot_of.iter().filter(|&&e| e != NONE).count() as u64;
        if indexed != self.len {
            return Err(format!("index has {indexed} objects, len is {}", self.len));
        }
        if self.free.len() as u64 + self.len != self.obj_of.len() as u64 {
            return Err("free list and live entries do not cover the slab".into());
        }
        self.policy
            .validate(&|e| self.obj_of.get(e as usize).is_some_and(|&o| o != NONE))
    }

    /// The resident objects (any order).
    pub fn resident(&self) -> Vec<ObjId> {
        self.obj_of.iter().copied().filter(|&o| o != NONE).collect()
    }
}
