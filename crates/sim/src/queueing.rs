//! The engine model's queueing: how long requests wait between their arrival and their first
//! admission (the first `schedule()` that takes them, where vLLM looks their prefix up), and
//! when that says the engine falls behind the trace. Every hit ratio of a run is measured at
//! admission, so a run whose requests wait minutes describes an engine with that queue.

/// A run's admission delays (arrival to first admission, seconds of trace time), in the order
/// requests were served.
#[derive(Debug, Clone, Default)]
pub struct AdmissionDelays {
    delays: Vec<f64>,
}

impl AdmissionDelays {
    /// Count a request that arrived at `arrival_s` and was first admitted at `admitted_s`. A
    /// request vLLM refuses (never admitted: `admitted_s` is NaN) has no delay and is left out.
    pub fn record(&mut self, arrival_s: f64, admitted_s: f64) {
        if admitted_s.is_finite() {
            // a request is never admitted before it arrives; a log's rounding must not make it so
            self.delays.push((admitted_s - arrival_s).max(0.0));
        }
    }

    /// Requests counted.
    pub fn len(&self) -> usize {
        self.delays.len()
    }

    pub fn is_empty(&self) -> bool {
        self.delays.is_empty()
    }

    /// The median and the 90th percentile (0 and 0 with no request).
    pub fn p50_p90(&mut self) -> (f64, f64) {
        (
            percentile(&mut self.delays, 50.0),
            percentile(&mut self.delays, 90.0),
        )
    }
}

/// A median admission delay above this many seconds means the engine model falls behind the
/// trace, and the run says so. Chosen a priori, not from a run: an interactive deployment aims
/// at a time to first token of about a second, so a median wait ten times that, before the
/// prefill even starts, is not a serving anyone operates (they would add replicas or a faster
/// engine). Shorter queues (bursts, long prompts whose own prefill takes a second at the
/// default rate) are a congested but real operating point: their figures are printed, without
/// a warning. The median, not a tail: a burst may legitimately hold the p90 up.
pub const FALLS_BEHIND_MEDIAN_S: f64 = 10.0;

/// Whether a run whose median admission delay is `median_s` falls behind its trace.
pub fn falls_behind(median_s: f64) -> bool {
    median_s > FALLS_BEHIND_MEDIAN_S
}

/// Percentile by linear interpolation between closest ranks (numpy's default, as vLLM's
/// bench); 0 for no value. Sorts `v`.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        assert_eq!(percentile(&mut [4.0, 1.0, 2.0, 3.0], 50.0), 2.5);
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0, 4.0, 5.0], 90.0), 4.6);
        assert_eq!(percentile(&mut [7.0], 90.0), 7.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }

    #[test]
    fn delays_run_from_arrival_to_first_admission_and_skip_refused_requests() {
        let mut d = AdmissionDelays::default();
        // arrival, admission: waits 0, 2, 10, 1 s; one refused (never admitted)
        d.record(0.0, 0.0);
        d.record(1.0, 3.0);
        d.record(2.0, 12.0);
        d.record(3.0, f64::NAN);
        d.record(5.0, 6.0);
        assert_eq!(d.len(), 4);
        // sorted 0, 1, 2, 10: median between 1 and 2, p90 at rank 2.7: 2 + 0.7 * (10 - 2)
        let (p50, p90) = d.p50_p90();
        assert_eq!(p50, 1.5);
        assert!((p90 - 7.6).abs() < 1e-9, "{p90}");
        // an admission stamped before the arrival (a rounded log) waits 0, not a negative time
        let mut early = AdmissionDelays::default();
        early.record(10.0, 9.5);
        assert_eq!(early.p50_p90(), (0.0, 0.0));
        assert_eq!(AdmissionDelays::default().p50_p90(), (0.0, 0.0));
    }

    #[test]
    fn an_engine_falls_behind_past_the_threshold_only() {
        assert!(!falls_behind(0.0));
        assert!(!falls_behind(FALLS_BEHIND_MEDIAN_S));
        assert!(falls_behind(FALLS_BEHIND_MEDIAN_S + 0.5));
        assert!(!falls_behind(f64::NAN));
    }
}
