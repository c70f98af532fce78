//! `serve --kv-events-config` (issue 21): the server publishes its GPU cache's block events on
//! ZMQ in vLLM's wire format. A subscriber sees a prompt's blocks stored (with their tokens),
//! nothing new when the same prompt hits them, and everything cleared by a prefix-cache reset.

mod common;

use std::time::Duration;

use inferencelab_emu::kv_events::KvEventsConfig;
use serde_json::{json, Value};
use zeromq::{Socket, SocketRecv};

/// The next batch's events, decoded from msgpack (`[ts, [event...]]`), within `wait`.
async fn next_batch(sub: &mut zeromq::SubSocket, wait: Duration) -> Option<(u64, Vec<Value>)> {
    let msg = tokio::time::timeout(wait, sub.recv()).await.ok()?.ok()?;
    let frames = msg.into_vec();
    assert_eq!(frames.len(), 3, "topic, sequence, payload");
    assert_eq!(&frames[0][..], b"kv-events");
    let seq = u64::from_be_bytes(frames[1][..].try_into().unwrap());
    let batch: Value = rmp_serde::from_slice(&frames[2]).unwrap();
    assert!(batch[0].as_f64().unwrap() > 1e9, "ts: Unix seconds");
    Some((seq, batch[1].as_array().unwrap().clone()))
}

fn prompt(words: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("{words}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_publishes_its_block_events_in_vllms_format() {
    // the subscriber binds a free loopback port and the server connects to it (vLLM's
    // publisher connects when the endpoint names a host instead of `*`)
    let mut sub = zeromq::SubSocket::new();
    let bound = sub.bind("tcp://127.0.0.1:0").await.unwrap();
    sub.subscribe("kv-events").await.unwrap();
    let mut cfg = common::config(400, None);
    cfg.time_scale = 0.0;
    cfg.kv_events = Some(
        KvEventsConfig::parse(&format!(
            r#"{{"enable_kv_cache_events": true, "endpoint": "{bound}", "topic": "kv-events"}}"#
        ))
        .unwrap(),
    );
    let server = common::start(cfg).await;
    let client = common::client();
    // ZMQ drops what is published before the subscription arrives: warm up until a batch
    // comes through (each warm-up prompt is new, so it stores blocks)
    let complete = |p: String| {
        let client = client.clone();
        let addr = server.addr;
        async move {
            let body = json!({"model": "qwen-8b", "prompt": p, "max_tokens": 4});
            let r = common::post(&client, addr, "/v1/completions", &body).await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()
        }
    };
    let mut seen = None;
    for i in 0..50 {
        complete(prompt(&format!("warm{i}w"), 40)).await;
        if let Some(b) = next_batch(&mut sub, Duration::from_millis(200)).await {
            seen = Some(b);
            break;
        }
    }
    let (mut last_seq, _) = seen.expect("no KV event batch reached the subscriber");
    while let Some((seq, _)) = next_batch(&mut sub, Duration::from_millis(200)).await {
        assert_eq!(seq, last_seq + 1, "consecutive sequence numbers");
        last_seq = seq;
    }
    // a new 100-word prompt: its full blocks are stored, tokens and parents chained
    let a = prompt("alpha", 100);
    let first = complete(a.clone()).await;
    let mut stored: Vec<Value> = Vec::new();
    while let Some((seq, events)) = next_batch(&mut sub, Duration::from_millis(300)).await {
        assert_eq!(seq, last_seq + 1);
        last_seq = seq;
        stored.extend(events.into_iter().filter(|e| e["type"] == "BlockStored"));
    }
    let prompt_tokens = first["usage"]["prompt_tokens"].as_u64().unwrap();
    let blocks: usize = stored
        .iter()
        .map(|e| e["block_hashes"].as_array().unwrap().len())
        .sum();
    // prompt + output - 1 tokens are cached, in full blocks of 16
    assert_eq!(blocks as u64, (prompt_tokens + 4 - 1) / 16, "{stored:?}");
    for e in &stored {
        assert_eq!(e["block_size"], 16);
        assert_eq!(e["medium"], "GPU");
        let n = e["block_hashes"].as_array().unwrap().len();
        assert_eq!(e["token_ids"].as_array().unwrap().len(), n * 16);
    }
    assert!(
        stored[0]["parent_block_hash"].is_null(),
        "the first block has no parent"
    );
    // the same prompt again hits its blocks: no block is stored again
    let again = complete(a).await;
    assert!(
        again["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let mut restored = 0;
    while let Some((_, events)) = next_batch(&mut sub, Duration::from_millis(300)).await {
        for e in events.iter().filter(|e| e["type"] == "BlockStored") {
            let h = &e["block_hashes"];
            assert!(
                !stored.iter().any(|s| s["block_hashes"] == *h),
                "a cached block announced twice"
            );
            restored += 1;
        }
    }
    // only the new answer's blocks (distinct tokens) may be new
    assert!(restored <= 1, "{restored}");
    // a reset clears everything
    let r = common::post(&client, server.addr, "/reset_prefix_cache", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, events) = next_batch(&mut sub, Duration::from_secs(2))
        .await
        .expect("the reset's batch");
    assert_eq!(events, [json!({"type": "AllBlocksCleared"})]);
    server.shutdown().await.unwrap();
}
