//! What the issue-17 probes (`candidate_probe`, `loss_diagnosis`) share: the protocol's traces,
//! the `--traces` filter and candidates' `key=value` lists.

/// The bundled traces as `scripts/policy_protocol.sh` reads them: (name, path, conversations
/// inferred offline by `--infer-conversations`). The demo log must have been converted first.
pub const TRACES: [(&str, &str, bool); 5] = [
    ("demo", "outputs/logs/server_qwen-8b.log", false),
    (
        "vllm",
        "data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log",
        false,
    ),
    ("weka", "data/traces/weka-agentic", false),
    (
        "mooncake",
        "data/traces/mooncake/synthetic_trace.jsonl",
        false,
    ),
    (
        "mooncake_inferred",
        "data/traces/mooncake/synthetic_trace.jsonl",
        true,
    ),
];

/// Take `--traces a,b` out of `args`: the trace names to run (None: all).
pub fn take_traces(args: &mut Vec<String>) -> Option<Vec<String>> {
    let i = args.iter().position(|a| a == "--traces")?;
    let only = args[i + 1].split(',').map(String::from).collect();
    args.drain(i..i + 2);
    Some(only)
}

/// Whether trace `name` is to run under the `--traces` filter `only`.
pub fn wanted(only: &Option<Vec<String>>, name: &str) -> bool {
    only.as_ref().is_none_or(|o| o.iter().any(|x| x == name))
}

/// A candidate's `key=value,key=value` list as YAML (`key: value` lines).
pub fn yaml_of(kv: &str) -> String {
    kv.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| {
            let (k, v) = x.split_once('=').expect("key=value");
            format!("{k}: {v}\n")
        })
        .collect()
}
