//! `consistent_hash`: a ring of 160 virtual nodes per replica at `fbi_hash("{url}:{i}")`; a
//! request goes to the first node at or after `fbi_hash(key)`, wrapping around (vllm-router
//! `src/policies/consistent_hash.rs`). The key, as `hash_key.rs::extract_hash_key` builds it:
//! the first session header (`x-session-id`, then `x-user-id`, ...) as
//! `header:x-session-id:VALUE`; else body fields (`session_params.session_id`, `user`, ...);
//! else the request text. Here: `header:x-session-id:CONVERSATION` when the trace has
//! conversations, else `header:x-request-id:ID` for a vLLM log's `chatcmpl-ID` / `cmpl-ID`
//! (the client's header, which vLLM puts in the id), else `request:ID` (deviation: the router
//! would hash the request body, which a trace does not keep).

use std::collections::BTreeMap;

use super::fbi_hash::fbi_hash;
use super::router::{Fleet, RouteRequest, Router};

/// vllm-router's `VIRTUAL_NODES_PER_WORKER`.
pub const VIRTUAL_NODES: u32 = 160;

#[derive(Default)]
pub struct ConsistentHash {
    /// Ring position -> replica; built on first use from the fleet's URLs (a later node at
    /// the same position replaces the earlier, as the router's `BTreeMap::insert`).
    ring: BTreeMap<u64, usize>,
}

/// The routing key of a request: its session header, else the `x-request-id` header a vLLM
/// log's id carries (vLLM names a request `chatcmpl-`/`cmpl-` + the client's `X-Request-Id`,
/// which `inferencelab bench` always sends), else the id itself.
pub fn hash_key(req: &RouteRequest<'_>) -> String {
    if let Some(s) = &req.session {
        return format!("header:x-session-id:{s}");
    }
    match ["chatcmpl-", "cmpl-"]
        .iter()
        .find_map(|p| req.id.strip_prefix(p))
    {
        Some(header) => format!("header:x-request-id:{header}"),
        None => format!("request:{}", req.id),
    }
}

impl Router for ConsistentHash {
    fn route(&mut self, req: &RouteRequest<'_>, fleet: &dyn Fleet) -> usize {
        if self.ring.is_empty() {
            for k in 0..fleet.replicas() {
                for i in 0..VIRTUAL_NODES {
                    let url = fleet.worker_url(k);
                    self.ring.insert(fbi_hash(&format!("{url}:{i}")), k);
                }
            }
        }
        let h = fbi_hash(&hash_key(req));
        self.ring
            .range(h..)
            .next()
            .or_else(|| self.ring.iter().next())
            .map_or(0, |(_, &k)| k)
    }
}
