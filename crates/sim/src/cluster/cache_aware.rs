//! `cache_aware`: vllm-router's default policy (`src/policies/cache_aware.rs`, `src/tree.rs`;
//! the same design as SGLang's model gateway).
//!
//! - Load: each replica's requests in flight as the router counts them. The fleet is
//!   imbalanced when `max - min > balance_abs_threshold` AND `max > min * balance_rel_threshold`;
//!   then the least-loaded replica gets the request (the first on ties) and the tree still
//!   learns it.
//! - Otherwise one approximate radix tree over what the router sent, every node tagged with
//!   the replicas (tenants) it was sent to: the request's longest match in the tree, divided by
//!   its length, is the match rate. Above `cache_threshold` the request goes to the tenant of
//!   the deepest matched node (the one that touched it last: the tree's `last_tenant`); at or
//!   below it, to the least-loaded replica (the first on ties: with a sequential client every
//!   new conversation lands on replica 0). Then the request's text is inserted under the
//!   chosen replica. (Older SGLang versions sent a low match to the replica with the smallest
//!   tree; 0.1.17's binary has no such function, and against it the smallest-tree rule agreed
//!   on 38 of 120 requests where this one agreed on 110: `scripts/router_check.sh`.)
//! - Every `eviction_interval_secs` (trace time, from the first request) each replica's share
//!   of the tree is cut to `max_tree_size` units, least recently used leaves first.
//!
//! Text and tokens: the router's tree holds characters of the request text (the prompt, or the
//! chat messages' text); a trace holds token ids or block hashes. Here the units are the
//! prompt's GPU blocks (16 tokens, the partial tail its own shorter unit), weighted by their
//! tokens: a match rate is matched prompt tokens / prompt tokens, a match ends on a block
//! boundary (the router's can end mid-block), and `max_tree_size` counts tokens, not
//! characters (about 3-4 characters per token in English text: the default 2^25 is never
//! reached by the bundled traces either way). vllm-router 0.1.17's binary was run, not read:
//! its source is not in the store; the stored source is a later revision that adds exact
//! session-key matching (`session_id_match`), absent from 0.1.17's binary. The defaults below
//! are 0.1.17's (`vllm_router/router_args.py`).

use std::collections::HashMap;

use inferencelab_cache::ObjId;
use serde::{Deserialize, Serialize};

use super::router::{least_loaded, Fleet, RouteRequest, Router};

/// The policy's knobs, with vllm-router 0.1.17's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheAwareConfig {
    pub cache_threshold: f64,
    pub balance_abs_threshold: usize,
    pub balance_rel_threshold: f64,
    pub eviction_interval_secs: f64,
    pub max_tree_size: u64,
}

impl Default for CacheAwareConfig {
    fn default() -> Self {
        CacheAwareConfig {
            cache_threshold: 0.3,
            balance_abs_threshold: 64,
            balance_rel_threshold: 1.5,
            eviction_interval_secs: 120.0,
            max_tree_size: 1 << 25,
        }
    }
}

struct Node {
    depth: u32,
    tokens: u64,
    /// (replica, last access) per tenant.
    tenants: Vec<(usize, u64)>,
    last_tenant: usize,
}

/// The approximate tree: prompt keys are prefix-chained, so a key names its whole path and the
/// tree is a map from key to node.
#[derive(Default)]
pub struct ApproxTree {
    nodes: HashMap<ObjId, Node>,
    /// Units (tokens) per tenant.
    size: Vec<u64>,
    clock: u64,
}

impl ApproxTree {
    /// Tokens of the longest prefix of `req`'s prompt in the tree, and the tenant of its
    /// deepest node.
    pub fn prefix_match(&self, req: &RouteRequest<'_>) -> (u64, Option<usize>) {
        let (mut matched, mut tenant) = (0, None);
        for &k in req.prompt_keys {
            let Some(n) = self.nodes.get(&k) else { break };
            matched += n.tokens;
            tenant = Some(n.last_tenant);
        }
        (matched, tenant)
    }

    pub fn insert(&mut self, req: &RouteRequest<'_>, tenant: usize) {
        if self.size.len() <= tenant {
            self.size.resize(tenant + 1, 0);
        }
        self.clock += 1;
        for (d, &k) in req.prompt_keys.iter().enumerate() {
            let tokens = req.key_tokens(d);
            let n = self.nodes.entry(k).or_insert_with(|| Node {
                depth: d as u32,
                tokens,
                tenants: Vec::new(),
                last_tenant: tenant,
            });
            n.last_tenant = tenant;
            match n.tenants.iter_mut().find(|t| t.0 == tenant) {
                Some(t) => t.1 = self.clock,
                None => {
                    n.tenants.push((tenant, self.clock));
                    self.size[tenant] += n.tokens;
                }
            }
        }
    }

    /// Cut every tenant's share to `max` units, least recently used first, deepest first among
    /// equals (a node is touched with its whole path, so that removes leaves before parents).
    pub fn evict_by_size(&mut self, max: u64) {
        for tenant in 0..self.size.len() {
            if self.size[tenant] <= max {
                continue;
            }
            let mut mine: Vec<(u64, std::cmp::Reverse<u32>, ObjId)> = self
                .nodes
                .iter()
                .filter_map(|(&k, n)| {
                    let t = n.tenants.iter().find(|t| t.0 == tenant)?;
                    Some((t.1, std::cmp::Reverse(n.depth), k))
                })
                .collect();
            mine.sort_unstable();
            for (_, _, k) in mine {
                if self.size[tenant] <= max {
                    break;
                }
                let n = self.nodes.get_mut(&k).expect("listed");
                n.tenants.retain(|t| t.0 != tenant);
                self.size[tenant] -= n.tokens;
                if n.tenants.is_empty() {
                    self.nodes.remove(&k);
                } else if n.last_tenant == tenant {
                    n.last_tenant = n.tenants.iter().max_by_key(|t| t.1).expect("some").0;
                }
            }
        }
    }

    pub fn tenant_size(&self, tenant: usize) -> u64 {
        self.size.get(tenant).copied().unwrap_or(0)
    }
}

pub struct CacheAware {
    config: CacheAwareConfig,
    tree: ApproxTree,
    next_eviction: Option<f64>,
}

impl CacheAware {
    pub fn new(config: CacheAwareConfig) -> Self {
        CacheAware {
            config,
            tree: ApproxTree::default(),
            next_eviction: None,
        }
    }
}

impl Router for CacheAware {
    fn route(&mut self, req: &RouteRequest<'_>, fleet: &dyn Fleet) -> usize {
        let c = self.config;
        if c.eviction_interval_secs > 0.0 {
            let next = self
                .next_eviction
                .get_or_insert(req.time + c.eviction_interval_secs);
            while *next <= req.time {
                self.tree.evict_by_size(c.max_tree_size);
                *next += c.eviction_interval_secs;
            }
        }
        let n = fleet.replicas();
        let loads = (0..n).map(|k| fleet.load(k));
        let (min, max) = loads.fold((usize::MAX, 0), |(lo, hi), l| (lo.min(l), hi.max(l)));
        let min = if min == usize::MAX { 0 } else { min };
        let imbalanced = max.saturating_sub(min) > c.balance_abs_threshold
            && (max as f32) > (min as f32 * c.balance_rel_threshold as f32);
        let k = if imbalanced {
            least_loaded(fleet, 0..n)
        } else {
            let (matched, tenant) = self.tree.prefix_match(req);
            let rate = if req.prompt_tokens == 0 {
                0.0
            } else {
                matched as f32 / req.prompt_tokens as f32
            };
            match tenant {
                Some(t) if rate > c.cache_threshold as f32 && t < n => t,
                _ => least_loaded(fleet, 0..n),
            }
        };
        self.tree.insert(req, k);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(keys: &[ObjId], tokens: u64) -> RouteRequest<'_> {
        RouteRequest {
            index: 0,
            time: 0.0,
            id: "r",
            session: None,
            prompt_keys: keys,
            prompt_tokens: tokens,
            block_size: 16,
        }
    }

    #[test]
    fn the_deepest_match_names_its_last_tenant_and_eviction_drops_old_leaves_first() {
        let mut t = ApproxTree::default();
        // tenant 0: [1 2 3] (48 tokens); tenant 1: [1 2 4] (40 tokens: 8 in the tail)
        t.insert(&req(&[1, 2, 3], 48), 0);
        t.insert(&req(&[1, 2, 4], 40), 1);
        assert_eq!(t.prefix_match(&req(&[1, 2, 3, 9], 64)), (48, Some(0)));
        assert_eq!(t.prefix_match(&req(&[1, 2, 4], 40)), (40, Some(1)));
        // [1 2] were touched last by tenant 1
        assert_eq!(t.prefix_match(&req(&[1, 2, 7], 48)), (32, Some(1)));
        assert_eq!((t.tenant_size(0), t.tenant_size(1)), (48, 40));
        // cut both to 32 tokens: tenant 0 loses [3], tenant 1 loses its tail [4]
        t.evict_by_size(32);
        assert_eq!((t.tenant_size(0), t.tenant_size(1)), (32, 32));
        assert_eq!(t.prefix_match(&req(&[1, 2, 3], 48)), (32, Some(1)));
    }
}
