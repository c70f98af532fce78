//! A fixed-delay OpenAI-compatible streaming server for measuring clients: every request gets
//! its first token `--ttft-ms` after the request was read, then `--tokens - 1` more tokens
//! `--itl-ms` apart, then a usage chunk and `data: [DONE]`. Raw HTTP/1.1 with keep-alive over
//! tokio, so the server itself adds as little as possible. It records, per `x-request-id`, when
//! it finished reading the request and when it wrote each token chunk, so a client's TTFT can
//! be compared with the server-side truth (`GET /stats`), which also shows how late the server
//! itself was (tokio's timer has millisecond slots).
//!
//! ```sh
//! cargo run --release -p inferencelab-bench --example fixed_delay_server -- \
//!     --ttft-ms 100 --itl-ms 10 --tokens 16 --threads 1
//! ```
//! Prints `listening on http://127.0.0.1:PORT` on stdout (port 0 = any free port). Loopback only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

#[derive(Clone, Copy)]
struct Opts {
    ttft: Duration,
    itl: Duration,
    tokens: u32,
}

struct Stat {
    id: String,
    /// Request read -> first chunk written, seconds.
    ttft_s: f64,
    /// Latest chunk write minus its due time, seconds.
    max_late_s: f64,
}

type Stats = Arc<Mutex<Vec<Stat>>>;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, "--port", "0").parse().expect("--port");
    let threads: usize = arg(&args, "--threads", "1").parse().expect("--threads");
    // `--nagle`: leave Nagle's algorithm on (no TCP_NODELAY), to show what it costs a client.
    let nodelay = !args.iter().any(|a| a == "--nagle");
    let opts = Opts {
        ttft: Duration::from_secs_f64(
            arg(&args, "--ttft-ms", "100")
                .parse::<f64>()
                .expect("--ttft-ms")
                / 1e3,
        ),
        itl: Duration::from_secs_f64(
            arg(&args, "--itl-ms", "10")
                .parse::<f64>()
                .expect("--itl-ms")
                / 1e3,
        ),
        tokens: arg(&args, "--tokens", "16").parse().expect("--tokens"),
    };
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        println!("listening on http://{}", listener.local_addr().unwrap());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let stats: Stats = Arc::new(Mutex::new(Vec::new()));
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(nodelay);
            let stats = stats.clone();
            tokio::spawn(async move {
                let _ = connection(s, opts, stats).await;
            });
        }
    });
}

async fn connection(mut s: TcpStream, o: Opts, stats: Stats) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        // Read one request: headers, then Content-Length bytes.
        let (head, body_len, head_end) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                break (head, len, end + 4);
            }
            let mut tmp = [0u8; 8192];
            let n = s.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        while buf.len() < head_end + body_len {
            let mut tmp = [0u8; 65536];
            let n = s.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        buf.drain(..head_end + body_len);
        let read_at = Instant::now();
        let first = head.lines().next().unwrap_or("");
        let id = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-request-id")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        if first.starts_with("GET /stats") {
            let body = {
                let st = stats.lock().unwrap();
                let items: Vec<String> = st
                    .iter()
                    .map(|x| {
                        format!(
                            "{{\"id\":{:?},\"ttft_s\":{},\"max_late_s\":{}}}",
                            x.id, x.ttft_s, x.max_late_s
                        )
                    })
                    .collect();
                format!("{{\"requests\":[{}]}}", items.join(","))
            };
            respond(&mut s, "200 OK", "application/json", &body).await?;
            continue;
        }
        if first.starts_with("GET /v1/models") {
            respond(
                &mut s,
                "200 OK",
                "application/json",
                r#"{"object":"list","data":[{"id":"fixed","object":"model","root":"fixed"}]}"#,
            )
            .await?;
            continue;
        }
        if !first.starts_with("POST /v1/completions")
            && !first.starts_with("POST /v1/chat/completions")
        {
            respond(
                &mut s,
                "404 Not Found",
                "application/json",
                r#"{"error":{"message":"not found"}}"#,
            )
            .await?;
            continue;
        }
        let chat = first.starts_with("POST /v1/chat");
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n").await?;
        let mut ttft_s = 0.0;
        let mut max_late = 0.0f64;
        for i in 0..o.tokens {
            let due = read_at + o.ttft + o.itl * i;
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            let ev = if chat {
                format!("data: {{\"id\":\"chatcmpl-{id}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok\"}},\"finish_reason\":null}}]}}\n\n")
            } else {
                format!("data: {{\"id\":\"cmpl-{id}\",\"object\":\"text_completion\",\"choices\":[{{\"index\":0,\"text\":\" tok\",\"finish_reason\":null}}]}}\n\n")
            };
            s.write_all(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes())
                .await?;
            let now = Instant::now();
            if i == 0 {
                ttft_s = (now - read_at).as_secs_f64();
            }
            max_late = max_late.max((now - due).as_secs_f64());
        }
        let tail = format!(
            "data: {{\"id\":\"cmpl-{id}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":32,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
            o.tokens,
            o.tokens + 32
        );
        s.write_all(format!("{:x}\r\n{tail}\r\n0\r\n\r\n", tail.len()).as_bytes())
            .await?;
        stats.lock().unwrap().push(Stat {
            id,
            ttft_s,
            max_late_s: max_late,
        });
    }
}

async fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    s.write_all(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
}
