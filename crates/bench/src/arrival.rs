//! *When* to send: arrival processes. An arrival process turns the workload's root requests
//! (requests that wait for no other request, e.g. first turns of conversations) into send
//! offsets from the start of the run. Follow-up turns of a conversation are not scheduled here:
//! they are released when the previous turn's answer arrives (see `runner`).
//!
//! Source: vLLM `vllm/benchmarks/serve.py` (`get_request`, `_get_current_request_rate`):
//! - `Gamma`: intervals ~ Gamma(shape = burstiness, scale = 1 / (rate * burstiness)) (Poisson at
//!   burstiness 1), accumulated, then rescaled so the last arrival falls exactly at
//!   `n / rate` ("to close the 1-2% gap ... stabilizing the throughput"). The first request also
//!   waits one interval, as in vLLM.
//! - `Constant`: vLLM's `burstiness = inf`: every interval is `1 / rate`.
//! - `Ramp`: the rate moves from `start_rps` to `end_rps` over the requests (linear or
//!   exponential in the request index), intervals drawn with the burstiness, no rescaling.
//! - `Trace`: the trace's own timestamps (relative to its first request) divided by
//!   `time_scale` (vLLM's `--self-timed` on a timed trace, plus the scale).
//! - `Burst`: everything at once (`--request-rate inf`); with `--max-concurrency` this is the
//!   closed loop: a new request starts whenever one finishes.
//!
//! Deviation: with an open-ended workload (random prompts limited only by `--duration`), `n` is
//! unknown, so the schedule is drawn lazily and not rescaled.

use serde::{Deserialize, Serialize};

use inferencelab_trace::rng::Xoshiro256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RampStrategy {
    Linear,
    Exponential,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arrival {
    Burst,
    Gamma {
        rate: f64,
        burstiness: f64,
    },
    Constant {
        rate: f64,
    },
    Ramp {
        strategy: RampStrategy,
        start_rps: f64,
        end_rps: f64,
        burstiness: f64,
    },
    Trace {
        time_scale: f64,
    },
}

impl Arrival {
    /// vLLM's flags to a process: `rate = inf` is a burst, `burstiness = inf` is constant.
    pub fn from_rate(rate: f64, burstiness: f64) -> Arrival {
        if rate.is_infinite() {
            Arrival::Burst
        } else if burstiness.is_infinite() {
            Arrival::Constant { rate }
        } else {
            Arrival::Gamma { rate, burstiness }
        }
    }

    /// Check the parameters; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        let pos = |x: f64, flag: &str| {
            if x > 0.0 && !x.is_nan() {
                Ok(())
            } else {
                Err(format!("{flag} must be positive, got {x}"))
            }
        };
        match *self {
            Arrival::Burst => Ok(()),
            Arrival::Gamma { rate, burstiness } => {
                pos(rate, "--request-rate")?;
                pos(burstiness, "--burstiness")
            }
            Arrival::Constant { rate } => pos(rate, "--request-rate"),
            Arrival::Ramp {
                strategy,
                start_rps,
                end_rps,
                burstiness,
            } => {
                if start_rps < 0.0 || end_rps < start_rps {
                    return Err(format!(
                        "--ramp-up-start-rps ({start_rps}) must be >= 0 and <= --ramp-up-end-rps ({end_rps})"
                    ));
                }
                if strategy == RampStrategy::Exponential && start_rps == 0.0 {
                    return Err("exponential ramp-up needs --ramp-up-start-rps > 0".into());
                }
                pos(end_rps, "--ramp-up-end-rps")?;
                pos(burstiness, "--burstiness")
            }
            Arrival::Trace { time_scale } => pos(time_scale, "--time-scale"),
        }
    }

    /// Send offsets (seconds from the start) for `n` roots, or an open-ended stream when `n` is
    /// `None`. `timestamps` are the roots' own times (trace seconds), used by `Trace` only.
    pub fn schedule(&self, n: Option<usize>, rng: Xoshiro256) -> Schedule {
        let mut s = Schedule {
            arrival: self.clone(),
            rng,
            acc: 0.0,
            index: 0,
            n,
            precomputed: None,
            first_timestamp: None,
        };
        if let (Some(n), Arrival::Gamma { .. } | Arrival::Ramp { .. }) = (n, self) {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let d = s.draw_interval();
                s.acc += d;
                v.push(s.acc);
                s.index += 1;
            }
            if let (Arrival::Gamma { rate, .. }, Some(&last)) = (self, v.last()) {
                if last > 0.0 {
                    let f = (n as f64 / rate) / last;
                    v.iter_mut().for_each(|x| *x *= f);
                }
            }
            s.precomputed = Some(v);
            s.index = 0;
            s.acc = 0.0;
        }
        s
    }
}

/// The offsets of an arrival process, one root at a time.
#[derive(Debug, Clone)]
pub struct Schedule {
    arrival: Arrival,
    rng: Xoshiro256,
    acc: f64,
    index: usize,
    n: Option<usize>,
    precomputed: Option<Vec<f64>>,
    first_timestamp: Option<f64>,
}

impl Schedule {
    fn rate_at(&self, i: usize) -> f64 {
        match self.arrival {
            Arrival::Ramp {
                strategy,
                start_rps,
                end_rps,
                ..
            } => {
                let total = self.n.unwrap_or(1);
                let progress = i as f64 / (total.saturating_sub(1).max(1)) as f64;
                match strategy {
                    RampStrategy::Linear => start_rps + (end_rps - start_rps) * progress,
                    RampStrategy::Exponential => start_rps * (end_rps / start_rps).powf(progress),
                }
            }
            Arrival::Gamma { rate, .. } | Arrival::Constant { rate } => rate,
            Arrival::Burst | Arrival::Trace { .. } => f64::INFINITY,
        }
    }

    fn draw_interval(&mut self) -> f64 {
        let rate = self.rate_at(self.index);
        let burstiness = match self.arrival {
            Arrival::Gamma { burstiness, .. } | Arrival::Ramp { burstiness, .. } => burstiness,
            _ => f64::INFINITY,
        };
        if rate.is_infinite() {
            0.0
        } else if rate <= 0.0 {
            // A linear ramp from 0 rps: vLLM asserts here; we wait one second instead.
            1.0
        } else if burstiness.is_infinite() {
            1.0 / rate
        } else {
            self.rng.gamma(burstiness, 1.0 / (rate * burstiness))
        }
    }

    /// The offset of the next root; `timestamp` is its trace time (for `Trace`).
    pub fn next_offset(&mut self, timestamp: Option<f64>) -> f64 {
        let i = self.index;
        self.index += 1;
        if let Some(v) = &self.precomputed {
            return v
                .get(i)
                .copied()
                .unwrap_or_else(|| v.last().copied().unwrap_or(0.0));
        }
        match self.arrival {
            Arrival::Trace { time_scale } => {
                let t = timestamp.unwrap_or(0.0);
                let first = *self.first_timestamp.get_or_insert(t);
                ((t - first) / time_scale).max(0.0)
            }
            _ => {
                self.acc += self.draw_interval();
                self.acc
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(a: &Arrival, n: usize, seed: u64) -> Vec<f64> {
        let mut s = a.schedule(Some(n), Xoshiro256::new(seed));
        (0..n).map(|_| s.next_offset(None)).collect()
    }

    #[test]
    fn poisson_is_normalized_to_n_over_rate_like_vllm() {
        let a = Arrival::from_rate(10.0, 1.0);
        let v = offsets(&a, 500, 3);
        assert!(
            (v[499] - 50.0).abs() < 1e-9,
            "last arrival at n/rate: {}",
            v[499]
        );
        assert!(v[0] > 0.0, "the first request waits one interval too");
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
        // Intervals of a Poisson process: mean 1/rate, coefficient of variation about 1.
        let gaps: Vec<f64> = v.windows(2).map(|w| w[1] - w[0]).collect();
        let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - m) * (g - m)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((sd / m - 1.0).abs() < 0.15, "cv {}", sd / m);
        assert_eq!(v, offsets(&a, 500, 3), "seeded");
        assert_ne!(v, offsets(&a, 500, 4));
    }

    #[test]
    fn burstiness_changes_the_spread_not_the_rate() {
        let cv = |b: f64| {
            let v = offsets(&Arrival::from_rate(5.0, b), 2000, 1);
            let gaps: Vec<f64> = v.windows(2).map(|w| w[1] - w[0]).collect();
            let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
            (gaps.iter().map(|g| (g - m) * (g - m)).sum::<f64>() / gaps.len() as f64).sqrt() / m
        };
        // Gamma(k) intervals have cv 1/sqrt(k).
        assert!((cv(0.25) - 2.0).abs() < 0.3);
        assert!((cv(4.0) - 0.5).abs() < 0.08);
    }

    #[test]
    fn constant_burst_ramp_and_trace() {
        assert_eq!(
            offsets(&Arrival::from_rate(4.0, f64::INFINITY), 3, 0),
            vec![0.25, 0.5, 0.75]
        );
        assert_eq!(offsets(&Arrival::Burst, 3, 0), vec![0.0; 3]);
        // Linear ramp 1 -> 3 rps over 3 requests, constant intervals: 1, 1/2, 1/3.
        let ramp = Arrival::Ramp {
            strategy: RampStrategy::Linear,
            start_rps: 1.0,
            end_rps: 3.0,
            burstiness: f64::INFINITY,
        };
        let v = offsets(&ramp, 3, 0);
        assert!((v[0] - 1.0).abs() < 1e-12 && (v[1] - 1.5).abs() < 1e-12);
        assert!((v[2] - (1.5 + 1.0 / 3.0)).abs() < 1e-12);
        let mut s = Arrival::Trace { time_scale: 2.0 }.schedule(Some(3), Xoshiro256::new(0));
        let v: Vec<f64> = [10.0, 11.0, 20.0]
            .iter()
            .map(|&t| s.next_offset(Some(t)))
            .collect();
        assert_eq!(v, vec![0.0, 0.5, 5.0]);
    }

    #[test]
    fn open_ended_schedules_are_lazy() {
        let mut s = Arrival::from_rate(100.0, 1.0).schedule(None, Xoshiro256::new(9));
        let v: Vec<f64> = (0..10_000).map(|_| s.next_offset(None)).collect();
        let rate = 10_000.0 / v[9_999];
        assert!((rate / 100.0 - 1.0).abs() < 0.05, "{rate}");
    }

    #[test]
    fn bad_parameters_name_the_flag() {
        assert!(Arrival::from_rate(0.0, 1.0)
            .validate()
            .unwrap_err()
            .contains("--request-rate"));
        assert!(Arrival::from_rate(1.0, -1.0)
            .validate()
            .unwrap_err()
            .contains("--burstiness"));
        assert!(Arrival::Trace { time_scale: 0.0 }
            .validate()
            .unwrap_err()
            .contains("--time-scale"));
    }
}
