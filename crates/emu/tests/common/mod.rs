//! Helpers for the HTTP tests: a server on port 0 (bound once, the listener handed over) and a
//! plain hyper client.
#![allow(dead_code)]

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use inferencelab_emu::engine::{EngineConfig, LmcacheTier};
use inferencelab_emu::server::{self, ServerConfig, ServerHandle};
use inferencelab_emu::timing::{GpuProfile, Timing};
use serde_json::Value;

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn engine(gpu_blocks: u64, lmcache: Option<(u32, u64)>) -> EngineConfig {
    let model = inferencelab_models::resolve("qwen-8b").unwrap();
    let timing = Timing::derive(&model, &GpuProfile::default(), None, None);
    let mut c = EngineConfig::new(model, timing, gpu_blocks);
    c.lmcache = lmcache.map(|(chunk_size, num_chunks)| LmcacheTier {
        chunk_size,
        num_chunks,
        policy: "lru".parse().unwrap(),
        mode: Default::default(),
    });
    c
}

pub fn config(gpu_blocks: u64, lmcache: Option<(u32, u64)>) -> ServerConfig {
    let mut c = ServerConfig::new(engine(gpu_blocks, lmcache), "qwen-8b");
    c.time_scale = 50.0;
    c.enable_prompt_tokens_details = true;
    c
}

pub async fn start(config: ServerConfig) -> ServerHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    server::spawn(listener, config).unwrap()
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub async fn request(
    c: &HttpClient,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub async fn post(c: &HttpClient, addr: SocketAddr, path: &str, body: &Value) -> Reply {
    request(c, addr, "POST", path, Some(body.to_string()), &[]).await
}

pub async fn get(c: &HttpClient, addr: SocketAddr, path: &str) -> Reply {
    request(c, addr, "GET", path, None, &[]).await
}

/// The `data:` payloads of an SSE body, checking the framing (`data: ...` + blank line).
pub fn sse_events(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "SSE body must end with a blank line"
    );
    body.split_terminator("\n\n")
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
                .to_string()
        })
        .collect()
}

/// `name{labels} value` lines of a metrics text, summed over label sets, by metric name.
pub fn metric(text: &str, name: &str) -> f64 {
    inferencelab_emu::metrics::parse_text(text)
        .unwrap()
        .into_iter()
        .filter(|(s, _)| s.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}
