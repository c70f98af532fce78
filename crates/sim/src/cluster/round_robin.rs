//! `round_robin`: a counter modulo the replicas, from 0 (vllm-router
//! `src/policies/round_robin.rs`: `counter.fetch_add(1) % healthy.len()`).

use super::router::{Fleet, RouteRequest, Router};

#[derive(Default)]
pub struct RoundRobin {
    next: usize,
}

impl Router for RoundRobin {
    fn route(&mut self, _req: &RouteRequest<'_>, fleet: &dyn Fleet) -> usize {
        let k = self.next % fleet.replicas();
        self.next += 1;
        k
    }
}
