//! Outputs, written as the run goes: the per-request JSONL (one line per finished request, the
//! moment it finishes), the result JSON (a superset of `vllm bench serve --save-result
//! --save-detailed`: same names for the shared fields) and the console summary (vLLM's
//! "Serving Benchmark Result" block plus cache and client sections).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use inferencelab_trace::time::Utc;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::metrics::{percentile_word, Stat, Summary};
use crate::prom::ScrapeSummary;
use crate::record::RequestRecord;
use crate::runner::{Observer, RunOutcome, StopReason};

/// Appends each record to `requests.jsonl` and flushes: a killed run keeps every line.
pub struct RecordWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl RecordWriter {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let f = File::create(path)?;
        Ok(RecordWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, r: &RequestRecord) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, r)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

impl Observer for RecordWriter {
    fn on_record(&mut self, record: &RequestRecord) -> std::io::Result<()> {
        self.write(record)
    }
}

/// The run's parameters, as vLLM names them, plus ours.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub backend: String,
    pub label: Option<String>,
    pub model_id: String,
    pub tokenizer_id: Option<String>,
    /// Requests in the workload (vLLM: `--num-prompts`).
    pub num_prompts: Option<u64>,
    /// A number or "inf" (vLLM writes the string "inf").
    pub request_rate: Value,
    pub burstiness: f64,
    pub max_concurrency: Option<usize>,
    // ours
    pub base_url: String,
    pub endpoint: String,
    pub workload: String,
    pub input_file: Option<String>,
    pub arrival: Value,
    pub time_scale: f64,
    pub seed: u64,
    pub duration_limit_s: Option<f64>,
    pub percentiles: Vec<f64>,
    pub slos_ms: Vec<(String, f64)>,
}

/// `YYYYmmdd-HHMMSS` in UTC (vLLM uses local time; we have no time-zone database).
pub fn date_string(t: SystemTime) -> String {
    let t = Utc::from_system_time(t);
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

fn put_stat(m: &mut Map<String, Value>, name: &str, s: &Stat) {
    m.insert(format!("mean_{name}_ms"), json!(s.mean));
    m.insert(format!("median_{name}_ms"), json!(s.median));
    m.insert(format!("std_{name}_ms"), json!(s.std));
    for (p, v) in &s.percentiles {
        m.insert(format!("p{}_{name}_ms", percentile_word(*p)), json!(v));
    }
}

/// The result JSON. Keys shared with vLLM keep vLLM's names and meaning; ours are added.
pub fn result_json(
    info: &RunInfo,
    outcome: &RunOutcome,
    s: &Summary,
    scrape: Option<&ScrapeSummary>,
) -> Value {
    let r = &outcome.records;
    let mut m = Map::new();
    m.insert(
        "date".into(),
        json!(date_string(
            UNIX_EPOCH + std::time::Duration::from_secs_f64(outcome.started_unix_s)
        )),
    );
    m.insert("endpoint_type".into(), json!(info.backend));
    m.insert("backend".into(), json!(info.backend));
    m.insert("label".into(), json!(info.label));
    m.insert("model_id".into(), json!(info.model_id));
    m.insert("tokenizer_id".into(), json!(info.tokenizer_id));
    m.insert("num_prompts".into(), json!(info.num_prompts));
    m.insert("request_rate".into(), info.request_rate.clone());
    m.insert("burstiness".into(), json!(info.burstiness));
    m.insert("max_concurrency".into(), json!(info.max_concurrency));
    m.insert("duration".into(), json!(s.duration_s));
    m.insert("completed".into(), json!(s.completed));
    m.insert("failed".into(), json!(s.failed));
    m.insert("total_input_tokens".into(), json!(s.total_input_tokens));
    m.insert("total_output_tokens".into(), json!(s.total_output_tokens));
    m.insert("request_throughput".into(), json!(s.request_throughput));
    m.insert("request_goodput".into(), json!(s.request_goodput));
    m.insert("output_throughput".into(), json!(s.output_throughput));
    m.insert(
        "total_token_throughput".into(),
        json!(s.total_token_throughput),
    );
    m.insert(
        "input_lens".into(),
        json!(r.iter().map(|x| x.prompt_len).collect::<Vec<_>>()),
    );
    m.insert("output_lens".into(), json!(s.output_lens));
    m.insert(
        "ttfts".into(),
        json!(r.iter().map(|x| x.ttft_s).collect::<Vec<_>>()),
    );
    m.insert(
        "itls".into(),
        json!(r.iter().map(|x| &x.itl_s).collect::<Vec<_>>()),
    );
    m.insert(
        "latencies".into(),
        json!(r.iter().map(|x| x.e2el_s).collect::<Vec<_>>()),
    );
    m.insert(
        "start_times".into(),
        json!(r.iter().map(|x| x.send_s).collect::<Vec<_>>()),
    );
    m.insert(
        "queue_times".into(),
        json!(r.iter().map(|x| x.client_lag_s).collect::<Vec<_>>()),
    );
    m.insert(
        "generated_texts".into(),
        json!(r.iter().map(|x| &x.generated_text).collect::<Vec<_>>()),
    );
    m.insert(
        "errors".into(),
        json!(r.iter().map(|x| &x.error).collect::<Vec<_>>()),
    );
    m.insert(
        "max_output_tokens_per_s".into(),
        json!(s.max_output_tokens_per_s),
    );
    m.insert(
        "max_concurrent_requests".into(),
        json!(s.max_concurrent_requests),
    );
    put_stat(&mut m, "ttft", &s.ttft);
    put_stat(&mut m, "tpot", &s.tpot);
    put_stat(&mut m, "itl", &s.itl);
    put_stat(&mut m, "e2el", &s.e2el);
    // --- ours ---
    put_stat(&mut m, "client_lag", &s.client_lag);
    m.insert("base_url".into(), json!(info.base_url));
    m.insert("endpoint".into(), json!(info.endpoint));
    m.insert("workload".into(), json!(info.workload));
    m.insert("input_file".into(), json!(info.input_file));
    m.insert("arrival".into(), info.arrival.clone());
    m.insert("time_scale".into(), json!(info.time_scale));
    m.insert("seed".into(), json!(info.seed));
    m.insert("duration_limit_s".into(), json!(info.duration_limit_s));
    m.insert("slos_ms".into(), json!(info.slos_ms));
    m.insert("sent".into(), json!(outcome.sent));
    m.insert("cancelled".into(), json!(outcome.cancelled));
    m.insert("stop_reason".into(), json!(outcome.stop));
    m.insert("errors_by_kind".into(), json!(s.errors_by_kind));
    m.insert("total_cached_tokens".into(), json!(s.total_cached_tokens));
    m.insert("cached_token_ratio".into(), json!(s.cached_token_ratio));
    m.insert(
        "requests_with_cache_hit".into(),
        json!(s.requests_with_cache_hit),
    );
    m.insert("requests_with_usage".into(), json!(s.requests_with_usage));
    m.insert(
        "cached_tokens".into(),
        json!(r.iter().map(|x| x.cached_tokens).collect::<Vec<_>>()),
    );
    m.insert(
        "scheduled_times".into(),
        json!(r.iter().map(|x| x.scheduled_s).collect::<Vec<_>>()),
    );
    if let Some(sc) = scrape {
        let mut d = Map::new();
        for name in SCRAPED_COUNTERS {
            if let Some(v) = sc.delta(name) {
                d.insert(name.to_string(), json!(v));
            }
        }
        m.insert(
            "server_metrics".into(),
            json!({"scrapes": sc.scrapes, "failures": sc.failures,
                   "last_error": sc.last_error, "deltas": d}),
        );
    }
    Value::Object(m)
}

/// Counters whose change over the run the result and the summary report.
pub const SCRAPED_COUNTERS: [&str; 7] = [
    "vllm:prompt_tokens_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:external_prefix_cache_queries_total",
    "vllm:external_prefix_cache_hits_total",
    "lmcache:num_requested_tokens_total",
    "lmcache:num_hit_tokens_total",
];

fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    out.push_str(&format!("{:<40} {:<10}\n", label, value));
}

fn header(out: &mut String, title: &str, fill: char) {
    let n = 50usize.saturating_sub(title.chars().count());
    let left = n / 2;
    let f = |k: usize| fill.to_string().repeat(k);
    out.push_str(&format!("{}{}{}\n", f(left), title, f(n - left)));
}

fn stat_block(out: &mut String, title: &str, short: &str, s: &Stat) {
    header(out, title, '-');
    line(
        out,
        &format!("Mean {short} (ms):"),
        format!("{:.2}", s.mean),
    );
    line(
        out,
        &format!("Median {short} (ms):"),
        format!("{:.2}", s.median),
    );
    for (p, v) in &s.percentiles {
        line(
            out,
            &format!("P{} {short} (ms):", percentile_word(*p)),
            format!("{v:.2}"),
        );
    }
}

/// The console summary: vLLM's block, then cache, client and failure sections.
pub fn summary_table(
    info: &RunInfo,
    outcome: &RunOutcome,
    s: &Summary,
    scrape: Option<&ScrapeSummary>,
) -> String {
    let mut o = String::new();
    header(&mut o, " Serving Benchmark Result ", '=');
    line(&mut o, "Successful requests:", s.completed);
    line(&mut o, "Failed requests:", s.failed);
    if let Some(c) = info.max_concurrency {
        line(&mut o, "Maximum request concurrency:", c);
    }
    if let Some(r) = info.request_rate.as_f64() {
        line(&mut o, "Request rate configured (RPS):", format!("{r:.2}"));
    }
    line(
        &mut o,
        "Benchmark duration (s):",
        format!("{:.2}", s.duration_s),
    );
    line(&mut o, "Total input tokens:", s.total_input_tokens);
    line(&mut o, "Total generated tokens:", s.total_output_tokens);
    line(
        &mut o,
        "Request throughput (req/s):",
        format!("{:.2}", s.request_throughput),
    );
    if let Some(g) = s.request_goodput {
        line(&mut o, "Request goodput (req/s):", format!("{g:.2}"));
    }
    line(
        &mut o,
        "Output token throughput (tok/s):",
        format!("{:.2}", s.output_throughput),
    );
    line(
        &mut o,
        "Peak output token throughput (tok/s):",
        format!("{:.2}", s.max_output_tokens_per_s),
    );
    line(
        &mut o,
        "Peak concurrent requests:",
        format!("{:.2}", s.max_concurrent_requests as f64),
    );
    line(
        &mut o,
        "Total token throughput (tok/s):",
        format!("{:.2}", s.total_token_throughput),
    );
    stat_block(&mut o, "Time to First Token", "TTFT", &s.ttft);
    stat_block(
        &mut o,
        "Time per Output Token (excl. 1st token)",
        "TPOT",
        &s.tpot,
    );
    stat_block(&mut o, "Inter-token Latency", "ITL", &s.itl);
    stat_block(&mut o, "End-to-end Latency", "E2EL", &s.e2el);
    kv_cache(&mut o, s);
    if let Some(sc) = scrape {
        server_metrics(&mut o, sc);
    }
    client_and_failures(&mut o, outcome, s);
    o.push_str(&"=".repeat(50));
    o.push('\n');
    o
}

/// The prompt tokens the API reported cached (`usage.prompt_tokens_details.cached_tokens`).
fn kv_cache(o: &mut String, s: &Summary) {
    header(o, "KV cache (usage.cached_tokens)", '-');
    line(o, "Prompt tokens:", s.total_input_tokens);
    line(o, "Cached prompt tokens:", s.total_cached_tokens);
    line(
        o,
        "Cached tokens (% of prompt):",
        format!("{:.2}", s.cached_token_ratio * 100.0),
    );
    line(
        o,
        "Requests with a cache hit:",
        format!("{} of {}", s.requests_with_cache_hit, s.completed),
    );
    if s.completed > 0 && s.requests_with_usage < s.completed {
        line(
            o,
            "Requests without usage:",
            s.completed - s.requests_with_usage,
        );
    }
}

/// What the server's `/metrics` counted over the run.
fn server_metrics(o: &mut String, sc: &ScrapeSummary) {
    header(o, "Server /metrics (change over the run)", '-');
    let ratio = |h: &str, q: &str| match (sc.delta(h), sc.delta(q)) {
        (Some(h), Some(q)) if q > 0.0 => Some((h, q, h / q * 100.0)),
        _ => None,
    };
    // Every figure says what it divides by: vLLM's "external" rate is over the tokens the
    // GPU missed, LMCache's own hit count includes tokens the GPU already had, and both
    // differ from the share of the prompt LMCache supplied (issue 15).
    if let Some((h, q, r)) = ratio(
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_queries_total",
    ) {
        line(
            o,
            "GPU prefix cache hits (% of prompt):",
            format!("{r:.2} ({h:.0}/{q:.0})"),
        );
    }
    if let Some((h, q, r)) = ratio(
        "vllm:external_prefix_cache_hits_total",
        "vllm:prompt_tokens_total",
    ) {
        line(
            o,
            "LMCache loaded (% of prompt):",
            format!("{r:.2} ({h:.0}/{q:.0})"),
        );
    }
    if let Some((h, q, r)) = ratio(
        "vllm:external_prefix_cache_hits_total",
        "vllm:external_prefix_cache_queries_total",
    ) {
        line(
            o,
            "LMCache loaded (% of GPU misses):",
            format!("{r:.2} ({h:.0}/{q:.0}; vLLM's external hit rate)"),
        );
    }
    if let Some(h) = sc.delta("lmcache:num_hit_tokens_total") {
        line(
            o,
            "LMCache lookup hits, GPU-held too:",
            format!("{h:.0} (lmcache:num_hit_tokens)"),
        );
    }
    line(
        o,
        "Scrapes (failed):",
        format!("{} ({})", sc.scrapes, sc.failures),
    );
}

/// The client's own figures (lag, sent, cut) and the failures by kind.
fn client_and_failures(o: &mut String, outcome: &RunOutcome, s: &Summary) {
    header(o, "Client", '-');
    line(
        o,
        "Mean client lag (ms):",
        format!("{:.2}", s.client_lag.mean),
    );
    if let Some((p, v)) = s.client_lag.percentiles.last() {
        line(
            o,
            &format!("P{} client lag (ms):", percentile_word(*p)),
            format!("{v:.2}"),
        );
    }
    line(o, "Requests sent:", outcome.sent);
    if outcome.cancelled > 0 {
        let why = match outcome.stop {
            StopReason::Duration => "Cut by the duration limit:",
            _ => "Cut by interrupt:",
        };
        line(o, why, outcome.cancelled);
    }
    if !s.errors_by_kind.is_empty() {
        header(o, "Failures", '-');
        for (k, n) in &s.errors_by_kind {
            line(o, &format!("{k}:"), n);
        }
        if let Some(r) = outcome.records.iter().find(|r| !r.success) {
            o.push_str(&format!(
                "first failure (request {}): {}\n",
                r.index,
                r.error.lines().next().unwrap_or("")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil() {
        assert_eq!(date_string(UNIX_EPOCH), "19700101-000000");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_709_251_199); // 2024-02-29 23:59:59
        assert_eq!(date_string(t), "20240229-235959");
    }
}
