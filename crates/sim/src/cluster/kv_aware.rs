//! `kv_aware`: vllm-router 0.1.17's cost rule over each replica's GPU prefix cache.
//!
//! The rule, read from the 0.1.17 sdist (`src/policies/kv_aware.rs`: `credited_tokens`,
//! `MultiplicativeScorer`, `TemperaturePicker`; the index fed by `src/kv_index/subscriber.rs`)
//! and checked against the real router's decisions (`scripts/kv_aware_check.py`,
//! `crates/cli/tests/kv_aware_check.rs`): per worker,
//!
//! - credited prefix = the longest run of the prompt's blocks, from block 0, that the worker's
//!   KV-event index holds, at most (prompt tokens - 1) / block size blocks;
//! - cost = (prompt tokens - credited tokens + the worker's in-flight prefill tokens) x (its
//!   in-flight requests + 1);
//!
//! the cheapest wins, the first in the router's worker order on ties (`--router-temperature 0`,
//! the default). So load can outweigh a prefix: a replica holding a conversation with one
//! request in flight loses it to an idle one once the prefix covers less than half the prompt,
//! and new conversations (nothing cached) tie on an idle fleet and go to the first replica.
//!
//! Here: the index is the replica's GPU pool at the request's arrival (what complete, timely KV
//! events would tell the router); in flight = the requests routed to the replica that have not
//! finished ([`Fleet::load`]); a request's prefill tokens (prompt - credited, counted when it is
//! routed, as the router does) stay in flight until its first token in the time model
//! ([`Fleet::first_token_s`]: admission + those tokens / `prefill_tokens_per_s`).
//!
//! Approximations: the router counts until the first output frame it relays; here the time
//! model's estimate (not the `vllm` schedule's step that ends the prefill; a shared LMCache's
//! network load not added). The router's view of the events lags by a few ms (its subscriber
//! polls); here none. Not modelled: the CPU/disk/external tier credits (`--kv-penalty-*`: the
//! emulator and vLLM without LMCache publish GPU blocks only), a temperature above 0, session
//! affinity (`--kv-aware-session-affinity-ttl-secs`), LoRA. The worker order is
//! `--router-worker-urls`'; the real router's own order is not (and changes from start to
//! start).

use super::router::{Fleet, RouteRequest, Router};

#[derive(Default)]
pub struct KvAware {
    /// Per replica: (request, its new prefill tokens) routed there whose first token may not
    /// have come yet.
    prefilling: Vec<Vec<(usize, u64)>>,
}

impl KvAware {
    /// Replica `k`'s in-flight prefill tokens at `now`; forgets requests past their first token.
    fn prefill_in_flight(&mut self, fleet: &dyn Fleet, k: usize, now: f64) -> u64 {
        let list = &mut self.prefilling[k];
        list.retain(|&(req, new)| fleet.first_token_s(k, req, new).is_none_or(|t| t > now));
        list.iter().map(|&(_, new)| new).sum()
    }
}

impl Router for KvAware {
    fn route(&mut self, req: &RouteRequest<'_>, fleet: &dyn Fleet) -> usize {
        let n = fleet.replicas();
        if self.prefilling.len() < n {
            self.prefilling.resize_with(n, Vec::new);
        }
        let mut best: Option<(u128, usize, u64)> = None;
        for k in 0..n {
            let new = req
                .prompt_tokens
                .saturating_sub(fleet.cached_prefix_tokens(k, req.index));
            let prefill = self.prefill_in_flight(fleet, k, req.time);
            let cost = (new + prefill) as u128 * (fleet.load(k) as u128 + 1);
            if best.is_none_or(|b| cost < b.0) {
                best = Some((cost, k, new));
            }
        }
        let (_, k, new) = best.unwrap_or((0, 0, req.prompt_tokens));
        self.prefilling[k].push((req.index, new));
        k
    }
}
