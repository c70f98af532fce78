//! vLLM V1's `BlockPool` (`vllm/v1/core/block_pool.py`) over a [`BlockCache`]: the cache holds
//! the blocks that carry a hash (cached, free or in use); blocks a request holds without a hash
//! (its partial tail, a decode block being filled, a duplicate of a block cached elsewhere) are
//! reserved slots. Both count against the usable blocks (`num_gpu_blocks - 1`: block 0 is the
//! null block).
//!
//! Free-queue order as vLLM keeps it: allocation pops the head; freed blocks without a hash are
//! prepended (reused first: here an empty slot is always taken before anything is evicted) and
//! freed hashed blocks are appended in the order given, a request's blocks in reverse (its
//! chain tail is evicted first). With LRU this is the policy's order; other policies order the
//! unpinned cached blocks their own way.
//!
//! Deviation: a block whose hash is already cached by another physical block (two requests
//! computed the same block) stays a reserved slot here and is reused first when freed; vLLM
//! keeps both physical blocks under the hash and appends the duplicate to the tail.

use std::collections::VecDeque;

use inferencelab_cache::{Access, BlockCache, EntryId, EvictionPolicy, ObjId, Outcome};
use rustc_hash::FxHashMap;

/// One block a request holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A block with a hash: an entry of the cache, pinned while the request holds it.
    Cached(EntryId),
    /// A block without a hash (or a duplicate): a reserved slot.
    Raw,
}

/// The GPU block pool: the cache of hashed blocks and the logical clock of its references.
pub struct KvPool<P> {
    pub cache: BlockCache<P>,
    /// One tick per block reference.
    pub clock: u64,
    /// vLLM's `--enable-prefix-caching`: off, blocks are never hashed nor looked up.
    caching: bool,
    /// For a policy that reads the waiting queue (`EvictionPolicy::uses_waiting_queue`): per
    /// block, the ranks (arrival order) of the waiting requests that will look it up, ascending.
    /// A deque: admissions take the earliest rank (FCFS), arrivals add the latest, so with
    /// thousands of requests waiting for one shared prefix both ends are O(1) (a `Vec`'s
    /// `remove(0)` made every admission O(queue) per shared block).
    wanted: Option<FxHashMap<ObjId, VecDeque<u64>>>,
}

/// How a block reference is described to the policy: `(object, depth in the sequence, clock)`.
pub type MakeAccess<'a> = &'a dyn Fn(ObjId, usize, u64) -> Access;

impl<P: EvictionPolicy> KvPool<P> {
    pub fn new(cache: BlockCache<P>) -> Self {
        let wanted = cache.policy.uses_waiting_queue().then(FxHashMap::default);
        KvPool {
            cache,
            clock: 0,
            caching: true,
            wanted,
        }
    }

    /// Whether the policy is told what waiting requests want ([`want`](KvPool::want)).
    pub fn tracks_waiting(&self) -> bool {
        self.wanted.is_some() && self.caching
    }

    /// Request `rank` (its place in arrival order) waits to be admitted and will look up
    /// `keys`, the blocks the engine knows it has (vLLM hashes a prompt's blocks when the
    /// request arrives): the policy is told of each cached one whose earliest wanting request
    /// this becomes (`EvictionPolicy::on_wanted`). Returns how many blocks the request now
    /// wants, for its [`unwant`](KvPool::unwant): `keys.len()`, or 0 (a no-op) unless
    /// [`tracks_waiting`](KvPool::tracks_waiting).
    pub fn want(&mut self, keys: &[ObjId], rank: u64) -> usize {
        if !self.caching {
            return 0;
        }
        let Some(wanted) = &mut self.wanted else {
            return 0;
        };
        for &k in keys {
            let ranks = wanted.entry(k).or_default();
            let Err(at) = ranks.binary_search(&rank) else {
                continue;
            };
            ranks.insert(at, rank);
            if at == 0 {
                if let Some(e) = self.cache.lookup(k) {
                    self.cache.policy.on_wanted(e, Some(rank));
                }
            }
        }
        keys.len()
    }

    /// (Wanting request, block) pairs the pool holds: the sum of the blocks of every request it
    /// was told waits ([`Scheduler::validate`](crate::vllm::Scheduler::validate) checks it).
    pub fn wanted_pairs(&self) -> usize {
        self.wanted
            .as_ref()
            .map_or(0, |w| w.values().map(VecDeque::len).sum())
    }

    /// Request `rank` no longer waits (admitted, or dropped): undo its [`want`](KvPool::want)
    /// of `keys`.
    pub fn unwant(&mut self, keys: &[ObjId], rank: u64) {
        let Some(wanted) = &mut self.wanted else {
            return;
        };
        for &k in keys {
            let Some(ranks) = wanted.get_mut(&k) else {
                continue;
            };
            let Ok(at) = ranks.binary_search(&rank) else {
                continue;
            };
            ranks.remove(at);
            let next = ranks.front().copied();
            if next.is_none() {
                wanted.remove(&k);
            }
            if at == 0 {
                if let Some(e) = self.cache.lookup(k) {
                    self.cache.policy.on_wanted(e, next);
                }
            }
        }
    }

    /// A pool without prefix caching (every block stays raw; give it an unbounded cache to
    /// model "no GPU tier": nothing hits and nothing waits for blocks).
    pub fn without_caching(cache: BlockCache<P>) -> Self {
        KvPool {
            cache,
            clock: 0,
            caching: false,
            wanted: None,
        }
    }

    /// Blocks an allocation can take now (vLLM's `get_num_free_blocks`).
    pub fn free_blocks(&self) -> u64 {
        self.cache.free_slots()
    }

    /// The leading run of `keys` that is cached, at most `max_blocks` long
    /// (`find_longest_cache_hit`).
    pub fn leading_hits(&self, keys: &[ObjId], max_blocks: usize) -> usize {
        if !self.caching {
            return 0;
        }
        keys.iter()
            .take(max_blocks)
            .take_while(|&&k| self.cache.contains(k))
            .count()
    }

    /// Cached blocks among `keys` (all cached) that nobody holds: touching them takes them out
    /// of the free queue, so an admission must count them (`_get_num_evictable_blocks`).
    pub fn evictable_among(&self, keys: &[ObjId]) -> u64 {
        keys.iter()
            .filter(|&&k| {
                self.cache
                    .lookup(k)
                    .is_some_and(|e| !self.cache.is_pinned(e))
            })
            .count() as u64
    }

    /// Take the cached blocks `keys` (a leading hit run) for a request, head first
    /// (`touch`): one more holder each.
    pub fn touch(&mut self, keys: &[ObjId], slots: &mut Vec<Slot>, access: MakeAccess<'_>) {
        for (d, &k) in keys.iter().enumerate() {
            self.clock += 1;
            match self.cache.access(&access(k, d, self.clock), true) {
                Outcome::Hit(e) => slots.push(Slot::Cached(e)),
                other => unreachable!("a leading hit block was not cached: {other:?}"),
            }
        }
    }

    /// Allocate `n` blocks without a hash, evicting as needed. The caller checked
    /// [`free_blocks`](KvPool::free_blocks).
    pub fn allocate(&mut self, n: usize, slots: &mut Vec<Slot>) {
        for _ in 0..n {
            let ok = self.cache.reserve();
            debug_assert!(ok, "allocation beyond the free blocks");
            slots.push(Slot::Raw);
        }
    }

    /// Give the request's blocks `from..to` their hashes `keys[from..to]` (`cache_blocks`):
    /// each becomes a cached block the request holds.
    pub fn cache_blocks(
        &mut self,
        slots: &mut [Slot],
        keys: &[ObjId],
        from: usize,
        to: usize,
        access: MakeAccess<'_>,
    ) {
        if !self.caching {
            return;
        }
        for b in from..to {
            if slots[b] != Slot::Raw || self.cache.contains(keys[b]) {
                continue;
            }
            self.cache.unreserve();
            self.clock += 1;
            match self.cache.access(&access(keys[b], b, self.clock), true) {
                Outcome::Inserted(e) => {
                    slots[b] = Slot::Cached(e);
                    if let Some(&rank) = self
                        .wanted
                        .as_ref()
                        .and_then(|w| w.get(&keys[b]))
                        .and_then(|r| r.front())
                    {
                        self.cache.policy.on_wanted(e, Some(rank));
                    }
                }
                other => unreachable!("a freed slot did not take the block: {other:?}"),
            }
        }
    }

    /// Release a request's blocks, chain tail first (`free`, reverse order).
    pub fn free(&mut self, slots: &[Slot]) {
        for s in slots.iter().rev() {
            match *s {
                Slot::Cached(e) => self.cache.unpin(e, self.clock),
                Slot::Raw => self.cache.unreserve(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferencelab_cache::PolicyConfig;

    fn pool(n: u64) -> KvPool<inferencelab_cache::AnyPolicy> {
        KvPool::new(BlockCache::new(n, PolicyConfig::Lru.build(n)))
    }

    fn acc(k: ObjId, _d: usize, t: u64) -> Access {
        Access::at(k, t)
    }

    /// A FIFO that records what it is told of the waiting queue.
    #[derive(Default)]
    struct Told {
        order: Vec<EntryId>,
        rank: FxHashMap<EntryId, Option<u64>>,
    }

    impl EvictionPolicy for Told {
        fn on_insert(&mut self, e: EntryId, _a: &Access) {
            self.order.push(e);
        }
        fn on_hit(&mut self, _e: EntryId, _a: &Access) {}
        fn uses_waiting_queue(&self) -> bool {
            true
        }
        fn on_wanted(&mut self, e: EntryId, rank: Option<u64>) {
            self.rank.insert(e, rank);
        }
        fn evict(&mut self, pins: inferencelab_cache::Pins<'_>) -> Option<EntryId> {
            let i = self.order.iter().position(|&e| !pins.is_pinned(e))?;
            Some(self.order.remove(i))
        }
        fn on_remove(&mut self, e: EntryId) {
            self.order.retain(|&x| x != e);
        }
    }

    #[test]
    fn the_policy_is_told_the_earliest_waiting_request_of_each_cached_block() {
        let mut p = KvPool::new(BlockCache::new(4, Told::default()));
        assert!(p.tracks_waiting());
        let mut a = Vec::new();
        p.allocate(2, &mut a);
        p.cache_blocks(&mut a, &[1, 2], 0, 2, &acc);
        p.free(&a);
        let e = |p: &KvPool<Told>, k: ObjId| p.cache.lookup(k).unwrap();
        let told = |p: &KvPool<Told>, k: ObjId| p.cache.policy.rank[&e(p, k)];
        // arrivals 5 and 9, then 2 (a preempted request goes back to the queue's front)
        p.want(&[1, 2], 5);
        p.want(&[1], 9);
        p.want(&[1, 2], 2);
        assert_eq!((told(&p, 1), told(&p, 2)), (Some(2), Some(2)));
        assert_eq!(p.wanted_pairs(), 5);
        // a later request leaves (an abort): nothing changes; then the head is admitted
        p.unwant(&[1], 9);
        assert_eq!((told(&p, 1), told(&p, 2)), (Some(2), Some(2)));
        p.unwant(&[1, 2], 2);
        assert_eq!((told(&p, 1), told(&p, 2)), (Some(5), Some(5)));
        // a wanted block cached later is told at its insertion
        p.want(&[3], 7);
        let mut b = Vec::new();
        p.allocate(1, &mut b);
        p.cache_blocks(&mut b, &[3], 0, 1, &acc);
        assert_eq!(told(&p, 3), Some(7));
        p.unwant(&[1, 2], 5);
        p.unwant(&[3], 7);
        assert_eq!(
            (told(&p, 1), told(&p, 2), told(&p, 3), p.wanted_pairs()),
            (None, None, None, 0)
        );
    }

    #[test]
    fn raw_blocks_count_against_capacity_and_free_to_empty_slots() {
        // 3 usable blocks. A holds [1, 2] hashed + 1 raw (its partial tail): nothing is free.
        let mut p = pool(3);
        let mut a = Vec::new();
        p.allocate(3, &mut a);
        assert_eq!(p.free_blocks(), 0);
        p.cache_blocks(&mut a, &[1, 2], 0, 2, &acc);
        assert_eq!(p.cache.len(), 2);
        assert_eq!(p.free_blocks(), 0);
        // freed: the raw slot is empty again, blocks 2 then 1 go to the free queue (tail first)
        p.free(&a);
        assert_eq!(p.free_blocks(), 3);
        // B needs 2 raw blocks: the empty slot first, then the LRU victim: block 2 (freed
        // first, so least recent)
        let mut b = Vec::new();
        p.allocate(2, &mut b);
        assert!(p.cache.contains(1));
        assert!(!p.cache.contains(2));
        p.cache.validate().unwrap();
    }

    #[test]
    fn touching_free_cached_blocks_takes_them_out_of_the_free_queue() {
        let mut p = pool(2);
        let mut a = Vec::new();
        p.allocate(2, &mut a);
        p.cache_blocks(&mut a, &[7, 8], 0, 2, &acc);
        p.free(&a);
        assert_eq!(p.evictable_among(&[7, 8]), 2);
        let mut b = Vec::new();
        p.touch(&[7], &mut b, &acc);
        assert_eq!(p.evictable_among(&[7, 8]), 1);
        assert_eq!(p.free_blocks(), 1);
        // a duplicate of a cached block stays raw
        let mut c = Vec::new();
        p.allocate(1, &mut c);
        p.cache_blocks(&mut c, &[7], 0, 1, &acc);
        assert_eq!(c, vec![Slot::Raw]);
        assert_eq!(p.free_blocks(), 0);
        p.cache.validate().unwrap();
    }
}
