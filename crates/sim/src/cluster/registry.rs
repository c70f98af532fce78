//! Every router, one line each: its name (vllm-router's `--policy` value where it has one) and
//! how it is built. Adding a router = one file + one line here.

use super::router::Router;
use super::{
    cache_aware, consistent_hash, ideal_pool, kv_aware, power_of_two, random, round_robin,
    sticky_least_loaded, ClusterConfig,
};

type Build = fn(&ClusterConfig) -> Box<dyn Router>;

pub const ROUTERS: &[(&str, Build)] = &[
    ("round_robin", |_| {
        Box::new(round_robin::RoundRobin::default())
    }),
    ("random", |c| Box::new(random::Random::new(c.seed))),
    ("power_of_two", |c| {
        Box::new(power_of_two::PowerOfTwo::new(c.seed))
    }),
    ("consistent_hash", |_| {
        Box::new(consistent_hash::ConsistentHash::default())
    }),
    ("sticky_least_loaded", |_| {
        Box::new(sticky_least_loaded::StickyLeastLoaded::default())
    }),
    ("cache_aware", |c| {
        Box::new(cache_aware::CacheAware::new(c.cache_aware))
    }),
    ("kv_aware", |_| Box::new(kv_aware::KvAware::default())),
    ("ideal_pool", |_| Box::new(ideal_pool::IdealPool)),
];

/// The router names, in registry order.
pub fn names() -> impl Iterator<Item = &'static str> {
    ROUTERS.iter().map(|r| r.0)
}

/// Build the router `name`, or say which names exist.
pub fn build(name: &str, config: &ClusterConfig) -> Result<Box<dyn Router>, String> {
    ROUTERS
        .iter()
        .find(|r| r.0 == name)
        .map(|r| (r.1)(config))
        .ok_or_else(|| {
            format!(
                "unknown router '{name}'; expected one of: {}",
                names().collect::<Vec<_>>().join(", ")
            )
        })
}
