//! The server under hostile clients and a failing engine (issue 14): request ids are data, not
//! JSON or log syntax; idle connections are closed; a dead engine stops the server instead of
//! answering 503 behind a healthy /health.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use inferencelab_emu::tokenizer::{Tokenizer, WordTokenizer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Far beyond any case; only a hang reaches it.
const HANG_GUARD: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_hostile_request_id_stays_data_in_sse_json() {
    let server = start(config(2000, None)).await;
    let c = client();
    let body = json!({"prompt": "hello there", "max_tokens": 3, "stream": true});
    let id = r#"a"b\c d","injected":1,"x"#;
    let r = request(
        &c,
        server.addr,
        "POST",
        "/v1/completions",
        Some(body.to_string()),
        &[("x-request-id", id)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for event in sse_events(&r.body) {
        if event == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&event).unwrap_or_else(|e| panic!("{e}: {event}"));
        assert!(v.get("injected").is_none(), "{event}");
        // quotes, backslashes and spaces percent-encoded: one token in a log line
        assert_eq!(
            v["id"], "cmpl-a%22b%5Cc%20d%22,%22injected%22:1,%22x",
            "{event}"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let mut cfg = config(2000, None);
    cfg.keep_alive_timeout = Some(Duration::from_millis(300));
    let server = start(cfg).await;
    // a client that connects and sends nothing (or half a header) is let go
    for first in [&b""[..], b"GET /health HTTP/1.1\r\nHost: x\r\n"] {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(first).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the idle connection was never closed");
    }
    // and a keep-alive connection after its response
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the idle keep-alive connection was never closed"
    );
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    server.shutdown().await.unwrap();
}

/// Panics when it has to generate a token: a stand-in for any bug in the engine core thread.
struct Broken(WordTokenizer);

impl Tokenizer for Broken {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.0.encode(text)
    }
    fn decode(&self, ids: &[u32]) -> String {
        self.0.decode(ids)
    }
    fn sample(&self, _: u64) -> u32 {
        panic!("broken tokenizer")
    }
}

#[tokio::test]
async fn a_panicking_engine_stops_the_server_with_an_error() {
    let mut cfg = config(2000, None);
    cfg.tokenizer = Arc::new(Broken(WordTokenizer::default()));
    let server = start(cfg).await;
    let c = client();
    let addr = server.addr;
    assert_eq!(get(&c, addr, "/health").await.status, 200);
    // the request meets the panic; whatever it gets, the server must then stop
    let body = json!({"prompt": "hello there", "max_tokens": 3});
    let _ = tokio::time::timeout(
        HANG_GUARD,
        c.request(
            hyper::Request::post(format!("http://{addr}/v1/completions"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(hyper::body::Bytes::from(
                    body.to_string(),
                )))
                .unwrap(),
        ),
    )
    .await;
    let err = tokio::time::timeout(HANG_GUARD, server.shutdown())
        .await
        .expect("the server did not stop")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("engine core thread") && err.contains("broken tokenizer"),
        "{err}"
    );
}
