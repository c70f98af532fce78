//! Whole LRU hit-ratio curves in one pass (Mattson et al. 1970, "Evaluation techniques for
//! storage hierarchies": LRU is a stack algorithm, so a reference hits in a cache of `C` entries
//! iff its stack distance is below `C`). Stack distances come from a Fenwick tree over access
//! times (Bennett & Kruskal 1975): O(log n) per reference.
//!
//! With vLLM's prefix semantics (no pinning, GPU tier only) the access sequence does not depend
//! on the capacity (every block of a request is touched tail first, hit or not), so LRU is still
//! a stack algorithm: the resident set at capacity `C` is the top `C` of the stack. Block `j` of
//! a request then hits iff every block `0..=j` has stack distance `< C` at the request's start,
//! i.e. iff the running maximum `m_j` of the distances is `< C`. Pinning breaks the stack property
//! (what is pinned depends on what hit), so curves are only offered without it.

use serde::Serialize;

use crate::config::HitSemantics;
use crate::driver::Prepared;

/// One point of a curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurvePoint {
    pub gpu_blocks: u64,
    pub gpu_hit_blocks: u64,
    pub block_hit_ratio: f64,
    pub gpu_hit_tokens: u64,
    pub token_hit_ratio: f64,
}

/// Fenwick tree over access times counting "latest access of some object happened at t".
struct Fenwick(Vec<i64>);

impl Fenwick {
    fn new(n: usize) -> Self {
        Fenwick(vec![0; n + 1])
    }
    fn add(&mut self, i: usize, d: i64) {
        let mut i = i + 1;
        while i < self.0.len() {
            self.0[i] += d;
            i += i & i.wrapping_neg();
        }
    }
    /// sum of [0, i)
    fn prefix(&self, i: usize) -> i64 {
        let mut i = i;
        let mut s = 0;
        while i > 0 {
            s += self.0[i];
            i -= i & i.wrapping_neg();
        }
        s
    }
}

/// The LRU curve of the GPU tier at every capacity in `capacities` (no pinning, no LMCache).
pub fn lru_curve(
    prepared: &Prepared<'_>,
    semantics: HitSemantics,
    capacities: &[u64],
) -> Vec<CurvePoint> {
    let blocked = &prepared.gpu;
    let bs = blocked.block_size as u64;
    let n_objects = blocked.num_objects as usize;
    let total = blocked.keys.len();
    // hist[d]: blocks (or tokens) that hit exactly when capacity > d; index n_objects = never
    let mut block_hist = vec![0u64; n_objects + 1];
    let mut token_hist = vec![0u64; n_objects + 1];
    let mut tree = Fenwick::new(total);
    let mut last: Vec<usize> = vec![usize::MAX; n_objects];
    let mut live = 0i64; // number of marks in the tree = distinct objects seen
    let mut clock = 0usize;
    let mut dists: Vec<usize> = Vec::new();
    let mut prompt_tokens = 0u64;

    let distance = |tree: &Fenwick, last: &[usize], live: i64, k: u32| -> usize {
        let t = last[k as usize];
        if t == usize::MAX {
            n_objects
        } else {
            // distinct objects referenced after t
            (live - tree.prefix(t + 1)) as usize
        }
    };
    let touch =
        |tree: &mut Fenwick, last: &mut [usize], live: &mut i64, clock: &mut usize, k: u32| {
            let t = last[k as usize];
            if t == usize::MAX {
                *live += 1;
            } else {
                tree.add(t, -1);
            }
            tree.add(*clock, 1);
            last[k as usize] = *clock;
            *clock += 1;
        };

    for (i, r) in prepared.trace.requests.iter().enumerate() {
        let keys = blocked.request(i);
        let len = r.input_length as u64;
        prompt_tokens += len;
        let cap_tokens = len.saturating_sub(1) / bs * bs;
        dists.clear();
        match semantics {
            HitSemantics::Prefix => {
                let mut running_max = 0usize;
                for &k in keys {
                    running_max = running_max.max(distance(&tree, &last, live, k));
                    dists.push(running_max);
                }
                for &k in keys.iter().rev() {
                    touch(&mut tree, &mut last, &mut live, &mut clock, k);
                }
            }
            HitSemantics::Any => {
                for &k in keys {
                    dists.push(distance(&tree, &last, live, k));
                    touch(&mut tree, &mut last, &mut live, &mut clock, k);
                }
                dists.sort_unstable();
            }
        }
        // the k-th hit block (in threshold order) adds its marginal tokens at threshold d_k
        let mut prev_tokens = 0u64;
        for (idx, &d) in dists.iter().enumerate() {
            block_hist[d.min(n_objects)] += 1;
            let tokens = ((idx as u64 + 1) * bs).min(cap_tokens);
            token_hist[d.min(n_objects)] += tokens - prev_tokens;
            prev_tokens = tokens;
        }
    }
    // cumulative: hits at capacity C = sum of hist[d] for d < C
    let mut cum_blocks = vec![0u64; n_objects + 1];
    let mut cum_tokens = vec![0u64; n_objects + 1];
    let (mut b, mut t) = (0u64, 0u64);
    for d in 0..n_objects {
        b += block_hist[d];
        t += token_hist[d];
        cum_blocks[d + 1] = b;
        cum_tokens[d + 1] = t;
    }
    capacities
        .iter()
        .map(|&c| {
            let idx = (c as usize).min(n_objects);
            let (hb, ht) = (cum_blocks[idx], cum_tokens[idx]);
            CurvePoint {
                gpu_blocks: c,
                gpu_hit_blocks: hb,
                block_hit_ratio: if total == 0 {
                    0.0
                } else {
                    hb as f64 / total as f64
                },
                gpu_hit_tokens: ht,
                token_hit_ratio: if prompt_tokens == 0 {
                    0.0
                } else {
                    ht as f64 / prompt_tokens as f64
                },
            }
        })
        .collect()
}

/// `n` capacities spaced evenly on a log scale from 1% of the distinct blocks to all of them.
pub fn log_spaced_capacities(distinct: u64, n: usize) -> Vec<u64> {
    let hi = distinct.max(1) as f64;
    let lo = (hi / 100.0).max(1.0);
    let mut out: Vec<u64> = (0..n.max(2))
        .map(|i| (lo * (hi / lo).powf(i as f64 / (n.max(2) - 1) as f64)).round() as u64)
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SimConfig, TierConfig, TimingModel};
    use inferencelab_cache::PolicyConfig;
    use inferencelab_trace::{Content, Request, Trace};

    fn random_trace(seed: u64, n: usize) -> Trace {
        // small chained-id conversations with shared system prompts
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut convs: Vec<Vec<u64>> = Vec::new();
        let mut requests = Vec::new();
        let mut id = 1000u64;
        for i in 0..n {
            let c = (next() % 12) as usize;
            if c >= convs.len() {
                let sys = next() % 3;
                convs.push(vec![sys, 10 + sys]);
            }
            let c = c.min(convs.len() - 1);
            for _ in 0..(1 + next() % 4) {
                id += 1;
                convs[c].push(id);
            }
            let ids = convs[c].clone();
            let len = ids.len() as u32 * 16 - (next() % 16) as u32;
            requests.push(Request {
                id: i.to_string(),
                timestamp: i as f64,
                finish_time: None,
                conversation: Some(c as u64),
                turn: 0,
                input_length: len,
                output_length: 5,
                kind: None,
                content: Content::HashIds(ids),
                output_tokens: None,
                output_times: None,
            });
        }
        Trace {
            requests,
            block_size: Some(16),
            partial_last_block: true,
            ..Default::default()
        }
    }

    /// The curve's model run directly: LRU over prompt blocks, prefix hits (the leading run,
    /// at most n - 1 tokens), every block of a request referenced tail first, no pinning. It is
    /// `simulate` before the engine rules (no null block, no partial-tail block, no answer
    /// blocks): the curve is that abstract model, not vLLM's engine (docs/semantics.md).
    fn abstract_prefix_lru(p: &Prepared<'_>, capacity: u64) -> (u64, u64) {
        let mut cache =
            inferencelab_cache::BlockCache::new(capacity, PolicyConfig::Lru.build(capacity));
        let (mut blocks, mut tokens, mut clock) = (0u64, 0u64, 0u64);
        let bs = p.gpu.block_size as u64;
        for (i, r) in p.trace.requests.iter().enumerate() {
            let keys = p.gpu.request(i);
            let lead = keys.iter().take_while(|&&k| cache.contains(k)).count() as u64;
            blocks += lead;
            tokens += (lead * bs).min((r.input_length as u64).saturating_sub(1) / bs * bs);
            for &k in keys.iter().rev() {
                clock += 1;
                cache.access(&inferencelab_cache::Access::at(k, clock), false);
            }
        }
        (blocks, tokens)
    }

    #[test]
    fn curve_equals_point_simulations_in_both_semantics() {
        for seed in [1u64, 7, 42] {
            let trace = random_trace(seed, 300);
            let p = Prepared::new(&trace, 16, None).unwrap();
            let caps = [1u64, 2, 5, 10, 20, 40, 80, 160, 1000];
            for sem in [HitSemantics::Prefix, HitSemantics::Any] {
                let curve = lru_curve(&p, sem, &caps);
                for (pt, &c) in curve.iter().zip(&caps) {
                    let expected = match sem {
                        HitSemantics::Prefix => abstract_prefix_lru(&p, c),
                        HitSemantics::Any => {
                            let cfg = SimConfig {
                                gpu: TierConfig {
                                    capacity: c,
                                    policy: PolicyConfig::Lru,
                                },
                                cpu: None,
                                disk: None,
                                hit_semantics: sem,
                                pinning: false,
                                timing: TimingModel::default(),
                                window_seconds: 60.0,
                                model: None,
                                engine: Default::default(),
                            };
                            let row = crate::run(&p, &cfg).unwrap();
                            (row.gpu_hit_blocks, row.gpu_hit_tokens)
                        }
                    };
                    assert_eq!(
                        (pt.gpu_hit_blocks, pt.gpu_hit_tokens),
                        expected,
                        "seed {seed} {sem} capacity {c}"
                    );
                }
            }
        }
    }

    #[test]
    fn log_spacing_is_increasing_and_ends_at_distinct() {
        let c = log_spaced_capacities(43_924, 20);
        assert!(c.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*c.last().unwrap(), 43_924);
    }
}
