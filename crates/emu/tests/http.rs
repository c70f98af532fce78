//! The OpenAI-compatible API end to end over real HTTP: SSE framing and vLLM's chunk format,
//! usage and cached tokens, metrics, the other endpoints and the error responses.

mod common;

use common::*;
use serde_json::{json, Value};

fn chat(content: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": "qwen-8b",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant who answers every question about the cache of the model with care and in detail."},
            {"role": "user", "content": content}
        ],
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

#[tokio::test]
async fn streaming_chat_follows_vllm_chunk_format_and_reports_cached_tokens() {
    let server = start(config(1000, None)).await;
    let c = client();
    let r = post(
        &c,
        server.addr,
        "/v1/chat/completions",
        &chat("what is a block", 5, true),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.content_type.starts_with("text/event-stream"));
    let events = sse_events(&r.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    // role chunk, 5 content chunks, usage chunk
    assert_eq!(chunks.len(), 7);
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for ch in &chunks {
        assert_eq!(ch["id"], id);
        assert_eq!(ch["object"], "chat.completion.chunk");
        assert_eq!(ch["model"], "qwen-8b");
        assert!(ch["created"].is_u64());
    }
    assert_eq!(
        chunks[0]["choices"][0],
        json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null})
    );
    let text: String = chunks[1..6]
        .iter()
        .map(|ch| {
            ch["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(!text.trim().is_empty());
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[6]["choices"], json!([]));
    let usage = &chunks[6]["usage"];
    assert_eq!(usage["completion_tokens"], 5);
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt_tokens + 5);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);

    // the same conversation one turn later hits the shared prefix
    let r2 = post(
        &c,
        server.addr,
        "/v1/chat/completions",
        &chat("what is a block of data", 3, true),
    )
    .await;
    let events = sse_events(&r2.body);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    let cached = usage["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached > 0 && cached % 16 == 0, "cached {cached}");

    let m = get(&c, server.addr, "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.content_type.starts_with("text/plain"));
    assert_eq!(
        metric(&m.body, "vllm:prefix_cache_hits_total"),
        cached as f64
    );
    let p2 = usage["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        metric(&m.body, "vllm:prefix_cache_queries_total"),
        (prompt_tokens + p2) as f64
    );
    assert_eq!(metric(&m.body, "vllm:generation_tokens_total"), 8.0);
    assert_eq!(
        metric(&m.body, "vllm:time_to_first_token_seconds_count"),
        2.0
    );
    assert_eq!(
        metric(&m.body, "vllm:e2e_request_latency_seconds_count"),
        2.0
    );
    assert_eq!(
        metric(&m.body, "vllm:inter_token_latency_seconds_count"),
        6.0
    );
    assert_eq!(metric(&m.body, "vllm:num_requests_running"), 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn non_streaming_completions_and_chat_return_one_json() {
    let server = start(config(1000, Some((64, 100)))).await;
    let c = client();
    let r = post(
        &c,
        server.addr,
        "/v1/completions",
        &json!({"model": "qwen-8b", "prompt": "the cache of the model", "max_tokens": 4}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    // token-id prompts work too, and without max_tokens the model stops by itself
    let r = post(
        &c,
        server.addr,
        "/v1/completions",
        &json!({"prompt": [1, 2, 3, 4, 5, 6]}),
    )
    .await;
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let n = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((16..=256).contains(&n), "{n}");

    let r = post(
        &c,
        server.addr,
        "/v1/chat/completions",
        &chat("hello", 2, false),
    )
    .await;
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    let m = get(&c, server.addr, "/metrics").await.body;
    assert!(metric(&m, "vllm:external_prefix_cache_queries_total") > 0.0);
    assert!(metric(&m, "lmcache:num_requested_tokens_total") > 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_openai_errors_with_the_right_status() {
    let mut cfg = config(4, None);
    cfg.max_request_bytes = 4096;
    cfg.max_model_len = 200;
    let server = start(cfg).await;
    let c = client();
    let a = server.addr;
    let check = |r: &Reply, status: u16, kind: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        let v = r.json();
        assert_eq!(v["error"]["type"], kind, "{}", r.body);
        assert_eq!(v["error"]["code"], status);
        assert!(v["error"]["message"].as_str().unwrap().len() > 3);
    };
    let r = request(
        &c,
        a,
        "POST",
        "/v1/chat/completions",
        Some("{not json".into()),
        &[],
    )
    .await;
    // FastAPI's validation errors, as vLLM 0.32 answers them: type "Bad Request", param body.*
    check(&r, 400, "Bad Request");
    assert_eq!(r.json()["error"]["param"], "body.1");
    let r = post(&c, a, "/v1/chat/completions", &json!({"model": "qwen-8b"})).await;
    check(&r, 400, "Bad Request");
    assert_eq!(r.json()["error"]["param"], "body.messages");
    let r = post(
        &c,
        a,
        "/v1/chat/completions",
        &json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    check(&r, 404, "NotFoundError");
    let r = post(
        &c,
        a,
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 0}),
    )
    .await;
    check(&r, 400, "BadRequestError");
    // (prompt + max_tokens past max_model_len is served with the output capped, as vLLM 0.32
    // does: tests/api_compat.rs's cmpl_over_len_capped; this cache is too small for it)
    let r = post(
        &c,
        a,
        "/v1/completions",
        &json!({"prompt": "x ".repeat(200), "max_tokens": 5}),
    )
    .await;
    check(&r, 400, "BadRequestError");
    assert!(r.body.contains("maximum context length is 200"));
    assert_eq!(r.json()["error"]["param"], "input_tokens");
    // more blocks than the GPU cache holds (4 blocks of 16 tokens)
    let long: Vec<u32> = (0..100).collect();
    let r = post(
        &c,
        a,
        "/v1/completions",
        &json!({"prompt": long, "max_tokens": 1}),
    )
    .await;
    check(&r, 400, "BadRequestError");
    assert!(r.body.contains("KV-cache blocks"), "{}", r.body);
    let big = "x".repeat(10_000);
    let r = post(&c, a, "/v1/completions", &json!({"prompt": big})).await;
    assert_eq!(r.status, 413);
    let r = get(&c, a, "/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"detail": "Not Found"}));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_api_key_guards_v1_only() {
    let mut cfg = config(100, None);
    cfg.api_key = Some("s3cret".into());
    let server = start(cfg).await;
    let c = client();
    let a = server.addr;
    let body = json!({"prompt": "hi", "max_tokens": 1}).to_string();
    let r = request(&c, a, "POST", "/v1/completions", Some(body.clone()), &[]).await;
    assert_eq!(r.status, 401);
    let r = request(
        &c,
        a,
        "POST",
        "/v1/completions",
        Some(body.clone()),
        &[("authorization", "Bearer wrong!")],
    )
    .await;
    assert_eq!(r.status, 401);
    let r = request(
        &c,
        a,
        "POST",
        "/v1/completions",
        Some(body),
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(&c, a, "/health").await.status, 200);
    assert_eq!(get(&c, a, "/metrics").await.status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn models_version_tokenize_detokenize_and_reset() {
    let server = start(config(100, None)).await;
    let c = client();
    let a = server.addr;
    let m = get(&c, a, "/v1/models").await.json();
    assert_eq!(m["data"][0]["id"], "qwen-8b");
    assert_eq!(m["data"][0]["root"], "Qwen/Qwen3-8B");
    assert!(get(&c, a, "/version").await.json()["version"].is_string());
    assert_eq!(get(&c, a, "/health").await.status, 200);
    let t = post(
        &c,
        a,
        "/tokenize",
        &json!({"prompt": "the cache of the model"}),
    )
    .await
    .json();
    assert_eq!(t["count"], 5);
    let d = post(&c, a, "/detokenize", &json!({"tokens": t["tokens"]}))
        .await
        .json();
    assert_eq!(d["prompt"], "the cache of the model");
    // the chat template counts like the chat endpoint
    let tc = post(
        &c,
        a,
        "/tokenize",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .json();
    let r = post(
        &c,
        a,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
    )
    .await
    .json();
    assert_eq!(tc["count"], r["usage"]["prompt_tokens"]);
    // after a reset nothing hits
    let p = json!({"prompt": "the cache of the model and the cache of the model and the cache of the model and more", "max_tokens": 1});
    post(&c, a, "/v1/completions", &p).await;
    assert_eq!(
        request(&c, a, "POST", "/reset_prefix_cache", None, &[])
            .await
            .status,
        200
    );
    post(&c, a, "/v1/completions", &p).await;
    let m = get(&c, a, "/metrics").await.body;
    assert_eq!(metric(&m, "vllm:prefix_cache_hits_total"), 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn many_concurrent_streams_all_complete() {
    let server = start(config(5000, Some((64, 200)))).await;
    let c = client();
    let a = server.addr;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r = post(
                &c,
                a,
                "/v1/chat/completions",
                &chat(&format!("question {i}"), 8, true),
            )
            .await;
            assert_eq!(r.status, 200);
            let ev = sse_events(&r.body);
            assert_eq!(ev.last().unwrap(), "[DONE]");
            ev.len()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1 + 8 + 1 + 1);
    }
    let m = get(&c, a, "/metrics").await.body;
    assert_eq!(metric(&m, "vllm:request_success_total"), 64.0);
    // the shared system prompt hits for all but the first requests of the first step
    assert!(metric(&m, "vllm:prefix_cache_hits_total") > 0.0);
    server.shutdown().await.unwrap();
}
