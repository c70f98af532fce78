//! Evaluating a policy on a train/test split, beside LRU, Belady and the infinite cache, and the
//! share of the LRU→Belady gap it closes.

use inferencelab_cache::policy::conversation_aware::{ConversationAware, ScorerConfig};
use inferencelab_cache::policy::lightgbm::{LightGbm, LightGbmConfig};
use inferencelab_cache::policy::lru::Lru;
use inferencelab_cache::PolicyConfig;
use inferencelab_sim::plan::Capacity;
use inferencelab_sim::queueing::AdmissionDelays;
use inferencelab_sim::resolve::PointSpec;
use inferencelab_sim::{EngineModel, Prepared, SimConfig, TimingModel};
use serde::Serialize;

use crate::replay::{replay, Counts, ReplayConfig, SplitCounts};

/// A policy to evaluate.
#[derive(Debug, Clone)]
pub enum Candidate {
    Lru,
    /// The offline bound (`policy::belady`, with the next-use annotation computed by
    /// [`Split::new`]).
    Belady,
    /// Unbounded cache.
    Ideal,
    Scorer(ScorerConfig),
    LightGbm(LightGbmConfig),
}

impl Candidate {
    pub fn name(&self) -> &'static str {
        match self {
            Candidate::Lru => "lru",
            Candidate::Belady => "belady",
            Candidate::Ideal => "ideal",
            Candidate::Scorer(_) => "conversation_aware",
            Candidate::LightGbm(_) => "lightgbm",
        }
    }
}

/// A trace prepared for train/test evaluation.
pub struct Split<'t> {
    pub prepared: Prepared<'t>,
    /// The prefix next-use annotation of the GPU blocks (for Belady).
    pub oracle: Vec<u64>,
    /// Trace time where the test part starts.
    pub split: f64,
    /// Trace time where the validation part (the end of the train part) starts: `sweep` and
    /// `train` choose on it, the earlier train requests only warm the cache.
    pub validation_from: f64,
    pub t0: f64,
    pub pinning: bool,
    pub timing: TimingModel,
    /// The GPU tier's engine model. The default is `simulate`'s (vLLM's engine rules: answer
    /// blocks, null block, admission and preemption, `--schedule auto`), so `sweep` and `train`
    /// choose and report on what `simulate` then shows; `rules: false` is the abstract prefix
    /// model of [`replay`] (`--gpu-model abstract`).
    pub engine: EngineModel,
}

impl<'t> Split<'t> {
    pub fn new(prepared: Prepared<'t>, train_fraction: f64, pinning: bool) -> Self {
        let reqs = &prepared.trace.requests;
        let t0 = reqs.first().map_or(0.0, |r| r.timestamp);
        let t1 = reqs.last().map_or(0.0, |r| r.timestamp);
        let split = t0 + train_fraction * (t1 - t0);
        let oracle = prepared.gpu.next_use_by_request();
        Split {
            prepared,
            oracle,
            split,
            validation_from: t0,
            t0,
            pinning,
            timing: TimingModel::default(),
            engine: EngineModel::default(),
        }
    }

    /// Evaluate with this engine model (`rules: false`: the abstract prefix model).
    pub fn with_engine(mut self, engine: EngineModel) -> Self {
        self.engine = engine;
        self
    }

    /// Choose on the last `share` of the train part (by time) only; 1 = the whole train part.
    pub fn with_validation_share(mut self, share: f64) -> Self {
        let share = share.clamp(0.0, 1.0);
        self.validation_from = self.split - share * (self.split - self.t0);
        self
    }

    /// Replay `c` at `capacity`, stopping before trace time `until`.
    pub fn run(&self, c: &Candidate, capacity: u64, until: f64) -> SplitCounts {
        if self.engine.rules {
            return self.run_engine(c, capacity, until);
        }
        let cfg = ReplayConfig {
            capacity: if matches!(c, Candidate::Ideal) {
                u64::MAX
            } else {
                capacity
            },
            pinning: self.pinning,
            timing: self.timing,
            split: self.split,
            validation_from: self.validation_from,
            until,
        };
        let p = &self.prepared;
        match c {
            Candidate::Lru | Candidate::Ideal => replay(p, Lru::default(), &cfg, None).0,
            Candidate::Belady => {
                let belady = PolicyConfig::Belady.build(capacity);
                replay(p, belady, &cfg, Some(&self.oracle)).0
            }
            Candidate::Scorer(s) => replay(p, ConversationAware::new(s), &cfg, None).0,
            Candidate::LightGbm(m) => replay(p, LightGbm::new(m), &cfg, None).0,
        }
    }

    /// The point `simulate` runs for `c` at `capacity` (GPU tier only), through the one
    /// resolver (`inferencelab_sim::resolve`).
    pub fn sim_config(&self, c: &Candidate, capacity: u64) -> SimConfig {
        let policy = match c {
            Candidate::Lru => PolicyConfig::Lru,
            Candidate::Belady => PolicyConfig::Belady,
            Candidate::Ideal => PolicyConfig::Ideal,
            Candidate::Scorer(s) => PolicyConfig::ConversationAware(s.clone()),
            Candidate::LightGbm(m) => PolicyConfig::Lightgbm(m.clone()),
        };
        let spec = PointSpec {
            pinning: self.pinning,
            timing: self.timing,
            window_seconds: 3600.0,
            engine: self.engine,
            ..PointSpec::new(
                None,
                self.prepared.gpu.block_size,
                self.prepared.gpu.block_size,
                Capacity::Entries(capacity),
                policy,
            )
        };
        // a GPU-only point in entries: the resolver's checks are about LMCache tiers, sizes in
        // GiB, `--schedule vllm` without pinning (sweep and train keep the default schedule) and
        // a retraining lightgbm without its models (train attaches them before it runs one)
        spec.resolve()
            .unwrap_or_else(|e| panic!("a sweep/train point does not resolve: {e}"))
    }

    /// [`run`](Split::run) through the simulator's driver (`inferencelab_sim::run_observed`),
    /// the same code `simulate` runs, counting each request's GPU hit in its part. A finite
    /// `until` replays a copy of the trace cut there (successive halving's short rungs).
    fn run_engine(&self, c: &Candidate, capacity: u64, until: f64) -> SplitCounts {
        let config = self.sim_config(c, capacity);
        let trace = self.prepared.trace;
        let n = trace.requests.partition_point(|r| r.timestamp < until);
        let cut;
        let cut_prepared;
        let prepared = if n < trace.requests.len() {
            cut = trace.prefix(n);
            cut_prepared = Prepared::new(&cut, self.prepared.gpu.block_size, None)
                .expect("a prefix of a trace that blocked blocks too");
            &cut_prepared
        } else {
            &self.prepared
        };
        let reqs = &prepared.trace.requests;
        let bs = prepared.gpu.block_size as u64;
        let mut out = SplitCounts::default();
        // admission delays of the train, validation and test parts
        let mut delays: [AdmissionDelays; 3] = Default::default();
        inferencelab_sim::driver::run_observed(prepared, &config, |i, h| {
            let r = &reqs[i];
            let test = r.timestamp >= self.split;
            let validation = !test && r.timestamp >= self.validation_from;
            let refs = prepared.gpu.request(i).len() as u64;
            let add = |part: &mut Counts, delays: &mut AdmissionDelays| {
                part.requests += 1;
                part.prompt_tokens += r.input_length as u64;
                part.hit_tokens += h.gpu_hit_tokens;
                part.block_refs += refs;
                part.hit_blocks += h.gpu_hit_tokens.div_ceil(bs);
                delays.record(r.timestamp, h.admitted_s);
            };
            if test {
                add(&mut out.test, &mut delays[2]);
            } else {
                add(&mut out.train, &mut delays[0]);
            }
            if validation {
                add(&mut out.validation, &mut delays[1]);
            }
        })
        .unwrap_or_else(|e| panic!("simulating {} at {capacity}: {e}", c.name()));
        for (part, d) in [&mut out.train, &mut out.validation, &mut out.test]
            .into_iter()
            .zip(&mut delays)
        {
            (part.queue_delay_p50_s, part.queue_delay_p90_s) = d.p50_p90();
        }
        out
    }
}

/// The policies whose order comes from a predicted next use; `simulate` runs LRU and Belady
/// beside them and reports the share of the LRU->Belady gap they close.
pub const SMART: [&str; 2] = ["conversation_aware", "lightgbm"];

/// `(P - LRU) / (Belady - LRU)`: the share of the LRU→Belady gap a policy closes (None when
/// Belady does not beat LRU at all).
pub fn gap_closed(p: f64, lru: f64, belady: f64) -> Option<f64> {
    let gap = belady - lru;
    (gap > 1e-9).then(|| (p - lru) / gap)
}

/// One capacity's comparison, train and test.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub capacity: u64,
    pub policy: String,
    pub train: Ratios,
    /// The end of the train part, where `sweep` and `train` make their choices.
    pub validation: Ratios,
    pub test: Ratios,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratios {
    pub policy: f64,
    pub lru: f64,
    pub belady: f64,
    pub ideal: f64,
    /// LRU / ideal: how far LRU is from the infinite cache.
    pub lru_of_ideal: f64,
    pub gap_closed: Option<f64>,
}

impl Ratios {
    pub fn new(policy: f64, lru: f64, belady: f64, ideal: f64) -> Self {
        Ratios {
            policy,
            lru,
            belady,
            ideal,
            lru_of_ideal: if ideal > 0.0 { lru / ideal } else { 0.0 },
            gap_closed: gap_closed(policy, lru, belady),
        }
    }
}

/// The baselines at one capacity.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Baseline {
    pub capacity: u64,
    pub lru: SplitCounts,
    pub belady: SplitCounts,
    pub ideal: SplitCounts,
}

impl Baseline {
    pub fn compare(&self, policy: &str, p: &SplitCounts) -> Comparison {
        let r = |f: fn(&SplitCounts) -> f64| {
            Ratios::new(f(p), f(&self.lru), f(&self.belady), f(&self.ideal))
        };
        Comparison {
            capacity: self.capacity,
            policy: policy.to_string(),
            train: r(|c| c.train.token_hit_ratio()),
            validation: r(|c| c.validation.token_hit_ratio()),
            test: r(|c| c.test.token_hit_ratio()),
        }
    }
}

/// LRU, Belady and the infinite cache at each capacity, in parallel.
pub fn baselines(split: &Split<'_>, capacities: &[u64]) -> Vec<Baseline> {
    use rayon::prelude::*;
    let jobs: Vec<(u64, Candidate)> = capacities
        .iter()
        .flat_map(|&c| {
            [
                (c, Candidate::Lru),
                (c, Candidate::Belady),
                (c, Candidate::Ideal),
            ]
        })
        .collect();
    let runs: Vec<SplitCounts> = jobs
        .par_iter()
        .map(|(cap, c)| split.run(c, *cap, f64::INFINITY))
        .collect();
    capacities
        .iter()
        .enumerate()
        .map(|(i, &capacity)| Baseline {
            capacity,
            lru: runs[3 * i],
            belady: runs[3 * i + 1],
            ideal: runs[3 * i + 2],
        })
        .collect()
}

/// Capacities where LRU reaches less than `max_lru_of_ideal` of the ideal hit ratio but more
/// than a little (`> 0.05` of it): where a better policy can matter. Candidates are
/// log-spaced between the largest prompt and the number of distinct blocks.
pub fn interesting_capacities(split: &Split<'_>, max_lru_of_ideal: f64, n: usize) -> Vec<u64> {
    use rayon::prelude::*;
    let g = &split.prepared.gpu;
    let largest = (0..g.num_requests())
        .map(|i| g.request(i).len() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    let distinct = (g.num_objects as u64).max(largest + 1);
    let steps = 16;
    let cands: Vec<u64> = (0..=steps)
        .map(|k| {
            let f = k as f64 / steps as f64;
            (largest as f64 * (distinct as f64 / largest as f64).powf(f)).round() as u64
        })
        .collect();
    let ideal = split
        .run(&Candidate::Ideal, 0, f64::INFINITY)
        .test
        .token_hit_ratio();
    let lru: Vec<f64> = cands
        .par_iter()
        .map(|&c| {
            split
                .run(&Candidate::Lru, c, f64::INFINITY)
                .test
                .token_hit_ratio()
        })
        .collect();
    let ok: Vec<u64> = cands
        .iter()
        .zip(&lru)
        .filter(|(_, &l)| ideal > 0.0 && l / ideal < max_lru_of_ideal && l / ideal > 0.05)
        .map(|(&c, _)| c)
        .collect();
    if ok.len() <= n {
        return ok;
    }
    // spread: first, middle, last ...
    (0..n)
        .map(|k| ok[k * (ok.len() - 1) / (n - 1).max(1)])
        .collect()
}
