//! `inferencelab train`'s two steps after the split: fit a model on the rows before a time
//! ([`fit`]), and calibrate the `lightgbm` policy on the validation part ([`calibrate`]): online
//! retraining or not, the ranking, `scale` and `overdue_factor`, chosen by out-of-sample token
//! hit ratio summed over the capacities (docs/policies.md).

use std::path::Path;
use std::sync::Arc;

use inferencelab_cache::learned::features::FEATURE_NAMES;
use inferencelab_cache::learned::gbdt::Model;
use inferencelab_cache::learned::order::Ranking;
use inferencelab_cache::policy::lightgbm::{LightGbmConfig, ModelFile, Retrain, Schedule};
use inferencelab_trace::Trace;
use rayon::prelude::*;

use crate::boost::{self, BoostParams};
use crate::dataset::{self, Dataset};
use crate::eval::{Candidate, Split};
use crate::online;
use crate::sweep::choice_ratio;

/// A model fitted on the requests before a time, and how well it fits its own rows.
pub struct Fit {
    pub model: Model,
    pub rows: usize,
    /// Mean squared error on the training rows.
    pub mse: f64,
    /// The labels' variance (the MSE of predicting their mean).
    pub label_variance: f64,
}

/// Fit a model on the rows of `split`'s GPU blocks referenced before `until` (at most
/// `max_rows`, sampled with `seed`).
pub fn fit(
    trace: &Trace,
    split: &Split<'_>,
    until: f64,
    params: &BoostParams,
    max_rows: usize,
    seed: u64,
) -> Fit {
    fit_rows(
        &dataset::build(trace, &split.prepared.gpu, until, max_rows, seed),
        params,
    )
}

/// Fit a model on `data`'s rows.
pub fn fit_rows(data: &Dataset, params: &BoostParams) -> Fit {
    let rows: Vec<Vec<f64>> = data.rows.iter().map(|r| r.to_vec()).collect();
    let names: Vec<String> = FEATURE_NAMES.iter().map(|s| s.to_string()).collect();
    let model = boost::train(&rows, &data.labels, &names, params);
    let n = rows.len().max(1) as f64;
    let mse = rows
        .par_iter()
        .zip(&data.labels)
        .map(|(r, y)| (model.predict(r) - y).powi(2))
        .sum::<f64>()
        / n;
    let m = data.labels.iter().sum::<f64>() / data.labels.len().max(1) as f64;
    let label_variance =
        data.labels.iter().map(|y| (y - m).powi(2)).sum::<f64>() / data.labels.len().max(1) as f64;
    Fit {
        model,
        rows: rows.len(),
        mse,
        label_variance,
    }
}

/// What the calibration may try.
pub struct CalibrateOptions<'a> {
    /// The model was trained here (not given): a twin trained before the validation part
    /// stands in for it there, so it is judged out of sample.
    pub trained_here: bool,
    /// Also try online retraining (LRB's sliding window).
    pub retrain: bool,
    /// Boosting parameters of the twin and of every retrained model.
    pub params: &'a BoostParams,
    pub max_rows: usize,
    pub seed: u64,
    /// Where the model lives (the twin and the untrained stand-in carry this path).
    pub model_path: &'a Path,
}

/// What [`calibrate`] chose.
pub struct Calibrated {
    /// Choices were made on the whole train part (no validation part).
    pub on_whole_train_part: bool,
    /// The static model would have been scored in sample, so only online variants competed.
    pub in_sample_static: bool,
}

/// Calibrate `config` on `split`'s validation part at `capacities`; `progress` is called once
/// per evaluated point. Sets `scale`, `overdue_factor`, `ranking`, `retrain` and `schedule`.
pub fn calibrate(
    trace: &Trace,
    split: &Split<'_>,
    capacities: &[u64],
    config: &mut LightGbmConfig,
    opts: &CalibrateOptions<'_>,
    progress: &(dyn Fn() + Sync),
) -> Calibrated {
    // the static model the calibration judges must not have seen the validation part: its
    // labels look ahead to the end of the train part, so a twin trained on the requests before
    // the validation part stands in for it there (a model given with --model is used as is)
    let choice_model = (opts.trained_here && split.validation_from > split.t0).then(|| {
        let twin = fit(
            trace,
            split,
            split.validation_from,
            opts.params,
            opts.max_rows,
            opts.seed,
        );
        ModelFile::new(opts.model_path, Arc::new(twin.model))
    });
    // online retraining variants (LRB's sliding window): windows of the whole train part's
    // length, a half and a quarter of it, a new model every twentieth of it
    let span = split.split - split.t0;
    let variants: Vec<Option<Retrain>> = if !opts.retrain {
        vec![None]
    } else {
        std::iter::once(None)
            .chain([1.0, 0.5, 0.25].map(|w| {
                Some(Retrain {
                    num_iterations: opts.params.num_iterations,
                    num_leaves: opts.params.num_leaves,
                    learning_rate: opts.params.learning_rate,
                    min_data_in_leaf: opts.params.min_data_in_leaf,
                    seed: opts.seed,
                    ..Retrain::new(span / 20.0, w * span)
                })
            }))
            .collect()
    };
    let schedules: Vec<Option<Arc<Schedule>>> = variants
        .iter()
        .map(|v| v.map(|r| Arc::new(online::schedule(trace, &split.prepared.gpu, &r))))
        .collect();
    // Choices compare out-of-sample scores only. Online models never see what they are scored
    // on; the static model is scored out of sample on the validation part (its twin above).
    // When choices fall back to the whole train part, the static model would be scored on
    // the requests its own labels come from, which flatters it: then only the online variants
    // compete (unless --no-retrain), and before their first retrained model they run with no
    // model at all (a tree-less model predicts a gap of 0: LRU, as LRB does before it has
    // trained), not with the in-sample static model.
    let in_sample_static = opts.trained_here && choice_model.is_none() && variants.len() > 1;
    let untrained = ModelFile::new(
        opts.model_path,
        Arc::new(Model {
            trees: Vec::new(),
            ..(**config.model.model()).clone()
        }),
    );
    // retraining, ranking, scale, overdue
    let grid: Vec<(usize, f64, f64, Ranking)> = (0..variants.len())
        .flat_map(|v| {
            [Ranking::NextUse, Ranking::ExpectedWait]
                .into_iter()
                .flat_map(move |r| {
                    [1.0, 0.3, 0.1, 0.03]
                        .into_iter()
                        .flat_map(move |s| [0.1, 0.3, 1.0, 3.0].map(|o| (v, s, o, r)))
                })
        })
        .collect();
    let scores: Vec<f64> = grid
        .par_iter()
        .map(|&(v, scale, overdue_factor, ranking)| {
            let c = LightGbmConfig {
                scale,
                overdue_factor,
                ranking,
                adaptive: config.adaptive,
                waiting_queue: config.waiting_queue,
                retrain: variants[v],
                schedule: schedules[v].clone(),
                model: match (&choice_model, variants[v]) {
                    (_, Some(_)) if in_sample_static => untrained.clone(),
                    (Some(twin), _) => twin.clone(),
                    (None, _) => config.model.clone(),
                },
            };
            capacities
                .iter()
                .map(|&cap| {
                    let r =
                        choice_ratio(&split.run(&Candidate::LightGbm(c.clone()), cap, split.split));
                    progress();
                    r
                })
                .sum::<f64>()
        })
        .collect();
    let best = (0..grid.len())
        .filter(|&i| !(in_sample_static && variants[grid[i].0].is_none()))
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
        .unwrap_or(0);
    let (v, scale, overdue_factor, ranking) = grid[best];
    (config.scale, config.overdue_factor, config.ranking) = (scale, overdue_factor, ranking);
    config.retrain = variants[v];
    config.schedule = schedules[v].clone();
    Calibrated {
        on_whole_train_part: split.validation_from <= split.t0,
        in_sample_static,
    }
}

/// Points [`calibrate`] evaluates: its grid size times the capacities.
pub fn points(retrain: bool, capacities: usize) -> usize {
    (if retrain { 4 } else { 1 }) * 2 * 4 * 4 * capacities
}
