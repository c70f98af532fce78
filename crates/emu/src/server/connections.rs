//! The connection loop: one hyper HTTP/1 connection per accepted socket, with the header-read
//! (keep-alive idle) timeout `axum::serve` cannot set, and a graceful stop.

use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

/// Accept connections until `stop`, then let the open ones finish. One hyper HTTP/1 connection
/// per socket (what `axum::serve` does, plus the header-read / keep-alive timeout it cannot set).
pub(super) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    keep_alive_timeout: Option<Duration>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // out of file descriptors and the like: wait, as axum::serve does, instead
                    // of spinning; a failed handshake only concerns that client
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                    ) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|&s| s).await; } => break,
        };
        // Every token is its own small write: without TCP_NODELAY, Nagle's algorithm holds a
        // write back while the previous one is unacknowledged, and the client's delayed ACK can
        // stretch that to tens of milliseconds.
        let _ = tcp.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(keep_alive_timeout);
        let conn =
            builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
