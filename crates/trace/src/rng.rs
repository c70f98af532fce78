//! The workspace's seeded random numbers: our own few lines instead of a crate, so a seed gives
//! the same stream on every platform and with every version of `rand` the tree might resolve.
//! Golden numbers hang on these streams: never change one (add a new constructor or method
//! instead). Two algorithms, each kept because its streams are pinned:
//!
//! - [`SplitMix64`] (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
//!   OOPSLA 2014). Used by `convert` through [`SplitMix64::derive`] (the demo CSV's
//!   conversations, the synthetic timeline's think times and arrivals, the log's pid: the bundled
//!   `data/` demo files and convert's goldens come from these draws), `learn` through
//!   [`SplitMix64::new`] (row sampling and the scorer sweep's configurations: the sweep and train
//!   figures), the emulator's seeded test workloads, and the cache crate's libCacheSim parity
//!   streams (their expected counts were produced by libCacheSim on those streams).
//! - [`Xoshiro256`] (xoshiro256**, Blackman and Vigna), seeded through [`splitmix64`], with the
//!   distributions of `bench`'s arrival processes (polar normal, gamma) and its random-token
//!   workloads: `bench`'s schedules and prompts come from it.
//!
//! [`mix64`] and [`splitmix64`] are the stateless mixers (ids to token ids, request UUIDs,
//! LMCache lookup hashes).

/// The golden-ratio increment of SplitMix64 (2^64 / phi, odd).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (Stafford's variant 13): a bijection on u64 and a good mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One SplitMix64 step from state `x` (add the increment, then mix): the first output of
/// `SplitMix64::new(x)`, used as a stateless hash of an id.
pub fn splitmix64(x: u64) -> u64 {
    mix64(x.wrapping_add(GOLDEN_GAMMA))
}

/// A SplitMix64 stream. Deterministic per seed.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The stream whose state starts at `seed` (`learn`, the emulator's and the cache crate's
    /// tests).
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// An independent stream for `(seed, a, b)`, e.g. one per conversation, so results do not
    /// depend on the order streams are used in (or on threads). `convert`'s streams.
    pub fn derive(seed: u64, a: u64, b: u64) -> Self {
        let key =
            mix64(seed ^ mix64(a.wrapping_add(GOLDEN_GAMMA) ^ mix64(b.wrapping_mul(GOLDEN_GAMMA))));
        SplitMix64 {
            state: mix64(key ^ 0x005E_ED0F_1AB5),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) by modulo (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
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

/// xoshiro256** (Blackman and Vigna), seeded through [`splitmix64`]; `bench`'s generator.
///
/// Deviation from vLLM: `vllm bench serve` draws from NumPy's global generator
/// (`np.random.gamma`), so equal seeds do not give equal schedules across the two tools; the
/// distributions (and the normalization of the schedule, see bench's `arrival`) are the same.
#[derive(Debug, Clone)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut s = [0u64; 4];
        for v in &mut s {
            x = x.wrapping_add(GOLDEN_GAMMA);
            *v = splitmix64(x);
        }
        Xoshiro256 { s }
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
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1].
    fn open01(&mut self) -> f64 {
        1.0 - self.uniform()
    }

    /// Uniform integer in [0, n) (n > 0); Lemire's multiply-shift, bias below 2^-32 for our n.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Marsaglia's polar method).
    pub fn normal(&mut self) -> f64 {
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
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

/// A seeded stream of object ids over `n` popular objects: one reference in 10 is a fresh
/// object (ids from `n` up), the others the smaller of two uniform draws among `n` (skewed to
/// low ids). The cache crate's libCacheSim parity test (its expected counts come from
/// libCacheSim on this stream; `scripts/libcachesim_check.py --random` draws the same) and its
/// policy bench.
pub fn skewed_ids(seed: u64, n: u64, len: usize) -> Vec<u32> {
    let (mut rng, mut fresh) = (SplitMix64::new(seed), n);
    (0..len)
        .map(|_| {
            if rng.next_u64() % 10 == 0 {
                fresh += 1;
                (fresh - 1) as u32
            } else {
                let a = rng.next_u64() % n;
                let b = rng.next_u64() % n;
                a.min(b) as u32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        (m, xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n)
    }

    /// The streams as they were before they moved here (figures printed by the old
    /// bench/src/rng.rs, convert/src/rng.rs and learn's `SplitMix`): a changed draw fails here.
    #[test]
    fn streams_are_pinned() {
        // SplitMix64's published first output for seed 0
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        let mut s = SplitMix64::new(42);
        let draws = [s.next_u64(), s.next_u64(), s.next_u64()];
        assert_eq!(
            draws,
            [
                0xBDD7_3226_2FEB_6E95,
                0x28EF_E333_B266_F103,
                0x4752_6757_130F_9F52
            ]
        );
        let mut d = SplitMix64::derive(7, 3, 5);
        let draws = [d.next_u64(), d.next_u64(), d.next_u64()];
        assert_eq!(
            draws,
            [
                0x77F6_7299_065D_9AEA,
                0xC2F4_39C3_562A_B002,
                0xBF81_1F51_80EE_4DE2
            ]
        );
        let mut c = SplitMix64::derive(1, 2, 3);
        assert_eq!(c.lognormal(10.0, 1.0), 2.8292804124736284);
        assert_eq!(c.exponential(0.5), 1.6440470350360867);
        assert_eq!(c.range(3, 9), 7);
        let mut x = Xoshiro256::new(9);
        let draws = [x.next_u64(), x.next_u64(), x.next_u64()];
        assert_eq!(
            draws,
            [
                0x41DB_A689_F49A_8071,
                0x07FE_1BE5_C7D3_5413,
                0x6DFE_D4FD_2925_A434
            ]
        );
        let mut g = Xoshiro256::new(3);
        let draws = [g.gamma(0.5, 2.0), g.gamma(0.5, 2.0), g.gamma(0.5, 2.0)];
        assert_eq!(
            draws,
            [0.13164693253363388, 0.8318388460657601, 0.6829644265997209]
        );
    }

    #[test]
    fn gamma_has_the_right_mean_and_variance() {
        // Gamma(k, theta): mean k*theta, variance k*theta^2.
        for (k, theta) in [(0.25, 2.0), (1.0, 0.5), (4.0, 0.1)] {
            let mut r = Xoshiro256::new(7);
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
            .scan(Xoshiro256::new(1), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(Xoshiro256::new(1), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            a,
            (0..5)
                .scan(Xoshiro256::new(2), |r, _| Some(r.next_u64()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn same_seed_same_stream_and_derived_streams_differ() {
        let a: Vec<u64> = (0..4)
            .map(|_| SplitMix64::derive(7, 0, 0).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = SplitMix64::derive(7, 1, 0);
        let mut y = SplitMix64::derive(7, 0, 1);
        assert_ne!(x.next_u64(), y.next_u64());
    }

    #[test]
    fn distributions_have_the_documented_centre() {
        let mut r = SplitMix64::derive(1, 0, 0);
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
