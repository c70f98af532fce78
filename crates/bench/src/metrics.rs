//! Metrics with `vllm bench serve`'s definitions (vLLM `vllm/benchmarks/serve.py`,
//! `calculate_metrics`):
//! - only successful requests count; `completed` = their number, `failed` = the others;
//! - output tokens = `usage.completion_tokens` (our fallback without usage: the number of token
//!   chunks; vLLM re-tokenizes the text);
//! - TTFT per request; TPOT = (E2EL - TTFT) / (out - 1) for out > 1 (requests with out <= 1
//!   are left out of TPOT but count as 0 for goodput); ITL = every gap between token chunks,
//!   pooled over all requests; E2EL = last token chunk - send;
//! - mean, median, population std (`np.std`), percentiles by linear interpolation
//!   (`np.percentile`'s default); an empty list gives 0 for all (`np.mean(0)`);
//! - throughputs divide by the benchmark duration; goodput = requests meeting every SLO
//!   (`slo >= value`) / duration;
//! - `max_output_tokens_per_s`: token chunks bucketed into whole seconds from the first send;
//!   `max_concurrent_requests`: sweep over [send, send + e2el) of successful requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::RequestRecord;

/// A metric an SLO can bound (vLLM `--goodput` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SloMetric {
    Ttft,
    Tpot,
    E2el,
}

/// `ttft:500,tpot:50` (milliseconds), also space separated like vLLM's `--goodput ttft:500 tpot:50`.
pub fn parse_slos(s: &str) -> Result<Vec<(SloMetric, f64)>, String> {
    let mut out = Vec::new();
    for part in s.split([',', ' ']).filter(|p| !p.trim().is_empty()) {
        let (k, v) = part.split_once(':').ok_or_else(|| {
            format!("SLO {part:?}: expected NAME:MILLISECONDS, e.g. ttft:500,tpot:50")
        })?;
        let m = match k.trim() {
            "ttft" => SloMetric::Ttft,
            "tpot" => SloMetric::Tpot,
            "e2el" => SloMetric::E2el,
            other => return Err(format!("SLO {other:?}: the names are ttft, tpot and e2el")),
        };
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| format!("SLO {part:?}: {v:?} is not a number of milliseconds"))?;
        if v.is_nan() || v < 0.0 {
            return Err(format!("SLO {part:?}: must be non-negative"));
        }
        out.push((m, v));
    }
    Ok(out)
}

/// `np.percentile(xs, p)` with linear interpolation; `xs` sorted ascending, non-empty.
pub fn percentile_sorted(xs: &[f64], p: f64) -> f64 {
    let n = xs.len();
    if n == 1 {
        return xs[0];
    }
    let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let frac = rank - lo as f64;
    xs[lo] + (xs[hi] - xs[lo]) * frac
}

/// Mean, median, std and percentiles of one metric, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub median: f64,
    pub std: f64,
    pub percentiles: Vec<(f64, f64)>,
    pub count: usize,
}

/// Statistics of `values_s` (seconds) in milliseconds, numpy's way.
pub fn stat_ms(values_s: &[f64], percentiles: &[f64]) -> Stat {
    if values_s.is_empty() {
        return Stat {
            mean: 0.0,
            median: 0.0,
            std: 0.0,
            percentiles: percentiles.iter().map(|&p| (p, 0.0)).collect(),
            count: 0,
        };
    }
    let mut xs: Vec<f64> = values_s.iter().map(|x| x * 1000.0).collect();
    xs.sort_by(f64::total_cmp);
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    Stat {
        mean,
        median: percentile_sorted(&xs, 50.0),
        std: var.sqrt(),
        percentiles: percentiles
            .iter()
            .map(|&p| (p, percentile_sorted(&xs, p)))
            .collect(),
        count: xs.len(),
    }
}

/// vLLM's key for a percentile: `p99`, `p99.9`.
pub fn percentile_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub completed: u64,
    pub failed: u64,
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
    pub duration_s: f64,
    pub request_throughput: f64,
    /// `None` without SLOs (vLLM writes null).
    pub request_goodput: Option<f64>,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub ttft: Stat,
    pub tpot: Stat,
    pub itl: Stat,
    pub e2el: Stat,
    pub max_output_tokens_per_s: f64,
    pub max_concurrent_requests: u64,
    /// Per request in record order: output tokens of successful requests, 0 for failed.
    pub output_lens: Vec<u64>,
    // --- ours ---
    /// Sum of `cached_tokens` over successful requests.
    pub total_cached_tokens: u64,
    /// `total_cached_tokens / total_input_tokens`.
    pub cached_token_ratio: f64,
    /// Successful requests with `cached_tokens > 0`.
    pub requests_with_cache_hit: u64,
    /// Successful requests whose server sent usage.
    pub requests_with_usage: u64,
    /// Send minus scheduled time, over every sent request.
    pub client_lag: Stat,
    pub errors_by_kind: BTreeMap<String, u64>,
}

/// Compute the summary of `records` (in dispatch order) over a run of `duration_s`.
pub fn summarize(
    records: &[RequestRecord],
    duration_s: f64,
    percentiles: &[f64],
    slos: &[(SloMetric, f64)],
) -> Summary {
    let dur = if duration_s > 0.0 {
        duration_s
    } else {
        f64::MIN_POSITIVE
    };
    let mut ttfts = Vec::new();
    let mut tpots = Vec::new();
    let mut itls = Vec::new();
    let mut e2els = Vec::new();
    let mut output_lens = Vec::with_capacity(records.len());
    let mut total_input = 0u64;
    let mut good = 0u64;
    let mut cached = 0u64;
    let mut with_hit = 0u64;
    let mut with_usage = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for r in records {
        if !r.success {
            output_lens.push(0);
            let k = r.error_kind.map_or("unknown", |k| k.name());
            *errors.entry(k.to_string()).or_default() += 1;
            continue;
        }
        let out = r.output_tokens;
        output_lens.push(out);
        total_input += r.prompt_len;
        let tpot = if out > 1 {
            let t = (r.e2el_s - r.ttft_s) / (out - 1) as f64;
            tpots.push(t);
            t
        } else {
            0.0
        };
        itls.extend_from_slice(&r.itl_s);
        ttfts.push(r.ttft_s);
        e2els.push(r.e2el_s);
        cached += r.cached_tokens;
        with_hit += (r.cached_tokens > 0) as u64;
        with_usage += r.usage as u64;
        if !slos.is_empty() {
            let ok = slos.iter().all(|&(m, ms)| {
                let v = match m {
                    SloMetric::Ttft => r.ttft_s,
                    SloMetric::Tpot => tpot,
                    SloMetric::E2el => r.e2el_s,
                };
                ms / 1000.0 >= v
            });
            good += ok as u64;
        }
    }
    let completed = ttfts.len() as u64;
    let total_output: u64 = output_lens.iter().sum();
    let lags: Vec<f64> = records.iter().map(|r| r.client_lag_s).collect();
    let (max_tps, max_conc) = peaks(records);
    Summary {
        completed,
        failed: records.len() as u64 - completed,
        total_input_tokens: total_input,
        total_output_tokens: total_output,
        duration_s,
        request_throughput: completed as f64 / dur,
        request_goodput: (!slos.is_empty()).then(|| good as f64 / dur),
        output_throughput: total_output as f64 / dur,
        total_token_throughput: (total_input + total_output) as f64 / dur,
        ttft: stat_ms(&ttfts, percentiles),
        tpot: stat_ms(&tpots, percentiles),
        itl: stat_ms(&itls, percentiles),
        e2el: stat_ms(&e2els, percentiles),
        max_output_tokens_per_s: max_tps,
        max_concurrent_requests: max_conc,
        output_lens,
        total_cached_tokens: cached,
        cached_token_ratio: if total_input > 0 {
            cached as f64 / total_input as f64
        } else {
            0.0
        },
        requests_with_cache_hit: with_hit,
        requests_with_usage: with_usage,
        client_lag: stat_ms(&lags, percentiles),
        errors_by_kind: errors,
    }
}

/// vLLM's peak output tokens per second and peak concurrency.
fn peaks(records: &[RequestRecord]) -> (f64, u64) {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.success).collect();
    if ok.is_empty() {
        return (0.0, 0);
    }
    let min_start = ok.iter().map(|r| r.send_s).fold(f64::INFINITY, f64::min);
    let max_end = ok
        .iter()
        .map(|r| r.send_s + r.e2el_s)
        .fold(f64::NEG_INFINITY, f64::max);
    let buckets = (max_end - min_start).ceil() as usize + 1;
    let mut tokens = vec![0u64; buckets];
    for r in &ok {
        let mut t = r.send_s + r.ttft_s;
        let mut mark = |t: f64| {
            let b = (t - min_start) as i64;
            if b >= 0 && (b as usize) < buckets {
                tokens[b as usize] += 1;
            }
        };
        mark(t);
        for gap in &r.itl_s {
            t += gap;
            mark(t);
        }
    }
    let mut events: Vec<(f64, i32)> = ok
        .iter()
        .flat_map(|r| [(r.send_s, 1), (r.send_s + r.e2el_s, -1)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut cur, mut peak) = (0i64, 0i64);
    for (_, d) in events {
        cur += d as i64;
        peak = peak.max(cur);
    }
    (
        tokens.iter().copied().max().unwrap_or(0) as f64,
        peak as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_numpy_linear() {
        // np.percentile([1, 2, 3, 4], [0, 25, 50, 90, 99, 100]) =
        // [1.0, 1.75, 2.5, 3.7, 3.97, 4.0]
        let xs = [1.0, 2.0, 3.0, 4.0];
        let got: Vec<f64> = [0.0, 25.0, 50.0, 90.0, 99.0, 100.0]
            .iter()
            .map(|&p| percentile_sorted(&xs, p))
            .collect();
        let want = [1.0, 1.75, 2.5, 3.7, 3.97, 4.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        // np.std([1, 2, 3, 4]) = 1.118033988749895 (population std)
        let s = stat_ms(&[0.001, 0.002, 0.003, 0.004], &[99.0]);
        assert!((s.std - 1.118033988749895).abs() < 1e-9);
        assert!((s.median - 2.5).abs() < 1e-9);
        assert_eq!(stat_ms(&[], &[99.0]).percentiles, vec![(99.0, 0.0)]);
        assert_eq!(percentile_word(99.0), "99");
        assert_eq!(percentile_word(99.9), "99.9");
    }

    #[test]
    fn slo_parsing() {
        assert_eq!(
            parse_slos("ttft:500,tpot:50").unwrap(),
            vec![(SloMetric::Ttft, 500.0), (SloMetric::Tpot, 50.0)]
        );
        assert_eq!(parse_slos("e2el:1 ttft:2").unwrap().len(), 2);
        assert!(parse_slos("itl:5")
            .unwrap_err()
            .contains("ttft, tpot and e2el"));
        assert!(parse_slos("ttft").is_err());
    }
}
