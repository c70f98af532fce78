//! A minimal streaming load generator for the emulator's concurrency figure: N chat completions
//! streamed at once over N connections, every one checked to its `[DONE]`.
//!
//! ```sh
//! cargo build --release -p inferencelab -p inferencelab-emu --example loadgen
//! target/release/inferencelab serve --port 8123 --max-num-seqs 10000 \
//!     --max-num-batched-tokens 16384 --no-cpu-tier --log-file /dev/null &
//! target/release/examples/loadgen http://127.0.0.1:8123 10000 20
//! ```
//! Arguments: base URL (loopback only), streams, max_tokens per stream.
//!
//! `loadgen serve PORT` runs the emulator itself in this process instead (no LMCache tier, a
//! GPU cache and batch limits large enough for 10,000 running streams, no log), so the two sides
//! can be measured as two processes without building the CLI:
//! `loadgen serve 8123 & loadgen http://127.0.0.1:8123 10000 20`.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let x = p * (v.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
}

fn serve(port: u16) {
    use inferencelab_emu::engine::EngineConfig;
    use inferencelab_emu::server::{serve_blocking, ServerConfig};
    use inferencelab_emu::timing::{GpuProfile, Timing};
    let model = inferencelab_models::resolve("qwen-8b").unwrap();
    let timing = Timing::derive(&model, &GpuProfile::default(), None, None);
    let mut engine = EngineConfig::new(model, timing, 1_000_000);
    engine.max_num_seqs = 20_000;
    engine.max_num_batched_tokens = 1 << 20;
    let cfg = ServerConfig::new(engine, "qwen-8b");
    serve_blocking("127.0.0.1", port, cfg, |a| {
        println!("listening on http://{a}")
    })
    .unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        let port = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(8123);
        return serve(port);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(client(args));
}

async fn client(args: Vec<String>) {
    let url = args
        .get(1)
        .cloned()
        .unwrap_or("http://127.0.0.1:8000".into());
    assert!(
        url.starts_with("http://127.") || url.starts_with("http://localhost"),
        "loopback targets only"
    );
    let streams: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let max_tokens: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build_http::<Full<Bytes>>();
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let body = format!(
                    r#"{{"messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"question {i} about the cache"}}],"max_tokens":{max_tokens},"stream":true,"stream_options":{{"include_usage":true}}}}"#
                );
                let req = hyper::Request::post(format!("{url}/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                let sent = Instant::now();
                let resp = tokio::time::timeout(Duration::from_secs(600), client.request(req))
                    .await
                    .map_err(|_| "timeout".to_string())?
                    .map_err(|e| e.to_string())?;
                if resp.status() != 200 {
                    return Err(format!("status {}", resp.status()));
                }
                let mut body = resp.into_body();
                let mut times = Vec::with_capacity(max_tokens as usize);
                let mut buf = String::new();
                let mut done = false;
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| e.to_string())?;
                    let Ok(data) = frame.into_data() else { continue };
                    let now = Instant::now();
                    buf.push_str(&String::from_utf8_lossy(&data));
                    while let Some(end) = buf.find("\n\n") {
                        let event: String = buf.drain(..end + 2).collect();
                        if event.contains("\"content\":\"") && !event.contains("\"role\"") {
                            times.push(now);
                        }
                        done |= event.starts_with("data: [DONE]");
                    }
                }
                if !done || times.len() != max_tokens as usize {
                    return Err(format!("incomplete stream: {} tokens, done {done}", times.len()));
                }
                Ok((sent, times))
            })
        })
        .collect();
    let mut ok = 0usize;
    let mut errors: Vec<String> = Vec::new();
    let mut ttft = Vec::new();
    let mut itl = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok((sent, times))) => {
                ok += 1;
                ttft.push((times[0] - sent).as_secs_f64() * 1e3);
                itl.extend(times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() * 1e3));
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "streams {streams}: ok {ok}, errors {} in {wall:.1} s; {:.0} tokens/s; TTFT p50 {:.1} ms \
         p99 {:.1} ms; ITL p50 {:.1} ms p99 {:.1} ms",
        errors.len(),
        (ok * max_tokens as usize) as f64 / wall,
        percentile(&mut ttft, 0.5),
        percentile(&mut ttft, 0.99),
        percentile(&mut itl, 0.5),
        percentile(&mut itl, 0.99),
    );
    if let Some(e) = errors.first() {
        println!("first error: {e}");
        std::process::exit(1);
    }
}
