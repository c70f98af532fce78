//! The closed loop (issue 6's must-show): a concurrent multi-turn workload against the server,
//! then `simulate`'s reader and driver on the log the server wrote, with the same policy,
//! capacities and pinning: the simulator's hit tokens equal what the server reported, request
//! by request in total (`cached_tokens`) and in `/metrics`.
//!
//! What makes them agree: the server logs each request when the API side hands it to the
//! engine core (when the engine can first schedule it; vLLM's `RequestLogger` writes it after
//! preprocessing too) and one `(streaming delta)` line per output token at the end of the step
//! that sampled it, with microsecond stamps (`log_time_decimals = 6`), so a stamp is one step's
//! end. The simulator's `trace` schedule runs an instant's events in vLLM's order (finishes,
//! then running requests' blocks, then admissions), admits a request at the end of the step in
//! flight when it arrived, hashes a decode block when the step computing its last token starts,
//! and allocates the next one when the step after needs it: exactly the emulator's order of
//! cache operations. Requests queue for GPU space in this test (small cache, concurrent
//! conversations; some are preempted in most runs), and it still holds.

mod common;

use std::path::Path;

use common::*;
use inferencelab_sim::{Prepared, SimConfig, TierConfig};
use inferencelab_trace::{read_trace, read_trace_hashed, Format, ReadOptions};
use serde_json::{json, Value};

const SYSTEMS: [&str; 2] = [
    "You are a helpful assistant. Answer every question about the model, the cache, the memory \
     and the server with care, in a long and very good answer that a user can read and learn \
     from, and tell them how the data and the system work. Think about the request, the block \
     and the token, and write the answer in a form that people like.",
    "You are a code assistant. Write good code for the user and explain each line, each value \
     and each result; use the same way every time, keep the answer short, and never change \
     the question the user asked. Read the text again before you answer.",
];

async fn conversation(
    c: HttpClient,
    addr: std::net::SocketAddr,
    conv: usize,
    turns: usize,
) -> Vec<Value> {
    let mut messages = vec![json!({"role": "system", "content": SYSTEMS[conv % 2]})];
    let mut usages = Vec::new();
    for turn in 0..turns {
        messages.push(json!({
            "role": "user",
            "content": format!("question number {turn} of user {conv}: how does the cache of the model work with {} blocks", conv * 7 + turn),
        }));
        let body = json!({
            "model": "qwen-8b",
            "messages": messages,
            "max_tokens": 3 + (conv * 5 + turn * 3) % 17,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let r = post(&c, addr, "/v1/chat/completions", &body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let events = sse_events(&r.body);
        let mut answer = String::new();
        for e in &events[..events.len() - 1] {
            let v: Value = serde_json::from_str(e).unwrap();
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                answer.push_str(t);
            }
            if !v["usage"].is_null() {
                usages.push(v["usage"].clone());
            }
        }
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    usages
}

fn simulate(
    log: &Path,
    gpu_blocks: u64,
    chunk: u32,
    cpu_chunks: u64,
) -> inferencelab_sim::ResultRow {
    let row = simulate_trace(
        read_trace(log, &ReadOptions::default()).unwrap(),
        gpu_blocks,
        chunk,
        cpu_chunks,
    );
    // `simulate` reads the log hashing its token ids as it goes (issue 19): the same figures
    let g = (1..=16)
        .rev()
        .find(|g| 16 % g == 0 && chunk % g == 0)
        .unwrap();
    let hashed = read_trace_hashed(log, &ReadOptions::default(), g).unwrap();
    let same = simulate_trace(hashed, gpu_blocks, chunk, cpu_chunks);
    let figures = |r: &inferencelab_sim::ResultRow| {
        let hits = (
            r.gpu_hit_tokens,
            r.cpu_hit_tokens,
            r.gpu_evictions,
            r.cpu_evictions,
        );
        (hits, r.prefill_tokens_saved, r.answer_sources)
    };
    assert_eq!(figures(&row), figures(&same), "read hashed at {g} tokens");
    row
}

fn simulate_trace(
    trace: inferencelab_trace::Trace,
    gpu_blocks: u64,
    chunk: u32,
    cpu_chunks: u64,
) -> inferencelab_sim::ResultRow {
    assert_eq!(trace.format, Some(Format::VllmLog));
    let prepared = Prepared::new(&trace, 16, Some(chunk)).unwrap();
    let config = SimConfig {
        cpu: Some(TierConfig {
            capacity: cpu_chunks,
            policy: "lru".parse().unwrap(),
        }),
        ..SimConfig::gpu_only(gpu_blocks, "lru".parse().unwrap())
    };
    inferencelab_sim::run(&prepared, &config).unwrap()
}

#[tokio::test]
async fn simulating_the_servers_own_log_gives_the_hits_it_reported() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let (gpu_blocks, chunk, cpu_chunks) = (72, 64, 40);
    let mut cfg = config(gpu_blocks, Some((chunk, cpu_chunks)));
    cfg.enable_log_requests = true;
    cfg.enable_log_outputs = true;
    cfg.log_time_decimals = 6;
    cfg.time_scale = 100.0;
    // the run lasts a few emulated seconds, depending on how fast the client turns around: a
    // short stats interval makes sure `Engine 000` lines are written
    cfg.stats_interval_s = 0.05;
    cfg.log = Some(Box::new(std::fs::File::create(&log).unwrap()));
    let server = start(cfg).await;
    let c = client();
    let (conversations, turns) = (10, 5);
    let tasks: Vec<_> = (0..conversations)
        .map(|i| tokio::spawn(conversation(c.clone(), server.addr, i, turns)))
        .collect();
    let mut usages = Vec::new();
    for t in tasks {
        usages.extend(t.await.unwrap());
    }
    assert_eq!(usages.len(), conversations * turns);
    let metrics = get(&c, server.addr, "/metrics").await.body;
    server.shutdown().await.unwrap();

    let cached: u64 = usages
        .iter()
        .map(|u| {
            u["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap()
        })
        .sum();
    let prompt: u64 = usages
        .iter()
        .map(|u| u["prompt_tokens"].as_u64().unwrap())
        .sum();
    let gpu_hits = metric(&metrics, "vllm:prefix_cache_hits_total") as u64;
    let external_hits = metric(&metrics, "vllm:external_prefix_cache_hits_total") as u64;
    assert_eq!(
        metric(&metrics, "vllm:prefix_cache_queries_total") as u64,
        prompt
    );
    assert_eq!(gpu_hits + external_hits, cached);

    let row = simulate(&log, gpu_blocks, chunk, cpu_chunks);
    assert_eq!(row.requests, (conversations * turns) as u64);
    assert_eq!(row.prompt_tokens, prompt);
    assert_eq!(
        row.gpu_hit_tokens, gpu_hits,
        "GPU hit tokens: simulator vs /metrics"
    );
    assert_eq!(
        row.cpu_hit_tokens, external_hits,
        "LMCache hit tokens: simulator vs /metrics"
    );
    assert_eq!(
        row.gpu_hit_tokens + row.cpu_hit_tokens,
        cached,
        "simulator vs the cached_tokens the server reported"
    );
    assert_eq!(row.gpu_rejections, 0);
    // the workload is not trivial: the GPU evicts, LMCache serves some of it, requests queued
    assert!(
        row.gpu_evictions > 0,
        "no GPU evictions: the test is too easy"
    );
    assert!(
        row.cpu_hit_tokens > 0,
        "LMCache never hit: the test is too easy"
    );
    assert!(row.gpu_hit_tokens > 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("LMCache INFO: Reqid: chatcmpl-"));
    assert!(text.contains("] Engine 000: Avg prompt throughput: "));
}
