//! LMCache 0.5.6's multi-process mode (`lmcache server` + vLLM's `LMCacheMPConnector`): the L1
//! (CPU) rules, which are not the in-process backend's ([`crate::lmcache`]). Paths under
//! `lmcache/`; docs/semantics.md has the table.
//!
//! - Lookup (`v1/multiprocess/modules/lookup.py`, the prefetch of the leading run): the
//!   leading run of full prompt chunks resident in L1; the run is read-locked until the
//!   retrieve (`l1_manager.py:291`, `reserve_read`) and **touched**, last chunk first, so the
//!   head ends most recent: with no L2 the prefetch finishes on the lookup's own thread
//!   (`storage_controllers/prefetch_controller.py:588-593`) and its `_finish_request` touches
//!   the hit keys (`prefetch_controller.py:1542-1545`; `eviction_policy/lru.py:94-110`). The
//!   read lock itself moves nothing (`v1/distributed/eviction.py:191-198`). We do not lock the
//!   run (see [`LmcacheTier::lookup_mp`]).
//! - Store (`integration/vllm/lmcache_mp_metadata.py:225-320`,
//!   `v1/multiprocess/modules/lmcache_driven_transfer.py:750-790`): per forward step, the
//!   prompt chunks the step completed, from the chunk the LMCache hit ends in; chunks already
//!   resident are skipped untouched (`KEY_NOT_WRITABLE`, `l1_manager.py:514-516`); the others
//!   are allocated **all or nothing** (`l1_manager.py:542-551`): when the free memory cannot
//!   hold every one, the step stores nothing, and the connector does not try them again
//!   (`increase_num_stored_tokens` runs when the store is scheduled). Written keys enter the
//!   LRU order last chunk first, so the head ends most recent (`eviction_policy/lru.py:72-92`).
//! - End of a request (`lookup.py:462-497`, `end_session`): every full prompt chunk of the
//!   request still in L1 is touched, last chunk first (`lru.py:94-110`).
//! - Eviction (`v1/distributed/storage_controllers/eviction_controller.py:160-192`): a
//!   background thread loops `time.sleep(1)`, then reads L1's usage; at usage >=
//!   `trigger_watermark` (0.8) it evicts `max(1, int(tracked_keys * eviction_ratio))` (0.2)
//!   least recent unlocked keys (`lru.py:128-204`), else does nothing. Nothing evicts at
//!   allocation time: a store that arrives while L1 is above the watermark but before the next
//!   tick is allocated from what is free, and refused whole when that is too little (above).
//!   One tick runs per second however far above the watermark L1 is.
//!
//! The loop in virtual time ([`Connector::advance_to`](crate::lmcache::Connector::advance_to)):
//! ticks [`LOOP_PERIOD_S`] apart, the first [`LOOP_PHASE_S`] after the connector's first event
//! (the first request's arrival). Every connector event (lookup, load, store, end of request)
//! first runs the ticks due at or before its time. The loop's phase against the requests is
//! not in a vLLM log: it is the server's start, and LMCache's log shows it only through its
//! evicting ticks (`triggering eviction`, anywhere from .2 to .9 s past the second in
//! scripts/real_lmcache_check.sh's runs; the period is 1.0004 to 1.0018 s, as each pass takes a
//! moment on top of the sleep). Half a second is no fit: on whole-second stamps it puts each
//! tick after every event logged in its second; with millisecond stamps which side of a tick an
//! event falls is a race the log cannot settle (docs/semantics.md has what that costs, measured
//! against an instrumented LMCache). With the server's own log (`simulate --lmcache-log`) the
//! loop ticks where it logged its evicting ticks instead ([`LoggedLoop`]). At the end of a run
//! the ticks go on until L1 is below the watermark
//! ([`Connector::settle`](crate::lmcache::Connector::settle)), as the real server's do while it
//! idles before its counters are read.

use inferencelab_cache::{Access, BlockCache, EvictionPolicy, ObjId, Outcome};

use crate::lmcache::{LmcacheTier, Lookup, Retrieved};
use crate::pool::MakeAccess;

/// Seconds between two ticks of LMCache's L1 eviction loop (`time.sleep(1)`,
/// `eviction_controller.py:165`).
pub const LOOP_PERIOD_S: f64 = 1.0;

/// When the loop's first tick comes after the connector's first event, in seconds (see the
/// module comment: the phase is unknown; half a period).
pub const LOOP_PHASE_S: f64 = 0.5;

/// The longest gap between two logged ticks whose count of periods is read with
/// [`LOOP_PERIOD_S`] (a period drifts 0.4 to 1.8 ms from it: under 0.2 s over this gap); longer
/// gaps are counted with the mean period of these ([`LoggedLoop::new`]).
const SHORT_GAP_S: f64 = 100.0;

/// LMCache's eviction loop as its own log shows it (`simulate --lmcache-log`,
/// `inferencelab_trace::lmcache_log`): the ticks that evicted at their logged times; between two
/// of them, the whole number of periods nearest their gap, evenly spaced (the ticks that found
/// L1 below the watermark are not logged); before the first and after the last, the mean period
/// of the logged ones (or [`LOOP_PERIOD_S`] when one tick was logged). Ticks are numbered, 0 the
/// first logged one.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedLoop {
    /// The logged ticks, seconds on the requests' clock, increasing.
    at: Vec<f64>,
    /// Each logged tick's number.
    k: Vec<i64>,
    /// Seconds between two ticks before the first logged one and after the last.
    period: f64,
}

impl LoggedLoop {
    /// The loop through `ticks` (seconds on the requests' clock, any order; equal ones are one
    /// tick). `None` without a finite tick.
    pub fn new(ticks: &[f64]) -> Option<Self> {
        let mut at: Vec<f64> = ticks.iter().copied().filter(|t| t.is_finite()).collect();
        at.sort_by(f64::total_cmp);
        at.dedup();
        if at.is_empty() {
            return None;
        }
        let gaps: Vec<f64> = at.windows(2).map(|w| w[1] - w[0]).collect();
        // the period from the short gaps, whose count of periods 1 s tells without doubt
        let (sum, n) = gaps
            .iter()
            .filter(|&&g| g <= SHORT_GAP_S)
            .fold((0.0, 0i64), |(s, n), &g| {
                (s + g, n + (g / LOOP_PERIOD_S).round().max(1.0) as i64)
            });
        let short = if n > 0 { sum / n as f64 } else { LOOP_PERIOD_S };
        let mut k = vec![0i64];
        for g in &gaps {
            let last = *k.last().unwrap();
            k.push(last + (g / short).round().max(1.0) as i64);
        }
        let periods = *k.last().unwrap();
        let period = if periods > 0 {
            (at[at.len() - 1] - at[0]) / periods as f64
        } else {
            LOOP_PERIOD_S
        };
        Some(LoggedLoop { at, k, period })
    }

    /// The mean period (seconds), the one used before the first logged tick and after the last.
    pub fn period(&self) -> f64 {
        self.period
    }

    /// The logged ticks (seconds on the requests' clock, increasing).
    pub fn logged(&self) -> &[f64] {
        &self.at
    }

    /// When tick `k` comes.
    pub fn time(&self, k: i64) -> f64 {
        let last = self.at.len() - 1;
        if k <= 0 {
            return self.at[0] + k as f64 * self.period;
        }
        if k >= self.k[last] {
            return self.at[last] + (k - self.k[last]) as f64 * self.period;
        }
        // the logged tick at or before k, and the next
        let i = self.k.partition_point(|&x| x <= k) - 1;
        let (a, b) = (self.at[i], self.at[i + 1]);
        let (ka, kb) = (self.k[i], self.k[i + 1]);
        a + (b - a) * (k - ka) as f64 / (kb - ka) as f64
    }

    /// The first tick after `t` (strictly).
    pub fn first_after(&self, t: f64) -> i64 {
        // a guess from the mean period, then the exact step (times increase with k)
        let mut k = ((t - self.at[0]) / self.period).floor() as i64;
        while self.time(k) > t {
            k -= 1;
        }
        while self.time(k) <= t {
            k += 1;
        }
        k
    }
}

/// The `lmcache server` eviction flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MpEviction {
    /// `--eviction-trigger-watermark`: L1 usage (0..1) at which a tick evicts.
    pub trigger_watermark: f64,
    /// `--eviction-ratio`: share of the tracked keys one tick evicts.
    pub eviction_ratio: f64,
    /// L1's size in chunks, unrounded (`--l1-size-gb` x 2^30 / chunk bytes): the usage ratio
    /// is bytes over bytes (`l1_memory_manager.py`), so 0.01 GiB of 256 KiB chunks holds 40
    /// chunks but 32 of them are 78 % (`l1_usage_ratio` 0.78125), below the watermark. 0: the
    /// tier's chunk capacity.
    pub l1_size_chunks: f64,
}

impl Default for MpEviction {
    /// LMCache 0.5.6's defaults (`v1/distributed/config.py:474-478`).
    fn default() -> Self {
        MpEviction {
            trigger_watermark: 0.8,
            eviction_ratio: 0.2,
            l1_size_chunks: 0.0,
        }
    }
}

/// Which LMCache runs beside vLLM.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LmcacheMode {
    /// The in-process connector (`LMCacheConnectorV1`): [`crate::lmcache`]'s rules.
    #[default]
    InProcess,
    /// `lmcache server` + `LMCacheMPConnector`: this module's rules (L1 only; no L2).
    Mp(MpEviction),
}

/// The multi-process L1's own counters (`lmcache_mp_*` on the server's HTTP port).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MpCounters {
    /// Full prompt chunks asked for by every lookup, in tokens
    /// (`lmcache_mp_lookup_requested_tokens_total`).
    pub lookup_requested_tokens: u64,
    /// Their leading run in L1, in tokens, no -1 (`lmcache_mp_lookup_hit_tokens_total`).
    pub lookup_hit_tokens: u64,
    /// Chunks written to L1 (`lmcache_mp_l1_write_chunks_total`).
    pub l1_write_chunks: u64,
    /// Chunks read from L1 by retrieves (`lmcache_mp_l1_read_chunks_total`).
    pub l1_read_chunks: u64,
    /// Stores refused whole for want of free memory.
    pub refused_stores: u64,
    /// Chunks those refused stores would have written.
    pub refused_chunks: u64,
    /// Eviction passes that ran (usage at or above the watermark).
    pub eviction_passes: u64,
}

/// The L1's usage ratio (`lmcache_mp_l1_usage_ratio`): chunks held over `l1_size_chunks` (the
/// chunk capacity when 0).
pub fn usage_ratio<P: EvictionPolicy>(cpu: &BlockCache<P>, l1_size_chunks: f64) -> f64 {
    let size = if l1_size_chunks > 0.0 {
        l1_size_chunks
    } else {
        cpu.capacity() as f64
    };
    if size <= 0.0 {
        0.0
    } else {
        cpu.len() as f64 / size
    }
}

impl<P: EvictionPolicy> LmcacheTier<P> {
    /// The multi-process lookup: the leading run in L1, touched last chunk first (the
    /// prefetch's `_finish_request` touches its hit keys, `prefetch_controller.py:1542-1545`).
    /// LMCache also read-locks the run until the retrieve; we do not (our policies re-append an
    /// entry when it is unpinned, a refresh LMCache's L1 does not make), so a tick between a
    /// lookup and its retrieve may evict chunks LMCache would have kept.
    pub fn lookup_mp(&mut self, keys: &[ObjId]) -> Lookup {
        let run = keys.iter().take_while(|&&k| self.cpu.contains(k)).count();
        self.touch_mp(&keys[..run], &|k, _, t| Access::at(k, t));
        Lookup::from_run(run)
    }

    /// The multi-process retrieve: the locks go, nothing is touched; the chunks read are the
    /// ones from `floor(gpu_hit / chunk)` to the run's end.
    pub fn retrieve_mp(
        &mut self,
        mut lookup: Lookup,
        gpu_hit_tokens: u64,
        hit_tokens: u64,
    ) -> Retrieved {
        self.unpin(&mut lookup);
        let c = self.chunk_size;
        if hit_tokens <= gpu_hit_tokens {
            return Retrieved::default();
        }
        let first = (gpu_hit_tokens / c) as usize;
        Retrieved {
            cpu_hit_tokens: hit_tokens - gpu_hit_tokens,
            disk_hit_tokens: 0,
            loaded_tokens: (lookup.chunks() - first) as u64 * c,
        }
    }

    /// The multi-process store of `keys[from..to]`: all or nothing for the chunks not yet
    /// resident. Returns the chunks written (`None`: refused, nothing written).
    pub fn store_mp(
        &mut self,
        keys: &[ObjId],
        from: usize,
        to: usize,
        access: MakeAccess<'_>,
    ) -> Option<u64> {
        let to = to.min(keys.len());
        if from >= to {
            return Some(0);
        }
        let new: Vec<usize> = (from..to)
            .filter(|&d| !self.cpu.contains(keys[d]))
            .collect();
        let free = self.cpu.capacity().saturating_sub(self.cpu.len());
        if new.len() as u64 > free {
            return None;
        }
        // written keys enter the order last chunk first: the head ends most recent
        for &d in new.iter().rev() {
            self.clock += 1;
            let out = self.cpu.access(&access(keys[d], d, self.clock), false);
            debug_assert!(matches!(out, Outcome::Inserted(_)), "free slot expected");
        }
        Some(new.len() as u64)
    }

    /// `end_session`: the request's chunks still in L1 touched, last chunk first.
    pub fn touch_mp(&mut self, keys: &[ObjId], access: MakeAccess<'_>) {
        for (d, &k) in keys.iter().enumerate().rev() {
            if self.cpu.contains(k) {
                self.clock += 1;
                self.cpu.access(&access(k, d, self.clock), false);
            }
        }
    }

    /// One tick of the eviction loop: at or above the watermark, evict
    /// `max(1, int(len * ratio))` least recent unlocked chunks. Returns whether it ran.
    pub fn evict_tick_mp(&mut self, e: MpEviction) -> bool {
        if self.cpu.capacity() == 0
            || usage_ratio(&self.cpu, e.l1_size_chunks) < e.trigger_watermark
        {
            return false;
        }
        let ratio = e.eviction_ratio.clamp(0.0, 1.0);
        let mut n = (self.cpu.len() as f64 * ratio) as u64;
        if ratio > 0.0 && n == 0 {
            n = 1;
        }
        for _ in 0..n {
            if self.cpu.evict_one().is_none() {
                break;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferencelab_cache::{Access, AnyPolicy, PolicyConfig};

    fn tier(cpu: u64) -> LmcacheTier<AnyPolicy> {
        LmcacheTier::new(4, BlockCache::new(cpu, PolicyConfig::Lru.build(cpu)), None)
    }

    fn acc(k: ObjId, _d: usize, t: u64) -> Access {
        Access::at(k, t)
    }

    #[test]
    fn a_store_that_does_not_fit_writes_nothing() {
        // 5 slots, [1,2,3] stored; [4,5,6] needs 3 slots, 2 are free: refused whole
        let mut t = tier(5);
        assert_eq!(t.store_mp(&[1, 2, 3], 0, 3, &acc), Some(3));
        assert_eq!(t.store_mp(&[4, 5, 6], 0, 3, &acc), None);
        assert!(!t.cpu.contains(4) && !t.cpu.contains(5));
        // resident chunks need no slot: [1,2,3,7,8] writes 7 and 8 only
        assert_eq!(t.store_mp(&[1, 2, 3, 7, 8], 0, 5, &acc), Some(2));
        assert_eq!(t.cpu.evictions, 0);
        t.cpu.validate().unwrap();
    }

    #[test]
    fn stores_and_end_of_request_touches_put_the_head_most_recent() {
        // store [1,2,3] (written 3, 2, 1: LRU order 3,2,1), then [4,5] (5,4): order 3,2,1,5,4.
        // End of the first request: touch 3, 2, 1 -> order 5,4,3,2,1.
        let mut t = tier(10);
        t.store_mp(&[1, 2, 3], 0, 3, &acc);
        t.store_mp(&[4, 5], 0, 2, &acc);
        t.touch_mp(&[1, 2, 3], &acc);
        // 8 of 10 used = 0.8: a tick evicts max(1, int(8 * 0.2)) = 1: chunk 5
        t.store_mp(&[6, 7, 8], 0, 3, &acc);
        // order now 5,4,3,2,1,8,7,6 (len 8)
        assert!(t.evict_tick_mp(MpEviction::default()));
        assert!(!t.cpu.contains(5) && t.cpu.contains(4));
        // 7 of 10: below the watermark, nothing happens
        assert!(!t.evict_tick_mp(MpEviction::default()));
        assert_eq!(t.cpu.evictions, 1);
        t.cpu.validate().unwrap();
    }

    #[test]
    fn the_watermark_is_over_the_unrounded_size() {
        // 0.01 GiB of 256 KiB chunks: 40 whole chunks, 40.96 by bytes; 32 held = 0.78: no pass
        let mut t = tier(40);
        let keys: Vec<ObjId> = (1..=32).collect();
        t.store_mp(&keys, 0, 32, &acc);
        let e = MpEviction {
            l1_size_chunks: 0.01 * (1u64 << 30) as f64 / (256 * 1024) as f64,
            ..MpEviction::default()
        };
        assert!(!t.evict_tick_mp(e));
        // 33 held = 0.806: a pass evicts int(33 * 0.2) = 6
        t.store_mp(&[99], 0, 1, &acc);
        assert!(t.evict_tick_mp(e));
        assert_eq!(t.cpu.len(), 27);
    }

    #[test]
    fn the_logged_loop_interpolates_whole_periods_and_extrapolates_the_mean() {
        // ticks logged at 10.2, 12.204 (one unlogged tick between) and 15.21 (two between)
        let l = LoggedLoop::new(&[12.204, 10.2, 15.21]).unwrap();
        assert_eq!(l.logged(), &[10.2, 12.204, 15.21]);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(l.time(0), 10.2) && near(l.time(2), 12.204) && near(l.time(5), 15.21));
        assert!(near(l.time(1), 11.202));
        assert!(near(l.time(3), 13.206) && near(l.time(4), 14.208));
        // mean period (15.21 - 10.2) / 5 before and after
        assert!(near(l.period(), 1.002));
        assert!(near(l.time(-2), 10.2 - 2.004) && near(l.time(7), 15.21 + 2.004));
        // the first tick strictly after a time
        assert_eq!(l.first_after(0.0), -10);
        assert_eq!(l.first_after(10.2), 1);
        assert_eq!(l.first_after(10.19), 0);
        assert_eq!(l.first_after(14.3), 5);
        assert_eq!(l.first_after(100.0), 90);
        // one tick: 1 s either side; none: no loop
        let one = LoggedLoop::new(&[3.5]).unwrap();
        assert!(near(one.time(2), 5.5) && near(one.time(-3), 0.5));
        assert!(LoggedLoop::new(&[]).is_none());
        assert!(LoggedLoop::new(&[f64::NAN]).is_none());
        // a long gap is counted in the short gaps' mean period: 300 gaps of 1.002 s read as 1 s
        // would be 301 periods; in 1.002 s periods it is 300
        let l = LoggedLoop::new(&[0.0, 1.002, 2.004, 2.004 + 300.0 * 1.002]).unwrap();
        assert!(near(l.time(302), 2.004 + 300.0 * 1.002));
        assert!(near(l.time(3), 3.006));
    }

    #[test]
    fn a_lookup_touches_its_run_head_last() {
        // [1,2] then [3,4]: order 2,1,4,3. Look up [1,2,9]: a run of 2, touched 2 then 1:
        // order 4,3,2,1.
        let mut t = tier(4);
        t.store_mp(&[1, 2], 0, 2, &acc);
        t.store_mp(&[3, 4], 0, 2, &acc);
        let l = t.lookup_mp(&[1, 2, 9]);
        assert_eq!(l.chunks(), 2);
        // the retrieve past a GPU hit of 5 tokens: chunk 1 on (4 tokens a chunk): 4 loaded
        let r = t.retrieve_mp(l, 5, 8);
        assert_eq!((r.cpu_hit_tokens, r.loaded_tokens), (3, 4));
        // a tick at 4 of 4 evicts int(4 * 0.5) = 2, the least recent: 4 and 3 (without the
        // lookup's touch it would have been 2 and 1)
        let half = MpEviction {
            eviction_ratio: 0.5,
            ..MpEviction::default()
        };
        assert!(t.evict_tick_mp(half));
        assert!(t.cpu.contains(1) && t.cpu.contains(2));
        assert!(!t.cpu.contains(3) && !t.cpu.contains(4));
        // a lookup that misses its head finds (and touches) nothing: [9,1] has a run of 0
        assert_eq!(t.lookup_mp(&[9, 1]).chunks(), 0);
        t.cpu.validate().unwrap();
    }
}
