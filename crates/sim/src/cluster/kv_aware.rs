//! `kv_aware` (ours): the replica whose GPU prefix cache holds the longest prefix of the prompt
//! right now (the engine's own pool, as KV events would tell a router), the least loaded among
//! equals, then the first. Not vllm-router's `kv_aware` cost formula (tier credits
//! `--kv-penalty-*`, softmax `--router-temperature`, session affinity): that is not modelled.

use super::router::{Fleet, RouteRequest, Router};

#[derive(Default)]
pub struct KvAware;

impl Router for KvAware {
    fn route(&mut self, req: &RouteRequest<'_>, fleet: &dyn Fleet) -> usize {
        (0..fleet.replicas())
            .min_by_key(|&k| {
                (
                    std::cmp::Reverse(fleet.cached_prefix_tokens(k, req.index)),
                    fleet.load(k),
                )
            })
            .unwrap_or(0)
    }
}
