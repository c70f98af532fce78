//! `lightgbm`: Belady's rule with a learned oracle, after LRB (Song et al., "Learning Relaxed
//! Belady for Content Distribution Network Caching", NSDI'20).
//!
//! When a block is touched, a gradient-boosted tree model (LightGBM's text format, trained by
//! `inferencelab train` or by Python `lightgbm` on `train --export-features`) predicts
//! `ln(1 + seconds until its next use)` from the features of `learned::features` (LRB's gaps and
//! decayed counters plus depth, sharing and conversation state); the block predicted farthest
//! in the future is evicted, overdue blocks decay as in `conversation_aware`
//! (`learned::order`).
//!
//! Deviations from LRB: one prediction per touch instead of scoring 64 random candidates per
//! eviction (O(log n) per reference, and the features at a touch are exactly the training
//! rows), and a regression on log time-to-next-use instead of LRB's "beyond the Belady
//! boundary" classification (no boundary to tune per cache size: one model serves every
//! capacity). Reasons in `docs/policies.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::learned::features::{Tracker, NUM_FEATURES};
use crate::learned::gbdt::{FlatModel, Model};
use crate::learned::order::{NextUseOrder, Ranking};
use crate::policy::api::{Access, EntryId};

/// A model file and, once loaded, its parsed trees. Parsing a config only names the file (no
/// I/O in `Deserialize`); [`ModelFile::ensure_loaded`] reads it, before the policy is built
/// (`PolicyConfig::load_files`). Serialized as its path. The default names no file: the
/// application picks its default model (`sim::resolve`).
#[derive(Debug, Clone, Default)]
pub struct ModelFile {
    pub path: PathBuf,
    model: Option<Arc<Model>>,
}

impl ModelFile {
    /// Read and check the model at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let mut m = ModelFile::unloaded(path);
        m.ensure_loaded()?;
        Ok(m)
    }

    /// The file at `path`, not read yet.
    pub fn unloaded(path: &Path) -> Self {
        ModelFile {
            path: path.to_path_buf(),
            model: None,
        }
    }

    /// A model already in memory (`path` says where it came from or will be written).
    pub fn new(path: &Path, model: Arc<Model>) -> Self {
        ModelFile {
            path: path.to_path_buf(),
            model: Some(model),
        }
    }

    /// True when no file is named (the application's default model applies).
    pub fn is_unset(&self) -> bool {
        self.model.is_none() && self.path.as_os_str().is_empty()
    }

    pub fn is_loaded(&self) -> bool {
        self.model.is_some()
    }

    /// Read the file unless it is loaded already.
    pub fn ensure_loaded(&mut self) -> Result<(), String> {
        if self.model.is_some() {
            return Ok(());
        }
        if self.path.as_os_str().is_empty() {
            return Err("lightgbm: no model file named (give `model: FILE`)".into());
        }
        let path = &self.path;
        let model = Model::load(path).map_err(|e| match e {
            crate::learned::gbdt::ModelError::Io { .. } => format!(
                "{e}: no LightGBM model there; train one with `inferencelab train --input-file \
                 TRACE --output {}` (or Python lightgbm on `train --export-features`)",
                path.display()
            ),
            other => other.to_string(),
        })?;
        if model.num_features() > NUM_FEATURES {
            return Err(format!(
                "{}: the model uses {} features; the policy computes {NUM_FEATURES} (see \
                 `inferencelab train --export-features`)",
                path.display(),
                model.num_features()
            ));
        }
        self.model = Some(Arc::new(model));
        Ok(())
    }

    /// The loaded trees.
    ///
    /// # Panics
    /// When the file was not loaded: `PolicyConfig::load_files` runs before any policy is
    /// built (`sim::resolve`), so this is a bug in the caller.
    pub fn model(&self) -> &Arc<Model> {
        self.model.as_ref().unwrap_or_else(|| {
            panic!(
                "lightgbm model {} used before it was loaded (PolicyConfig::load_files)",
                self.path.display()
            )
        })
    }

    /// Replace the trees (the path stays).
    pub fn set_model(&mut self, model: Arc<Model>) {
        self.model = Some(model);
    }
}

impl PartialEq for ModelFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
            && match (&self.model, &other.model) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                (None, None) => true,
                _ => false,
            }
    }
}

impl Serialize for ModelFile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // lossy: a non-UTF-8 path must not fail (or panic, inside `json!`) a result file
        self.path.to_string_lossy().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ModelFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ModelFile::unloaded(&PathBuf::deserialize(d)?))
    }
}

fn default_overdue() -> f64 {
    1.0
}

fn default_adaptive() -> bool {
    true
}

fn default_waiting_queue() -> bool {
    true
}

fn default_scale() -> f64 {
    1.0
}

/// Online retraining, as LRB does: every `every_seconds` of trace time a new model is trained
/// on the references of the past `window_seconds` (rows from its first half, labels looking at
/// the rest), so the policy follows a drifting workload. Models depend only on the reference
/// stream (not on the cache), so the schedule is computed once per trace
/// (`inferencelab_learn::online`) and handed to the policy in [`LightGbmConfig::schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retrain {
    pub every_seconds: f64,
    pub window_seconds: f64,
    /// The boosting parameters of every retrained model (`inferencelab train`'s flags).
    #[serde(default = "default_trees")]
    pub num_iterations: usize,
    #[serde(default = "default_leaves")]
    pub num_leaves: usize,
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    #[serde(default = "default_min_data")]
    pub min_data_in_leaf: usize,
    /// Seed of the row samples.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

/// `inferencelab train`'s defaults (`inferencelab_learn::boost::BoostParams`).
fn default_trees() -> usize {
    40
}
fn default_leaves() -> usize {
    16
}
fn default_learning_rate() -> f64 {
    0.15
}
fn default_min_data() -> usize {
    50
}
fn default_seed() -> u64 {
    1
}

impl Retrain {
    /// Every `every_seconds` on the past `window_seconds`, with `train`'s default trees.
    pub fn new(every_seconds: f64, window_seconds: f64) -> Self {
        Retrain {
            every_seconds,
            window_seconds,
            num_iterations: default_trees(),
            num_leaves: default_leaves(),
            learning_rate: default_learning_rate(),
            min_data_in_leaf: default_min_data(),
            seed: default_seed(),
        }
    }
}

/// Models by trace time: `(from, model)`, ascending; each was trained on references before
/// its `from` only.
pub type Schedule = Vec<(f64, Arc<Model>)>;

/// `{name: lightgbm, model: PATH, scale: 1.0, overdue_factor: 1.0}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightGbmConfig {
    /// The model file (default: none named; the application's default model applies).
    #[serde(default)]
    pub model: ModelFile,
    /// Multiplies the predicted gap. Below 1 the prediction only reorders what LRU would do
    /// (overdue entries are LRU-ordered), which is more robust when the workload drifts away
    /// from the training part; `train` picks it on the training part.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// As in `conversation_aware`: effective next use of an overdue block = now + factor * idle.
    #[serde(default = "default_overdue")]
    pub overdue_factor: f64,
    /// As in `conversation_aware`: `next_use` or `expected_wait` (`learned::order`).
    #[serde(default)]
    pub ranking: Ranking,
    /// As in `conversation_aware`: LRU as a second expert (`learned::order`); false = the
    /// model alone.
    #[serde(default = "default_adaptive")]
    pub adaptive: bool,
    /// As in `conversation_aware`: keep the blocks waiting requests want until last.
    #[serde(default = "default_waiting_queue")]
    pub waiting_queue: bool,
    /// Retrain online (the model file serves until the first retrained model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrain: Option<Retrain>,
    /// The retrained models for the trace being run (computed by the caller from `retrain`).
    #[serde(skip)]
    pub schedule: Option<Arc<Schedule>>,
}

impl Default for LightGbmConfig {
    /// No model named, default settings.
    fn default() -> Self {
        LightGbmConfig {
            model: ModelFile::default(),
            scale: default_scale(),
            overdue_factor: default_overdue(),
            ranking: Ranking::NextUse,
            adaptive: default_adaptive(),
            waiting_queue: default_waiting_queue(),
            retrain: None,
            schedule: None,
        }
    }
}

impl LightGbmConfig {
    /// The model at `path` with default settings.
    pub fn load(path: &Path) -> Result<Self, String> {
        Ok(LightGbmConfig {
            model: ModelFile::load(path)?,
            ..Default::default()
        })
    }
}

#[derive(Debug, Clone)]
pub struct LightGbm {
    /// the model in use, flattened for prediction (the same numbers)
    model: FlatModel,
    schedule: Option<Arc<Schedule>>,
    /// index of the next model of `schedule`
    next_model: usize,
    scale: f64,
    stats: Tracker,
    order: NextUseOrder,
    memo: Memo,
    waiting_queue: bool,
}

/// The latest predicted gap of a block's first use without a conversation, by depth: its
/// features are then the same at the same depth (one use, no gaps, counters at 1, no
/// conversation), so is the prediction. Each slot keeps the feature vector (bits) it was
/// computed for and serves only that one: the same model on the same bits, the same number.
/// Emptied when the model changes.
#[derive(Debug, Clone, Default)]
struct Memo {
    slots: Vec<Option<([u64; NUM_FEATURES], f64)>>,
}

impl Memo {
    /// Depths remembered.
    const DEPTHS: usize = 4096;
}

impl LightGbm {
    pub fn new(config: &LightGbmConfig) -> Self {
        LightGbm {
            model: FlatModel::new(config.model.model().clone()),
            schedule: config.schedule.clone(),
            next_model: 0,
            scale: config.scale,
            stats: Tracker::default(),
            order: NextUseOrder::with_ranking(config.overdue_factor, config.ranking)
                .adaptive(config.adaptive),
            memo: Memo::default(),
            waiting_queue: config.waiting_queue,
        }
    }

    /// The predicted next use (trace seconds) of a tracked entry.
    pub fn predicted_next_use(&self, e: EntryId) -> f64 {
        self.order.next_use(e)
    }

    #[inline]
    fn touch(&mut self, e: EntryId, a: &Access) {
        if let Some(sched) = &self.schedule {
            while let Some((from, m)) = sched.get(self.next_model) {
                if a.timestamp < *from {
                    break;
                }
                self.model = FlatModel::new(m.clone());
                self.memo = Memo::default();
                self.next_model += 1;
            }
        }
        let s = self.stats.observe(a);
        let x = s.features();
        let predict = |model: &FlatModel| {
            let log_gap = model.predict(&x);
            if log_gap.is_nan() {
                f64::INFINITY
            } else {
                self.scale * log_gap.max(0.0).exp_m1()
            }
        };
        let d = a.depth as usize;
        let gap = if s.uses == 1 && s.conv_requests == 0 && d < Memo::DEPTHS {
            let bits = x.map(f64::to_bits);
            if self.memo.slots.len() <= d {
                self.memo.slots.resize(d + 1, None);
            }
            match self.memo.slots[d] {
                Some((b, gap)) if b == bits => gap,
                _ => {
                    let gap = predict(&self.model);
                    self.memo.slots[d] = Some((bits, gap));
                    gap
                }
            }
        } else {
            predict(&self.model)
        };
        self.order.touch(e, a.timestamp + gap, a.timestamp, a.depth);
    }
}

impl LightGbm {
    /// The model's prediction is made at the touch and never revised.
    #[inline]
    fn revised_next_use(&mut self, _e: EntryId) -> Option<f64> {
        None
    }

    /// Answer lengths are not features of the bundled model: nothing to learn.
    #[inline]
    fn finished(&mut self, _request: u32, _output_tokens: u32) {}
}

crate::learned::predicted_next_use_policy!(LightGbm);

impl super::Registered for LightGbm {
    type Config = LightGbmConfig;
    fn build(config: &Self::Config, _capacity: u64) -> Self {
        LightGbm::new(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::api::EvictionPolicy;

    /// Remembered predictions (first uses by depth) and flattened trees give the model's own
    /// predictions, reference by reference.
    #[test]
    fn predictions_are_the_model_s() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/lightgbm/model_regression.txt");
        let config = LightGbmConfig::load(&path).unwrap();
        let model = config.model.model().clone();
        let mut policy = LightGbm::new(&config);
        let mut tracker = Tracker::default();
        let mut seen = std::collections::HashSet::new();
        // requests of 1-6 blocks at depths 0.., new blocks and old ones, with and without
        // conversations
        let mut obj = 0u32;
        for r in 0..400u32 {
            for d in 0..(r % 6 + 1) {
                let o = if (r + d) % 3 == 0 {
                    d + (r % 5) * 7
                } else {
                    1000 + obj
                };
                obj += 1;
                let a = Access {
                    timestamp: r as f64 * 1.5,
                    request: r,
                    conversation: if r % 4 == 0 { (r % 3) as u64 } else { u64::MAX },
                    depth: d,
                    ..Access::at(o, r as u64)
                };
                if seen.insert(o) {
                    policy.on_insert(o, &a);
                } else {
                    policy.on_hit(o, &a);
                }
                let log_gap = model.predict(&tracker.observe(&a).features());
                let want = a.timestamp + log_gap.max(0.0).exp_m1();
                assert_eq!(policy.predicted_next_use(o).to_bits(), want.to_bits());
            }
        }
        assert!(policy.memo.slots.iter().any(|s| s.is_some()));
    }
}
