//! `conversation_aware` in a real LMCache (`python/lmcache_policy/inferencelab_cache_policy.py`)
//! reads the same scorer YAML as the simulator and refuses keys it does not know, as the Rust
//! `ScorerConfig` does. So every key of `ScorerConfig` must be one of the Python policy's
//! `DEFAULTS`, and no other: when a key was added here and not there, the shipped
//! `configs/scorer_default.yaml` made the policy raise in LMCache at start-up.

use std::collections::BTreeSet;

use inferencelab_cache::policy::conversation_aware::ScorerConfig;

/// The keys of the Python `DEFAULTS = {...}` literal, one `"key": value,` per line.
fn python_defaults(source: &str) -> BTreeSet<String> {
    let start = source
        .find("\nDEFAULTS = {\n")
        .expect("the Python policy has a DEFAULTS literal");
    let body = &source[start + "\nDEFAULTS = {\n".len()..];
    let end = body
        .find("\n}")
        .expect("DEFAULTS ends with a closing brace");
    body[..end]
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let key = l.strip_prefix('"')?.split('"').next()?;
            Some(key.to_string())
        })
        .collect()
}

#[test]
fn the_python_policy_knows_every_scorer_key() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../python/lmcache_policy/inferencelab_cache_policy.py"
    );
    let source = std::fs::read_to_string(path).expect("the Python policy is in the repo");
    let python = python_defaults(&source);
    let rust: BTreeSet<String> = match serde_json::to_value(ScorerConfig::default()).unwrap() {
        serde_json::Value::Object(m) => m.keys().cloned().collect(),
        v => panic!("ScorerConfig serializes to a map, not {v}"),
    };
    let missing: Vec<_> = rust.difference(&python).collect();
    let extra: Vec<_> = python.difference(&rust).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{path}: DEFAULTS lacks {missing:?} and has {extra:?} beyond ScorerConfig's keys: add \
         each new key there (and to REQUEST_TERMS when it needs the request)"
    );
}

#[test]
fn the_key_reader_reads_a_defaults_literal() {
    let src = "x = 1\nDEFAULTS = {\n    \"scale\": 1.0,\n    \"adaptive\": True,\n}\n";
    let keys: Vec<_> = python_defaults(src).into_iter().collect();
    assert_eq!(keys, ["adaptive", "scale"]);
}
