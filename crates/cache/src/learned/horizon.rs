//! The cache's eviction horizon, measured online: how long LRU would keep a block after its last
//! use in a cache of this size (its *characteristic time*, Che et al. 2002; LHD's eviction age,
//! Beckmann et al. NSDI'18). A block used again within the horizon hits whatever its exact next
//! use, so beyond a few predicted gaps what matters is *whether* it comes back, not when
//! (`conversation_aware`'s `hit_density`).
//!
//! It is the age of the least recent of the `C` most recently used objects, `C` the number of
//! blocks the cache holds (the policy is not told the capacity: the most it has held): the queue
//! of references in time order, with each object's latest reference live and the earlier ones
//! stale, trimmed at the front to `C` live objects, which is LRU's stack cut at `C`. Amortised
//! O(1) per reference (each reference is pushed and popped once).

use std::collections::VecDeque;

use super::chunked::Chunked;

#[derive(Debug, Clone)]
pub struct Horizon {
    /// (time, object, sequence) of the references, oldest first
    queue: VecDeque<(f64, u32, u64)>,
    /// per object: the sequence of its latest reference in `queue` (0: none)
    latest: Chunked<u64>,
    seq: u64,
    /// objects with a reference in `queue`
    live: usize,
}

impl Default for Horizon {
    fn default() -> Self {
        Horizon {
            queue: VecDeque::new(),
            latest: Chunked::new(0),
            seq: 0,
            live: 0,
        }
    }
}

impl Horizon {
    /// Object `obj` is referenced at time `t` (non-decreasing) in a cache holding `capacity`
    /// blocks.
    #[inline]
    pub fn reference(&mut self, obj: u32, t: f64, capacity: usize) {
        self.seq += 1;
        let l = self.latest.get_mut(obj as usize);
        if *l == 0 {
            self.live += 1;
        }
        *l = self.seq;
        self.queue.push_back((t, obj, self.seq));
        self.trim(capacity.max(1));
    }

    /// Drop the front until `capacity` objects are live and the front is live.
    #[inline]
    fn trim(&mut self, capacity: usize) {
        while let Some(&(_, o, s)) = self.queue.front() {
            let l = self.latest.get_mut(o as usize);
            if *l != s {
                // a later reference of `o` is queued
                self.queue.pop_front();
            } else if self.live > capacity {
                *l = 0;
                self.live -= 1;
                self.queue.pop_front();
            } else {
                break;
            }
        }
    }

    /// Seconds since the least recent of the `capacity` most recent objects was used, at `now`
    /// (0 before any reference).
    #[inline]
    pub fn age(&self, now: f64) -> f64 {
        self.queue
            .front()
            .map_or(0.0, |&(t, _, _)| (now - t).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The horizon is the age of the `C`-th most recently used distinct object (brute force).
    #[test]
    fn horizon_is_the_age_of_lru_s_last_block() {
        for cap in [1, 5, 12, 40] {
            let mut h = Horizon::default();
            let mut history: Vec<(f64, u32)> = Vec::new();
            let mut x = 12345u64;
            for i in 0..3_000u32 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let obj = ((x >> 33) % 60) as u32;
                let t = i as f64 * 0.5;
                h.reference(obj, t, cap);
                history.push((t, obj));
                // brute force: going back, the latest reference of the cap-th distinct object
                let mut seen = std::collections::HashSet::new();
                let mut want = 0.0;
                for &(tt, o) in history.iter().rev() {
                    if seen.insert(o) {
                        want = tt;
                        if seen.len() == cap {
                            break;
                        }
                    }
                }
                assert_eq!(h.age(t), t - want, "reference {i}, capacity {cap}");
            }
        }
    }
}
