//! `power_of_two`: two distinct replicas drawn at random, the one with fewer requests in flight
//! wins, the first drawn on a tie (vllm-router `src/policies/power_of_two.rs`; its optional
//! externally polled loads are not modelled: in-flight counts only).

use super::router::{Fleet, RouteRequest, Router, SplitMix};

pub struct PowerOfTwo {
    rng: SplitMix,
}

impl PowerOfTwo {
    pub fn new(seed: u64) -> Self {
        PowerOfTwo {
            rng: SplitMix(seed),
        }
    }
}

impl Router for PowerOfTwo {
    fn route(&mut self, _req: &RouteRequest<'_>, fleet: &dyn Fleet) -> usize {
        let n = fleet.replicas();
        if n == 1 {
            return 0;
        }
        let a = self.rng.below(n);
        let mut b = self.rng.below(n);
        while b == a {
            b = self.rng.below(n);
        }
        if fleet.load(a) <= fleet.load(b) {
            a
        } else {
            b
        }
    }
}
