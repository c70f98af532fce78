//! Waiting for a server to be healthy: a minimal HTTP/1.1 GET over loopback, polled until
//! it answers 200 or the process exits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

/// The body of an HTTP response (after the blank line).
pub(super) fn http_body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or(resp, |(_, b)| b)
}

pub(super) fn wait_healthy(child: &mut Child, port: u16, timeout: Duration) -> Result<(), String> {
    wait_http(child, port, "/health", timeout, "server").map_err(|e| {
        if e.contains("no 200") {
            format!("{e} (vllm.health_timeout_s)")
        } else {
            e
        }
    })
}

/// Poll `GET path` until it answers 200; fail when `child` exits first or after `timeout`.
pub(super) fn wait_http(
    child: &mut Child,
    port: u16,
    path: &str,
    timeout: Duration,
    what: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("{what} exited ({status}) before becoming healthy"));
        }
        if let Ok(resp) = http_get(port, path, Duration::from_secs(2)) {
            if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what} not healthy: no 200 from http://127.0.0.1:{port}{path} within {} s",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.1 GET over loopback (no client library in the runner).
pub fn http_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
