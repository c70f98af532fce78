//! The seeded random numbers of a run: xoshiro256** seeded through SplitMix64, and the
//! distributions the arrival processes need (exponential, gamma). Our own few lines instead of a
//! crate so a seed gives the same schedule on every platform and every version.
//!
//! Deviation from vLLM: `vllm bench serve` draws from NumPy's global generator
//! (`np.random.gamma`), so equal seeds do not give equal schedules across the two tools; the
//! distributions (and the normalization of the schedule, see `arrival`) are the same.

/// SplitMix64's output function: a good 64-bit mixer, also used to derive token ids from ids.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman and Vigna).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut s = [0u64; 4];
        for v in &mut s {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            *v = splitmix64(x);
        }
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1].
    fn open01(&mut self) -> f64 {
        1.0 - self.f64()
    }

    /// Uniform integer in [0, n) (n > 0); Lemire's multiply-shift, bias below 2^-32 for our n.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Marsaglia's polar method).
    pub fn normal(&mut self) -> f64 {
        loop {
            let u = 2.0 * self.f64() - 1.0;
            let v = 2.0 * self.f64() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                return u * (-2.0 * s.ln() / s).sqrt();
            }
        }
    }

    /// Gamma(shape, scale), mean shape*scale (Marsaglia and Tsang 2000; shape < 1 through
    /// Gamma(shape + 1) * U^(1/shape)).
    pub fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        debug_assert!(shape > 0.0 && scale > 0.0);
        if shape < 1.0 {
            let u = self.open01();
            return self.gamma(shape + 1.0, scale) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.open01();
            if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v * scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        (m, xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n)
    }

    #[test]
    fn gamma_has_the_right_mean_and_variance() {
        // Gamma(k, theta): mean k*theta, variance k*theta^2.
        for (k, theta) in [(0.25, 2.0), (1.0, 0.5), (4.0, 0.1)] {
            let mut r = Rng::new(7);
            let xs: Vec<f64> = (0..200_000).map(|_| r.gamma(k, theta)).collect();
            let (m, v) = mean_var(&xs);
            assert!((m / (k * theta) - 1.0).abs() < 0.02, "k={k} mean {m}");
            assert!(
                (v / (k * theta * theta) - 1.0).abs() < 0.05,
                "k={k} var {v}"
            );
        }
    }

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<u64> = (0..5)
            .scan(Rng::new(1), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(Rng::new(1), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            a,
            (0..5)
                .scan(Rng::new(2), |r, _| Some(r.next_u64()))
                .collect::<Vec<_>>()
        );
    }
}
