//! From what a user gives (flags, YAML keys) to a [`SimConfig`]: the one place that reads the
//! files a policy names and turns sizes into entries. `simulate`, `batch`, `sweep`, `train`,
//! `serve`, `replay` and the experiment runner all go through it.
//!
//! A policy is parsed once, with no I/O ([`PolicyConfig`]'s `FromStr` and `Deserialize`);
//! [`load_policy`] then reads its files (a `--scorer-config` YAML, a LightGBM model) and
//! [`PointSpec::resolve`] builds the point.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use inferencelab_cache::learned::gbdt::Model;
use inferencelab_cache::learned::order::Ranking;
use inferencelab_cache::policy::conversation_aware::ScorerConfig;
use inferencelab_cache::policy::lightgbm::{LightGbmConfig, ModelFile};
use inferencelab_cache::PolicyConfig;
use serde::Deserialize;

use crate::config::{EngineModel, HitSemantics, Schedule, SimConfig, TierConfig, TimingModel};
use crate::error::SimError;
use crate::plan::Capacity;
use crate::{LmcacheMode, LmcacheRules};
use inferencelab_models::ModelSpec;

/// Where `inferencelab train` writes its model and where `lightgbm` looks when no model is named.
pub const DEFAULT_MODEL_PATH: &str = "outputs/models/lightgbm.txt";

/// Where the bundled model's text is in the repository.
pub const BUNDLED_MODEL_PATH: &str = "configs/lightgbm_default.txt";

fn config_error(msg: impl Into<String>) -> SimError {
    SimError::Config(msg.into())
}

/// The files that configure the predicted-next-use policies, as flags give them
/// (`--scorer-config`, `--lightgbm-model`). A policy written as a YAML map carries its own.
#[derive(Debug, Clone, Default)]
pub struct PolicyFiles {
    pub scorer_config: Option<PathBuf>,
    pub lightgbm_model: Option<PathBuf>,
}

/// Read the files `policy` needs: `conversation_aware` takes `files.scorer_config` when given;
/// `lightgbm` takes `files.lightgbm_model`, else the model its config names, else
/// [`DEFAULT_MODEL_PATH`], else the bundled model. What was chosen, and why, goes to `notes`.
pub fn load_policy(
    policy: PolicyConfig,
    files: &PolicyFiles,
    notes: &mut Vec<String>,
) -> Result<PolicyConfig, SimError> {
    let mut policy = match policy {
        PolicyConfig::ConversationAware(c) => {
            PolicyConfig::ConversationAware(match &files.scorer_config {
                Some(path) => load_scorer(path)?,
                None => c,
            })
        }
        PolicyConfig::Lightgbm(_) if files.lightgbm_model.is_some() => {
            PolicyConfig::Lightgbm(load_lightgbm(files.lightgbm_model.as_deref(), notes)?)
        }
        PolicyConfig::Lightgbm(c) if c.model.is_unset() => {
            let loaded = load_lightgbm(None, notes)?;
            // the YAML's own settings stay; only the model (and its calibration) is the default's
            PolicyConfig::Lightgbm(if c == LightGbmConfig::default() {
                loaded
            } else {
                LightGbmConfig {
                    model: loaded.model,
                    ..c
                }
            })
        }
        other => other,
    };
    policy.load_files().map_err(config_error)?;
    Ok(policy)
}

/// A scorer YAML (unknown keys are errors naming the file).
pub fn load_scorer(path: &Path) -> Result<ScorerConfig, SimError> {
    let text = inferencelab_trace::fsutil::read_input_string(path)
        .map_err(|e| config_error(format!("--scorer-config: reading {}: {e}", path.display())))?;
    let c: ScorerConfig = serde_norway::from_str(&text)
        .map_err(|e| config_error(format!("--scorer-config {}: {e}", path.display())))?;
    c.check()
        .map_err(|e| config_error(format!("--scorer-config {}: {e}", path.display())))?;
    Ok(c)
}

/// The `lightgbm` policy of `--lightgbm-model` (default: what `train` writes, else the bundled
/// model). A text model takes the calibration (`scale`, `overdue_factor`, ...) `train` wrote
/// beside it when that YAML names the same model; a YAML is a whole policy
/// (`{name: lightgbm, model: ..}`).
pub fn load_lightgbm(
    given: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<LightGbmConfig, SimError> {
    let path = given.unwrap_or(Path::new(DEFAULT_MODEL_PATH));
    if given.is_none() && !path.exists() {
        notes.push(format!(
            "lightgbm: no model at {DEFAULT_MODEL_PATH}: the bundled default model \
             ({BUNDLED_MODEL_PATH}, trained on the demo log; docs/policies.md); `inferencelab \
             train` or --lightgbm-model for one of your own"
        ));
        return Ok(bundled_lightgbm());
    }
    if !path.exists() {
        return Err(config_error(format!(
            "--eviction-policy lightgbm needs a trained model and {} does not exist: give one \
             with --lightgbm-model FILE (a LightGBM text model, e.g. from Python lightgbm), or \
             train one with `inferencelab train --input-file TRACE` (writes {DEFAULT_MODEL_PATH})",
            path.display()
        )));
    }
    let is_yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    if is_yaml {
        return load_lightgbm_yaml(path)?.ok_or_else(|| {
            config_error(format!(
                "--lightgbm-model {}: expected a lightgbm policy (name: lightgbm, model: FILE)",
                path.display()
            ))
        });
    }
    inferencelab_trace::fsutil::check_regular(path)
        .map_err(|e| config_error(format!("--lightgbm-model {}: {e}", path.display())))?;
    let mut config = LightGbmConfig::load(path)
        .map_err(|e| config_error(format!("--lightgbm-model {}: {e}", path.display())))?;
    apply_calibration_beside(&mut config, path, notes)?;
    if given.is_none() {
        notes.push(format!(
            "lightgbm: model {DEFAULT_MODEL_PATH} (--lightgbm-model)"
        ));
    }
    Ok(config)
}

/// The calibration `train` wrote beside a text model (`MODEL.yaml`), applied to `config`:
/// `scale`, `overdue_factor`, `ranking`, `adaptive`, `waiting_queue` and `retrain`, when that
/// YAML names this model (a YAML naming another model, or describing another policy, is left
/// alone, with a note for the first). One rule for `simulate --lightgbm-model` and `train --model --as-is`.
/// A YAML beside that does not parse is an error naming it: silently running uncalibrated
/// would change every figure.
pub fn apply_calibration_beside(
    config: &mut LightGbmConfig,
    model: &Path,
    notes: &mut Vec<String>,
) -> Result<(), SimError> {
    let beside = model.with_extension("yaml");
    if beside == model || !beside.exists() {
        return Ok(());
    }
    // only its settings: the model it names is the one already loaded, or it does not apply
    let Some(c) = read_lightgbm_yaml(&beside).map_err(|e| {
        config_error(format!(
            "{e} (the calibration beside {}: fix it or move it away)",
            model.display()
        ))
    })?
    else {
        return Ok(());
    };
    let same = |a: &Path, b: &Path| {
        a.canonicalize()
            .ok()
            .is_some_and(|a| b.canonicalize().ok() == Some(a))
    };
    if !same(&c.model.path, model) {
        notes.push(format!(
            "lightgbm: {} names the model {}, not {}: its calibration is not applied",
            beside.display(),
            c.model.path.display(),
            model.display()
        ));
        return Ok(());
    }
    notes.push(format!(
        "lightgbm: scale {}, overdue_factor {}, ranking {:?}, adaptive {}, waiting_queue {} and \
         retraining {} from {} (calibrated by `train`)",
        c.scale,
        c.overdue_factor,
        c.ranking,
        c.adaptive,
        c.waiting_queue,
        if c.retrain.is_some() { "on" } else { "off" },
        beside.display()
    ));
    config.scale = c.scale;
    config.overdue_factor = c.overdue_factor;
    config.ranking = c.ranking;
    config.adaptive = c.adaptive;
    config.waiting_queue = c.waiting_queue;
    config.retrain = c.retrain;
    Ok(())
}

/// A lightgbm policy YAML, its model loaded; the model path is relative to the working
/// directory or, failing that, to the YAML's folder. `Ok(None)`: a YAML of something else.
pub fn load_lightgbm_yaml(path: &Path) -> Result<Option<LightGbmConfig>, SimError> {
    let Some(mut c) = read_lightgbm_yaml(path)? else {
        return Ok(None);
    };
    c.model
        .ensure_loaded()
        .map_err(|e| config_error(format!("{}: {e}", path.display())))?;
    Ok(Some(c))
}

/// [`load_lightgbm_yaml`] without loading the model: the settings and the model's path.
fn read_lightgbm_yaml(path: &Path) -> Result<Option<LightGbmConfig>, SimError> {
    let text = inferencelab_trace::fsutil::read_input_string(path)
        .map_err(|e| config_error(format!("reading {}: {e}", path.display())))?;
    let mut doc: serde_norway::Value = serde_norway::from_str(&text)
        .map_err(|e| config_error(format!("{}: {e}", path.display())))?;
    if let Some(model) = doc.get_mut("model") {
        if let Some(m) = model.as_str().map(PathBuf::from) {
            if m.is_relative() && !m.exists() {
                if let Some(dir) = path.parent() {
                    let beside = dir.join(m.file_name().unwrap_or_default());
                    *model = serde_norway::Value::String(beside.to_string_lossy().into_owned());
                }
            }
        }
    }
    match serde_norway::from_value::<PolicyConfig>(doc) {
        Ok(PolicyConfig::Lightgbm(c)) => Ok(Some(c)),
        Ok(_) => Ok(None),
        Err(e) => Err(config_error(format!("{}: {e}", path.display()))),
    }
}

/// The default `lightgbm` model shipped in the repository and in the binary: trained by
/// `inferencelab train -i outputs/logs/server_qwen-8b.log --no-retrain --output
/// configs/lightgbm_default.txt` on the train part (first half) of the converted demo log
/// (`convert data/test_data.csv qwen-8b --tokens-per-second 100 --output-dir outputs/logs/`),
/// with the calibration `train` wrote beside it (docs/policies.md). Used when no model is named
/// and [`DEFAULT_MODEL_PATH`] does not exist.
pub fn bundled_lightgbm() -> LightGbmConfig {
    const TEXT: &str = include_str!("../../../configs/lightgbm_default.txt");
    const YAML: &str = include_str!("../../../configs/lightgbm_default.yaml");
    let model = Model::parse(TEXT).expect("the bundled model parses (a test checks it)");
    let mut config = LightGbmConfig {
        model: ModelFile::new(Path::new(BUNDLED_MODEL_PATH), Arc::new(model)),
        ..Default::default()
    };
    Calibration::read(YAML)
        .expect("the bundled calibration parses (a test checks it)")
        .apply(&mut config);
    config
}

/// The calibration fields of a policy YAML `train` wrote (its model is not loaded).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Calibration {
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default = "one")]
    pub overdue_factor: f64,
    #[serde(default)]
    pub ranking: Ranking,
    #[serde(default = "yes")]
    pub adaptive: bool,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

impl Calibration {
    pub fn read(yaml: &str) -> Result<Calibration, String> {
        serde_norway::from_str(yaml).map_err(|e| e.to_string())
    }

    pub fn apply(&self, config: &mut LightGbmConfig) {
        (
            config.scale,
            config.overdue_factor,
            config.ranking,
            config.adaptive,
        ) = (self.scale, self.overdue_factor, self.ranking, self.adaptive);
    }
}

/// An LMCache tier's policy as given: `same` (the GPU tier's, point by point) or a policy.
#[derive(Debug, Clone, PartialEq)]
pub enum TierPolicy {
    Same,
    Policy(PolicyConfig),
}

impl std::str::FromStr for TierPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("same") {
            return Ok(TierPolicy::Same);
        }
        s.parse()
            .map(TierPolicy::Policy)
            .map_err(|e| format!("{e}, or same (the GPU tier's)"))
    }
}

/// A retraining `lightgbm` as the LMCache tier runs it: the static model (the tier sees only the
/// GPU's misses, a different stream from the one the retrained models were fit on).
pub fn static_model(policy: PolicyConfig) -> PolicyConfig {
    match policy {
        PolicyConfig::Lightgbm(c) if c.retrain.is_some() => {
            PolicyConfig::Lightgbm(LightGbmConfig {
                retrain: None,
                schedule: None,
                ..c
            })
        }
        p => p,
    }
}

/// One simulation point as users describe it: sizes in blocks or GiB, policies with their
/// files loaded ([`load_policy`]), the engine's rules.
#[derive(Debug, Clone)]
pub struct PointSpec {
    /// The model (bytes per token, for sizes in GiB); `None`: sizes are in entries.
    pub model: Option<ModelSpec>,
    /// vLLM's block size (tokens).
    pub block_size: u32,
    /// LMCache's chunk size (tokens).
    pub chunk_size: u32,
    pub gpu: Capacity,
    /// LMCache's CPU tier (`None`: off).
    pub cpu: Option<Capacity>,
    /// LMCache's disk tier (`None`: off).
    pub disk: Option<Capacity>,
    /// The GPU tier's policy.
    pub policy: PolicyConfig,
    /// The LMCache tiers' policy; `None`: the GPU tier's.
    pub cpu_policy: Option<PolicyConfig>,
    pub hit_semantics: HitSemantics,
    pub pinning: bool,
    pub timing: TimingModel,
    pub window_seconds: f64,
    pub engine: EngineModel,
}

impl PointSpec {
    /// A point with the defaults of `simulate` (`engine`, timing, pinning) for `policy` at `gpu`.
    pub fn new(
        model: Option<ModelSpec>,
        block_size: u32,
        chunk_size: u32,
        gpu: Capacity,
        policy: PolicyConfig,
    ) -> Self {
        PointSpec {
            model,
            block_size,
            chunk_size,
            gpu,
            cpu: None,
            disk: None,
            policy,
            cpu_policy: None,
            hit_semantics: HitSemantics::Prefix,
            pinning: true,
            timing: TimingModel::default(),
            window_seconds: 0.0,
            engine: EngineModel::default(),
        }
    }

    /// The point's [`SimConfig`]: capacities in entries, the LMCache tiers' policy (a retraining
    /// `lightgbm` keeps its static model there), and the checks that name the fix.
    pub fn resolve(&self) -> Result<SimConfig, SimError> {
        if let PolicyConfig::Lightgbm(c) = &self.policy {
            if c.retrain.is_some() && c.schedule.is_none() {
                return Err(config_error(
                    "lightgbm with `retrain:` (online retraining) needs the trace's models \
                     (`learn::online::attach`): it runs in `simulate` and `train`; elsewhere \
                     give the static model (drop `retrain`)",
                ));
            }
        }
        if self.hit_semantics == HitSemantics::Any && self.cpu.is_some() {
            return Err(config_error(
                "--hit-semantics any models a classic single-tier cache over the block stream; \
                 turn the LMCache tier off (--no-cpu-tier; in a grid cpu_cache_gb: [0])",
            ));
        }
        if self.engine.schedule == Schedule::Vllm && !self.pinning {
            return Err(config_error(
                "--schedule vllm replays vLLM's scheduler, where running requests hold their \
                 blocks; drop --no-pinning or use --schedule trace",
            ));
        }
        if self.engine.lmcache_mode == LmcacheMode::Mp {
            if self.disk.is_some() {
                return Err(config_error(
                    "--lmcache-mode mp models the multi-process server's L1 only (its L2 \
                     adapters are not modelled); drop --disk-cache-gb/--disk-chunks or use \
                     --lmcache-mode inprocess",
                ));
            }
            if self.engine.lmcache_rules == LmcacheRules::Simulator {
                return Err(config_error(
                    "--lmcache-rules simulator has no multi-process mode; drop --lmcache-mode mp",
                ));
            }
        }
        let lm_policy = static_model(
            self.cpu_policy
                .clone()
                .unwrap_or_else(|| self.policy.clone()),
        );
        let model = |c: Capacity| match (&self.model, c) {
            (_, Capacity::Entries(_)) | (Some(_), _) => Ok(self.model.as_ref()),
            (None, Capacity::Gib(_)) => Err(config_error(
                "a cache size in GiB needs the model's bytes per token: give --model",
            )),
        };
        let entries = |c: Capacity, unit: u32, lmcache: bool| -> Result<u64, SimError> {
            Ok(match (c, model(c)?) {
                (Capacity::Entries(n), _) => n,
                (c, Some(m)) if lmcache => c.chunks(m, unit),
                (c, Some(m)) => c.entries(m, unit),
                (_, None) => unreachable!("checked by `model`"),
            })
        };
        let tier = |c: Capacity| -> Result<TierConfig, SimError> {
            Ok(TierConfig {
                capacity: entries(c, self.chunk_size, true)?,
                policy: lm_policy.clone(),
            })
        };
        let mut engine = self.engine;
        // the multi-process L1's usage ratio is bytes over bytes: the unrounded chunk count
        engine.mp_l1_size_chunks = match (self.cpu, &self.model) {
            (Some(Capacity::Gib(gb)), Some(m)) => {
                m.lmcache_chunks_in_gib_unrounded(gb, self.chunk_size)
            }
            _ => 0.0,
        };
        Ok(SimConfig {
            gpu: TierConfig {
                capacity: entries(self.gpu, self.block_size, false)?,
                policy: self.policy.clone(),
            },
            cpu: self.cpu.map(tier).transpose()?,
            disk: self.disk.map(tier).transpose()?,
            hit_semantics: self.hit_semantics,
            pinning: self.pinning,
            timing: self.timing,
            window_seconds: self.window_seconds,
            model: self.model.clone(),
            engine,
        })
    }

    /// Every policy at every GPU and LMCache size, the rest as `self`, resolved: the grid of
    /// `simulate` (policies outermost, then GPU sizes, then LMCache sizes).
    pub fn grid(
        &self,
        policies: &[PolicyConfig],
        gpus: &[Capacity],
        cpus: &[Option<Capacity>],
    ) -> Result<Vec<SimConfig>, SimError> {
        let mut configs = Vec::with_capacity(policies.len() * gpus.len() * cpus.len());
        for policy in policies {
            for &gpu in gpus {
                for &cpu in cpus {
                    let point = PointSpec {
                        gpu,
                        cpu,
                        policy: policy.clone(),
                        ..self.clone()
                    };
                    configs.push(point.resolve()?);
                }
            }
        }
        Ok(configs)
    }

    /// The chunk size the driver prepares chunk keys for (`None`: no LMCache tier).
    pub fn prepared_chunk_size(&self) -> Option<u32> {
        self.cpu.map(|_| self.chunk_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(policy: &str) -> PointSpec {
        let model = Some(inferencelab_models::resolve("qwen-8b").unwrap());
        PointSpec::new(
            model,
            16,
            256,
            Capacity::Entries(100),
            policy.parse().unwrap(),
        )
    }

    #[test]
    fn sizes_become_entries_and_the_lmcache_tiers_take_the_gpu_policy() {
        let mut s = spec("arc");
        s.cpu = Some(Capacity::Entries(7));
        s.disk = Some(Capacity::Gib(1.0));
        let c = s.resolve().unwrap();
        assert_eq!(c.gpu.capacity, 100);
        assert_eq!(c.cpu.as_ref().unwrap().capacity, 7);
        assert_eq!(c.cpu.as_ref().unwrap().policy.name(), "arc");
        assert_eq!(
            c.disk.as_ref().unwrap().capacity,
            s.model.as_ref().unwrap().lmcache_chunks_in_gib(1.0, 256)
        );
        s.cpu_policy = Some("lfu".parse().unwrap());
        assert_eq!(s.resolve().unwrap().cpu.unwrap().policy.name(), "lfu");
    }

    #[test]
    fn the_grid_is_policies_then_gpu_sizes_then_lmcache_sizes() {
        let base = spec("lru");
        let policies: Vec<PolicyConfig> = vec!["lru".parse().unwrap(), "fifo".parse().unwrap()];
        let gpus = [Capacity::Entries(10), Capacity::Entries(20)];
        let cpus = [Some(Capacity::Entries(3)), None];
        let grid = base.grid(&policies, &gpus, &cpus).unwrap();
        let got: Vec<(&str, u64, Option<u64>)> = grid
            .iter()
            .map(|c| {
                (
                    c.gpu.policy.name(),
                    c.gpu.capacity,
                    c.cpu.as_ref().map(|t| t.capacity),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("lru", 10, Some(3)),
                ("lru", 10, None),
                ("lru", 20, Some(3)),
                ("lru", 20, None),
                ("fifo", 10, Some(3)),
                ("fifo", 10, None),
                ("fifo", 20, Some(3)),
                ("fifo", 20, None),
            ]
        );
        // a point's contradiction fails the whole grid, naming the fix
        let mut any = spec("lru");
        any.hit_semantics = HitSemantics::Any;
        assert!(any.grid(&policies, &gpus, &cpus).is_err());
        assert_eq!(any.grid(&policies, &gpus, &[None]).unwrap().len(), 4);
    }

    #[test]
    fn contradictions_name_the_fix() {
        let mut s = spec("lru");
        s.cpu = Some(Capacity::Entries(7));
        s.hit_semantics = HitSemantics::Any;
        assert!(s
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--no-cpu-tier"));
        let mut s = spec("lru");
        s.pinning = false;
        s.engine.schedule = Schedule::Vllm;
        assert!(s
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("drop --no-pinning"));
    }

    #[test]
    fn lightgbm_without_a_model_file_is_the_bundled_model_and_a_named_missing_file_fails() {
        let dir = std::env::temp_dir().join(format!("il-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cwd_default = Path::new(DEFAULT_MODEL_PATH);
        let mut notes = Vec::new();
        let p = load_policy(
            "lightgbm".parse().unwrap(),
            &PolicyFiles::default(),
            &mut notes,
        );
        if !cwd_default.exists() {
            let PolicyConfig::Lightgbm(c) = p.unwrap() else {
                panic!("not lightgbm")
            };
            assert_eq!(c.model.path, Path::new(BUNDLED_MODEL_PATH));
            assert!(c.model.is_loaded());
            assert!(notes[0].contains("bundled"), "{notes:?}");
        }
        let files = PolicyFiles {
            lightgbm_model: Some(dir.join("missing.txt")),
            ..Default::default()
        };
        let e = load_policy("lightgbm".parse().unwrap(), &files, &mut notes).unwrap_err();
        assert!(
            e.to_string().contains("missing.txt") && e.to_string().contains("train"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_calibration_beside_a_model_applies_only_when_it_names_that_model() {
        let dir = std::env::temp_dir().join(format!("il-beside-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("m.txt");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/lightgbm_default.txt"),
            &model,
        )
        .unwrap();
        let yaml = dir.join("m.yaml");
        let fresh = || LightGbmConfig::load(&model).unwrap();
        let mut notes = Vec::new();

        // none beside: nothing changes
        let mut c = fresh();
        apply_calibration_beside(&mut c, &model, &mut notes).unwrap();
        assert_eq!((c.scale, c.adaptive), (fresh().scale, fresh().adaptive));

        // the same model: every calibrated field, as train wrote them
        std::fs::write(
            &yaml,
            format!(
                "name: lightgbm\nmodel: {}\nscale: 0.25\noverdue_factor: 3.0\nranking: \
                 expected_wait\nadaptive: false\nretrain:\n  every_seconds: 60\n  \
                 window_seconds: 600\n",
                model.display()
            ),
        )
        .unwrap();
        let mut c = fresh();
        apply_calibration_beside(&mut c, &model, &mut notes).unwrap();
        assert_eq!((c.scale, c.overdue_factor, c.adaptive), (0.25, 3.0, false));
        assert_eq!(c.ranking, Ranking::ExpectedWait);
        assert!(c.retrain.is_some());
        assert!(notes.last().unwrap().contains("calibrated by `train`"));

        // another model: not applied, and said
        std::fs::write(
            &yaml,
            "name: lightgbm\nmodel: /elsewhere/x.txt\nscale: 0.25\n",
        )
        .unwrap();
        let mut c = fresh();
        apply_calibration_beside(&mut c, &model, &mut notes).unwrap();
        assert_eq!(c.scale, fresh().scale);
        assert!(notes.last().unwrap().contains("not applied"), "{notes:?}");

        // a broken one: an error naming it
        std::fs::write(&yaml, "name: lightgbm\nscale: [\n").unwrap();
        let e = apply_calibration_beside(&mut fresh(), &model, &mut notes).unwrap_err();
        assert!(e.to_string().contains("m.yaml"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_yaml_lightgbm_keeps_its_settings_and_takes_the_default_model() {
        let p: PolicyConfig =
            serde_json::from_str(r#"{"name": "lightgbm", "scale": 0.5}"#).unwrap();
        let mut notes = Vec::new();
        if Path::new(DEFAULT_MODEL_PATH).exists() {
            return; // a trained model in the working directory would be taken instead
        }
        let PolicyConfig::Lightgbm(c) =
            load_policy(p, &PolicyFiles::default(), &mut notes).unwrap()
        else {
            panic!("not lightgbm")
        };
        assert_eq!(c.scale, 0.5);
        assert!(c.model.is_loaded());
    }
}
