//! One benchmark session against a server: ask it its model, warm the connections, scrape
//! `/metrics` beside the run, send the workload until it is done, limited or stopped.
//!
//! The CLI's `bench`, `replay` and the demo each describe a session and call [`run`]; what
//! they print stays theirs.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::executor::HttpExecutor;
use crate::prom::{ScrapeSummary, Scraper};
use crate::runner::{self, Observer, RunConfig, RunOutcome};
use crate::workload::Workload;

/// How a session runs beside its [`RunConfig`].
pub struct Session {
    pub run: RunConfig,
    /// Scrape `/metrics` every this often into the sink, one JSON line per scrape (`None`: no
    /// scraping).
    pub scrape: Option<(Duration, Box<dyn Write + Send>)>,
    /// Connections opened before the first request (vLLM's client keeps a pool too).
    pub warmup_connections: usize,
}

/// Run the session: the outcome and, when scraped, what `/metrics` saw.
pub async fn run(
    exec: Arc<HttpExecutor>,
    session: Session,
    workload: &mut dyn Workload,
    observer: &mut dyn Observer,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<(RunOutcome, Option<ScrapeSummary>)> {
    let scraper = match session.scrape {
        Some((interval, sink)) => {
            Some(Scraper::start(exec.clone(), interval, sink, tokio::time::Instant::now()).await)
        }
        None => None,
    };
    if session.warmup_connections > 0 {
        exec.warm_up(session.warmup_connections).await;
    }
    let outcome = runner::run(exec.clone(), workload, &session.run, observer, stop).await?;
    let scrape = match scraper {
        Some(s) => Some(s.stop().await),
        None => None,
    };
    Ok((outcome, scrape))
}

/// The model the server serves: the first of its `/v1/models`. The error says what to give
/// instead.
pub async fn served_model(exec: &HttpExecutor) -> Result<String, String> {
    let (status, text) = exec
        .get_text("/v1/models", Duration::from_secs(30))
        .await
        .map_err(|e| {
            format!(
                "cannot reach {}: {e}\nIs the server running? (check --base-url, or give --model)",
                exec.base_url()
            )
        })?;
    if status != 200 {
        return Err(format!(
            "{}/v1/models answered HTTP {status}; give the model with --model",
            exec.base_url()
        ));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("/v1/models is not JSON: {e}"))?;
    v.pointer("/data/0/id")
        .and_then(|x| x.as_str())
        .map(str::to_string)
        .ok_or_else(|| "/v1/models lists no model; give --model".to_string())
}
