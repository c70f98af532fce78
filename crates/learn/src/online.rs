//! The online retraining schedule of the `lightgbm` policy (LRB, Song et al., NSDI'20, trains
//! continuously on a sliding window of recent requests): every `every_seconds` of trace time, a
//! model trained on the references of the past `window_seconds` (rows from the window's first
//! half, labels looking at the rest, exactly as `train` does for the whole train part).
//!
//! Features and labels depend only on the reference stream, not on the cache, so one schedule
//! serves every capacity and calibration. Model `k` takes effect at `t0 + k * every` and sees
//! only the requests before that time: a trace cut at `t` gets the same models up to `t` (the
//! no-peeking test runs the policy with a schedule).

use std::sync::Arc;

use inferencelab_cache::learned::features::{FEATURE_NAMES, PREFIX_MONOTONE};
use inferencelab_cache::policy::lightgbm::{Retrain, Schedule};
use inferencelab_trace::{BlockedTrace, Trace};
use rayon::prelude::*;

use crate::boost::{self, BoostParams};
use crate::dataset;

/// Rows per retrained model at most (a seeded uniform sample of the window's first half).
pub const MAX_ROWS: usize = 50_000;

/// The models of `retrain` over `trace`, trained in parallel (each independently, so the
/// result does not depend on the number of threads).
pub fn schedule(trace: &Trace, blocks: &BlockedTrace, retrain: &Retrain) -> Schedule {
    let reqs = &trace.requests;
    let (Some(first), Some(last)) = (reqs.first(), reqs.last()) else {
        return Vec::new();
    };
    let (t0, t1) = (first.timestamp, last.timestamp);
    let every = retrain.every_seconds.max(1e-3);
    let mut times = Vec::new();
    let mut t = t0 + every;
    while t <= t1 {
        times.push(t);
        t += every;
    }
    let names: Vec<String> = FEATURE_NAMES.iter().map(|s| s.to_string()).collect();
    let params = BoostParams {
        num_iterations: retrain.num_iterations,
        num_leaves: retrain.num_leaves,
        learning_rate: retrain.learning_rate,
        min_data_in_leaf: retrain.min_data_in_leaf,
        monotone: PREFIX_MONOTONE.to_vec(),
        ..Default::default()
    };
    let models: Vec<Option<(f64, Arc<_>)>> = times
        .par_iter()
        .map(|&t| {
            let from = (t - retrain.window_seconds).max(t0);
            let mid = from + 0.5 * (t - from);
            let data = dataset::build_window(trace, blocks, from, mid, t, MAX_ROWS, retrain.seed);
            if data.rows.len() < 2 * params.min_data_in_leaf.max(1) {
                return None;
            }
            let rows: Vec<Vec<f64>> = data.rows.iter().map(|r| r.to_vec()).collect();
            Some((
                t,
                Arc::new(boost::train(&rows, &data.labels, &names, &params)),
            ))
        })
        .collect();
    models.into_iter().flatten().collect()
}

/// Give `config` its schedule over `blocks` (the tier's blocks of `trace`) when it retrains
/// online; `false` when it does not.
pub fn attach(
    config: &mut inferencelab_cache::policy::lightgbm::LightGbmConfig,
    trace: &Trace,
    blocks: &BlockedTrace,
) -> bool {
    let Some(retrain) = config.retrain else {
        return false;
    };
    config.schedule = Some(Arc::new(schedule(trace, blocks, &retrain)));
    true
}
