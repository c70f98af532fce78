//! The scorer sweep: random search over `conversation_aware`'s weights with successive halving
//! (Jamieson & Talwalkar, AISTATS'16; the budget is the length of the train part replayed), in
//! parallel. Trials are ranked by the mean token hit ratio over the capacities on the
//! validation part (the end of the train part: `Split::validation_from`; the earlier train
//! requests warm the cache); the test part (after the split) is reported for the finalists,
//! never used to choose.

use inferencelab_cache::learned::order::Ranking;
use inferencelab_cache::policy::conversation_aware::ScorerConfig;
use rayon::prelude::*;
use serde::Serialize;

use crate::eval::{Candidate, Split};
use crate::replay::SplitCounts;
use inferencelab_trace::rng::SplitMix64;

#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Number of configurations tried (the defaults and LRU's point included).
    pub budget: usize,
    pub capacities: Vec<u64>,
    pub seed: u64,
    /// Keep the best 1/eta of the trials at each rung.
    pub eta: usize,
    /// Shares of the train part replayed at the rungs before the last (which replays the whole
    /// trace and so yields the test figures too). A rung ranks on the validation requests it
    /// reached (on the train requests if it stops before the validation part).
    pub rungs: Vec<f64>,
    /// A configuration to try first (e.g. a user's YAML).
    pub first: Option<ScorerConfig>,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            budget: 32,
            capacities: Vec::new(),
            seed: 1,
            eta: 3,
            rungs: vec![0.75],
            first: None,
        }
    }
}

/// One configuration's results.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub id: usize,
    pub config: ScorerConfig,
    /// Mean validation (else train) token hit ratio over the capacities at each rung it
    /// reached: what it was ranked on.
    pub rung_scores: Vec<f64>,
    /// Per capacity, at the last rung (whole trace): train and test counts.
    pub runs: Vec<SplitCounts>,
}

impl Trial {
    pub fn train(&self) -> f64 {
        mean(self.runs.iter().map(|r| r.train.token_hit_ratio()))
    }
    pub fn validation(&self) -> f64 {
        mean(self.runs.iter().map(|r| r.validation.token_hit_ratio()))
    }
    pub fn test(&self) -> f64 {
        mean(self.runs.iter().map(|r| r.test.token_hit_ratio()))
    }
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// What a choice is made on: the validation part's token hit ratio, or the train part's when
/// the replay stopped before the validation part (or it is empty).
pub fn choice_ratio(r: &SplitCounts) -> f64 {
    if r.validation.prompt_tokens > 0 {
        r.validation.token_hit_ratio()
    } else {
        r.train.token_hit_ratio()
    }
}

/// Draw a configuration from the search space (documented in docs/policies.md).
pub fn sample(rng: &mut SplitMix64) -> ScorerConfig {
    let log_uniform = |rng: &mut SplitMix64, lo: f64, hi: f64| {
        (lo.ln() + rng.uniform() * (hi.ln() - lo.ln())).exp()
    };
    let uniform = |rng: &mut SplitMix64, lo: f64, hi: f64| lo + rng.uniform() * (hi - lo);
    ScorerConfig {
        scale: log_uniform(rng, 0.05, 20.0),
        use_conversation: rng.uniform() < 0.75,
        use_block_gap: rng.uniform() < 0.75,
        // drawn by `run` from its own stream (adding it kept the other draws of every seed)
        use_request_type: false,
        use_reuse_model: rng.uniform() < 0.75,
        w_uses: uniform(rng, -0.5, 2.0),
        w_sharing: uniform(rng, 0.0, 2.0),
        w_depth: uniform(rng, 0.0, 2.0),
        w_probability: uniform(rng, 0.0, 2.0),
        overdue_factor: log_uniform(rng, 0.05, 20.0),
        ranking: if rng.uniform() < 0.5 {
            Ranking::NextUse
        } else {
            Ranking::ExpectedWait
        },
        // not drawn: LRU as a second expert is the safety net of every trial
        adaptive: true,
        // not drawn (kept every seed's other draws): the defaults
        infer_conversations: true,
        reuse_model_for_conversations: true,
        gap_by_turn: false,
        served_time: true,
        use_output_length: ScorerConfig::default().use_output_length,
        hit_density: false,
        idle_in_horizons: false,
        waiting_queue: ScorerConfig::default().waiting_queue,
    }
}

/// Run the sweep; `progress(done, total)` is called after every simulation.
pub fn run(
    split: &Split<'_>,
    cfg: &SweepConfig,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Vec<Trial> {
    let mut rng = SplitMix64::new(cfg.seed);
    let mut configs: Vec<ScorerConfig> = cfg.first.iter().cloned().collect();
    // the given config, the defaults and LRU's point always reach the last rung: the winner
    // is then never worse than them on the validation part
    let references = configs.len() + 2;
    configs.extend([
        ScorerConfig::default(),
        ScorerConfig {
            scale: 0.0,
            ..Default::default()
        },
    ]);
    let mut types = SplitMix64::new(cfg.seed ^ 0x7E9E_5EED);
    while configs.len() < cfg.budget.max(1) {
        let mut c = sample(&mut rng);
        c.use_request_type = types.uniform() < 0.5;
        configs.push(c);
    }
    configs.truncate(cfg.budget.max(1));
    let mut trials: Vec<Trial> = configs
        .into_iter()
        .enumerate()
        .map(|(id, config)| Trial {
            id,
            config,
            rung_scores: Vec::new(),
            runs: Vec::new(),
        })
        .collect();
    let caps = &cfg.capacities;
    let train_len = split.split - split.t0;
    // the number of simulations of the whole schedule, for the progress bar
    let mut total = 0u64;
    let mut alive = trials.len();
    for _ in 0..=cfg.rungs.len() {
        total += (alive * caps.len()) as u64;
        alive = alive.div_ceil(cfg.eta.max(2)) + references.min(alive);
    }
    let done = std::sync::atomic::AtomicU64::new(0);
    let mut alive: Vec<usize> = (0..trials.len()).collect();
    let last = cfg.rungs.len();
    for rung in 0..=last {
        let until = if rung == last {
            f64::INFINITY
        } else {
            // "before the split" rungs replay a share of the train part (inclusive of its end)
            split.t0 + cfg.rungs[rung] * train_len + 1e-9
        };
        let jobs: Vec<(usize, usize)> = alive
            .iter()
            .flat_map(|&t| (0..caps.len()).map(move |c| (t, c)))
            .collect();
        let results: Vec<SplitCounts> = jobs
            .par_iter()
            .map(|&(t, c)| {
                let r = split.run(&Candidate::Scorer(trials[t].config.clone()), caps[c], until);
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress(n, total);
                r
            })
            .collect();
        for (k, &t) in alive.iter().enumerate() {
            let runs = &results[k * caps.len()..(k + 1) * caps.len()];
            let score = mean(runs.iter().map(choice_ratio));
            trials[t].rung_scores.push(score);
            if rung == last {
                trials[t].runs = runs.to_vec();
            }
        }
        if rung < last {
            alive.sort_by(|&a, &b| {
                let (sa, sb) = (trials[a].rung_scores[rung], trials[b].rung_scores[rung]);
                sb.total_cmp(&sa).then(a.cmp(&b))
            });
            let keep = alive.len().div_ceil(cfg.eta.max(2));
            alive = alive
                .iter()
                .enumerate()
                .filter(|&(rank, &t)| rank < keep || t < references)
                .map(|(_, &t)| t)
                .collect();
        }
    }
    // finalists first, best validation score first
    trials.sort_by(|a, b| {
        b.rung_scores
            .len()
            .cmp(&a.rung_scores.len())
            .then(
                b.rung_scores
                    .last()
                    .unwrap_or(&0.0)
                    .total_cmp(a.rung_scores.last().unwrap_or(&0.0)),
            )
            .then(a.id.cmp(&b.id))
    });
    trials
}
