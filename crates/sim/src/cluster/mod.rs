//! Many replicas behind a router (DESIGN.md section 10, issue 21): N vLLM replicas, each its
//! own GPU prefix cache, scheduler and (optionally) LMCache tier, the engine path of a single
//! server (`engine_run`'s `TraceTier` / `VllmTier`, one per replica, not a copy), and a router
//! that sends each request, in arrival order, to one of them.
//!
//! Time: every replica is advanced to a request's arrival before the router looks at the
//! fleet. Under the `vllm` schedule a replica runs the step that starts before the arrival to
//! its end, so a router reading cache contents (`kv_aware`) sees them up to one step late; the
//! in-flight counts the load-aware routers read use each request's own finish time, so they
//! are exact.
//!
//! Figures (`ClusterResult`): the fleet's token hit ratio and compute saved; per replica its
//! requests, prompt tokens, hits and busy time (time with a request admitted and unfinished);
//! imbalance = max / mean requests per replica; queueing delay (admission - arrival) and TTFT
//! from the time model (queueing + the uncached prompt tokens at `prefill_tokens_per_s`; the
//! schedulers do not track the first token's step).
//!
//! A real fleet's logs are merged into one trace, with each request's actual replica, by
//! [`fleet_logs`].
//!
//! One LMCache for the fleet (`lmcache_shared`, `--lmcache-shared`: LMCache's remote backend,
//! one tier of the configured size that every replica stores to and loads from): the engines
//! hold no tier of their own; the driver steps the replicas instant by instant in time order
//! (an event of the `trace` schedule, a step's start or end under `vllm`; equal times by
//! replica) and lends the one tier to the replica it steps, so replica B's lookup sees what
//! replica A stored before it. Held-back prefill stores (`trace` schedule) of every replica are
//! run before any replica's instant. Loads from it cross the network ([`LmcacheNetwork`]):
//! they lengthen the step that admits the request (`vllm`), the request's time-model finish
//! when the trace has none, and its TTFT estimate. Deviation: a step in flight when a request
//! arrives is run to its end before the router looks (as without sharing), so its stores can
//! reach the shared tier up to one step before another replica's lookups that come earlier.

pub mod cache_aware;
pub mod consistent_hash;
pub mod fbi_hash;
pub mod fleet_logs;
pub mod ideal_pool;
pub mod kv_aware;
pub mod power_of_two;
pub mod random;
pub mod registry;
pub mod round_robin;
pub mod router;
pub mod sticky_least_loaded;

use std::collections::BinaryHeap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{HitSemantics, LmcacheRules, Schedule, SimConfig};
use crate::driver::{effective_schedule, Prepared, RequestHits};
use crate::engine_run::{Describe, EngineTier, Lmcache, LoadCost, Served, TierTotals};
use crate::error::{SimError, SimResult};
use crate::queueing::percentile;
use crate::result::ratio;

pub use cache_aware::CacheAwareConfig;
pub use router::{Fleet, RouteRequest, Router};

/// The fleet: how many replicas, which router, what it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    pub replicas: usize,
    /// A name from [`registry::ROUTERS`].
    pub router: String,
    /// The replicas' URLs as the router knows them (the hash routers hash them); empty:
    /// `http://127.0.0.1:8001`, `:8002`, ...
    pub worker_urls: Vec<String>,
    /// Seed of the random routers.
    pub seed: u64,
    pub cache_aware: CacheAwareConfig,
    /// One LMCache tier (the configured size) shared by every replica: LMCache's remote
    /// backend. Default: each replica has its own.
    pub lmcache_shared: bool,
    /// The shared tier's network (ignored without `lmcache_shared`).
    pub lmcache_network: LmcacheNetwork,
}

/// The network between the replicas and a shared LMCache (its remote backend): a load of T
/// tokens takes `latency_ms + T x kv_bytes_per_token / (gbit_per_s x 1e9 / 8)` (one rank's
/// bytes with tensor or pipeline parallelism: each rank loads its share), once per
/// request admitted with LMCache hits. Defaults: a 100 Gbit/s link (a common datacenter NIC
/// and the line rate a remote KV store gets at best; LMCache's own remote connectors
/// (`lm://` server, Redis, Mooncake store) run over it), and 0.5 ms, a round trip within a
/// datacenter ("Latency numbers every programmer should know": 500 us). Per-replica tiers are
/// not charged (their PCIe copies are outside simulate's time model, as for a single server;
/// at 25 GB/s PCIe they would cost half of the 100 Gbit/s network's time per token).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmcacheNetwork {
    pub gbit_per_s: f64,
    pub latency_ms: f64,
}

impl Default for LmcacheNetwork {
    fn default() -> Self {
        LmcacheNetwork {
            gbit_per_s: 100.0,
            latency_ms: 0.5,
        }
    }
}

/// KV bytes per token of the load cost when the run has no model: Qwen3-8B's (36 layers x 8
/// KV heads x 128 x 2 x bf16), the 8B model the default time model describes.
pub const DEFAULT_KV_BYTES_PER_TOKEN: u64 = 147_456;

impl LmcacheNetwork {
    fn cost(&self, config: &SimConfig) -> LoadCost {
        LoadCost {
            kv_bytes_per_token: config
                .model
                .as_ref()
                .map_or(DEFAULT_KV_BYTES_PER_TOKEN, |m| m.kv_bytes_per_token()),
            bytes_per_s: self.gbit_per_s * 1e9 / 8.0,
            latency_s: self.latency_ms / 1000.0,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            replicas: 1,
            router: "round_robin".into(),
            worker_urls: Vec::new(),
            seed: 0,
            cache_aware: CacheAwareConfig::default(),
            lmcache_shared: false,
            lmcache_network: LmcacheNetwork::default(),
        }
    }
}

impl ClusterConfig {
    /// Replica `k`'s URL.
    pub fn worker_url(&self, k: usize) -> String {
        self.worker_urls
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", 8001 + k))
    }
}

/// One replica's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplicaFigures {
    pub replica: usize,
    pub url: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub gpu_hit_tokens: u64,
    pub cpu_hit_tokens: u64,
    pub disk_hit_tokens: u64,
    /// (GPU + LMCache hit tokens) / prompt tokens.
    pub token_hit_ratio: f64,
    /// Seconds with at least one of its requests admitted and unfinished.
    pub busy_s: f64,
    pub gpu_evictions: u64,
    pub preemptions: u64,
    pub rejected: u64,
    /// Its GPU policy's judge, if it has one (`ResultRow::eviction_judge`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_judge: Option<inferencelab_cache::JudgeCounts>,
}

/// A fleet run's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterResult {
    pub router: String,
    pub replicas: usize,
    pub schedule: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub gpu_hit_tokens: u64,
    pub cpu_hit_tokens: u64,
    pub disk_hit_tokens: u64,
    /// The fleet's (GPU + LMCache) hit tokens / prompt tokens.
    pub token_hit_ratio: f64,
    pub gpu_token_hit_ratio: f64,
    /// Prefill FLOPs saved / total (with a model), else `None`.
    pub compute_saved_ratio: Option<f64>,
    /// Max / mean requests per replica (1 = even).
    pub imbalance: f64,
    pub queue_delay_p50_s: f64,
    pub queue_delay_p90_s: f64,
    pub ttft_p50_s: f64,
    pub ttft_p90_s: f64,
    /// One LMCache tier for the fleet (`--lmcache-shared`).
    pub lmcache_shared: bool,
    /// Seconds of network loads from the shared tier, summed over requests (0 without one).
    pub lmcache_load_s: f64,
    /// The shared tier's network (`None` without one).
    pub lmcache_network_gbit_per_s: Option<f64>,
    pub lmcache_network_latency_ms: Option<f64>,
    pub per_replica: Vec<ReplicaFigures>,
    pub sim_seconds: f64,
}

/// Where one request went and what it got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Routed {
    pub req: usize,
    pub replica: usize,
    pub hits: RequestHits,
    pub finish_s: f64,
}

struct View<'x, 'a, 'b> {
    tiers: &'x [EngineTier<'a, 'b>],
    loads: &'x [usize],
    urls: &'x [String],
    served: &'x [Option<(RequestHits, f64)>],
    prefill_tokens_per_s: f64,
}

impl Fleet for View<'_, '_, '_> {
    fn replicas(&self) -> usize {
        self.tiers.len()
    }
    fn load(&self, k: usize) -> usize {
        self.loads[k]
    }
    fn cached_prefix_tokens(&self, k: usize, req: usize) -> u64 {
        self.tiers[k].cached_prefix_tokens(req)
    }
    fn worker_url(&self, k: usize) -> &str {
        &self.urls[k]
    }
    fn first_token_s(&self, k: usize, req: usize, new_tokens: u64) -> Option<f64> {
        let prefill = new_tokens as f64 / self.prefill_tokens_per_s;
        match self.served[req] {
            Some((h, _)) if h.rejected => Some(f64::NEG_INFINITY),
            Some((h, finish)) if !finish.is_nan() => Some((h.admitted_s + prefill).min(finish)),
            _ => self.tiers[k].admitted_s(req).map(|t| t + prefill),
        }
    }
}

/// A time and a replica in a min-heap: the earliest first, then the lower replica.
#[derive(PartialEq)]
struct Finish(f64, usize);
impl Eq for Finish {}
impl PartialOrd for Finish {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Finish {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
    }
}

/// Run the fleet.
pub fn run(
    prepared: &Prepared<'_>,
    config: &SimConfig,
    cluster: &ClusterConfig,
) -> SimResult<ClusterResult> {
    run_observed(prepared, config, cluster, |_| {})
}

fn check(config: &SimConfig, cluster: &ClusterConfig) -> SimResult<()> {
    let refuse = |m: &str| Err(SimError::Config(m.to_string()));
    if cluster.replicas == 0 {
        return refuse("--replicas 0: a fleet needs at least one replica");
    }
    let net = &cluster.lmcache_network;
    if cluster.lmcache_shared && !(net.gbit_per_s > 0.0 && net.latency_ms >= 0.0) {
        return Err(SimError::Config(format!(
            "--lmcache-network-gbps {} / --lmcache-network-latency-ms {}: give a bandwidth above \
             0 and a latency of 0 or more",
            net.gbit_per_s, net.latency_ms
        )));
    }
    if config.hit_semantics != HitSemantics::Prefix || !config.engine.rules {
        return refuse(
            "--replicas runs vLLM's engine rules per replica; drop --hit-semantics any and \
             --gpu-model abstract",
        );
    }
    if config.engine.lmcache_rules != LmcacheRules::Engine {
        return refuse("--replicas needs LMCache's engine rules (drop --lmcache-rules simulator)");
    }
    if !cluster.worker_urls.is_empty() && cluster.worker_urls.len() != cluster.replicas {
        return Err(SimError::Config(format!(
            "{} worker URLs for {} replicas: give one URL per replica, or none",
            cluster.worker_urls.len(),
            cluster.replicas
        )));
    }
    Ok(())
}

/// [`run`], telling `observe` where each request went and what it got (in the order the
/// replicas finish them).
pub fn run_observed(
    prepared: &Prepared<'_>,
    config: &SimConfig,
    cluster: &ClusterConfig,
    mut observe: impl FnMut(Routed),
) -> SimResult<ClusterResult> {
    check(config, cluster)?;
    crate::driver::check(prepared, config)?;
    let mut router = registry::build(&cluster.router, cluster).map_err(SimError::Config)?;
    let started = Instant::now();
    let pooled = router.pooled();
    let n = if pooled { 1 } else { cluster.replicas };
    let shared = cluster.lmcache_shared;
    let cfg = &if pooled {
        pooled_config(config, cluster.replicas as u64, shared)
    } else {
        config.clone()
    };
    prepared.annotate_for(cfg);
    let trace = prepared.trace;
    let reqs = &trace.requests;
    let answers = cfg.engine.answers;
    let seq = prepared.sequences(answers)?;
    if cfg.gpu.policy.needs_oracle() {
        return Err(SimError::Config(format!(
            "--replicas does not run oracle policies yet ({}): pick an online policy",
            cfg.gpu.policy.name()
        )));
    }
    let cpu_oracle = prepared.cpu_next_by_request_slice();
    // one tier per replica, or one for the fleet that the replicas borrow in turn
    let mut lms: Vec<Option<Lmcache<'_>>> = (0..if shared { 0 } else { n })
        .map(|_| Lmcache::new(cfg, prepared, cpu_oracle))
        .collect();
    let mut one = if shared {
        Lmcache::new(cfg, prepared, cpu_oracle)
    } else {
        None
    };
    let usable = if cfg.gpu.policy.is_unbounded() {
        u64::MAX
    } else {
        cfg.gpu.capacity.saturating_sub(1)
    };
    let schedule = effective_schedule(trace, cfg);
    let describe = || Describe {
        trace,
        kinds: prepared.kinds(),
        blocks: &seq.blocks,
        oracle: None,
    };
    let mut tiers: Vec<EngineTier<'_, '_>> = if shared {
        (0..n)
            .map(|_| EngineTier::new(schedule, cfg, seq, describe(), None, usable))
            .collect()
    } else {
        lms.iter_mut()
            .map(|lm| EngineTier::new(schedule, cfg, seq, describe(), lm.as_mut(), usable))
            .collect()
    };
    // without an LMCache tier at all there is nothing to share: the replicas run apart
    let stepped = one.is_some();
    let load_cost = stepped.then(|| cluster.lmcache_network.cost(cfg));
    if let Some(cost) = load_cost {
        for tier in tiers.iter_mut() {
            tier.charge_loads(cost);
        }
    }
    let mut lent = one.as_mut();
    let mut stepper = Stepper::new(n);
    let urls: Vec<String> = (0..n).map(|k| cluster.worker_url(k)).collect();
    let bs = prepared.gpu.block_size as u64;

    let mut assigned = vec![usize::MAX; reqs.len()];
    let mut served: Vec<Option<(RequestHits, f64)>> = vec![None; reqs.len()];
    let mut loads = vec![0usize; n];
    let mut finishes: BinaryHeap<Finish> = BinaryHeap::new();
    let mut buf: Vec<Served> = Vec::new();
    let mut take = |buf: &mut Vec<Served>,
                    finishes: &mut BinaryHeap<Finish>,
                    served: &mut Vec<Option<(RequestHits, f64)>>,
                    assigned: &[usize]| {
        for s in buf.drain(..) {
            let k = assigned[s.req];
            let at = if s.finish_s.is_nan() {
                reqs[s.req].timestamp
            } else {
                s.finish_s
            };
            finishes.push(Finish(at, k));
            served[s.req] = Some((s.hits, s.finish_s));
            observe(Routed {
                req: s.req,
                replica: k,
                hits: s.hits,
                finish_s: s.finish_s,
            });
        }
    };
    for (i, r) in reqs.iter().enumerate() {
        if stepped {
            let mut serve = |s| buf.push(s);
            stepper.run_until(&mut tiers, &mut lent, r.timestamp, &mut serve);
        } else {
            for tier in tiers.iter_mut() {
                tier.run_until(r.timestamp, &mut |s| buf.push(s));
            }
        }
        take(&mut buf, &mut finishes, &mut served, &assigned);
        // the router's in-flight counts: a request leaves when it finishes
        while finishes.peek().is_some_and(|f| f.0 <= r.timestamp) {
            let f = finishes.pop().expect("peeked");
            loads[f.1] -= 1;
        }
        let route = RouteRequest {
            index: i,
            time: r.timestamp,
            id: &r.id,
            session: r.conversation.map(|c| c.to_string()),
            prompt_keys: prepared.gpu.request(i),
            prompt_tokens: r.input_length as u64,
            block_size: bs,
        };
        let view = View {
            tiers: &tiers,
            loads: &loads,
            urls: &urls,
            served: &served,
            prefill_tokens_per_s: cfg.timing.prefill_tokens_per_s,
        };
        let k = router.route(&route, &view);
        if k >= n {
            return Err(SimError::Config(format!(
                "router {} picked replica {k} of {n}",
                cluster.router
            )));
        }
        assigned[i] = k;
        loads[k] += 1;
        if stepped {
            stepper.flush_stores(&mut tiers, &mut lent, r.timestamp);
            stepper.with(&mut tiers, &mut lent, k, |t| {
                t.arrive(i, &mut |s| buf.push(s))
            });
        } else {
            tiers[k].arrive(i, &mut |s| buf.push(s));
        }
        take(&mut buf, &mut finishes, &mut served, &assigned);
    }
    if stepped {
        // every replica to its end, in time order; then closing them has nothing left to do
        // with the tier
        let mut serve = |s| buf.push(s);
        stepper.run_until(&mut tiers, &mut lent, f64::INFINITY, &mut serve);
        stepper.flush_stores(&mut tiers, &mut lent, f64::INFINITY);
        if let Some(lm) = lent.take() {
            lm.settle();
        }
        take(&mut buf, &mut finishes, &mut served, &assigned);
    }
    let mut totals = Vec::with_capacity(n);
    for tier in tiers {
        let t = tier.close(&mut |s| buf.push(s));
        totals.push(t);
        take(&mut buf, &mut finishes, &mut served, &assigned);
    }

    let run = FleetRun {
        assigned,
        served,
        totals,
        urls,
        load_cost,
    };
    figures(cfg, cluster, prepared.trace, run, schedule, started)
}

/// How a fleet with one LMCache tier runs its replicas: instant by instant in time order
/// (equal times: the lower replica first), the tier lent to the replica that runs, so it sees
/// the replicas' lookups, loads and stores in the order they happen. The replicas' next
/// instants wait in a min-heap (lazily: an entry is checked against its replica when it comes
/// up), so a step costs O(log N), not a scan of the fleet.
struct Stepper {
    next: BinaryHeap<Finish>,
    /// Replicas holding back prefill stores (the `trace` schedule's), in replica order.
    holding: Vec<usize>,
    /// Replicas that may have a `vllm` step in flight (`in_flight[k]`: listed).
    flying: Vec<usize>,
    in_flight: Vec<bool>,
}

/// Run `f` on replica `k` with the one tier lent to it.
fn lend<'a, 'b, R>(
    tiers: &mut [EngineTier<'a, 'b>],
    lent: &mut Option<&'b mut Lmcache<'a>>,
    k: usize,
    f: impl FnOnce(&mut EngineTier<'a, 'b>) -> R,
) -> R {
    let tier = &mut tiers[k];
    tier.lend_lm(lent.take());
    let r = f(tier);
    *lent = tier.take_lm();
    r
}

impl Stepper {
    fn new(replicas: usize) -> Self {
        Stepper {
            next: BinaryHeap::new(),
            holding: Vec::new(),
            flying: Vec::new(),
            in_flight: vec![false; replicas],
        }
    }

    /// Run `f` on replica `k` with the tier lent to it, then note what it has to do next.
    fn with<'a, 'b, R>(
        &mut self,
        tiers: &mut [EngineTier<'a, 'b>],
        lent: &mut Option<&'b mut Lmcache<'a>>,
        k: usize,
        f: impl FnOnce(&mut EngineTier<'a, 'b>) -> R,
    ) -> R {
        let r = lend(tiers, lent, k, f);
        let tier = &tiers[k];
        if let Some(x) = tier.next_time() {
            self.next.push(Finish(x, k));
        }
        if tier.holds_stores() {
            if let Err(at) = self.holding.binary_search(&k) {
                self.holding.insert(at, k);
            }
        }
        if tier.in_flight_end().is_some() && !self.in_flight[k] {
            self.in_flight[k] = true;
            self.flying.push(k);
        }
        r
    }

    /// Every replica's held-back stores due by `now`, replica by replica (stores change no
    /// replica's next instant).
    fn flush_stores<'a, 'b>(
        &mut self,
        tiers: &mut [EngineTier<'a, 'b>],
        lent: &mut Option<&'b mut Lmcache<'a>>,
        now: f64,
    ) {
        for &k in &self.holding {
            lend(tiers, lent, k, |t| t.flush_stores(now));
        }
        self.holding.retain(|&k| tiers[k].holds_stores());
    }

    /// Every replica to `t`, as `EngineTier::run_until` takes one.
    fn run_until<'a, 'b>(
        &mut self,
        tiers: &mut [EngineTier<'a, 'b>],
        lent: &mut Option<&'b mut Lmcache<'a>>,
        t: f64,
        serve: &mut dyn FnMut(Served),
    ) {
        while let Some(&Finish(x, k)) = self.next.peek() {
            if x >= t {
                break;
            }
            self.next.pop();
            if tiers[k].next_time() != Some(x) {
                continue; // planned again since
            }
            self.flush_stores(tiers, lent, x);
            self.with(tiers, lent, k, |tier| tier.instant(serve));
        }
        // steps that started before `t` run to their end (`run_until`'s rule), in end order
        for &k in &self.flying {
            self.in_flight[k] = false;
        }
        let mut flying: Vec<(f64, usize)> = std::mem::take(&mut self.flying)
            .into_iter()
            .filter_map(|k| tiers[k].in_flight_end().map(|x| (x, k)))
            .collect();
        flying.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (_, k) in flying {
            self.with(tiers, lent, k, |tier| tier.instant(serve));
        }
    }
}

/// What the fleet did, request by request.
struct FleetRun {
    /// `assigned[i]`: the replica request i was routed to.
    assigned: Vec<usize>,
    /// Request i's hits and finish time.
    served: Vec<Option<(RequestHits, f64)>>,
    /// Per replica: its engine's totals.
    totals: Vec<TierTotals>,
    urls: Vec<String>,
    /// What a load from LMCache cost (a shared tier).
    load_cost: Option<LoadCost>,
}

/// `ideal_pool`'s one replica: every tier `replicas` times as large, but a shared LMCache
/// (`shared`) stays the one tier it is.
fn pooled_config(config: &SimConfig, replicas: u64, shared: bool) -> SimConfig {
    let mut cfg = config.clone();
    cfg.gpu.capacity = cfg.gpu.capacity.saturating_mul(replicas);
    if shared {
        return cfg;
    }
    if let Some(c) = cfg.cpu.as_mut() {
        c.capacity = c.capacity.saturating_mul(replicas);
    }
    if let Some(d) = cfg.disk.as_mut() {
        d.capacity = d.capacity.saturating_mul(replicas);
    }
    cfg
}

/// The run's figures, per replica and for the fleet: hits, busy time, imbalance, queueing and
/// TTFT percentiles from the time model.
fn figures(
    cfg: &SimConfig,
    cluster: &ClusterConfig,
    trace: &inferencelab_trace::Trace,
    fleet: FleetRun,
    schedule: Schedule,
    started: Instant,
) -> SimResult<ClusterResult> {
    let FleetRun {
        assigned,
        served,
        totals,
        urls,
        load_cost,
    } = fleet;
    let mut load_total = 0.0;
    let reqs = &trace.requests;
    let n = totals.len();
    // figures, in request order
    let mut per: Vec<ReplicaFigures> = (0..n)
        .map(|k| ReplicaFigures {
            replica: k,
            url: urls[k].clone(),
            gpu_evictions: totals[k].evictions,
            preemptions: totals[k].preemptions,
            eviction_judge: totals[k].judge,
            ..Default::default()
        })
        .collect();
    let mut busy: Vec<Vec<(f64, f64)>> = vec![Vec::new(); n];
    let (mut queue, mut ttft) = (Vec::new(), Vec::new());
    let (mut flops_total, mut flops_saved) = (0.0, 0.0);
    let tps = cfg.timing.prefill_tokens_per_s;
    for (i, r) in reqs.iter().enumerate() {
        let k = assigned[i];
        let (h, finish) = served[i].ok_or_else(|| {
            SimError::Config(format!("request {i} was routed but never served (a bug)"))
        })?;
        let p = &mut per[k];
        let len = r.input_length as u64;
        p.requests += 1;
        p.prompt_tokens += len;
        p.gpu_hit_tokens += h.gpu_hit_tokens;
        p.cpu_hit_tokens += h.cpu_hit_tokens;
        p.disk_hit_tokens += h.disk_hit_tokens;
        if let Some(m) = &cfg.model {
            flops_total += m.prefill_flops(len);
            flops_saved += m.prefill_flops(h.total());
        }
        if h.rejected {
            p.rejected += 1;
            continue;
        }
        busy[k].push((h.admitted_s, finish.max(h.admitted_s)));
        let wait = (h.admitted_s - r.timestamp).max(0.0);
        queue.push(wait);
        let load = load_cost.map_or(0.0, |c| c.seconds(h.cpu_hit_tokens + h.disk_hit_tokens));
        load_total += load;
        ttft.push(wait + load + len.saturating_sub(h.total()) as f64 / tps);
    }
    for (p, spans) in per.iter_mut().zip(busy.iter_mut()) {
        p.token_hit_ratio = ratio(
            p.gpu_hit_tokens + p.cpu_hit_tokens + p.disk_hit_tokens,
            p.prompt_tokens,
        );
        p.busy_s = union_length(spans);
    }
    let sum = |f: fn(&ReplicaFigures) -> u64| per.iter().map(f).sum::<u64>();
    let requests = sum(|p| p.requests);
    let prompt_tokens = sum(|p| p.prompt_tokens);
    let gpu = sum(|p| p.gpu_hit_tokens);
    let cpu = sum(|p| p.cpu_hit_tokens);
    let disk = sum(|p| p.disk_hit_tokens);
    // imbalance over the fleet the user asked for (ideal_pool: 1 by definition)
    let mean = requests as f64 / n as f64;
    let max = per.iter().map(|p| p.requests).max().unwrap_or(0) as f64;
    Ok(ClusterResult {
        router: cluster.router.clone(),
        replicas: cluster.replicas,
        schedule: schedule.to_string(),
        requests,
        prompt_tokens,
        gpu_hit_tokens: gpu,
        cpu_hit_tokens: cpu,
        disk_hit_tokens: disk,
        token_hit_ratio: ratio(gpu + cpu + disk, prompt_tokens),
        gpu_token_hit_ratio: ratio(gpu, prompt_tokens),
        compute_saved_ratio: cfg.model.as_ref().map(|_| {
            if flops_total > 0.0 {
                flops_saved / flops_total
            } else {
                0.0
            }
        }),
        imbalance: if mean > 0.0 { max / mean } else { 1.0 },
        queue_delay_p50_s: percentile(&mut queue, 50.0),
        queue_delay_p90_s: percentile(&mut queue, 90.0),
        ttft_p50_s: percentile(&mut ttft, 50.0),
        ttft_p90_s: percentile(&mut ttft, 90.0),
        lmcache_shared: cluster.lmcache_shared,
        lmcache_load_s: load_total,
        lmcache_network_gbit_per_s: cluster
            .lmcache_shared
            .then_some(cluster.lmcache_network.gbit_per_s),
        lmcache_network_latency_ms: cluster
            .lmcache_shared
            .then_some(cluster.lmcache_network.latency_ms),
        per_replica: per,
        sim_seconds: started.elapsed().as_secs_f64(),
    })
}

/// A fleet point as one result row (what `batch` writes per point and `plot` draws as lines
/// per router against replicas): the point's GPU policy and per-replica sizes beside the
/// fleet's figures. Unlike a single server's `ResultRow`, `token_hit_ratio` here counts every
/// tier (GPU + LMCache); `gpu_token_hit_ratio` is the GPU's alone.
pub fn result_row(config: &SimConfig, r: &ClusterResult) -> serde_json::Value {
    let mut row = serde_json::json!({
        "policy": config.gpu.policy.name(),
        "gpu_blocks": config.gpu.capacity,
        "cpu_chunks": config.cpu.as_ref().map(|c| c.capacity),
        "disk_chunks": config.disk.as_ref().map(|c| c.capacity),
        "model": config.model.as_ref().map(|m| m.name.clone()),
    });
    if let (Some(m), Ok(serde_json::Value::Object(fig))) =
        (row.as_object_mut(), serde_json::to_value(r))
    {
        m.extend(fig);
    }
    row
}

/// Total length of the union of `spans`.
fn union_length(spans: &mut [(f64, f64)]) -> f64 {
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut cur: Option<(f64, f64)> = None;
    for &(s, e) in spans.iter() {
        match cur {
            Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    total + cur.map_or(0.0, |(s, e)| e - s)
}

#[cfg(test)]
mod tests;
