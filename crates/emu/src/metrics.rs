//! `/metrics`: Prometheus text exposition (format 0.0.4) with vLLM's metric names, labels and
//! histogram buckets (`vllm/v1/metrics/loggers.py`, `PrometheusStatLogger`) and LMCache's
//! (`lmcache/observability.py`). Counters carry the `_total` suffix on the wire, as
//! `prometheus_client` writes them. Latencies are on the emulated clock.

use std::fmt::Write;

use crate::engine::{Counters, MpMetrics};

/// A Prometheus histogram: cumulative on render.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, x: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| x <= b) {
            self.counts[i] += 1;
        }
        self.sum += x;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// vLLM's `time_to_first_token_seconds` buckets.
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's `inter_token_latency_seconds` and `request_time_per_output_token_seconds` buckets.
pub const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's `request_latency_buckets` (e2e, queue, inference, prefill, decode).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// vLLM's `iteration_tokens_total` buckets.
pub const ITERATION_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
/// `build_1_2_5_buckets(max_model_len)` for the default max_model_len of 32768.
pub const TOKEN_COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
];

/// vLLM's `build_1_2_5_buckets(max_model_len)`: 1, 2, 5, 10, 20, 50, ... up to the length.
pub fn buckets_1_2_5(max: u64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut exp = 1u64;
    'outer: loop {
        for m in [1, 2, 5] {
            let v = m * exp;
            if v > max {
                break 'outer;
            }
            out.push(v as f64);
        }
        exp *= 10;
    }
    out
}

/// `request_success` finish reasons, in vLLM's order.
pub const FINISH_REASONS: [&str; 5] = ["stop", "length", "abort", "error", "repetition"];

/// Everything `/metrics` shows, updated by the scheduler after every step.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub counters: Counters,
    pub running: usize,
    pub waiting: usize,
    pub kv_cache_usage: f64,
    pub cpu_chunks: Option<(u64, u64)>,
    pub lmcache: bool,
    /// LMCache's multi-process server (`serve --lmcache-mode mp`): its `lmcache_mp_*` families
    /// replace the in-process `lmcache:*` ones.
    pub lmcache_mp: Option<MpMetrics>,
    /// The engine's preemptions so far (`vllm:num_preemptions`).
    pub num_preemptions: u64,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub tpot_request: Histogram,
    pub e2e: Histogram,
    pub queue: Histogram,
    pub inference: Histogram,
    pub prefill: Histogram,
    pub decode: Histogram,
    pub iteration_tokens: Histogram,
    pub request_prompt_tokens: Histogram,
    pub request_generation_tokens: Histogram,
    pub request_max_num_generation_tokens: Histogram,
    pub request_params_n: Histogram,
    pub request_params_max_tokens: Histogram,
    pub request_num_preemptions: Histogram,
    pub request_prefill_kv_computed_tokens: Histogram,
    /// Finished requests per [`FINISH_REASONS`] entry.
    pub finished_by_reason: [u64; 5],
    /// `vllm:cache_config_info` labels (name, value), set by the server.
    pub cache_config: Vec<(String, String)>,
    /// Unix seconds of the server start (every `_created` series).
    pub created: f64,
}

impl Metrics {
    pub fn new(lmcache: bool) -> Self {
        Metrics {
            counters: Counters::default(),
            running: 0,
            waiting: 0,
            kv_cache_usage: 0.0,
            cpu_chunks: None,
            lmcache,
            lmcache_mp: None,
            num_preemptions: 0,
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            tpot_request: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(LATENCY_BUCKETS),
            queue: Histogram::new(LATENCY_BUCKETS),
            inference: Histogram::new(LATENCY_BUCKETS),
            prefill: Histogram::new(LATENCY_BUCKETS),
            decode: Histogram::new(LATENCY_BUCKETS),
            iteration_tokens: Histogram::new(ITERATION_BUCKETS),
            request_prompt_tokens: Histogram::new(TOKEN_COUNT_BUCKETS),
            request_generation_tokens: Histogram::new(TOKEN_COUNT_BUCKETS),
            request_max_num_generation_tokens: Histogram::new(TOKEN_COUNT_BUCKETS),
            request_params_n: Histogram::new(&[1.0, 2.0, 5.0, 10.0, 20.0]),
            request_params_max_tokens: Histogram::new(TOKEN_COUNT_BUCKETS),
            request_num_preemptions: Histogram::new(&[1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0]),
            request_prefill_kv_computed_tokens: Histogram::new(TOKEN_COUNT_BUCKETS),
            finished_by_reason: [0; 5],
            cache_config: Vec::new(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    /// The token-count histograms' buckets for `max_model_len`, as vLLM builds them.
    pub fn set_max_model_len(&mut self, max_model_len: u32) {
        let b = buckets_1_2_5(max_model_len as u64);
        for h in [
            &mut self.request_prompt_tokens,
            &mut self.request_generation_tokens,
            &mut self.request_max_num_generation_tokens,
            &mut self.request_params_max_tokens,
            &mut self.request_prefill_kv_computed_tokens,
        ] {
            *h = Histogram::new(&b);
        }
    }

    /// A parent request's parameters (one per prompt), as vLLM observes them.
    pub fn observe_request_params(&mut self, n: u64, max_tokens: u64, _longest: u64) {
        self.request_params_n.observe(n as f64);
        self.request_params_max_tokens.observe(max_tokens as f64);
        self.request_max_num_generation_tokens
            .observe(max_tokens as f64);
    }

    /// A finished request's reason (`stop`, `length`, `abort`, ...).
    pub fn count_finish(&mut self, reason: &str) {
        if let Some(i) = FINISH_REASONS.iter().position(|r| *r == reason) {
            self.finished_by_reason[i] += 1;
        }
    }

    /// The exposition text: vLLM's families in the order vLLM 0.32 writes them, then
    /// LMCache's (in-process `lmcache:*` or the multi-process server's `lmcache_mp_*`).
    pub fn render(&self, model_name: &str) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let model = escape_label(model_name);
        let labels = format!("model_name=\"{model}\",engine=\"0\"");
        let created = num(self.created);
        self.render_scheduler_gauges(&mut out, &labels);
        self.render_token_counters(&mut out, &labels, &created);
        self.render_prompt_token_sources(&mut out, &labels, &created);
        self.render_request_outcomes(&mut out, &labels, &model, &created);
        self.render_waiting_by_reason(&mut out, &labels);
        render_engine_sleep_state(&mut out, &labels);
        self.render_histograms(&mut out, &labels, &created);
        self.render_cache_config_info(&mut out);
        if let Some(mp) = &self.lmcache_mp {
            self.render_lmcache_mp(&mut out, mp, model_name);
        } else if self.lmcache {
            let lm_labels = format!("model_name=\"{model}\",worker_id=\"0\"");
            self.render_lmcache(&mut out, &lm_labels, &created);
        }
        out
    }

    /// `vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`.
    fn render_scheduler_gauges(&self, out: &mut String, labels: &str) {
        gauge(
            out,
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            labels,
            self.running as f64,
        );
        gauge(
            out,
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            labels,
            self.waiting as f64,
        );
        gauge(
            out,
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            labels,
            self.kv_cache_usage,
        );
    }

    /// The plain counters: FLOPs estimates, prefix cache queries and hits, preemptions, prompt
    /// and generation tokens, multi-modal cache, cached prompt tokens.
    fn render_token_counters(&self, out: &mut String, labels: &str, created: &str) {
        let c = &self.counters;
        let mut counters: Vec<(&str, &str, u64)> = vec![
            (
                "vllm:estimated_flops_per_gpu",
                "Estimated number of floating point operations per GPU (for Model Flops \
                 Utilization calculations).",
                0,
            ),
            (
                "vllm:estimated_read_bytes_per_gpu",
                "Estimated number of bytes read from memory per GPU (for Model Flops \
                 Utilization calculations).",
                0,
            ),
            (
                "vllm:estimated_write_bytes_per_gpu",
                "Estimated number of bytes written to memory per GPU (for Model Flops \
                 Utilization calculations).",
                0,
            ),
        ];
        let more: [(&str, &str, u64); 7] = [
            (
                "vllm:prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens.",
                c.prefix_cache_queries,
            ),
            (
                "vllm:prefix_cache_hits",
                "Prefix cache hits, in terms of number of cached tokens.",
                c.prefix_cache_hits,
            ),
            (
                "vllm:external_prefix_cache_queries",
                "External prefix cache queries from KV connector cross-instance cache sharing, \
                 in terms of number of queried tokens.",
                c.external_prefix_cache_queries,
            ),
            (
                "vllm:external_prefix_cache_hits",
                "External prefix cache hits from KV connector cross-instance cache sharing, in \
                 terms of number of cached tokens.",
                c.external_prefix_cache_hits,
            ),
            (
                "vllm:num_preemptions",
                "Cumulative number of preemption from the engine.",
                self.num_preemptions,
            ),
            (
                "vllm:prompt_tokens",
                "Number of prefill tokens processed.",
                c.prompt_tokens,
            ),
            (
                "vllm:generation_tokens",
                "Number of generation tokens processed.",
                c.generation_tokens,
            ),
        ];
        counters.extend(more);
        counters.extend([
            (
                "vllm:mm_cache_queries",
                "Multi-modal cache queries, in terms of number of queried items.",
                0,
            ),
            (
                "vllm:mm_cache_hits",
                "Multi-modal cache hits, in terms of number of cached items.",
                0,
            ),
            (
                "vllm:prompt_tokens_cached",
                "Number of cached prompt tokens (local + external).",
                c.prefix_cache_hits + c.external_prefix_cache_hits,
            ),
        ]);
        for (name, help, v) in counters {
            counter(out, name, help, labels, v, created);
        }
    }

    /// `vllm:prompt_tokens_by_source` and `vllm:prompt_tokens_cached_by_source`.
    fn render_prompt_token_sources(&self, out: &mut String, labels: &str, created: &str) {
        let c = &self.counters;
        let computed = c
            .prompt_tokens
            .saturating_sub(c.prefix_cache_hits + c.external_prefix_cache_hits);
        labelled_counter(
            out,
            "vllm:prompt_tokens_by_source",
            "Number of prompt tokens by source.",
            labels,
            "source",
            &[
                ("local_compute", computed),
                ("local_cache_hit", c.prefix_cache_hits),
                ("external_kv_transfer", c.external_prefix_cache_hits),
            ],
            created,
        );
        labelled_counter(
            out,
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), \
             host (offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or \
             external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + \
             vllm:external_prefix_cache_hits.",
            labels,
            "source",
            &[
                ("device", c.prefix_cache_hits),
                ("host", 0),
                ("p2p", 0),
                ("disk", 0),
                ("external_unspecified", c.external_prefix_cache_hits),
            ],
            created,
        );
    }

    /// `vllm:request_success` by finish reason and `vllm:admission_rejections` by reason.
    fn render_request_outcomes(&self, out: &mut String, labels: &str, model: &str, created: &str) {
        let reasons: Vec<(&str, u64)> = FINISH_REASONS
            .iter()
            .zip(self.finished_by_reason)
            .map(|(r, v)| (*r, v))
            .collect();
        labelled_counter(
            out,
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels,
            "finished_reason",
            &reasons,
            created,
        );
        labelled_counter(
            out,
            "vllm:admission_rejections",
            "Number of admission attempts rejected by a queue limit, by reason.",
            &format!("model_name=\"{model}\""),
            "reason",
            &[("max_num_queued_reqs", 0), ("max_num_queued_tokens", 0)],
            created,
        );
    }

    /// `vllm:num_requests_waiting_by_reason`: every waiting request waits for capacity.
    fn render_waiting_by_reason(&self, out: &mut String, labels: &str) {
        let _ = writeln!(
            out,
            "# HELP vllm:num_requests_waiting_by_reason Number of waiting requests by reason. \
             Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred \
             by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all \
             reasons equals vllm:num_requests_waiting.\n# TYPE vllm:num_requests_waiting_by_reason gauge"
        );
        for (r, v) in [("capacity", self.waiting), ("deferred", 0)] {
            let _ = writeln!(
                out,
                "vllm:num_requests_waiting_by_reason{{{labels},reason=\"{r}\"}} {}",
                num(v as f64)
            );
        }
    }

    /// The histograms: request parameters, latencies, iteration and request token counts.
    fn render_histograms(&self, out: &mut String, labels: &str, created: &str) {
        let hists: [(&str, &str, &Histogram); 16] = [
            (
                "vllm:request_max_num_generation_tokens",
                "Histogram of maximum number of requested generation tokens.",
                &self.request_max_num_generation_tokens,
            ),
            (
                "vllm:request_params_n",
                "Histogram of the n request parameter.",
                &self.request_params_n,
            ),
            (
                "vllm:request_params_max_tokens",
                "Histogram of the max_tokens request parameter.",
                &self.request_params_max_tokens,
            ),
            (
                "vllm:request_num_preemptions",
                "Histogram of the number of times a request was preempted.",
                &self.request_num_preemptions,
            ),
            (
                "vllm:request_prefill_kv_computed_tokens",
                "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
                &self.request_prefill_kv_computed_tokens,
            ),
            (
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
                &self.ttft,
            ),
            (
                "vllm:inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.",
                &self.itl,
            ),
            (
                "vllm:request_time_per_output_token_seconds",
                "Histogram of time_per_output_token_seconds per request.",
                &self.tpot_request,
            ),
            (
                "vllm:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
                &self.e2e,
            ),
            (
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                &self.queue,
            ),
            (
                "vllm:request_inference_time_seconds",
                "Histogram of time spent in RUNNING phase for request.",
                &self.inference,
            ),
            (
                "vllm:request_prefill_time_seconds",
                "Histogram of time spent in PREFILL phase for request.",
                &self.prefill,
            ),
            (
                "vllm:request_decode_time_seconds",
                "Histogram of time spent in DECODE phase for request.",
                &self.decode,
            ),
            (
                "vllm:iteration_tokens_total",
                "Histogram of number of tokens per engine_step.",
                &self.iteration_tokens,
            ),
            (
                "vllm:request_prompt_tokens",
                "Number of prefill tokens processed.",
                &self.request_prompt_tokens,
            ),
            (
                "vllm:request_generation_tokens",
                "Number of generation tokens processed.",
                &self.request_generation_tokens,
            ),
        ];
        for (name, help, h) in hists {
            histogram(out, name, help, labels, h, created);
        }
    }

    /// `vllm:cache_config_info`, when the server set its labels.
    fn render_cache_config_info(&self, out: &mut String) {
        if !self.cache_config.is_empty() {
            let mut l = self.cache_config.clone();
            l.push(("engine".into(), "0".into()));
            l.sort();
            let text: Vec<String> = l
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = writeln!(
                out,
                "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{{}}} 1.0",
                text.join(",")
            );
        }
    }

    /// The in-process LMCache connector's `lmcache:*` families.
    fn render_lmcache(&self, out: &mut String, lm_labels: &str, created: &str) {
        let c = &self.counters;
        let (chunks, evictions) = self.cpu_chunks.unwrap_or((0, 0));
        let lm: [(&str, &str, u64); 9] = [
            (
                "lmcache:num_lookup_requests",
                "Total number of lookup requests",
                c.lmcache_lookups,
            ),
            (
                "lmcache:num_retrieve_requests",
                "Total number of retrieve requests sent to lmcache",
                c.lmcache_retrieves,
            ),
            (
                "lmcache:num_store_requests",
                "Total number of store requests sent to lmcache",
                c.lmcache_stores,
            ),
            (
                "lmcache:num_requested_tokens",
                "Total number of tokens requested from lmcache",
                c.lmcache_requested_tokens,
            ),
            (
                "lmcache:num_hit_tokens",
                "Total number of tokens hit in lmcache",
                c.lmcache_hit_tokens,
            ),
            (
                "lmcache:num_stored_tokens",
                "Total number of tokens stored in lmcache",
                c.lmcache_stored_tokens,
            ),
            (
                "lmcache:num_vllm_hit_tokens",
                "Number of hit tokens in vllm",
                c.prefix_cache_hits,
            ),
            (
                "lmcache:local_cpu_evict_count",
                "Total number of evict in local cpu backend",
                evictions,
            ),
            (
                "lmcache:local_cpu_evict_keys_count",
                "Total number of evict keys in local cpu backend",
                evictions,
            ),
        ];
        for (name, help, v) in lm {
            counter(out, name, help, lm_labels, v, created);
        }
        gauge(
            out,
            "lmcache:local_cpu_hot_cache_count",
            "The size of the hot cache",
            lm_labels,
            chunks as f64,
        );
    }
}

/// `vllm:engine_sleep_state`: the emulator never sleeps.
fn render_engine_sleep_state(out: &mut String, labels: &str) {
    let _ = writeln!(
        out,
        "# HELP vllm:engine_sleep_state Engine sleep state; awake = 0 means engine is \
             sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level \
             1; discard_all = 1 means sleep level 2.\n# TYPE vllm:engine_sleep_state gauge"
    );
    for (st, v) in [
        ("awake", 1.0),
        ("weights_offloaded", 0.0),
        ("discard_all", 0.0),
    ] {
        let _ = writeln!(
            out,
            "vllm:engine_sleep_state{{{labels},sleep_state=\"{st}\"}} {}",
            num(v)
        );
    }
}

impl Metrics {
    /// `lmcache server`'s families as LMCache 0.5.6 writes them (OpenTelemetry's Prometheus
    /// exporter: `_total` counters without `_created`, `otel_scope_*` labels; names, help and
    /// labels copied from a real server's `/metrics`). Its L1 has no L2 here, so
    /// `lookup_hit_l1` equals `lookup_hit`.
    fn render_lmcache_mp(&self, out: &mut String, mp: &MpMetrics, model: &str) {
        let scope = |s: &str| {
            format!("otel_scope_name=\"lmcache.{s}\",otel_scope_schema_url=\"\",otel_scope_version=\"\"")
        };
        let lookup = format!(
            "cache_salt=\"\",model_name=\"{}\",{}",
            escape_label(model),
            scope("lookup")
        );
        let l1 = format!("l1_tag=\"_default\",{}", scope("l1"));
        let c = &mp.counters;
        let families: [(&str, &str, &str, u64); 5] = [
            (
                "lmcache_mp_l1_write_chunks",
                "Total chunks written to L1",
                &l1,
                c.l1_write_chunks,
            ),
            (
                "lmcache_mp_l1_read_chunks",
                "Total chunks read from L1",
                &l1,
                c.l1_read_chunks,
            ),
            (
                "lmcache_mp_lookup_requested_tokens",
                "Total tokens submitted for lookup (denominator of the L1+L2 token-level hit \
                 rate). Only chunk-aligned tokens are counted.",
                &lookup,
                c.lookup_requested_tokens,
            ),
            (
                "lmcache_mp_lookup_hit_tokens",
                "Total tokens found in L1+L2 during lookup (numerator of the L1+L2 token-level \
                 hit rate). Counts the contiguous prefix hit only.",
                &lookup,
                c.lookup_hit_tokens,
            ),
            (
                "lmcache_mp_lookup_hit_l1_tokens",
                "Of lookup_hit: tokens served from objects L1 already held (from the storage \
                 manager's per-tier hit counts).",
                &lookup,
                c.lookup_hit_tokens,
            ),
        ];
        for (name, help, labels, v) in families {
            let _ = writeln!(
                out,
                "# HELP {name}_total {help}\n# TYPE {name}_total counter\n{name}_total{{{labels}}} {}",
                num(v as f64)
            );
        }
        gauge(
            out,
            "lmcache_mp_l1_usage_ratio",
            "L1 used/total ratio (0.0–1.0)",
            &format!(
                "backend=\"dram\",l1_tag=\"_default\",{}",
                scope("l1_manager")
            ),
            mp.l1_usage_ratio,
        );
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as Prometheus' Python client writes it.
fn num(x: f64) -> String {
    if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

fn gauge(out: &mut String, name: &str, help: &str, labels: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    let _ = writeln!(out, "{name}{{{labels}}} {}", num(v));
}

/// A counter as `prometheus_client` writes it: `_total`, then its `_created` gauge.
fn counter(out: &mut String, name: &str, help: &str, labels: &str, v: u64, created: &str) {
    labelled_counter(out, name, help, labels, "", &[("", v)], created);
}

/// A counter family with one extra label (`label=""`: none).
fn labelled_counter(
    out: &mut String,
    name: &str,
    help: &str,
    labels: &str,
    label: &str,
    values: &[(&str, u64)],
    created: &str,
) {
    let l = |v: &str| {
        if label.is_empty() {
            labels.to_string()
        } else {
            format!("{labels},{label}=\"{v}\"")
        }
    };
    let _ = writeln!(
        out,
        "# HELP {name}_total {help}\n# TYPE {name}_total counter"
    );
    for (v, x) in values {
        let _ = writeln!(out, "{name}_total{{{}}} {}", l(v), num(*x as f64));
    }
    let _ = writeln!(
        out,
        "# HELP {name}_created {help}\n# TYPE {name}_created gauge"
    );
    for (v, _) in values {
        let _ = writeln!(out, "{name}_created{{{}}} {created}", l(v));
    }
}

fn histogram(out: &mut String, name: &str, help: &str, labels: &str, h: &Histogram, created: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cum = 0u64;
    for (b, c) in h.bounds.iter().zip(&h.counts) {
        cum += c;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{}\"}} {}",
            num(*b),
            num(cum as f64)
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
        num(h.count as f64)
    );
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", num(h.count as f64));
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", num(h.sum));
    let _ = writeln!(
        out,
        "# HELP {name}_created {help}\n# TYPE {name}_created gauge\n{name}_created{{{labels}}} {created}"
    );
}

/// Parse Prometheus text into `(series with labels, value)`; `Err` names the first bad line.
/// Used by tests and by anyone scraping the emulator.
pub fn parse_text(text: &str) -> Result<Vec<(String, f64)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("line {}: no value: {line}", i + 1))?;
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!("line {}: bad metric name {name:?}", i + 1));
        }
        if name_end < series.len() && !series.ends_with('}') {
            return Err(format!("line {}: unclosed labels", i + 1));
        }
        let v = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse::<f64>()
                .map_err(|e| format!("line {}: bad value {v:?}: {e}", i + 1))?,
        };
        out.push((series.to_string(), v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lmcache_mode_mp_shows_the_multi_process_servers_families() {
        let mut m = Metrics::new(true);
        m.lmcache_mp = Some(MpMetrics {
            counters: inferencelab_engine::MpCounters {
                lookup_requested_tokens: 15872,
                lookup_hit_tokens: 10240,
                l1_write_chunks: 14,
                l1_read_chunks: 40,
                ..Default::default()
            },
            l1_usage_ratio: 0.00341796875,
        });
        let text = m.render("/models/tiny");
        let series = parse_text(&text).unwrap();
        let get = |name: &str| {
            let v: Vec<f64> = series
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(v.len(), 1, "{name}: {v:?}");
            v[0]
        };
        // the names and values a real `lmcache server` showed after the same counts
        assert_eq!(get("lmcache_mp_lookup_requested_tokens_total"), 15872.0);
        assert_eq!(get("lmcache_mp_lookup_hit_tokens_total"), 10240.0);
        assert_eq!(get("lmcache_mp_lookup_hit_l1_tokens_total"), 10240.0);
        assert_eq!(get("lmcache_mp_l1_write_chunks_total"), 14.0);
        assert_eq!(get("lmcache_mp_l1_read_chunks_total"), 40.0);
        assert_eq!(get("lmcache_mp_l1_usage_ratio"), 0.00341796875);
        assert!(text.contains(
            "lmcache_mp_lookup_hit_tokens_total{cache_salt=\"\",model_name=\"/models/tiny\",\
             otel_scope_name=\"lmcache.lookup\""
        ));
        assert!(
            !text.contains("lmcache:"),
            "no in-process families in mp mode"
        );
        assert!(text.contains("vllm:external_prefix_cache_hits_total"));
    }

    #[test]
    fn renders_parseable_text_with_vllm_names() {
        let mut m = Metrics::new(true);
        m.counters.prefix_cache_hits = 48;
        m.num_preemptions = 3;
        m.ttft.observe(0.03);
        m.ttft.observe(3.0);
        let text = m.render("qwen\"8b");
        let series = parse_text(&text).unwrap();
        let get = |s: &str| series.iter().find(|(k, _)| k == s).map(|(_, v)| *v);
        assert_eq!(
            get("vllm:prefix_cache_hits_total{model_name=\"qwen\\\"8b\",engine=\"0\"}"),
            Some(48.0)
        );
        assert_eq!(
            get("vllm:num_preemptions_total{model_name=\"qwen\\\"8b\",engine=\"0\"}"),
            Some(3.0)
        );
        assert_eq!(
            get("vllm:time_to_first_token_seconds_bucket{model_name=\"qwen\\\"8b\",engine=\"0\",le=\"0.04\"}"),
            Some(1.0)
        );
        assert_eq!(
            get("vllm:time_to_first_token_seconds_count{model_name=\"qwen\\\"8b\",engine=\"0\"}"),
            Some(2.0)
        );
        assert!(text.contains("lmcache:local_cpu_evict_count_total{"));
        // vLLM 0.32/0.33 show the external counters without a connector too
        assert!(Metrics::new(false)
            .render("m")
            .contains("vllm:external_prefix_cache_hits_total"));
        assert_eq!(
            buckets_1_2_5(16384),
            [
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
                10000.0
            ]
        );
    }
}
