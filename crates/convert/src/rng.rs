//! A tiny seeded PRNG (SplitMix64, Steele et al., "Fast splittable pseudorandom number
//! generators", OOPSLA 2014) and the few distributions the timeline and the demo generator need.
//! Our own so a seed gives the same workload whatever version of `rand` the tree resolves.

/// SplitMix64 stream. Deterministic per seed; independent streams come from [`Rng::derive`].
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// One SplitMix64 output step on `x` (also a good 64-bit mixing function).
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng {
            state: mix(seed ^ 0x005E_ED0F_1AB5),
        }
    }

    /// An independent stream for `(self's seed, a, b)`, e.g. one per conversation, so results do
    /// not depend on the order streams are used in (or on threads).
    pub fn derive(seed: u64, a: u64, b: u64) -> Self {
        Rng::new(mix(
            seed ^ mix(a.wrapping_add(GOLDEN) ^ mix(b.wrapping_mul(GOLDEN)))
        ))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo <= hi);
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() - 1)]
    }

    /// An index drawn with the given (non-negative, not all zero) weights.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.uniform() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and sigma (of the underlying normal); sigma 0 gives the
    /// median itself.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        if sigma <= 0.0 {
            return median;
        }
        median * (sigma * self.normal()).exp()
    }

    /// Exponential with the given rate (events per unit).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.uniform()).ln() / rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_derived_streams_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = Rng::derive(7, 1, 0);
        let mut y = Rng::derive(7, 0, 1);
        assert_ne!(x.next_u64(), y.next_u64());
    }

    #[test]
    fn distributions_have_the_documented_centre() {
        let mut r = Rng::new(1);
        let n = 20_000;
        let mut v: Vec<f64> = (0..n).map(|_| r.lognormal(10.0, 1.0)).collect();
        v.sort_by(f64::total_cmp);
        let median = v[n / 2];
        assert!((median - 10.0).abs() < 0.5, "{median}");
        let mean: f64 = (0..n).map(|_| r.exponential(0.5)).sum::<f64>() / n as f64;
        assert!((mean - 2.0).abs() < 0.1, "{mean}");
        let u: f64 = (0..n).map(|_| r.uniform()).sum::<f64>() / n as f64;
        assert!((u - 0.5).abs() < 0.01);
        assert_eq!(r.lognormal(3.0, 0.0), 3.0);
    }
}
