//! vLLM's own worked example of its free block queue (the "Example" section of
//! `docs/design/prefix_caching.md`, vllm-project/vllm), replayed on `BlockCache<Lru>` with
//! pinning: blocks of running requests are pinned (`ref_cnt > 0`), a finished request unpins its
//! blocks chain tail first, and the cache must allocate exactly the blocks the document lists.
//!
//! The document's setting: block size 4 tokens, 10 blocks, all free at start.
//!
//! ```text
//! Time 1  request 0, 15 prompt tokens: blocks 0 1 2 (full, cached) + 3 (3 of 4 tokens)
//! Time 3  request 0 fills block 3 (now cached) and takes block 4 to keep decoding
//! Time 4  request 1, 14 prompt tokens, the first 10 as request 0's: blocks 0 1 hit (the 3rd
//!         block matches only 2 of 4 tokens), new blocks 5 (full) + 6 (2 tokens)
//! Time 5  request 0 finishes: 4 3 2 join the free queue in that (reverse) order; 0 and 1 are
//!         still used by request 1
//! Time 6  request 1 finishes: 6 5 1 0 join.  Free queue: 7 8 9 4 3 2 6 5 1 0
//! Time 7  request 2, 29 prompt tokens, the first 12 as request 0's: 0 1 2 hit and leave the
//!         queue (7 8 9 4 3 6 5); 5 new blocks are popped from its head:
//!         allocation order 0 1 2 (cached), 7 8 9 4 3 (evicted)
//! ```
//!
//! Mapping: our entries are cached objects, so a block that holds a partial (unhashed) chunk is a
//! placeholder object nobody references again; when it fills, the placeholder is dropped and the
//! block's hash takes the same entry. vLLM's never-used blocks 7 8 9 are our free capacity, which
//! the cache uses before it evicts anything, exactly as they sit at the head of vLLM's queue.
//! Popping block 4 (no hash) is a placeholder eviction here, not a cache eviction in vLLM.

use inferencelab_cache::policy::lru::Lru;
use inferencelab_cache::{Access, BlockCache, EntryId, ObjId, Outcome};

// block hashes (objects): request 0's chain, request 1's third block, request 2's new blocks
const A0: ObjId = 0;
const A1: ObjId = 1;
const A2: ObjId = 2;
const A3: ObjId = 3;
const B2: ObjId = 10;
const C3: ObjId = 20;
const C4: ObjId = 21;
const C5: ObjId = 22;
const C6: ObjId = 23;
// placeholders of partial blocks
const PARTIAL_3: ObjId = 103;
const PARTIAL_4: ObjId = 104;
const PARTIAL_6: ObjId = 106;
const PARTIAL_7: ObjId = 107;

struct Engine {
    cache: BlockCache<Lru>,
    now: u64,
}

impl Engine {
    /// Reference a block for a running request (pinned), returning the block (entry) it uses.
    fn allocate(&mut self, obj: ObjId) -> (EntryId, bool) {
        self.now += 1;
        match self.cache.access(&Access::at(obj, self.now), true) {
            Outcome::Hit(e) => (e, true),
            Outcome::Inserted(e) => (e, false),
            Outcome::Rejected => panic!("no free block for {obj}"),
        }
    }

    /// A request finished: free its block table chain tail first.
    fn free(&mut self, block_table: &[EntryId]) {
        for &e in block_table.iter().rev() {
            self.now += 1;
            self.cache.unpin(e, self.now);
        }
    }

    /// A partial block filled up: its placeholder gives way to the block's hash, same block.
    fn fill(&mut self, placeholder: ObjId, hash: ObjId) -> EntryId {
        let e = self.cache.lookup(placeholder).unwrap();
        self.cache.unpin(e, self.now);
        assert!(self.cache.remove(placeholder));
        let (filled, hit) = self.allocate(hash);
        assert!(!hit);
        filled
    }

    fn free_queue(&self) -> Vec<EntryId> {
        self.cache.policy.order()
    }
}

#[test]
fn vllm_prefix_caching_example_allocation_order() {
    let mut vllm = Engine {
        cache: BlockCache::new(10, Lru::default()),
        now: 0,
    };

    // Time 1: request 0 takes blocks 0 1 2 3 (3 = 3 of 4 tokens)
    let mut request0: Vec<EntryId> = [A0, A1, A2, PARTIAL_3]
        .iter()
        .map(|&o| vllm.allocate(o).0)
        .collect();
    assert_eq!(request0, [0, 1, 2, 3]);

    // Time 3: block 3 is full and cached; block 4 is allocated for decoding
    assert_eq!(vllm.fill(PARTIAL_3, A3), 3);
    request0.push(vllm.allocate(PARTIAL_4).0);
    assert_eq!(request0, [0, 1, 2, 3, 4]);

    // Time 4: request 1 hits 0 1, takes 5 (full) and 6 (partial)
    let request1: Vec<(EntryId, bool)> = [A0, A1, B2, PARTIAL_6]
        .iter()
        .map(|&o| vllm.allocate(o))
        .collect();
    assert_eq!(request1, [(0, true), (1, true), (5, false), (6, false)]);
    let request1: Vec<EntryId> = request1.iter().map(|&(e, _)| e).collect();

    // Time 5: request 0 finishes. Free queue (head first): 4 3 2   (0, 1 still used)
    vllm.free(&request0);
    assert_eq!(vllm.free_queue(), [4, 3, 2]);

    // Time 6: request 1 finishes. Free queue: (7 8 9 =) free capacity, then 4 3 2 6 5 1 0
    vllm.free(&request1);
    assert_eq!(vllm.free_queue(), [4, 3, 2, 6, 5, 1, 0]);
    assert_eq!(vllm.cache.len(), 7);

    // Time 7: request 2 hits 0 1 2, which leave the queue: 4 3 6 5
    let hits: Vec<(EntryId, bool)> = [A0, A1, A2].iter().map(|&o| vllm.allocate(o)).collect();
    assert_eq!(hits, [(0, true), (1, true), (2, true)]);
    assert_eq!(vllm.free_queue(), [4, 3, 6, 5]);
    // ... then 5 new blocks: 7 8 9 (never used), 4 (a freed partial block), 3 (evicted: A3)
    let new: Vec<(EntryId, bool)> = [C3, C4, C5, C6, PARTIAL_7]
        .iter()
        .map(|&o| vllm.allocate(o))
        .collect();
    let allocation_order: Vec<EntryId> = hits.iter().chain(&new).map(|&(e, _)| e).collect();
    assert_eq!(allocation_order, [0, 1, 2, 7, 8, 9, 4, 3]);
    assert!(new.iter().all(|&(_, hit)| !hit));

    assert!(!vllm.cache.contains(A3), "block 3's hash was evicted");
    assert!(!vllm.cache.contains(PARTIAL_4));
    assert_eq!(vllm.cache.evictions, 2);
    assert!(
        vllm.cache.contains(B2),
        "5 and 6 are still in the free queue"
    );
    assert_eq!(vllm.free_queue(), [6, 5]);
    vllm.cache.validate().unwrap();
}
