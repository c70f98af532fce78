//! CLI tests of `inferencelab train`: features exported, a LightGBM text model written, and the
//! policy loading it in `simulate`.

mod common;
use common::repo;

#[test]
fn train_exports_features_writes_a_model_and_simulate_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("features.csv");
    let out = common::bin()
        .current_dir(dir.path())
        .args(["train", "--input-file"])
        .arg(repo("data/traces/weka-agentic"))
        .args([
            "--capacities",
            "1000",
            "--no-pinning",
            "-q",
            "--num-iterations",
            "5",
        ])
        .arg("--export-features")
        .arg(&csv)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("lightgbm") && table.contains("gap_closed"),
        "{table}"
    );
    let header = std::fs::read_to_string(&csv).unwrap();
    assert!(
        header.starts_with("label,depth,uses,gap1"),
        "{}",
        &header[..80]
    );
    // the default model path is where `--eviction-policy lightgbm` looks
    let model = dir.path().join("outputs/models/lightgbm.txt");
    let text = std::fs::read_to_string(&model).unwrap();
    assert!(text.starts_with("tree\n") && text.contains("Tree=4"));
    let sim = common::bin()
        .current_dir(dir.path())
        .args(["simulate", "--input-file"])
        .arg(repo("data/traces/weka-agentic"))
        .args([
            "-p",
            "lightgbm,conversation_aware",
            "--gpu-blocks",
            "1000",
            "--no-cpu-tier",
            "-q",
        ])
        .output()
        .unwrap();
    common::assert_ok(&sim);
    // the calibration `train` wrote beside the model (ranking included) is what simulate runs
    let yaml = std::fs::read_to_string(model.with_extension("yaml")).unwrap();
    let ranking = yaml
        .lines()
        .find_map(|l| l.strip_prefix("ranking: "))
        .unwrap_or_else(|| panic!("no ranking in {yaml}"));
    let want = match ranking {
        "next_use" => "ranking NextUse",
        "expected_wait" => "ranking ExpectedWait",
        other => panic!("ranking {other}"),
    };
    let err = String::from_utf8_lossy(&sim.stderr);
    assert!(err.contains(want), "{want} not in:\n{err}");
    // WEKA's validation part cannot separate policies, so only online retraining competes
    // (the static model would be scored in sample): simulate rebuilds the models
    assert!(yaml.contains("retrain:"), "{yaml}");
    assert!(
        err.contains("retraining on") && err.contains("lightgbm retrains online"),
        "{err}"
    );
}

#[test]
fn simulate_without_a_model_uses_the_bundled_one_and_a_missing_file_is_an_error() {
    // a fresh clone: no outputs/models/lightgbm.txt, any working directory
    let dir = tempfile::tempdir().unwrap();
    let out = common::bin()
        .current_dir(dir.path())
        .args(["simulate", "--input-file"])
        .arg(repo("data/traces/weka-agentic"))
        .args([
            "-p",
            "lightgbm",
            "--gpu-blocks",
            "1000",
            "--no-cpu-tier",
            "-q",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("bundled default model"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("lightgbm"));
    // a model named but absent is still an error naming `train`
    let out = common::bin()
        .current_dir(dir.path())
        .args(["simulate", "--input-file"])
        .arg(repo("data/traces/weka-agentic"))
        .args(["-p", "lightgbm", "--gpu-blocks", "1000"])
        .args(["--lightgbm-model", "nowhere.txt"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inferencelab train"), "{err}");
}

#[test]
fn the_bundled_model_and_calibration_parse() {
    let text = std::fs::read_to_string(repo("configs/lightgbm_default.txt")).unwrap();
    inferencelab_cache::learned::gbdt::Model::parse(&text).unwrap();
    let yaml = std::fs::read_to_string(repo("configs/lightgbm_default.yaml")).unwrap();
    assert!(
        yaml.contains("model: configs/lightgbm_default.txt"),
        "{yaml}"
    );
}

/// `train --model bundled --as-is` evaluates the shipped model and writes its summary under
/// `outputs/models/`, not into the working directory (the bundled model has no file to sit by).
#[test]
fn the_bundled_models_summary_goes_to_outputs_models() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::bin()
        .current_dir(dir.path())
        .args(["train", "--input-file"])
        .arg(repo("data/traces/weka-agentic"))
        .args(["--model", "bundled", "--as-is", "--capacities", "1000"])
        .args(["--no-pinning", "-q"])
        .output()
        .unwrap();
    common::assert_ok(&out);
    assert!(dir
        .path()
        .join("outputs/models/train_weka-agentic.json")
        .is_file());
    let stray: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("train_"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}
