//! Token pacing benchmark: how late each streamed token is against the time model's schedule,
//! at a few concurrency levels, plus a concurrency check (every stream complete, no errors).
//!
//! ```sh
//! cargo run --release -p inferencelab-emu --example pacing -- \
//!     [--streams 100,1000,10000] [--max-tokens 50] [--client-threads 1] [--server-threads 2]
//! ```
//! (`scripts/serve_pacing.sh` runs exactly this and keeps the output.)
//!
//! What is measured, per token of every stream (all instants on one monotonic clock: the server
//! and the client run in this process, on separate tokio runtimes, so their clocks agree):
//! - `due`: the real instant the time model scheduled the token for, the end of the engine step
//!   that produced it (emulated step end / time scale; time scale 1 here).
//! - core: when the engine core thread handed the token to the stream's channel;
//! - server: when the stream handed its SSE bytes to the HTTP connection (hyper writes them to
//!   the socket in the same poll, TCP_NODELAY set);
//! - client: when a minimal HTTP/1.1 client (one tokio task per stream, no HTTP library, SSE
//!   events cut on blank lines) read the bytes off its socket.
//!
//! Lateness = that instant - `due` (never negative: nothing is sent before it is due). The
//! first token of a stream is included (its due time is the end of its prefill step). The engine
//! runs every stream at once: `max_num_seqs` = streams and a GPU cache that never evicts or
//! queues, so the schedule is the model's decode steps of one large batch.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inferencelab_emu::core::PacingLog;
use inferencelab_emu::engine::EngineConfig;
use inferencelab_emu::server::{self, ServerConfig};
use inferencelab_emu::timing::{GpuProfile, Timing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    streams: Vec<usize>,
    max_tokens: u32,
    client_threads: usize,
    server_threads: usize,
    floor: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        streams: vec![100, 1000, 10_000],
        max_tokens: 50,
        client_threads: 1,
        server_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        floor: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        if argv[i] == "--floor" {
            a.floor = true;
            i += 1;
            continue;
        }
        match argv[i].as_str() {
            "--streams" => {
                a.streams = v
                    .split(',')
                    .map(|x| x.parse().expect("--streams N[,N...]"))
                    .collect()
            }
            "--max-tokens" => a.max_tokens = v.parse().expect("--max-tokens N"),
            "--client-threads" => a.client_threads = v.parse().expect("--client-threads N"),
            "--server-threads" => a.server_threads = v.parse().expect("--server-threads N"),
            other => panic!(
                "unknown argument {other}; usage: pacing [--streams 100,1000,10000] \
                 [--max-tokens 50] [--client-threads 1] [--server-threads N] [--floor]"
            ),
        }
        i += 2;
    }
    a
}

/// Linear interpolation between closest ranks (as `vllm bench serve` / numpy).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let x = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo as f64)
}

fn summary(name: &str, mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let within = ms.iter().filter(|&&x| x <= 1.0).count() as f64 / ms.len().max(1) as f64;
    format!(
        "  {name:<7} p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  max {:>8.3} ms  \
         within 1 ms {:>5.1}%",
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        within * 100.0
    )
}

/// One streamed chat completion over a raw socket: the response id and the receive instant of
/// every content token.
async fn stream(
    addr: SocketAddr,
    i: usize,
    max_tokens: u32,
) -> Result<(String, Vec<Instant>), String> {
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"question {i} about the cache"}}],"max_tokens":{max_tokens},"stream":true}}"#
    );
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut sock = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = sock.set_nodelay(true);
    sock.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut scan = 0usize;
    let mut head_done = false;
    let mut id = String::new();
    let mut arrivals = Vec::with_capacity(max_tokens as usize);
    let mut done = false;
    let mut chunk = vec![0u8; 16 << 10];
    while !done {
        let n = sock
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        if !head_done {
            let Some(end) = find(&buf, b"\r\n\r\n") else {
                continue;
            };
            if !buf.starts_with(b"HTTP/1.1 200") {
                return Err(String::from_utf8_lossy(&buf[..end]).into_owned());
            }
            head_done = true;
            scan = end + 4;
        }
        // SSE events end with a blank line; the chunked framing between them never has one
        while let Some(start) = find(&buf[scan..], b"data: ").map(|s| scan + s) {
            let Some(end) = find(&buf[start..], b"\n\n").map(|e| start + e) else {
                break;
            };
            let event = &buf[start + 6..end];
            if event == b"[DONE]" {
                done = true;
            } else {
                if id.is_empty() {
                    if let Some(s) = find(event, b"\"id\":\"") {
                        let rest = &event[s + 6..];
                        let e = find(rest, b"\"").unwrap_or(0);
                        id = String::from_utf8_lossy(&rest[..e]).into_owned();
                    }
                }
                if find(event, b"\"content\":").is_some() && find(event, b"\"role\"").is_none() {
                    arrivals.push(now);
                }
            }
            scan = end + 2;
        }
    }
    if !done || arrivals.len() != max_tokens as usize {
        return Err(format!(
            "incomplete stream: {} of {max_tokens} tokens, [DONE] {done}",
            arrivals.len()
        ));
    }
    Ok((id, arrivals))
}

/// CPU seconds this process used so far (user + system, all threads; Linux `/proc`, 10 ms
/// resolution), NaN elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // fields after the command name (which ends with ')'): state is field 3, utime 14, stime 15
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn server_config(streams: usize, pacing: PacingLog) -> ServerConfig {
    let model = inferencelab_models::resolve("qwen-8b").expect("qwen-8b is built in");
    let timing = Timing::derive(&model, &GpuProfile::default(), None, None);
    let mut engine = EngineConfig::new(model, timing, 4_000_000);
    engine.max_num_seqs = streams.max(256) as u32;
    engine.max_num_batched_tokens = 1 << 20;
    let mut cfg = ServerConfig::new(engine, "qwen-8b");
    cfg.time_scale = 1.0;
    cfg.pacing = Some(pacing);
    cfg
}

fn run_level(args: &Args, streams: usize) -> bool {
    let pacing: PacingLog = Arc::new(Mutex::new(Default::default()));
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .thread_name("server")
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("client")
        .enable_all()
        .build()
        .expect("client runtime");
    let cfg = server_config(streams, pacing.clone());
    let handle = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        server::spawn(listener, cfg).expect("server")
    });
    let addr = handle.addr;
    let max_tokens = args.max_tokens;
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let results: Vec<Result<(String, Vec<Instant>), String>> = client_rt.block_on(async move {
        let tasks: Vec<_> = (0..streams)
            .map(|i| {
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(600), stream(addr, i, max_tokens))
                        .await
                        .unwrap_or_else(|_| Err("timeout".into()))
                })
            })
            .collect();
        let mut out = Vec::with_capacity(streams);
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
        }
        out
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    server_rt
        .block_on(handle.shutdown())
        .expect("server shutdown");
    let log = pacing.lock().expect("pacing log");
    let (mut core, mut server, mut client) = (Vec::new(), Vec::new(), Vec::new());
    let mut errors: Vec<String> = Vec::new();
    let ms = |a: Instant, due: Instant| a.saturating_duration_since(due).as_secs_f64() * 1e3;
    for r in &results {
        match r {
            Ok((id, arrivals)) => match log.get(id) {
                Some(tokens) if tokens.len() == arrivals.len() => {
                    for (t, &a) in tokens.iter().zip(arrivals) {
                        core.push(ms(t.queued, t.due));
                        server.push(ms(t.sent, t.due));
                        client.push(ms(a, t.due));
                    }
                }
                other => errors.push(format!(
                    "{id}: {} server records for {} tokens",
                    other.map_or(0, Vec::len),
                    arrivals.len()
                )),
            },
            Err(e) => errors.push(e.clone()),
        }
    }
    let tokens = (results.len() - errors.len()) * max_tokens as usize;
    println!(
        "{streams} concurrent streams x {max_tokens} tokens: {} complete, {} errors, {:.1} s, \
         {:.0} tokens/s, {:.1} us CPU per token (server + client, user + kernel)",
        results.len() - errors.len(),
        errors.len(),
        wall,
        tokens as f64 / wall,
        cpu * 1e6 / tokens.max(1) as f64
    );
    println!(
        "  lateness against the time model's schedule, over {} tokens:",
        client.len()
    );
    println!("{}", summary("core", core));
    println!("{}", summary("server", server));
    println!("{}", summary("client", client));
    if let Some(e) = errors.first() {
        println!("  first error: {e}");
    }
    errors.is_empty()
}

fn main() {
    let args = parse_args();
    println!(
        "pacing benchmark: {} CPUs, server runtime {} worker threads + the engine core thread, \
         client runtime {} thread(s), qwen-8b on the default H100 profile, time scale 1",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.server_threads,
        args.client_threads
    );
    let mut ok = true;
    for &n in &args.streams {
        ok &= run_level(&args, n);
        // two sockets per stream in one process: keep under the open-files limit
        if args.floor && n <= 5000 {
            run_floor(&args, n);
        }
    }
    if !ok {
        std::process::exit(1);
    }
}

/// The floor of this machine: the same number of connections, the same period (the model's
/// decode step at that batch size) and the same bytes per token as the emulator, but the
/// cheapest possible sender: one OS thread that sleeps until each step's end and then writes a
/// pre-formatted chunk to every socket with blocking `write` calls (no HTTP, no async runtime,
/// no channels). The client is the same raw reader on its own runtime. What the emulator cannot
/// beat on this box: the kernel's loopback TCP work per write and per read.
fn run_floor(args: &Args, streams: usize) {
    use std::io::Write;
    let model = inferencelab_models::resolve("qwen-8b").expect("qwen-8b is built in");
    let timing = Timing::derive(&model, &GpuProfile::default(), None, None);
    let context = streams as u64 * (20 + args.max_tokens as u64 / 2);
    let step = Duration::from_secs_f64(
        timing.decode_seconds(streams as u64, context) + timing.overhead_seconds(),
    );
    let ticks = args.max_tokens as usize;
    let cpu0 = cpu_seconds();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let writer = std::thread::spawn(move || {
        let mut conns: Vec<std::net::TcpStream> = (0..streams)
            .map(|_| {
                let (c, _) = listener.accept().expect("accept");
                c.set_nodelay(true).expect("nodelay");
                c
            })
            .collect();
        // a vLLM chat chunk with HTTP/1.1 chunked framing is about 230 bytes
        let pad = "x".repeat(200);
        let t0 = Instant::now() + Duration::from_millis(50);
        let mut due = Vec::with_capacity(ticks);
        let mut sent: Vec<Vec<Instant>> = Vec::with_capacity(ticks);
        for k in 0..ticks {
            let d = t0 + step * k as u32;
            let now = Instant::now();
            if d > now {
                std::thread::sleep(d - now);
            }
            let msg = format!("data: {k} {pad}\n\n");
            let mut times = Vec::with_capacity(streams);
            for c in &mut conns {
                c.write_all(msg.as_bytes()).expect("write");
                times.push(Instant::now());
            }
            due.push(d);
            sent.push(times);
        }
        (due, sent)
    });
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()
        .expect("client runtime");
    let received: Vec<Vec<(usize, Instant)>> = client_rt.block_on(async move {
        let mut socks = Vec::with_capacity(streams);
        for _ in 0..streams {
            let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _ = s.set_nodelay(true);
            socks.push(s);
        }
        let tasks: Vec<_> = socks
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let mut out = Vec::with_capacity(ticks);
                    let mut buf = Vec::new();
                    let mut chunk = vec![0u8; 16 << 10];
                    while out.len() < ticks {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        let now = Instant::now();
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = find(&buf, b"\n\n") {
                            let k: usize = std::str::from_utf8(&buf[6..])
                                .ok()
                                .and_then(|t| t.split(' ').next())
                                .and_then(|t| t.parse().ok())
                                .expect("tick");
                            out.push((k, now));
                            buf.drain(..end + 2);
                        }
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::with_capacity(streams);
        for t in tasks {
            all.push(t.await.expect("reader"));
        }
        all
    });
    let (due, sent) = writer.join().expect("writer");
    let cpu = cpu_seconds() - cpu0;
    let ms = |a: Instant, d: Instant| a.saturating_duration_since(d).as_secs_f64() * 1e3;
    let server: Vec<f64> = sent
        .iter()
        .zip(&due)
        .flat_map(|(ts, &d)| ts.iter().map(move |&t| ms(t, d)))
        .collect();
    let client: Vec<f64> = received
        .iter()
        .flatten()
        .map(|&(k, t)| ms(t, due[k]))
        .collect();
    println!(
        "  floor ({streams} raw sockets, one blocking writer thread, a write every {:.1} ms): \
         {:.1} us CPU per token (writer + reader, user + kernel)",
        step.as_secs_f64() * 1e3,
        cpu * 1e6 / (streams * ticks) as f64
    );
    let first: Vec<f64> = sent.iter().zip(&due).map(|(ts, &d)| ms(ts[0], d)).collect();
    println!("{}", summary("wake", first));
    println!("{}", summary("server", server));
    println!("{}", summary("client", client));
}
