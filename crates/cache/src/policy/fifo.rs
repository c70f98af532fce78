//! FIFO: evict the unpinned entry admitted longest ago; a hit changes nothing.
//!
//! Source: libCacheSim `libCacheSim/cache/eviction/FIFO.c` (insert at the head of one queue,
//! evict its tail, `find` does not reorder). With no pins it is exactly that, O(1) per operation.
//!
//! Pins (our addition; libCacheSim has none): the order is admission order and a pin only delays
//! an eviction, it never reorders. A pinned entry met at the head by `evict` is *parked* (taken
//! out of the queue, O(1)); when it is unpinned it goes to `returned`, ordered by admission
//! number, and `evict` takes whichever of the queue head and the first returned entry was
//! admitted first. So the victim is always the unpinned entry admitted longest ago, and each
//! pinned entry is stepped over at most once per pin (no rescans of a pinned prefix).

use std::collections::BTreeSet;

use super::list::List;
use super::{ensure, Access, EntryId, EvictionPolicy, Pins};

const UNTRACKED: u8 = 0;
/// in `queue`, at its admission position (possibly pinned: parked lazily by `evict`)
const QUEUED: u8 = 1;
/// pinned and out of the queue
const PARKED: u8 = 2;
/// unpinned after being parked: in `returned`
const RETURNED: u8 = 3;

#[derive(Debug, Clone, Default)]
pub struct Fifo {
    /// entries in admission order, oldest first
    queue: List,
    /// admission number per entry
    seq: Vec<u64>,
    state: Vec<u8>,
    next_seq: u64,
    /// parked entries unpinned since: (admission number, entry)
    returned: BTreeSet<(u64, EntryId)>,
}

impl Fifo {
    #[inline]
    fn state(&self, e: EntryId) -> u8 {
        self.state.get(e as usize).copied().unwrap_or(UNTRACKED)
    }

    /// Tracked entries that are not parked, oldest admission first (the eviction order when none
    /// of them is pinned).
    pub fn order(&self) -> Vec<EntryId> {
        let mut v: Vec<(u64, EntryId)> = self
            .queue
            .iter()
            .map(|e| (self.seq[e as usize], e))
            .chain(self.returned.iter().copied())
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, e)| e).collect()
    }
}

impl EvictionPolicy for Fifo {
    #[inline]
    fn on_insert(&mut self, e: EntryId, _a: &Access) {
        ensure(&mut self.seq, e, 0);
        ensure(&mut self.state, e, UNTRACKED);
        self.seq[e as usize] = self.next_seq;
        self.next_seq += 1;
        self.state[e as usize] = QUEUED;
        self.queue.push_back(e);
    }

    #[inline]
    fn on_hit(&mut self, _e: EntryId, _a: &Access) {}

    fn on_pin(&mut self, e: EntryId) {
        // a queued entry stays in place until `evict` meets it
        if self.state(e) == RETURNED {
            self.returned.remove(&(self.seq[e as usize], e));
            self.state[e as usize] = PARKED;
        }
    }

    fn on_unpin(&mut self, e: EntryId, _now: u64) {
        if self.state(e) == PARKED {
            self.returned.insert((self.seq[e as usize], e));
            self.state[e as usize] = RETURNED;
        }
    }

    #[inline]
    fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> {
        loop {
            let queued = self.queue.head();
            let returned = self.returned.first().copied();
            let from_returned = match (queued, returned) {
                (None, None) => return None,
                (Some(q), Some((s, _))) => s < self.seq[q as usize],
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            let e = if from_returned {
                let (s, e) = returned.expect("checked");
                self.returned.remove(&(s, e));
                e
            } else {
                let e = queued.expect("checked");
                self.queue.remove(e);
                e
            };
            if pins.is_pinned(e) {
                self.state[e as usize] = PARKED;
                continue;
            }
            self.state[e as usize] = UNTRACKED;
            return Some(e);
        }
    }

    fn on_remove(&mut self, e: EntryId) {
        match self.state(e) {
            QUEUED => self.queue.remove(e),
            RETURNED => {
                self.returned.remove(&(self.seq[e as usize], e));
            }
            _ => {}
        }
        if let Some(s) = self.state.get_mut(e as usize) {
            *s = UNTRACKED;
        }
    }

    fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> {
        self.queue.validate()?;
        let mut last = None;
        for e in self.queue.iter() {
            let s = self.seq[e as usize];
            if last.is_some_and(|l| l >= s) {
                return Err(format!("queue not in admission order at entry {e}"));
            }
            last = Some(s);
        }
        let mut n_returned = 0;
        for e in 0..self.state.len() as EntryId {
            let st = self.state(e);
            if self.queue.contains(e) != (st == QUEUED) {
                return Err(format!(
                    "entry {e}: state {st} but queued={}",
                    self.queue.contains(e)
                ));
            }
            if st == RETURNED {
                n_returned += 1;
                if !self.returned.contains(&(self.seq[e as usize], e)) {
                    return Err(format!("returned entry {e} missing from the returned set"));
                }
            }
            if (st != UNTRACKED) != live(e) {
                return Err(format!("entry {e}: state {st} but live={}", live(e)));
            }
        }
        if n_returned != self.returned.len() {
            return Err(format!(
                "{} in the returned set, {n_returned} entries in that state",
                self.returned.len()
            ));
        }
        Ok(())
    }
}

impl super::Registered for Fifo {
    type Config = super::NoParams;
    fn build(_config: &Self::Config, _capacity: u64) -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{run, Script};

    #[test]
    fn classic_fifo_ignores_hits() {
        // capacity 4
        // 1 2 3 4 in:       [1 2 3 4]   (left = next victim)
        // hit 1, hit 2:     [1 2 3 4]   FIFO does not reorder
        // 5 in, 1 out:      [2 3 4 5]
        // 6 in, 2 out:      [3 4 5 6]
        let evicted = run(
            Fifo::default(),
            4,
            &Script::new().refs(&[1, 2, 3, 4, 1, 2, 5, 6]),
        );
        assert_eq!(evicted, [1, 2]);
    }

    #[test]
    fn pinned_entries_keep_their_admission_place() {
        // capacity 3
        // 1(pinned) 2 3 in:  [1* 2 3]
        // 4 in: 1 is pinned and parked, 2 out:        [1* 3 4]
        // unpin 1: it is still the oldest:             [1 3 4]
        // 5 in, 1 out;  6 in, 3 out
        let s = Script::new().pin(1).refs(&[2, 3, 4]).unpin(1).refs(&[5, 6]);
        assert_eq!(run(Fifo::default(), 3, &s), [2, 1, 3]);
    }

    #[test]
    fn repinned_returned_entry_is_skipped() {
        // capacity 2
        // 1* 2 in; 3 in parks 1, evicts 2:           [1* 3]
        // unpin 1 (returned), pin 1 again (parked):  [1* 3]
        // 4 in evicts 3; everything pinned then:     [1* 4*] -> 5 is rejected
        let s = Script::new()
            .pin(1)
            .refs(&[2, 3])
            .unpin(1)
            .pin(1)
            .pin(4)
            .refs(&[5]);
        let mut cache = crate::BlockCache::new(2, Fifo::default());
        assert_eq!(s.play(&mut cache), [2, 3]);
        assert_eq!(cache.rejections, 1);
    }
}
