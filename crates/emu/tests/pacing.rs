//! Token pacing at 1,000 concurrent streams, measured end to end: for every token chunk a client
//! receives, how late it arrives after the time the engine scheduled it (the end of the step
//! that produced it). Ignored by default (it measures, it does not test); run with
//! `cargo test --release -p inferencelab-emu --test pacing -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it in release with --ignored --nocapture"]
async fn pacing_at_1000_streams() {
    let streams = 1000;
    let max_tokens = 50u32;
    let mut cfg = config(200_000, None);
    cfg.time_scale = 1.0;
    cfg.engine.max_num_seqs = 2000;
    cfg.engine.max_num_batched_tokens = 32_768;
    let pacing = std::sync::Arc::new(std::sync::Mutex::new(Default::default()));
    cfg.pacing = Some(pacing.clone());
    let server = start(cfg).await;
    let c = client();
    let addr = server.addr;
    let tasks: Vec<_> = (0..streams)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let body = format!(
                    r#"{{"messages":[{{"role":"user","content":"question {i}"}}],"max_tokens":{max_tokens},"stream":true}}"#
                );
                let req = hyper::Request::post(format!("http://{addr}/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let resp = c.request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                let mut body = resp.into_body();
                let mut id = String::new();
                let mut arrivals = Vec::new();
                let mut buf = String::new();
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame.unwrap().into_data() else { continue };
                    let now = Instant::now();
                    buf.push_str(&String::from_utf8_lossy(&data));
                    while let Some(end) = buf.find("\n\n") {
                        let event: String = buf.drain(..end + 2).collect();
                        if id.is_empty() {
                            if let Some(rest) = event.strip_prefix("data: {\"id\":\"") {
                                id = rest[..rest.find('"').unwrap()].to_string();
                            }
                        }
                        if event.contains("\"content\":\"") && !event.contains("\"role\"") {
                            arrivals.push(now);
                        }
                    }
                }
                (id, arrivals)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    server.shutdown().await.unwrap();
    let schedule = pacing.lock().unwrap();
    let mut late: Vec<f64> = Vec::new();
    for (id, arrivals) in &results {
        let due = &schedule[id];
        assert_eq!(due.len(), arrivals.len(), "{id}");
        assert_eq!(arrivals.len(), max_tokens as usize);
        for (a, d) in arrivals.iter().zip(due) {
            late.push(a.saturating_duration_since(*d).as_secs_f64() * 1e3);
        }
    }
    late.sort_by(f64::total_cmp);
    let q = |p: f64| late[((late.len() - 1) as f64 * p) as usize];
    let within = late.iter().filter(|&&x| x <= 1.0).count() as f64 / late.len() as f64;
    println!(
        "pacing at {streams} streams x {max_tokens} tokens: lateness p50 {:.3} ms, p90 {:.3} ms, \
         p99 {:.3} ms, max {:.3} ms; {:.1}% of tokens within 1 ms of schedule",
        q(0.5),
        q(0.9),
        q(0.99),
        late[late.len() - 1],
        within * 100.0
    );
}
