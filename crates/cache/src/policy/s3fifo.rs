//! S3-FIFO: a small probationary FIFO (10 %), a main FIFO with a 2-bit CLOCK (90 %) and a ghost
//! FIFO of recently evicted object ids (as many ids as 90 % of the capacity).
//!
//! Source: Yang et al., "FIFO queues are all you need for cache eviction", SOSP'23, as
//! implemented by libCacheSim `libCacheSim/cache/eviction/S3FIFO.c` (the Python binding's
//! `S3FIFO` with its defaults `small_size_ratio=0.1, ghost_size_ratio=0.9,
//! move_to_main_threshold=2`), which we follow step for step:
//! - a hit adds one to the entry's count (uncapped; capped at 3 when main reinserts it);
//! - a miss whose object id is in the ghost takes it out of the ghost and admits it to main;
//!   any other miss is admitted to small, except before the first eviction when small is
//!   already full: then to main (the "S3FIFO.c vs S3FIFOv0.c" difference);
//! - evict from main if main holds more than its share or small is empty, else from small;
//! - small: the oldest entry moves to main (count reset to 0) if its count reached the
//!   threshold, else it is evicted and its id enters the ghost; repeat until one is evicted;
//! - main: the oldest entry with a count > 0 is reinserted at the newest end with
//!   `min(count, 3) - 1`, else evicted; repeat until one is evicted.
//!
//! Queue sizes are computed as libCacheSim does: small = trunc(capacity * small_ratio), main =
//! capacity - small, ghost = trunc(capacity * ghost_ratio). Ghost entries are object ids
//! ([`Access::obj`]), never entry ids (those are reused).
//!
//! Deviations: libCacheSim refuses caches whose small queue would hold no object (capacity < 10
//! by default) and never admits to small when small holds a single object; we make small at
//! least one object and admit normally.
//!
//! Pins: a pinned entry is never evicted but otherwise follows the algorithm (a count that
//! reached the threshold still moves it to main, main still decrements counts). Where the
//! algorithm would evict a pinned entry, it is instead rotated to the newest end of its own
//! queue with its count unchanged. A whole turn of a queue meeting only such entries means the
//! queue has no victim; `evict` then tries the other queue, and returns `None` only when both
//! have none. Unpinning changes nothing.

use serde::{Deserialize, Serialize};

use super::list::List;
use super::{ensure, Access, EntryId, EvictionPolicy, ObjId, Pins};

/// `{name: s3fifo, small_ratio: 0.1, ghost_ratio: 0.9, move_to_main_threshold: 2}`
/// (libCacheSim's `small-size-ratio`, `ghost-size-ratio` names are accepted too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3FifoConfig {
    /// Share of the capacity given to the small (probationary) queue.
    #[serde(alias = "small_size_ratio")]
    pub small_ratio: f64,
    /// Ghost queue length as a share of the capacity (0 = no ghost).
    #[serde(alias = "ghost_size_ratio")]
    pub ghost_ratio: f64,
    /// Hits needed in small to move to main instead of being evicted.
    pub move_to_main_threshold: u32,
}

impl Default for S3FifoConfig {
    fn default() -> Self {
        S3FifoConfig {
            small_ratio: 0.1,
            ghost_ratio: 0.9,
            move_to_main_threshold: 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct S3Fifo {
    /// probationary queue, oldest first
    small: List,
    /// main queue, oldest first
    main: List,
    /// ids of objects evicted from small, oldest first
    ghost: List,
    /// hits per entry
    freq: Vec<u32>,
    /// object per entry (to enter the ghost when evicted)
    obj_of: Vec<ObjId>,
    small_cap: u64,
    main_cap: u64,
    ghost_cap: u64,
    threshold: u32,
    /// an eviction has happened (libCacheSim `has_evicted`)
    has_evicted: bool,
    /// the current miss was found in (and taken out of) the ghost
    hit_on_ghost: bool,
}

impl S3Fifo {
    pub fn new(capacity: u64, c: &S3FifoConfig) -> Self {
        let small_ratio = c.small_ratio.clamp(0.0, 1.0);
        let ghost_ratio = c.ghost_ratio.max(0.0);
        // `as` truncates like libCacheSim's casts to int64_t
        let mut small_cap = (capacity as f64 * small_ratio) as u64;
        if capacity > 0 {
            small_cap = small_cap.clamp(1, capacity);
        }
        S3Fifo {
            small: List::new(),
            main: List::new(),
            ghost: List::new(),
            freq: Vec::new(),
            obj_of: Vec::new(),
            small_cap,
            main_cap: capacity - small_cap,
            ghost_cap: (capacity as f64 * ghost_ratio) as u64,
            threshold: c.move_to_main_threshold,
            has_evicted: false,
            hit_on_ghost: false,
        }
    }

    /// (small, main, ghost) queue sizes in objects.
    pub fn sizes(&self) -> (u64, u64, u64) {
        (self.small_cap, self.main_cap, self.ghost_cap)
    }

    /// The small queue, oldest first, as (entry, count).
    pub fn small_queue(&self) -> Vec<(EntryId, u32)> {
        self.small
            .iter()
            .map(|e| (e, self.freq[e as usize]))
            .collect()
    }

    /// The main queue, oldest first, as (entry, count).
    pub fn main_queue(&self) -> Vec<(EntryId, u32)> {
        self.main
            .iter()
            .map(|e| (e, self.freq[e as usize]))
            .collect()
    }

    /// Object ids in the ghost, oldest first.
    pub fn ghost(&self) -> Vec<ObjId> {
        self.ghost.iter().collect()
    }

    fn remember(&mut self, obj: ObjId) {
        if self.ghost_cap == 0 || self.ghost.contains(obj) {
            return;
        }
        while self.ghost.len() as u64 >= self.ghost_cap {
            self.ghost.pop_front();
        }
        self.ghost.push_back(obj);
    }

    /// One eviction from small, or `None` when small ran out of evictable entries (everything
    /// moved to main, or only pinned entries below the threshold are left).
    fn evict_small(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        let mut pinned_run = 0;
        while let Some(e) = self.small.head() {
            if self.freq[e as usize] >= self.threshold {
                self.small.remove(e);
                self.freq[e as usize] = 0;
                self.main.push_back(e);
                pinned_run = 0;
            } else if pins.is_pinned(e) {
                pinned_run += 1;
                if pinned_run >= self.small.len() {
                    return None;
                }
                self.small.move_to_back(e);
            } else {
                self.small.remove(e);
                self.remember(self.obj_of[e as usize]);
                return Some(e);
            }
        }
        None
    }

    /// One eviction from main, or `None` when main is empty or holds only pinned entries with a
    /// zero count.
    fn evict_main(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        let mut pinned_run = 0;
        while let Some(e) = self.main.head() {
            let f = self.freq[e as usize];
            if f >= 1 {
                self.main.move_to_back(e);
                self.freq[e as usize] = f.min(3) - 1;
                pinned_run = 0;
            } else if pins.is_pinned(e) {
                pinned_run += 1;
                if pinned_run >= self.main.len() {
                    return None;
                }
                self.main.move_to_back(e);
            } else {
                self.main.remove(e);
                return Some(e);
            }
        }
        None
    }
}

impl EvictionPolicy for S3Fifo {
    #[inline]
    fn on_miss(&mut self, a: &Access) {
        self.hit_on_ghost = self.ghost.contains(a.obj);
        if self.hit_on_ghost {
            self.ghost.remove(a.obj);
        }
    }

    #[inline]
    fn on_insert(&mut self, e: EntryId, a: &Access) {
        ensure(&mut self.freq, e, 0);
        ensure(&mut self.obj_of, e, 0);
        self.freq[e as usize] = 0;
        self.obj_of[e as usize] = a.obj;
        if std::mem::take(&mut self.hit_on_ghost)
            || (!self.has_evicted && self.small.len() as u64 >= self.small_cap)
        {
            self.main.push_back(e);
        } else {
            self.small.push_back(e);
        }
    }

    #[inline]
    fn on_hit(&mut self, e: EntryId, _a: &Access) {
        let f = &mut self.freq[e as usize];
        *f = f.saturating_add(1);
    }

    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        self.has_evicted = true;
        // libCacheSim re-runs its evict until something is evicted; the queue it picks changes
        // only when small empties (every entry moved to main). With pins, also when the picked
        // queue has no evictable entry: small -> main covers entries small just moved to main.
        let mut from_main = self.main.len() as u64 > self.main_cap || self.small.is_empty();
        for _ in 0..3 {
            let victim = if from_main {
                self.evict_main(pins)
            } else {
                self.evict_small(pins)
            };
            if victim.is_some() {
                return victim;
            }
            from_main = !from_main;
        }
        None
    }

    fn on_remove(&mut self, e: EntryId) {
        if self.small.contains(e) {
            self.small.remove(e);
        } else {
            self.main.remove(e);
        }
    }

    fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        self.small.validate()?;
        self.main.validate()?;
        self.ghost.validate()?;
        let n = self.freq.len();
        for e in 0..n as EntryId {
            let (s, m) = (self.small.contains(e), self.main.contains(e));
            if s && m {
                return Err(format!("entry {e} is in both small and main"));
            }
            if (s || m) != live(e) {
                return Err(format!("entry {e}: tracked={} live={}", s || m, live(e)));
            }
            if (s || m) && self.ghost.contains(self.obj_of[e as usize]) {
                return Err(format!(
                    "resident object {} is also in the ghost",
                    self.obj_of[e as usize]
                ));
            }
        }
        if self
            .small
            .iter()
            .chain(self.main.iter())
            .any(|e| e as usize >= n)
        {
            return Err("a queued entry has no state".into());
        }
        if self.ghost.len() as u64 > self.ghost_cap {
            return Err(format!(
                "ghost holds {} ids, more than {}",
                self.ghost.len(),
                self.ghost_cap
            ));
        }
        Ok(())
    }
}

impl super::Registered for S3Fifo {
    type Config = S3FifoConfig;
    fn build(config: &Self::Config, capacity: u64) -> Self {
        S3Fifo::new(capacity, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::Script;
    use crate::BlockCache;

    fn cache(capacity: u64) -> BlockCache<S3Fifo> {
        BlockCache::new(capacity, S3Fifo::new(capacity, &S3FifoConfig::default()))
    }

    #[test]
    fn sizes_follow_libcachesim() {
        assert_eq!(cache(1000).policy.sizes(), (100, 900, 900));
        assert_eq!(cache(30_000).policy.sizes(), (3000, 27_000, 27_000));
        // libCacheSim refuses this one (small would hold nothing); we keep one object
        assert_eq!(cache(5).policy.sizes(), (1, 4, 4));
    }

    #[test]
    fn one_hit_wonders_leave_through_the_ghost() {
        // capacity 10: small 1, main 9, ghost 9
        // 1 in (small), 2..=10 in: small is full before any eviction -> main
        //   small [1]   main [2 .. 10]
        // 11 in: main holds 9 (its share), small not empty -> evict from small:
        //   1 has count 0 -> out, id 1 to the ghost.      small [11]  ghost [1]
        // 1 again: ghost hit -> out of the ghost, bound for main; main still holds 9 ->
        //   evict from small: 11 out -> ghost.            main [2 .. 10 1]  ghost [11]
        // 12 in: main holds 10 > 9 -> evict from main: 2 (count 0) out.   small [12]
        let s = Script::new().refs(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 12]);
        let mut c = cache(10);
        assert_eq!(s.play(&mut c), [1, 11, 2]);
        assert_eq!(c.policy.small_queue().len(), 1);
        assert_eq!(c.policy.main_queue().len(), 9);
        assert_eq!(c.policy.ghost(), [11]);
    }

    #[test]
    fn small_promotes_at_threshold_and_main_is_a_clock() {
        // capacity 10: small 1, main 9
        // 1 in -> small; 2..=10 -> main (small full, nothing evicted yet)
        // hit 1 twice: count 2 (= threshold); hit 2 once
        // 11 in: evict from small: 1 moves to main (count 0); small empty -> evict from main:
        //   2 has count 1 -> reinserted with 0;  3 has count 0 -> out
        //   small [11]   main [4 .. 10 1 2]
        let s = Script::new().refs(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 1, 2, 11]);
        let mut c = cache(10);
        assert_eq!(s.play(&mut c), [3]);
        let (small, main) = (c.policy.small_queue(), c.policy.main_queue());
        let obj = |e: EntryId| c.object(e).unwrap();
        assert_eq!(small.iter().map(|&(e, _)| obj(e)).collect::<Vec<_>>(), [11]);
        assert_eq!(
            main.iter().map(|&(e, _)| obj(e)).collect::<Vec<_>>(),
            [4, 5, 6, 7, 8, 9, 10, 1, 2]
        );
    }

    #[test]
    fn pinned_candidates_rotate_in_their_queue() {
        // capacity 10: small 1, main 9
        // 1* in (small, pinned); 2..=10 -> main
        // 11 in: small's only entry is pinned with count 0 -> rotated, small has no victim;
        //   main: 2 (count 0) out.     small [1*]  main [3 .. 10]  11 -> small
        // 12 in: main holds 8 < 9, small not empty -> small: 1 pinned (rotated), 11 out -> ghost
        let s = Script::new()
            .pin(1)
            .refs(&[2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let mut c = cache(10);
        assert_eq!(s.play(&mut c), [2, 11]);
        assert_eq!(c.policy.ghost(), [11]);
    }

    #[test]
    fn config_reads_both_spellings() {
        let c: S3FifoConfig = serde_json::from_str(r#"{"small_size_ratio": 0.2}"#).unwrap();
        assert_eq!(c.small_ratio, 0.2);
        assert_eq!(c.ghost_ratio, 0.9);
        let p: crate::PolicyConfig =
            serde_json::from_str(r#"{"name": "s3fifo", "small_ratio": 0.25}"#).unwrap();
        assert_eq!(
            p,
            crate::PolicyConfig::S3fifo(S3FifoConfig {
                small_ratio: 0.25,
                ..Default::default()
            })
        );
        assert!(
            serde_json::from_str::<crate::PolicyConfig>(r#"{"name": "s3fifo", "x": 1}"#).is_err()
        );
    }
}
