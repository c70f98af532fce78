//! The real HTTP/SSE executor against tiny hand-written servers (raw HTTP/1.1 over a loopback
//! listener bound once on port 0): split SSE events, comments, usage, keep-alive, API keys, and
//! every failure the run must record and survive.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use inferencelab_bench::executor::{Endpoint, PreparedRequest};
use inferencelab_bench::executor::{HttpConfig, HttpExecutor};
use inferencelab_bench::metrics::summarize;
use inferencelab_bench::runner::{run, NoObserver, RequestIdHeader, RunConfig, StopReason};
use inferencelab_bench::workload::{BodyOptions, RandomWorkload, TokenRange};
use inferencelab_bench::{Arrival, ErrorKind, Executor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the server does with request number `n` (0-based, over all connections).
#[derive(Clone, Copy, Debug)]
enum Behavior {
    /// A good stream, split at awkward places, with comments and a usage chunk.
    Good,
    /// 500 with an OpenAI-style error body.
    Error500,
    /// Headers and two chunks, then the socket is closed mid-body.
    Die,
    /// A complete chunked body without `data: [DONE]`.
    NoDone,
    /// Headers, then nothing.
    Stall,
    /// A good stream, then the server closes the (keep-alive) connection.
    GoodThenClose,
    /// The request is read, then the connection closed without a byte of answer: a keep-alive
    /// close that crossed the request (the server never handles it).
    CloseUnanswered,
}

struct Server {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    auth_seen: Arc<std::sync::Mutex<Vec<String>>>,
    /// the x-request-id header of each request, if it had one
    ids_seen: Arc<std::sync::Mutex<Vec<Option<String>>>>,
}

async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut tmp = [0u8; 4096];
                let n = s.read(&mut tmp).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            buf.drain(..end + 4 + len);
            return Some(head);
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn chunk(s: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    s.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    s.write_all(data).await?;
    s.write_all(b"\r\n").await?;
    s.flush().await
}

const HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

async fn respond(s: &mut TcpStream, b: Behavior) -> std::io::Result<bool> {
    let tok = |t: &str| {
        format!("data: {{\"id\":\"cmpl-x\",\"choices\":[{{\"index\":0,\"text\":\"{t}\"}}]}}\n\n")
    };
    match b {
        Behavior::Good => {
            s.write_all(HEAD).await?;
            let first = tok("Hel");
            let (a, rest) = first.split_at(17);
            chunk(s, b": keep-alive\n\n").await?;
            chunk(s, a.as_bytes()).await?;
            tokio::time::sleep(Duration::from_millis(2)).await;
            let rest = format!("{rest}{}{}", tok("lo"), &tok(" w")[..5]);
            chunk(s, rest.as_bytes()).await?;
            let tail = format!(
                "{}{}data: {{\"id\":\"cmpl-x\",\"choices\":[],\"usage\":{{\"prompt_tokens\":8,\"completion_tokens\":4,\"prompt_tokens_details\":{{\"cached_tokens\":5}}}}}}\r\n\r\ndata: [DONE]\n\n",
                &tok(" w")[5..],
                tok("orld")
            );
            chunk(s, tail.as_bytes()).await?;
            s.write_all(b"0\r\n\r\n").await?;
            Ok(true)
        }
        Behavior::Error500 => {
            let body = br#"{"error":{"message":"engine overloaded","type":"InternalServerError","code":500}}"#;
            s.write_all(
                format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .await?;
            s.write_all(body).await?;
            Ok(true)
        }
        Behavior::Die => {
            s.write_all(HEAD).await?;
            chunk(s, tok("a").as_bytes()).await?;
            chunk(s, tok("b").as_bytes()).await?;
            Ok(false)
        }
        Behavior::NoDone => {
            s.write_all(HEAD).await?;
            chunk(s, tok("a").as_bytes()).await?;
            s.write_all(b"0\r\n\r\n").await?;
            Ok(true)
        }
        Behavior::GoodThenClose => {
            Box::pin(respond(s, Behavior::Good)).await?;
            Ok(false)
        }
        Behavior::CloseUnanswered => Ok(false),
        Behavior::Stall => {
            s.write_all(HEAD).await?;
            s.flush().await?;
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(false)
        }
    }
}

async fn serve(plan: Vec<Behavior>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let auth_seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ids_seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (r, c, a, ids) = (
        requests.clone(),
        connections.clone(),
        auth_seen.clone(),
        ids_seen.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let (r, a, ids, plan) = (r.clone(), a.clone(), ids.clone(), plan.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request(&mut s, &mut buf).await {
                    if let Some(v) = head
                        .lines()
                        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    {
                        a.lock().unwrap().push(v.to_string());
                    }
                    ids.lock().unwrap().push(head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("x-request-id")
                            .then(|| v.trim().to_string())
                    }));
                    let n = r.fetch_add(1, Ordering::SeqCst);
                    let b = plan[n % plan.len()];
                    match respond(&mut s, b).await {
                        Ok(true) => {}
                        _ => return,
                    }
                }
            });
        }
    });
    Server {
        addr,
        requests,
        connections,
        auth_seen,
        ids_seen,
    }
}

/// A keep-alive server that closes a connection once it has waited `idle` for a request, as
/// uvicorn does after `timeout_keep_alive` (vLLM: `VLLM_HTTP_TIMEOUT_KEEP_ALIVE`, 5 s). Each such
/// close is reported on the channel after the socket is closed. Every request gets a good stream.
async fn serve_closing_idle(idle: Duration) -> (Server, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let (r, c) = (requests.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let (r, closed_tx) = (r.clone(), closed_tx.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    match tokio::time::timeout(idle, read_request(&mut s, &mut buf)).await {
                        Err(_) => {
                            drop(s);
                            let _ = closed_tx.send(());
                            return;
                        }
                        Ok(None) => return,
                        Ok(Some(_)) => {}
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    if !matches!(respond(&mut s, Behavior::Good).await, Ok(true)) {
                        return;
                    }
                }
            });
        }
    });
    let server = Server {
        addr,
        requests,
        connections,
        auth_seen: Default::default(),
        ids_seen: Default::default(),
    };
    (server, closed)
}

fn prepared(i: usize) -> PreparedRequest {
    PreparedRequest {
        request_id: format!("k-{i}"),
        endpoint: Endpoint::Completions,
        body: bytes::Bytes::from_static(
            br#"{"model":"m","prompt":[1,2,3],"max_tokens":4,"stream":true}"#,
        ),
        max_tokens: 4,
        prompt_tokens: Some(3),
    }
}

fn executor(base: String, timeout_ms: u64, key: Option<&str>) -> Arc<HttpExecutor> {
    Arc::new(
        HttpExecutor::new(&HttpConfig {
            base_url: base,
            api_key: key.map(str::to_string),
            request_timeout: Duration::from_millis(timeout_ms),
            connect_timeout: Duration::from_secs(2),
        })
        .unwrap(),
    )
}

fn cfg(conc: Option<usize>) -> RunConfig {
    RunConfig {
        arrival: Arrival::Burst,
        max_concurrency: conc,
        num_prompts: None,
        duration: None,
        time_scale: 1.0,
        seed: 0,
        request_id_prefix: "h-".into(),
        request_id_header: RequestIdHeader::Ours,
        body: BodyOptions {
            model: "m".into(),
            ..Default::default()
        },
    }
}

#[tokio::test]
async fn split_sse_usage_keep_alive_and_api_key() {
    let srv = serve(vec![Behavior::Good]).await;
    let exec = executor(format!("http://{}/", srv.addr), 5_000, Some("sekret"));
    let mut w = RandomWorkload::new(Some(5), 8, 4, 0, TokenRange::default());
    let out = run(
        exec,
        &mut w,
        &cfg(Some(1)),
        &mut NoObserver,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(out.records.len(), 5);
    for r in &out.records {
        assert!(r.success, "{r:?}");
        assert_eq!(r.generated_text, "Hello world");
        assert_eq!((r.output_tokens, r.prompt_len, r.cached_tokens), (4, 8, 5));
        assert_eq!(r.itl_s.len(), 3);
        assert!(r.ttft_s > 0.0 && r.e2el_s >= r.ttft_s);
        assert_eq!(r.response_id.as_deref(), Some("cmpl-x"));
        assert!(r.done && r.usage);
    }
    assert_eq!(srv.requests.load(Ordering::SeqCst), 5);
    assert_eq!(
        srv.connections.load(Ordering::SeqCst),
        1,
        "keep-alive: one connection"
    );
    assert!(srv
        .auth_seen
        .lock()
        .unwrap()
        .iter()
        .all(|a| a.ends_with("Bearer sekret")));
}

#[tokio::test]
async fn the_request_id_header_is_ours_a_uuid_or_absent() {
    let mut seen = Vec::new();
    for header in [
        RequestIdHeader::Ours,
        RequestIdHeader::Uuid,
        RequestIdHeader::None,
    ] {
        let srv = serve(vec![Behavior::Good]).await;
        let exec = executor(format!("http://{}/", srv.addr), 5_000, None);
        let mut w = RandomWorkload::new(Some(3), 8, 4, 0, TokenRange::default());
        let cfg = RunConfig {
            request_id_header: header,
            ..cfg(Some(1))
        };
        let out = run(exec, &mut w, &cfg, &mut NoObserver, std::future::pending())
            .await
            .unwrap();
        let ids = srv.ids_seen.lock().unwrap().clone();
        let recorded: Vec<String> = out.records.iter().map(|r| r.request_id.clone()).collect();
        seen.push((header, ids, recorded));
    }
    let [(_, ours, ours_rec), (_, uuid, uuid_rec), (_, none, none_rec)] = &seen[..] else {
        unreachable!()
    };
    assert_eq!(
        ours,
        &vec![Some("h-0".into()), Some("h-1".into()), Some("h-2".into())]
    );
    assert_eq!(ours_rec, &["h-0", "h-1", "h-2"]);
    // a version-4 layout UUID (8-4-4-4-12 hex, version nibble 4, variant 10xx), one per
    // request, recorded as the request's id
    let uuids: Vec<String> = uuid.iter().map(|u| u.clone().unwrap()).collect();
    for u in &uuids {
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{u}"
        );
        assert!(u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{u}");
        assert!(parts[2].starts_with('4'), "{u}");
        assert!("89ab".contains(&parts[3][..1]), "{u}");
    }
    assert_ne!(uuids[0], uuids[1]);
    assert_eq!(uuid_rec, &uuids);
    assert_eq!(none, &vec![None, None, None]);
    assert_eq!(none_rec, &["h-0", "h-1", "h-2"]);
}

#[tokio::test]
async fn every_failure_is_recorded_and_the_run_completes() {
    let plan = vec![
        Behavior::Good,
        Behavior::Error500,
        Behavior::Die,
        Behavior::NoDone,
        Behavior::Stall,
    ];
    let srv = serve(plan).await;
    let exec = executor(format!("http://{}", srv.addr), 300, None);
    let mut w = RandomWorkload::new(Some(5), 8, 4, 0, TokenRange::default());
    // One at a time, so request n meets behavior n.
    let out = run(
        exec,
        &mut w,
        &cfg(Some(1)),
        &mut NoObserver,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(out.stop, StopReason::Completed);
    let kinds: Vec<Option<ErrorKind>> = out.records.iter().map(|r| r.error_kind).collect();
    assert_eq!(
        kinds,
        vec![
            None,
            Some(ErrorKind::Http),
            Some(ErrorKind::StreamBroken),
            Some(ErrorKind::Truncated),
            Some(ErrorKind::Timeout),
        ]
    );
    assert!(
        out.records[1].error.contains("500") && out.records[1].error.contains("engine overloaded")
    );
    assert_eq!(out.records[1].http_status, Some(500));
    assert_eq!(
        out.records[2].generated_text, "ab",
        "partial output is kept"
    );
    let s = summarize(&out.records, out.duration_s, &[99.0], &[]);
    assert_eq!((s.completed, s.failed), (1, 4));
    assert_eq!(s.errors_by_kind.len(), 4);
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_replaced() {
    let srv = serve(vec![Behavior::GoodThenClose]).await;
    let exec = executor(format!("http://{}", srv.addr), 5_000, None);
    let mut w = RandomWorkload::new(Some(4), 8, 4, 0, TokenRange::default());
    let out = run(
        exec,
        &mut w,
        &cfg(Some(1)),
        &mut NoObserver,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(out.records.iter().all(|r| r.success), "{:?}", out.records);
    assert_eq!(srv.connections.load(Ordering::SeqCst), 4);
}

/// vLLM's server closes a keep-alive connection after 5 s idle; a request sent on it used to
/// wait for --request-timeout (hyper queued it on a connection that had ended, and nothing
/// dropped the connection to hand it back). Here the server closes after 1 s idle, and every
/// request waits until the server has closed every idle connection in our pool.
#[tokio::test]
async fn a_request_after_the_server_closed_its_idle_connections_reaches_it() {
    let (srv, mut closed) = serve_closing_idle(Duration::from_secs(1)).await;
    let exec = executor(format!("http://{}", srv.addr), 5_000, None);
    // two warm connections, both closed by the server before the first request
    assert_eq!(exec.warm_up(2).await, 2);
    let mut idle = 2;
    for i in 0..3 {
        for _ in 0..idle {
            closed.recv().await.unwrap();
        }
        let out = exec.execute(prepared(i)).await;
        assert!(out.error.is_none(), "request {i}: {:?}", out.error);
        assert_eq!(out.generated_text, "Hello world");
        assert_eq!(srv.requests.load(Ordering::SeqCst), i + 1);
        idle = 1;
    }
    // 2 warm ones, then a fresh one per request
    assert_eq!(srv.connections.load(Ordering::SeqCst), 5);
}

/// The close can cross the request (the server's keep-alive timer fires as our request is on
/// the wire): the request is written but nothing comes back. On a reused connection it goes
/// once more on a fresh one; on a fresh connection the failure is the server's and is recorded.
#[tokio::test]
async fn a_reused_connection_closed_before_any_answer_is_retried_once_on_a_fresh_one() {
    let srv = serve(vec![
        Behavior::Good,
        Behavior::CloseUnanswered,
        Behavior::Good,
    ])
    .await;
    let exec = executor(format!("http://{}", srv.addr), 5_000, None);
    for i in 0..2 {
        let out = exec.execute(prepared(i)).await;
        assert!(out.error.is_none(), "request {i}: {:?}", out.error);
    }
    // requests: 0 (conn 1), 1 (conn 1, closed unanswered), 1 again (conn 2)
    assert_eq!(srv.requests.load(Ordering::SeqCst), 3);
    assert_eq!(srv.connections.load(Ordering::SeqCst), 2);

    let srv = serve(vec![Behavior::CloseUnanswered, Behavior::Good]).await;
    let exec = executor(format!("http://{}", srv.addr), 5_000, None);
    let out = exec.execute(prepared(0)).await;
    assert_eq!(out.error.unwrap().0, ErrorKind::StreamBroken);
    assert_eq!(srv.requests.load(Ordering::SeqCst), 1, "not resent");
}

#[tokio::test]
async fn connection_refused_is_recorded_per_request() {
    // A port nobody listens on: bound, its address noted, and closed before the run.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let exec = executor(format!("http://{addr}"), 2_000, None);
    let mut w = RandomWorkload::new(Some(3), 8, 4, 0, TokenRange::default());
    let out = run(
        exec,
        &mut w,
        &cfg(None),
        &mut NoObserver,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(out.records.len(), 3);
    assert!(
        out.records
            .iter()
            .all(|r| r.error_kind == Some(ErrorKind::ConnectionRefused)),
        "{:?}",
        out.records[0]
    );
}

#[test]
fn bad_base_urls_are_refused_with_the_flag_named() {
    let mk = |u: &str| {
        HttpExecutor::new(&HttpConfig {
            base_url: u.into(),
            api_key: None,
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        })
        .err()
        .unwrap()
    };
    assert!(mk("https://x").contains("https"));
    assert!(mk("localhost:8000").contains("--base-url"));
}
