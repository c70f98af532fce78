//! Per-request cache attribution from the server's log: LMCache's lookup line for a request
//! (`LMCache INFO: Reqid: ID, Total tokens N, Inference Engine computed tokens: G, LMCache hit
//! tokens: L, need to load: K`, read by `inferencelab_trace`'s vLLM log reader) joined with our
//! record of the same request by the id the server streamed back (`response_id`; vLLM and the
//! emulator use their request id for both), so every request's TTFT sits next to where its
//! prompt came from: vLLM's GPU prefix cache, LMCache, or recomputation.

use std::collections::HashMap;

use inferencelab_trace::LmcacheLookup;
use serde::Serialize;

use crate::metrics::{stat_ms, Stat};
use crate::record::RequestRecord;

/// One joined request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attributed {
    pub index: u64,
    pub response_id: String,
    pub total_tokens: u32,
    /// vLLM's own GPU prefix-cache hit (`Inference Engine computed tokens`), when logged.
    pub gpu_hit_tokens: Option<u32>,
    pub lmcache_hit_tokens: u32,
    /// Tokens loaded from LMCache beyond the GPU hit (`need to load`, floored at 0).
    pub loaded_tokens: u32,
    /// Prompt tokens computed again.
    pub recomputed_tokens: u32,
    pub ttft_s: f64,
    pub success: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributionSummary {
    pub matched: u64,
    pub unmatched: u64,
    pub total_tokens: u64,
    pub gpu_hit_tokens: u64,
    pub loaded_tokens: u64,
    pub recomputed_tokens: u64,
    /// TTFT of successful requests by where most of their prompt came from.
    pub ttft_mostly_gpu: Stat,
    pub ttft_mostly_lmcache: Stat,
    pub ttft_mostly_recomputed: Stat,
}

/// Join `records` with the log's lookups; requests without a lookup are counted as unmatched.
pub fn join(
    records: &[RequestRecord],
    lookups: &[LmcacheLookup],
    percentiles: &[f64],
) -> (Vec<Attributed>, AttributionSummary) {
    let by_id: HashMap<&str, &LmcacheLookup> =
        lookups.iter().map(|l| (l.request_id.as_str(), l)).collect();
    let find = |r: &RequestRecord| -> Option<&LmcacheLookup> {
        let rid = r.response_id.as_deref()?;
        by_id.get(rid).copied().or_else(|| {
            // Engines may suffix their internal id (`-0`, `-<hash>`): one id must be the other
            // plus `-...` (so `...-1` never takes `...-10`'s line).
            let extends = |long: &str, short: &str| {
                long.strip_prefix(short)
                    .is_some_and(|rest| rest.starts_with('-'))
            };
            lookups
                .iter()
                .find(|l| extends(&l.request_id, rid) || extends(rid, &l.request_id))
        })
    };
    let mut out = Vec::new();
    let mut unmatched = 0;
    let (mut g, mut lm, mut rc) = (Vec::new(), Vec::new(), Vec::new());
    for r in records {
        let Some(l) = find(r) else {
            unmatched += 1;
            continue;
        };
        let gpu = l.engine_computed_tokens.unwrap_or(0);
        let loaded = l.need_to_load.max(0) as u32;
        let cached = gpu.saturating_add(loaded).min(l.total_tokens);
        let a = Attributed {
            index: r.index,
            response_id: r.response_id.clone().unwrap_or_default(),
            total_tokens: l.total_tokens,
            gpu_hit_tokens: l.engine_computed_tokens,
            lmcache_hit_tokens: l.hit_tokens,
            loaded_tokens: loaded,
            recomputed_tokens: l.total_tokens - cached,
            ttft_s: r.ttft_s,
            success: r.success,
        };
        if r.success {
            let m = gpu.max(loaded).max(a.recomputed_tokens);
            if m == gpu {
                g.push(r.ttft_s);
            } else if m == loaded {
                lm.push(r.ttft_s);
            } else {
                rc.push(r.ttft_s);
            }
        }
        out.push(a);
    }
    let s = AttributionSummary {
        matched: out.len() as u64,
        unmatched,
        total_tokens: out.iter().map(|a| a.total_tokens as u64).sum(),
        gpu_hit_tokens: out
            .iter()
            .map(|a| a.gpu_hit_tokens.unwrap_or(0) as u64)
            .sum(),
        loaded_tokens: out.iter().map(|a| a.loaded_tokens as u64).sum(),
        recomputed_tokens: out.iter().map(|a| a.recomputed_tokens as u64).sum(),
        ttft_mostly_gpu: stat_ms(&g, percentiles),
        ttft_mostly_lmcache: stat_ms(&lm, percentiles),
        ttft_mostly_recomputed: stat_ms(&rc, percentiles),
    };
    (out, s)
}

/// The console section.
pub fn table(s: &AttributionSummary) -> String {
    let mut o = format!("{:-^50}\n", "Attribution (server log, per request)");
    let mut line = |l: &str, v: String| o.push_str(&format!("{l:<40} {v:<10}\n"));
    line(
        "Requests matched (unmatched):",
        format!("{} ({})", s.matched, s.unmatched),
    );
    let pct = |x: u64| {
        if s.total_tokens > 0 {
            x as f64 / s.total_tokens as f64 * 100.0
        } else {
            0.0
        }
    };
    line(
        "GPU prefix cache tokens (% of prompt):",
        format!("{} ({:.1})", s.gpu_hit_tokens, pct(s.gpu_hit_tokens)),
    );
    line(
        "LMCache loaded tokens (% of prompt):",
        format!("{} ({:.1})", s.loaded_tokens, pct(s.loaded_tokens)),
    );
    line(
        "Recomputed tokens (% of prompt):",
        format!("{} ({:.1})", s.recomputed_tokens, pct(s.recomputed_tokens)),
    );
    for (label, st) in [
        ("Mean TTFT, mostly GPU hit (ms):", &s.ttft_mostly_gpu),
        ("Mean TTFT, mostly LMCache (ms):", &s.ttft_mostly_lmcache),
        (
            "Mean TTFT, mostly recomputed (ms):",
            &s.ttft_mostly_recomputed,
        ),
    ] {
        // an empty group has no mean: "-" rather than a 0.00 that reads like a measurement
        line(
            label,
            if st.count == 0 {
                "- (no requests)".to_string()
            } else {
                format!("{:.2} (n={})", st.mean, st.count)
            },
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_by_response_id_and_splits_the_prompt() {
        let mut r: RequestRecord = serde_json::from_str(
            r#"{"index":0,"request_id":"b-0","response_id":"chatcmpl-1","source_id":null,
            "conversation":null,"turn":null,"scheduled_s":0,"send_s":0,"client_lag_s":0,
            "send_unix_s":0,"success":true,"error_kind":null,"error":"","http_status":200,
            "prompt_len":1000,"expected_output_len":1,"output_tokens":1,"cached_tokens":900,
            "usage":true,"ttft_s":0.05,"e2el_s":0.05,"tpot_s":0,"itl_s":[],"done":true,
            "generated_text":""}"#,
        )
        .unwrap();
        let mut other = r.clone();
        other.index = 1;
        other.response_id = Some("chatcmpl-9".into());
        let l = LmcacheLookup {
            request_id: "chatcmpl-1-0".into(),
            matched: true,
            total_tokens: 1000,
            engine_computed_tokens: Some(256),
            hit_tokens: 768,
            need_to_load: 512,
        };
        r.ttft_s = 0.04;
        let (a, s) = join(&[r, other], &[l], &[99.0]);
        assert_eq!((s.matched, s.unmatched), (1, 1));
        assert_eq!(
            (
                a[0].gpu_hit_tokens,
                a[0].loaded_tokens,
                a[0].recomputed_tokens
            ),
            (Some(256), 512, 232)
        );
        assert_eq!(s.ttft_mostly_lmcache.count, 1);
        assert!(table(&s).contains("LMCache loaded tokens"));
        // the groups nobody fell into show no mean, not "0.00 (n=0)"
        assert_eq!(s.ttft_mostly_gpu.count, 0);
        let t = table(&s);
        let gpu_line = t
            .lines()
            .find(|l| l.starts_with("Mean TTFT, mostly GPU hit"))
            .unwrap();
        assert!(
            gpu_line.trim_end().ends_with("- (no requests)"),
            "{gpu_line}"
        );
        assert!(!table(&s).contains("(n=0)"));
    }

    #[test]
    fn a_suffixed_id_never_joins_a_longer_number() {
        // client ids bench-x-1 and bench-x-10, engine lines suffixed with -0: request 1 takes
        // its own line even when request 10's comes first
        let rec = |i: u64, id: &str| RequestRecord {
            index: i,
            response_id: Some(id.into()),
            success: true,
            ..serde_json::from_str(
                r#"{"index":0,"request_id":"","response_id":null,"source_id":null,
                "conversation":null,"turn":null,"scheduled_s":0,"send_s":0,"client_lag_s":0,
                "send_unix_s":0,"success":true,"error_kind":null,"error":"","http_status":200,
                "prompt_len":10,"expected_output_len":1,"output_tokens":1,"cached_tokens":0,
                "usage":true,"ttft_s":0.05,"e2el_s":0.05,"tpot_s":0,"itl_s":[],"done":true,
                "generated_text":""}"#,
            )
            .unwrap()
        };
        let look = |id: &str, gpu: u32| LmcacheLookup {
            request_id: id.into(),
            matched: true,
            total_tokens: 100,
            engine_computed_tokens: Some(gpu),
            hit_tokens: 0,
            need_to_load: 0,
        };
        let (a, s) = join(
            &[rec(0, "cmpl-bench-x-1"), rec(1, "cmpl-bench-x-10")],
            &[look("cmpl-bench-x-10-0", 10), look("cmpl-bench-x-1-0", 1)],
            &[99.0],
        );
        assert_eq!((s.matched, s.unmatched), (2, 0));
        assert_eq!(a[0].gpu_hit_tokens, Some(1));
        assert_eq!(a[1].gpu_hit_tokens, Some(10));
    }
}
