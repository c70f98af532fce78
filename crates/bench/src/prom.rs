//! `/metrics` scraping: a Prometheus text-format (0.0.4) parser that keeps the `vllm:*` and
//! `lmcache:*` series, and a scraper task that appends one JSON line per scrape to a file while
//! the run goes on.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::executor::HttpExecutor;

/// Series prefixes we keep.
pub const PREFIXES: [&str; 2] = ["vllm:", "lmcache:"];

/// Parse Prometheus text: `name{label="v",...} value [timestamp]` lines, `#` lines skipped.
/// Returns `series -> value`, the series written `name{labels}` as on the wire (label values
/// unescaped and re-quoted in their original order). Only series whose name starts with one of
/// `prefixes` are kept (all when empty). Malformed lines are skipped: a scrape never fails the
/// run.
pub fn parse_text(text: &str, prefixes: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !prefixes.is_empty() && !prefixes.iter().any(|p| line.starts_with(p)) {
            continue;
        }
        if let Some((series, value)) = parse_line(line) {
            out.insert(series, value);
        }
    }
    out
}

fn parse_line(line: &str) -> Option<(String, f64)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut series = name.to_string();
    if rest.starts_with('{') {
        // Labels: key="value" pairs; values may contain escaped quotes, commas and braces.
        let b = rest.as_bytes();
        let mut i = 1;
        let mut labels = Vec::new();
        loop {
            while i < b.len() && (b[i] == b',' || b[i] == b' ') {
                i += 1;
            }
            if i >= b.len() {
                return None;
            }
            if b[i] == b'}' {
                i += 1;
                break;
            }
            let eq = rest[i..].find('=')? + i;
            let key = rest[i..eq].trim();
            i = eq + 1;
            if b.get(i) != Some(&b'"') {
                return None;
            }
            i += 1;
            let mut value = String::new();
            loop {
                let c = *b.get(i)?;
                match c {
                    b'\\' => {
                        match b.get(i + 1)? {
                            b'n' => value.push('\n'),
                            b'"' => value.push('"'),
                            b'\\' => value.push('\\'),
                            other => value.push(*other as char),
                        }
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        break;
                    }
                    _ => {
                        let ch = rest[i..].chars().next()?;
                        value.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            labels.push(format!("{key}={value:?}"));
        }
        if !labels.is_empty() {
            series.push('{');
            series.push_str(&labels.join(","));
            series.push('}');
        }
        rest = &rest[i..];
    }
    let value = rest.split_whitespace().next()?;
    let v = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some((series, v))
}

/// Sum of every series of metric `name` (all label sets), e.g. `vllm:prefix_cache_hits_total`.
pub fn sum_metric(snapshot: &BTreeMap<String, f64>, name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for (k, v) in snapshot {
        let base = k.split('{').next().unwrap_or(k);
        if base == name {
            found = true;
            sum += v;
        }
    }
    found.then_some(sum)
}

#[derive(Debug, Clone, Serialize)]
struct ScrapeLine<'a> {
    t_s: f64,
    unix_s: f64,
    metrics: &'a BTreeMap<String, f64>,
}

/// What the scraper saw: the first and last snapshots, for deltas.
#[derive(Debug, Clone, Default)]
pub struct ScrapeSummary {
    pub scrapes: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    pub first: Option<BTreeMap<String, f64>>,
    pub last: Option<BTreeMap<String, f64>>,
}

impl ScrapeSummary {
    /// `last - first` of a counter summed over its label sets.
    pub fn delta(&self, name: &str) -> Option<f64> {
        Some(
            sum_metric(self.last.as_ref()?, name)?
                - sum_metric(self.first.as_ref()?, name).unwrap_or(0.0),
        )
    }
}

async fn scrape_once(
    client: &HttpExecutor,
    interval: Duration,
    sink: &mut (dyn Write + Send),
    start: Instant,
    s: &mut ScrapeSummary,
) {
    let timeout = interval.max(Duration::from_secs(2));
    match client.get_text("/metrics", timeout).await {
        Ok((200, text)) => {
            let snap = parse_text(&text, &PREFIXES);
            let line = ScrapeLine {
                t_s: start.elapsed().as_secs_f64(),
                unix_s: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                metrics: &snap,
            };
            if let Ok(mut l) = serde_json::to_vec(&line) {
                l.push(b'\n');
                let _ = sink.write_all(&l).and_then(|_| sink.flush());
            }
            s.scrapes += 1;
            if s.first.is_none() {
                s.first = Some(snap.clone());
            }
            s.last = Some(snap);
        }
        Ok((status, _)) => {
            s.failures += 1;
            s.last_error = Some(format!("GET /metrics: HTTP {status}"));
        }
        Err(e) => {
            s.failures += 1;
            s.last_error = Some(e);
        }
    }
}

/// A running scraper; `stop` takes one last scrape and returns the summary.
pub struct Scraper {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<ScrapeSummary>,
}

impl Scraper {
    /// Scrape `{base}/metrics` once now (the baseline of every delta, taken before the run
    /// starts), then every `interval` in a task, appending one line per scrape to `sink`.
    pub async fn start(
        client: Arc<HttpExecutor>,
        interval: Duration,
        mut sink: Box<dyn Write + Send>,
        start: Instant,
    ) -> Scraper {
        // a zero period panics tokio's interval (in the task: the run would go on unscraped)
        let interval = interval.max(Duration::from_millis(10));
        let mut s = ScrapeSummary::default();
        scrape_once(&client, interval, &mut *sink, start, &mut s).await;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let last = tokio::select! {
                    _ = tick.tick() => false,
                    _ = stopped.wait_for(|&v| v) => true,
                };
                scrape_once(&client, interval, &mut *sink, start, &mut s).await;
                if last {
                    break;
                }
            }
            s
        });
        Scraper { stop, task }
    }

    pub async fn stop(self) -> ScrapeSummary {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vllm_and_lmcache_series() {
        let text = r#"# HELP vllm:prefix_cache_hits_total Prefix cache hits.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="qwen"} 1234.0
vllm:prefix_cache_queries_total{engine="0",model_name="qwen"} 2000
vllm:kv_cache_usage_perc{engine="0",model_name="a \"b\", c{}"} 0.25 1700000000000
lmcache:num_hit_tokens_total 99
python_gc_objects_collected_total{generation="0"} 5
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="q"} 3
garbage line
"#;
        let m = parse_text(text, &PREFIXES);
        assert_eq!(
            m["vllm:prefix_cache_hits_total{engine=\"0\",model_name=\"qwen\"}"],
            1234.0
        );
        assert_eq!(m["lmcache:num_hit_tokens_total"], 99.0);
        assert_eq!(
            m["vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"a \\\"b\\\", c{}\"}"],
            0.25
        );
        assert!(!m.keys().any(|k| k.starts_with("python")));
        assert_eq!(m.len(), 5);
        assert_eq!(
            sum_metric(&m, "vllm:prefix_cache_queries_total"),
            Some(2000.0)
        );
        assert_eq!(sum_metric(&m, "vllm:nope"), None);
        let s = ScrapeSummary {
            first: Some(parse_text("vllm:x_total 5\n", &PREFIXES)),
            last: Some(parse_text("vllm:x_total 12\n", &PREFIXES)),
            ..Default::default()
        };
        assert_eq!(s.delta("vllm:x_total"), Some(7.0));
    }
}
