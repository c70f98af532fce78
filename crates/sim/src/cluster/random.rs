//! `random`: a uniform replica per request, from a seeded stream (vllm-router's uses the thread
//! RNG: same distribution, other draws).

use super::router::{Fleet, RouteRequest, Router, SplitMix};

pub struct Random {
    rng: SplitMix,
}

impl Random {
    pub fn new(seed: u64) -> Self {
        Random {
            rng: SplitMix(seed),
        }
    }
}

impl Router for Random {
    fn route(&mut self, _req: &RouteRequest<'_>, fleet: &dyn Fleet) -> usize {
        self.rng.below(fleet.replicas())
    }
}
