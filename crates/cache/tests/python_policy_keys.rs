//! `conversation_aware` in a real LMCache (`python/lmcache_policy/inferencelab_cache_policy.py`)
//! reads the same scorer YAML as the simulator and refuses keys it does not know, as the Rust
//! `ScorerConfig` does. So every key of `ScorerConfig` must be one of the Python policy's
//! `DEFAULTS`, and no other: when a key was added here and not there, the shipped
//! `configs/scorer_default.yaml` made the policy raise in LMCache at start-up. Its defaults
//! (used when no YAML is given) must be the simulator's too.

use std::collections::{BTreeMap, BTreeSet};

use inferencelab_cache::policy::conversation_aware::ScorerConfig;

/// The Python `DEFAULTS = {...}` literal, one `"key": value,` per line: each key and its value
/// as JSON (`True`/`False`, numbers, double-quoted strings).
fn python_defaults(source: &str) -> BTreeMap<String, serde_json::Value> {
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
            let (key, value) = l.strip_prefix('"')?.split_once("\":")?;
            let value = value.trim().trim_end_matches(',');
            let value = match value {
                "True" => serde_json::Value::Bool(true),
                "False" => serde_json::Value::Bool(false),
                v => serde_json::from_str(v).unwrap_or_else(|e| {
                    panic!("DEFAULTS[{key:?}] = {v}: not a bool, number or string ({e})")
                }),
            };
            Some((key.to_string(), value))
        })
        .collect()
}

/// Numbers compare as numbers (`1` and `1.0` are one default).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[test]
fn the_python_policy_knows_every_scorer_key() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../python/lmcache_policy/inferencelab_cache_policy.py"
    );
    let source = std::fs::read_to_string(path).expect("the Python policy is in the repo");
    let python = python_defaults(&source);
    let rust: BTreeMap<String, serde_json::Value> =
        match serde_json::to_value(ScorerConfig::default()).unwrap() {
            serde_json::Value::Object(m) => m.into_iter().collect(),
            v => panic!("ScorerConfig serializes to a map, not {v}"),
        };
    let keys = |m: &BTreeMap<String, serde_json::Value>| m.keys().cloned().collect::<BTreeSet<_>>();
    let missing: Vec<_> = keys(&rust).difference(&keys(&python)).cloned().collect();
    let extra: Vec<_> = keys(&python).difference(&keys(&rust)).cloned().collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{path}: DEFAULTS lacks {missing:?} and has {extra:?} beyond ScorerConfig's keys: add \
         each new key there (and to REQUEST_TERMS when it needs the request)"
    );
    let differ: Vec<String> = rust
        .iter()
        .filter(|(k, v)| !same(v, &python[*k]))
        .map(|(k, v)| format!("{k}: Rust {v}, Python {}", python[k]))
        .collect();
    assert!(
        differ.is_empty(),
        "{path}: DEFAULTS differ from ScorerConfig::default(): {differ:?}"
    );
}

#[test]
fn the_key_reader_reads_a_defaults_literal() {
    let src = "x = 1\nDEFAULTS = {\n    \"scale\": 1.0,\n    \"adaptive\": True,\n}\n";
    let src = format!("{src}ALSO = {{\n    \"r\": \"next_use\",\n}}\n");
    let d = python_defaults(&src);
    assert_eq!(d.keys().collect::<Vec<_>>(), ["adaptive", "scale"]);
    assert_eq!(d["adaptive"], serde_json::Value::Bool(true));
    assert!(same(&d["scale"], &serde_json::json!(1)));
    let r = python_defaults("\nDEFAULTS = {\n    \"ranking\": \"next_use\",\n}\n");
    assert_eq!(r["ranking"], "next_use");
}
