//! The LMCache tier under the rules of LMCache's own simulator, `lmcache tool cache-simulator
//! simulate` (LMCache 0.5.6, `lmcache/tools/cache_simulator/simulator.py::simulate`), for
//! `--lmcache-rules simulator`:
//!
//! - one cache over chunks (capacity `cache_capacity_gib * 2^30 // kv_bytes_per_chunk`, at least
//!   1: the CLI computes it), no GPU tier, no disk, no pinning, no timing;
//! - per lookup, in log order: hit = the leading run of cached chunks, hit tokens = run x
//!   chunk size (no -1 when the whole prompt hits), the denominator is `seq_len` (the unfull tail
//!   always misses);
//! - then every chunk of the lookup is touched head first: a cached chunk is refreshed
//!   (`LRUCache.access`, also past the run: `insert` of a present key refreshes it), a missing
//!   one inserted, evicting one victim when full (`eviction_count`). A lookup longer than the
//!   cache evicts its own head: nothing stops the store.
//!
//! Where LMCache's engine differs (and `--lmcache-rules engine`, the default, follows it): the
//! lookup refreshes only the leading run, last chunk first; the store starts at the hit, takes a
//! slot per chunk before putting any, and stops when nothing is evictable, keeping the head; a
//! chunk already resident takes a slot and is not refreshed; a full-prompt hit recomputes one
//! token (`docs/semantics.md`). Its simulator has LRU only; here every policy of ours runs under
//! the same rules (the simulator's LRU is our `lru`: the parity test checks it).

use inferencelab_cache::Outcome;

use crate::config::{HitSemantics, SimConfig};
use crate::driver::{Prepared, RequestHits};
use crate::engine_run::{build_tier, Describe};
use crate::error::{SimError, SimResult};
use crate::result::ResultRow as Row;

/// Chunk counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub chunk_refs: u64,
    pub hit_chunks: u64,
    pub evictions: u64,
}

impl Totals {
    pub(crate) fn report(&self, row: &mut Row) {
        row.chunk_refs = self.chunk_refs;
        row.cpu_hit_chunks = self.hit_chunks;
        row.cpu_evictions = self.evictions;
        row.lmcache_rules = Some("simulator".to_string());
    }
}

/// Refuse what the simulator's rules do not define.
pub fn check(config: &SimConfig) -> SimResult<()> {
    let refuse = |what: &str| {
        Err(SimError::Config(format!(
            "--lmcache-rules simulator follows LMCache's `lmcache tool cache-simulator`: one \
             LMCache tier alone; {what}"
        )))
    };
    if config.cpu.is_none() {
        return refuse("the CPU tier is off (drop --no-cpu-tier)");
    }
    if config.disk.is_some() {
        return refuse("it has no disk tier (drop --disk-cache-gb/--disk-chunks)");
    }
    if config.gpu.capacity > 0 {
        return refuse(
            "it has no GPU tier (give --gpu-blocks 0, or use --lmcache-rules engine for a GPU \
             tier on top)",
        );
    }
    if config.hit_semantics != HitSemantics::Prefix {
        return refuse("hits are leading runs (drop --hit-semantics any)");
    }
    Ok(())
}

/// Replay every request's chunks under the simulator's rules, telling `each` what every request
/// got (in trace order).
pub(crate) fn run(
    prepared: &Prepared<'_>,
    config: &SimConfig,
    mut each: impl FnMut(usize, RequestHits),
) -> SimResult<Totals> {
    check(config)?;
    let (Some(tier), Some(chunks)) = (config.cpu.as_ref(), prepared.cpu.as_ref()) else {
        return Err(SimError::Config(
            "the CPU tier is on but the trace was prepared without a chunk size".into(),
        ));
    };
    let oracle = tier
        .policy
        .needs_oracle()
        .then(|| prepared.cpu_next_by_request_slice())
        .flatten();
    let describe = Describe {
        trace: prepared.trace,
        kinds: prepared.kinds(),
        blocks: chunks,
        oracle,
    };
    let mut cache = build_tier(tier, tier.capacity);
    let chunk = chunks.block_size as u64;
    let mut totals = Totals::default();
    let mut clock = 0u64;
    for (i, r) in prepared.trace.requests.iter().enumerate() {
        let keys = chunks.request(i);
        let run = keys.iter().take_while(|&&k| cache.contains(k)).count();
        for (d, &k) in keys.iter().enumerate() {
            clock += 1;
            // a hit refreshes (`access`/`insert` of a present key), a miss inserts; with every
            // entry unpinned nothing is ever refused
            let outcome = cache.access(&describe.access(i, k, d, clock), false);
            debug_assert!(!matches!(outcome, Outcome::Rejected) || tier.capacity == 0);
        }
        totals.chunk_refs += keys.len() as u64;
        totals.hit_chunks += run as u64;
        each(
            i,
            RequestHits {
                cpu_hit_tokens: run as u64 * chunk,
                admitted_s: r.timestamp,
                ..Default::default()
            },
        );
    }
    totals.evictions = cache.evictions;
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use inferencelab_cache::PolicyConfig;
    use inferencelab_trace::{Content, Request, Trace};

    use crate::config::{EngineModel, LmcacheRules, TierConfig, TimingModel};
    use crate::driver::{run_observed, Prepared};
    use crate::SimConfig;

    fn trace(chunk: u32, reqs: &[(u32, &[u64])]) -> Trace {
        Trace {
            requests: reqs
                .iter()
                .enumerate()
                .map(|(i, (len, ids))| Request {
                    id: i.to_string(),
                    timestamp: i as f64,
                    finish_time: None,
                    conversation: None,
                    turn: 0,
                    input_length: *len,
                    output_length: 1,
                    kind: None,
                    content: Content::HashIds(ids.to_vec()),
                    output_tokens: None,
                    output_times: None,
                })
                .collect(),
            block_size: Some(chunk),
            ..Default::default()
        }
    }

    fn config(chunks: u64, policy: &str, rules: LmcacheRules) -> SimConfig {
        SimConfig {
            gpu: TierConfig {
                capacity: 0,
                policy: PolicyConfig::Lru,
            },
            cpu: Some(TierConfig {
                capacity: chunks,
                policy: policy.parse().unwrap(),
            }),
            disk: None,
            hit_semantics: Default::default(),
            pinning: false,
            timing: TimingModel::default(),
            window_seconds: 60.0,
            model: None,
            engine: EngineModel {
                lmcache_rules: rules,
                ..Default::default()
            },
        }
    }

    fn per_request(t: &Trace, c: &SimConfig) -> (Vec<u64>, crate::ResultRow) {
        let p = Prepared::new(t, t.block_size.unwrap(), t.block_size).unwrap();
        let mut hits = vec![0; t.requests.len()];
        let row =
            run_observed(&p, c, |i, h| hits[i] = h.cpu_hit_tokens + h.disk_hit_tokens).unwrap();
        (hits, row)
    }

    #[test]
    fn every_chunk_touched_head_first_no_minus_one_no_truncation() {
        // chunks of 4 tokens, a cache of 3 chunks
        let t = trace(
            4,
            &[
                (8, &[1, 2]),        // miss; cache (LRU first): 1 2
                (8, &[1, 2]),        // full hit: 8 tokens (no -1); refresh 1, 2
                (17, &[1, 2, 3, 4]), // hit 1 2; insert 3, then 4 evicts 1 -> 2 3 4
                (8, &[1, 2]),        // 1 is gone: 0 hits; then 1 evicts 2, and 2 evicts 3 -> 4 1 2
            ],
        );
        let (hits, row) = per_request(&t, &config(3, "lru", LmcacheRules::Simulator));
        assert_eq!(hits, [0, 8, 8, 0]);
        assert_eq!(row.prompt_tokens, 41);
        assert_eq!(row.cpu_hit_tokens, 16);
        // evictions: 1 (by 4), 2 (by 1), 3 (by 2)
        assert_eq!(row.cpu_evictions, 3);
        assert_eq!((row.chunk_refs, row.cpu_hit_chunks), (10, 4));
        assert_eq!(row.lmcache_rules.as_deref(), Some("simulator"));
        // LMCache's engine: the full-prompt hit recomputes one token (7, not 8), and the
        // third lookup's store keeps its head instead of evicting it
        let (engine, _) = per_request(&t, &config(3, "lru", LmcacheRules::Engine));
        assert_eq!(engine[1], 7);
        assert_ne!(engine, hits);
    }

    #[test]
    fn a_lookup_longer_than_the_cache_evicts_its_own_head() {
        let t = trace(4, &[(16, &[1, 2, 3, 4]), (16, &[1, 2, 3, 4])]);
        // two chunks: 3 evicts 1, 4 evicts 2; the second lookup finds 1 gone
        let (hits, row) = per_request(&t, &config(2, "lru", LmcacheRules::Simulator));
        assert_eq!(hits, [0, 0]);
        assert_eq!(row.cpu_evictions, 6);
        // fifo runs under the same rules
        let (fifo, _) = per_request(&t, &config(2, "fifo", LmcacheRules::Simulator));
        assert_eq!(fifo, [0, 0]);
    }

    #[test]
    fn refuses_what_the_simulator_has_not() {
        let t = trace(4, &[(8, &[1, 2])]);
        let p = Prepared::new(&t, 4, Some(4)).unwrap();
        let mut c = config(3, "lru", LmcacheRules::Simulator);
        c.gpu.capacity = 10;
        let err = crate::run(&p, &c).unwrap_err().to_string();
        assert!(err.contains("no GPU tier"), "{err}");
        let mut c = config(3, "lru", LmcacheRules::Simulator);
        c.disk = c.cpu.clone();
        assert!(crate::run(&p, &c)
            .unwrap_err()
            .to_string()
            .contains("no disk"));
    }
}
