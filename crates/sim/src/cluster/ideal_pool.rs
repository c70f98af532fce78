//! `ideal_pool`: the bound. One replica with the whole fleet's memory (N x `num_gpu_blocks`,
//! N x the LMCache tier) serves every request: no hit is lost to routing. It is a hit-ratio
//! bound, not a latency one (one replica's scheduler and speed).

use super::router::{Fleet, RouteRequest, Router};

#[derive(Default)]
pub struct IdealPool;

impl Router for IdealPool {
    fn route(&mut self, _req: &RouteRequest<'_>, _fleet: &dyn Fleet) -> usize {
        0
    }
    fn pooled(&self) -> bool {
        true
    }
}
