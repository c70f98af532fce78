//! `serve`'s render endpoints (vLLM 0.33's `/v1/completions/render` and
//! `/v1/chat/completions/render`), which vllm-router 0.1.17's `kv_aware` calls for a request's
//! token ids before it routes (docs/replicas.md): the ids are the ones the engine then gets for
//! the same request (its log's `prompt_token_ids`) and `/tokenize`'s.

mod common;

use serde_json::{json, Value};

fn logged_ids(log: &str, id: &str) -> Vec<u64> {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("Request {id} details:")))
        .unwrap_or_else(|| panic!("no details line for {id}"));
    let ids = &line[line.find("prompt_token_ids: [").unwrap() + 19..];
    ids[..ids.find(']').unwrap()]
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect()
}

#[test]
fn render_gives_the_token_ids_the_engine_gets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let (mut child, addr) =
        common::spawn_serve(&["--enable-log-requests", "--log-file", log.to_str().unwrap()]);
    let messages = json!([
        {"role": "system", "content": "You are a helper."},
        {"role": "user", "content": "Route this request to the replica that holds its prefix."}
    ]);
    let chat: Value = serde_json::from_str(&common::post_ok(
        &addr,
        "/v1/chat/completions/render",
        &json!({"model": "qwen-8b", "messages": messages}).to_string(),
    ))
    .unwrap();
    assert!(chat["request_id"]
        .as_str()
        .unwrap()
        .starts_with("chatcmpl-"));
    assert!(chat["features"].is_null());
    let chat_ids: Vec<u64> = chat["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let tok: Value = serde_json::from_str(&common::post_ok(
        &addr,
        "/tokenize",
        &json!({"model": "qwen-8b", "messages": messages}).to_string(),
    ))
    .unwrap();
    assert_eq!(json!(chat_ids), tok["tokens"]);

    let batch: Value = serde_json::from_str(&common::post_ok(
        &addr,
        "/v1/completions/render",
        &json!({"model": "qwen-8b", "prompt": ["the first prompt", "a second one"]}).to_string(),
    ))
    .unwrap();
    let batch = batch.as_array().unwrap();
    assert_eq!(batch.len(), 2);
    assert!(batch[1]["request_id"].as_str().unwrap().ends_with("-1"));
    let single: Value = serde_json::from_str(&common::post_ok(
        &addr,
        "/v1/completions/render",
        &json!({"model": "qwen-8b", "prompt": "the first prompt"}).to_string(),
    ))
    .unwrap();
    assert_eq!(single[0]["token_ids"], batch[0]["token_ids"]);

    // the engine gets the same ids for the same requests
    common::post_ok(
        &addr,
        "/v1/chat/completions",
        &json!({"model": "qwen-8b", "messages": messages, "max_tokens": 2}).to_string(),
    );
    common::post_ok(
        &addr,
        "/v1/completions",
        &json!({"model": "qwen-8b", "prompt": "the first prompt", "max_tokens": 2}).to_string(),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let ids_of = |prefix: &str| {
        let line = text
            .lines()
            .find(|l| l.contains("Received request ") && l.contains(prefix))
            .unwrap_or_else(|| panic!("no {prefix} request in the log"));
        let rest = &line[line.find("Received request ").unwrap() + 17..];
        logged_ids(&text, &rest[..rest.find(':').unwrap()])
    };
    assert_eq!(ids_of("Received request chatcmpl-"), chat_ids);
    assert_eq!(
        json!(ids_of("Received request cmpl-")),
        batch[0]["token_ids"]
    );
}
