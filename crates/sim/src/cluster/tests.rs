//! The fleet against the single server it must reduce to, and each router's rule on small
//! traces whose routing can be worked out by hand.

use inferencelab_cache::PolicyConfig;
use inferencelab_trace::{Content, Request, Trace};

use super::*;
use crate::config::{Schedule, TierConfig};
use crate::driver::run_observed as run_single;

/// `convs` conversations of `turns` turns, interleaved (turn t of every conversation, then
/// turn t + 1), 0.5 s apart; each prompt = a system prompt shared by conversations of the same
/// parity + the conversation's history + a new 20-token message; answers of 12 tokens.
fn multi_turn(convs: u64, turns: u32, with_finish: bool) -> Trace {
    let mut requests = Vec::new();
    let mut history: Vec<Vec<u32>> = (0..convs)
        .map(|c| (0..40).map(|x| 1000 * (c as u32 % 2) + x).collect())
        .collect();
    let mut t = 0.0;
    for turn in 0..turns {
        for c in 0..convs {
            let h = &mut history[c as usize];
            h.extend((0..20).map(|x| 100_000 + 1000 * c as u32 + 50 * turn + x));
            let prompt = h.clone();
            let output: Vec<u32> = (0..12)
                .map(|x| 500_000 + 1000 * c as u32 + 20 * turn + x)
                .collect();
            requests.push(Request {
                id: format!("c{c}t{turn}"),
                timestamp: t,
                finish_time: with_finish.then_some(t + 0.7),
                conversation: Some(c),
                turn,
                input_length: prompt.len() as u32,
                output_length: output.len() as u32,
                kind: None,
                content: Content::Tokens(prompt),
                output_tokens: Some(output.clone()),
                output_times: None,
            });
            h.extend(output);
            t += 0.5;
        }
    }
    Trace {
        requests,
        ..Default::default()
    }
}

fn config(gpu_blocks: u64, cpu_chunks: Option<u64>, schedule: Schedule) -> SimConfig {
    let mut c = SimConfig {
        cpu: cpu_chunks.map(|n| TierConfig {
            capacity: n,
            policy: PolicyConfig::Lru,
        }),
        ..SimConfig::gpu_only(gpu_blocks, PolicyConfig::Lru)
    };
    c.engine.schedule = schedule;
    c
}

fn cluster(replicas: usize, router: &str) -> ClusterConfig {
    ClusterConfig {
        replicas,
        router: router.into(),
        ..Default::default()
    }
}

/// Per request (by index): its hits as the single server gives them.
fn single(p: &Prepared<'_>, c: &SimConfig) -> (Vec<RequestHits>, crate::ResultRow) {
    let mut out = vec![RequestHits::default(); p.trace.requests.len()];
    let row = run_single(p, c, |i, h| out[i] = h).unwrap();
    (out, row)
}

fn fleet(p: &Prepared<'_>, c: &SimConfig, k: &ClusterConfig) -> (Vec<Routed>, ClusterResult) {
    let mut out: Vec<Option<Routed>> = vec![None; p.trace.requests.len()];
    let res = run_observed(p, c, k, |r| out[r.req] = Some(r)).unwrap();
    (out.into_iter().map(|r| r.expect("served")).collect(), res)
}

#[test]
fn one_replica_is_the_single_server_for_every_router() {
    // small pools so that eviction, queueing and LMCache all take part
    for with_finish in [true, false] {
        let trace = multi_turn(6, 4, with_finish);
        let p = Prepared::new(&trace, 16, Some(32)).unwrap();
        for schedule in [Schedule::Trace, Schedule::Vllm] {
            // 40 chunks: LMCache hits (6 never did on this trace: the GPU held all it had)
            for cpu in [None, Some(40)] {
                let c = config(20, cpu, schedule);
                let (want, row) = single(&p, &c);
                for name in registry::names() {
                    let (got, res) = fleet(&p, &c, &cluster(1, name));
                    let label = format!("{name} {schedule} cpu {cpu:?} finish {with_finish}");
                    for (i, g) in got.iter().enumerate() {
                        assert_eq!(g.replica, 0, "{label}");
                        assert_eq!(g.hits, want[i], "{label}: request {i}");
                    }
                    assert_eq!(res.gpu_hit_tokens, row.gpu_hit_tokens, "{label}");
                    assert_eq!(res.cpu_hit_tokens, row.cpu_hit_tokens, "{label}");
                    assert_eq!(
                        res.per_replica[0].gpu_evictions, row.gpu_evictions,
                        "{label}"
                    );
                    assert_eq!(res.per_replica[0].preemptions, row.preemptions, "{label}");
                }
                // the small pool made the comparison mean something
                assert!(row.gpu_evictions > 0 && row.gpu_hit_tokens > 0);
                assert_eq!(row.cpu_hit_tokens > 0, cpu.is_some());
            }
        }
    }
}

#[test]
fn ideal_pool_is_one_server_with_n_times_the_blocks() {
    let trace = multi_turn(8, 3, false);
    let p = Prepared::new(&trace, 16, Some(32)).unwrap();
    for schedule in [Schedule::Trace, Schedule::Vllm] {
        let c = config(12, Some(4), schedule);
        let mut big = c.clone();
        big.gpu.capacity = 48;
        big.cpu.as_mut().unwrap().capacity = 16;
        let (want, row) = single(&p, &big);
        let (got, res) = fleet(&p, &c, &cluster(4, "ideal_pool"));
        assert!(got.iter().zip(&want).all(|(g, w)| g.hits == *w));
        assert_eq!(
            res.gpu_hit_tokens + res.cpu_hit_tokens,
            row.prefill_tokens_saved
        );
        assert_eq!(res.replicas, 4);
        assert_eq!(res.per_replica.len(), 1);
        // and the bound holds: no router does better on this trace
        for name in registry::names() {
            let r = run(&p, &c, &cluster(4, name)).unwrap();
            assert!(r.token_hit_ratio <= res.token_hit_ratio + 1e-12, "{name}");
        }
    }
}

#[test]
fn round_robin_deals_requests_in_turn() {
    let trace = multi_turn(3, 2, true);
    let p = Prepared::new(&trace, 16, None).unwrap();
    let (got, res) = fleet(
        &p,
        &config(100, None, Schedule::Trace),
        &cluster(2, "round_robin"),
    );
    let replicas: Vec<usize> = got.iter().map(|r| r.replica).collect();
    assert_eq!(replicas, vec![0, 1, 0, 1, 0, 1]);
    // c0t0 -> 0, c0t1 (request 3) -> 1: the second turn misses its history
    assert_eq!(got[3].hits.gpu_hit_tokens, 0);
    assert_eq!(res.imbalance, 1.0);
}

#[test]
fn session_routers_keep_a_conversation_on_one_replica() {
    let trace = multi_turn(16, 3, true);
    let p = Prepared::new(&trace, 16, None).unwrap();
    let c = config(1000, None, Schedule::Trace);
    for name in [
        "consistent_hash",
        "sticky_least_loaded",
        "cache_aware",
        "kv_aware",
    ] {
        let (got, res) = fleet(&p, &c, &cluster(4, name));
        for r in &got {
            let first = got[r.req % 16].replica;
            assert_eq!(r.replica, first, "{name}: request {}", r.req);
        }
        // every later turn hits its whole history (all but the new message's partial block)
        for r in got.iter().skip(16) {
            assert!(r.hits.gpu_hit_tokens > 0, "{name}: request {}", r.req);
        }
        let used = res.per_replica.iter().filter(|p| p.requests > 0).count();
        match name {
            // new conversations: 0 in flight everywhere -> the first replica
            // (rate <= 0.3 for a conversation's first turn: the shared system prompt is 40 of 60
            // tokens = 0.67 > 0.3, so it follows the parity's first conversation)
            "cache_aware" | "kv_aware" => assert!(used <= 2, "{name}: {used}"),
            "sticky_least_loaded" => assert_eq!(used, 4, "{name}"),
            _ => assert!(used >= 2, "{name}: {used}"),
        }
    }
}

#[test]
fn cache_aware_goes_to_the_least_loaded_when_the_fleet_is_imbalanced() {
    // 3 replicas, thresholds 1 and 1.5; every request of one long conversation would follow
    // the tree to replica 0, but once replica 0 has 2 more in flight than the idle ones the
    // least loaded (the first idle: 1) takes the next
    let trace = multi_turn(1, 4, false);
    let mut trace = trace;
    for (i, r) in trace.requests.iter_mut().enumerate() {
        r.timestamp = i as f64 * 0.001;
        r.output_length = 2000;
        r.output_tokens = None;
    }
    let p = Prepared::new(&trace, 16, None).unwrap();
    let c = config(10_000, None, Schedule::Vllm);
    let mut k = cluster(3, "cache_aware");
    k.cache_aware.balance_abs_threshold = 1;
    let (got, _) = fleet(&p, &c, &k);
    let replicas: Vec<usize> = got.iter().map(|r| r.replica).collect();
    // loads before each: [0 0 0] tree empty -> 0; [1 0 0] match -> 0; [2 0 0] 2-0 > 1 and
    // 2 > 0 -> least loaded 1; [2 1 0] 2-0 > 1 -> 2
    assert_eq!(replicas, vec![0, 0, 1, 2]);
}

#[test]
fn kv_aware_follows_the_replica_that_holds_the_prefix() {
    // two conversations, round 1 spread by load (both idle -> replica 0, then 1 holds none:
    // conversation 1 shares nothing with 0's system prompt... parity differs)
    let trace = multi_turn(2, 3, true);
    let p = Prepared::new(&trace, 16, None).unwrap();
    let (got, _) = fleet(
        &p,
        &config(1000, None, Schedule::Trace),
        &cluster(2, "kv_aware"),
    );
    // c0t0 -> 0 (nothing cached, all idle); c1t0: nothing of it cached, replica 0 has c0t0 in
    // flight -> 1; later turns follow their history
    assert_eq!(
        got.iter().map(|r| r.replica).collect::<Vec<_>>(),
        vec![0, 1, 0, 1, 0, 1]
    );
}

#[test]
fn kv_aware_is_the_router_s_cost_not_the_longest_prefix() {
    // 2 replicas, logged finishes, 10,000 prefill tokens/s; every prompt 320 tokens (20
    // blocks), from one family: A's tokens, then a request's own. vllm-router 0.1.17's cost per
    // replica: (320 - credited + in-flight prefill) x (in flight + 1), first on ties.
    let family: Vec<u32> = (0..320).collect();
    let req = |i: u32, t: f64, finish: f64, shared: usize| {
        let mut prompt = family[..shared].to_vec();
        prompt.extend((shared as u32..320).map(|x| 10_000 * (i + 1) + x));
        Request {
            id: format!("r{i}"),
            timestamp: t,
            finish_time: Some(finish),
            conversation: None,
            turn: 0,
            input_length: 320,
            output_length: 4,
            kind: None,
            content: Content::Tokens(prompt),
            output_tokens: None,
            output_times: None,
        }
    };
    let trace = Trace {
        requests: vec![
            req(0, 0.0, 5.0, 320),
            req(1, 0.01, 0.5, 160),
            req(2, 1.0, 1.2, 192),
            req(3, 1.5, 2.0, 288),
        ],
        ..Default::default()
    };
    let p = Prepared::new(&trace, 16, None).unwrap();
    let c = config(1000, None, Schedule::Trace);
    let (got, _) = fleet(&p, &c, &cluster(2, "kv_aware"));
    // r0 at 0: nothing cached, both idle: 320 x 1 each -> the first, 0.
    // r1 at 0.01 (A's first 160 tokens): replica 0 credits 160, but r0 (320 new tokens, first
    //   token at 0.032) is in flight and still in prefill: (160 + 320) x 2 = 960; replica 1:
    //   320 x 1 -> 1. (Without the in-flight prefill tokens: 320 each, a tie -> 0.)
    // r2 at 1.0 (A's first 192): replica 0 credits 192 with r0 in flight: 128 x 2 = 256;
    //   replica 1 credits 160 (r1's first 10 blocks are A's), r1 finished: 160 x 1 -> 1.
    // r3 at 1.5 (A's first 288): replica 0: 32 x 2 = 64; replica 1 (192 from r2): 128 -> 0.
    // "The longest prefix first" would send all four to replica 0.
    assert_eq!(
        got.iter().map(|r| r.replica).collect::<Vec<_>>(),
        vec![0, 1, 1, 0]
    );
    assert_eq!(got[2].hits.gpu_hit_tokens, 160);
    assert_eq!(got[3].hits.gpu_hit_tokens, 288);
}

#[test]
fn figures_add_up() {
    let trace = multi_turn(10, 3, false);
    let p = Prepared::new(&trace, 16, Some(32)).unwrap();
    let mut c = config(30, Some(8), Schedule::Vllm);
    c.model = Some(inferencelab_models::resolve("qwen-8b").unwrap());
    let res = run(&p, &c, &cluster(3, "power_of_two")).unwrap();
    assert_eq!(res.requests, 30);
    assert_eq!(
        res.per_replica.iter().map(|r| r.requests).sum::<u64>(),
        res.requests
    );
    assert!(res.imbalance >= 1.0);
    assert!(res.ttft_p90_s >= res.ttft_p50_s && res.ttft_p50_s > 0.0);
    assert!(res.compute_saved_ratio.unwrap() > 0.0);
    assert!(res.per_replica.iter().all(|r| r.busy_s > 0.0));
    // the same seed, the same run
    let again = run(&p, &c, &cluster(3, "power_of_two")).unwrap();
    assert_eq!(again.per_replica, res.per_replica);
}

#[test]
fn refusals_name_the_fix() {
    let trace = multi_turn(2, 1, false);
    let p = Prepared::new(&trace, 16, None).unwrap();
    let c = config(100, None, Schedule::Vllm);
    let err = |k: ClusterConfig| run(&p, &c, &k).unwrap_err().to_string();
    assert!(err(cluster(2, "nearest")).contains("expected one of: round_robin"));
    let mut k = cluster(2, "round_robin");
    k.lmcache_shared = true;
    k.lmcache_network.gbit_per_s = 0.0;
    assert!(err(k).contains("--lmcache-network-gbps 0"));
    assert!(err(cluster(0, "round_robin")).contains("at least one replica"));
}

/// A fleet with one LMCache tier; `free`: its loads cost nothing (for the comparisons that
/// must be exact: the network only changes time).
fn shared(replicas: usize, router: &str, free: bool) -> ClusterConfig {
    let mut k = cluster(replicas, router);
    k.lmcache_shared = true;
    if free {
        k.lmcache_network = LmcacheNetwork {
            gbit_per_s: f64::INFINITY,
            latency_ms: 0.0,
        };
    }
    k
}

#[test]
fn one_replica_with_a_shared_tier_is_the_single_server() {
    for with_finish in [true, false] {
        let trace = multi_turn(6, 4, with_finish);
        let p = Prepared::new(&trace, 16, Some(32)).unwrap();
        for schedule in [Schedule::Trace, Schedule::Vllm] {
            let c = config(20, Some(40), schedule);
            let (want, row) = single(&p, &c);
            for name in registry::names() {
                let label = format!("{name} {schedule} finish {with_finish}");
                let (_, own) = fleet(&p, &c, &cluster(1, name));
                let (got, res) = fleet(&p, &c, &shared(1, name, true));
                for (i, g) in got.iter().enumerate() {
                    assert_eq!(g.hits, want[i], "{label}: request {i}");
                }
                assert_eq!(res.cpu_hit_tokens, row.cpu_hit_tokens, "{label}");
                assert_eq!(res.per_replica, own.per_replica, "{label}");
                assert_eq!(res.ttft_p90_s, own.ttft_p90_s, "{label}");
                assert_eq!(res.lmcache_load_s, 0.0, "{label}");
                // with the network's cost: logged times keep every hit, the TTFT grows by the
                // loads
                if with_finish && schedule == Schedule::Trace {
                    let (got, res) = fleet(&p, &c, &shared(1, name, false));
                    assert!(got.iter().zip(&want).all(|(g, w)| g.hits == *w), "{label}");
                    assert!(res.lmcache_load_s > 0.0, "{label}");
                    assert!(res.ttft_p90_s >= own.ttft_p90_s, "{label}");
                }
            }
            assert!(row.cpu_hit_tokens > 0 && row.gpu_evictions > 0);
        }
    }
}

#[test]
fn a_turn_routed_away_from_its_history_hits_the_shared_tier() {
    // round_robin over 2 replicas deals c0t0 c1t0 c2t0 | c0t1 c1t1 c2t1 to 0 1 0 | 1 0 1: c0t1
    // (request 3) lands on replica 1, which holds only c1t0 (the other system prompt); c1t1
    // (request 4) on replica 0, which holds c0t0 and c2t0. Their own replica has nothing of
    // them; the shared tier has their first chunk (32 tokens of system prompt + history),
    // stored by the other replica
    let trace = multi_turn(3, 2, true);
    let p = Prepared::new(&trace, 16, Some(32)).unwrap();
    for schedule in [Schedule::Trace, Schedule::Vllm] {
        let c = config(100, Some(100), schedule);
        let (own, own_res) = fleet(&p, &c, &cluster(2, "round_robin"));
        let (one, res) = fleet(&p, &c, &shared(2, "round_robin", false));
        for i in [3, 4] {
            assert_eq!(one[i].replica, own[i].replica);
            assert_eq!(own[i].hits.total(), 0, "{schedule}: request {i}");
            assert_eq!(one[i].hits.gpu_hit_tokens, 0, "{schedule}: request {i}");
            assert_eq!(one[i].hits.cpu_hit_tokens, 32, "{schedule}: request {i}");
        }
        assert!(res.token_hit_ratio > own_res.token_hit_ratio);
        // the figures add up: the fleet's hits are its replicas', each request's counted once
        let sum = |f: fn(&ReplicaFigures) -> u64| res.per_replica.iter().map(f).sum::<u64>();
        assert_eq!(sum(|r| r.cpu_hit_tokens), res.cpu_hit_tokens);
        assert_eq!(sum(|r| r.gpu_hit_tokens), res.gpu_hit_tokens);
        assert_eq!(
            one.iter().map(|r| r.hits.cpu_hit_tokens).sum::<u64>(),
            res.cpu_hit_tokens
        );
        // every load pays 0.5 ms + its bytes at 100 Gbit/s (no model: Qwen3-8B's 144 KiB a
        // token)
        let loads: Vec<u64> = one
            .iter()
            .map(|r| r.hits.cpu_hit_tokens)
            .filter(|&t| t > 0)
            .collect();
        let want: f64 = loads
            .iter()
            .map(|&t| 0.5e-3 + (t * DEFAULT_KV_BYTES_PER_TOKEN) as f64 / 12.5e9)
            .sum();
        assert!((res.lmcache_load_s - want).abs() < 1e-12, "{schedule}");
        assert!(res.lmcache_shared && !own_res.lmcache_shared);
    }
}

#[test]
fn ideal_pool_with_a_shared_tier_has_n_times_the_blocks_and_the_one_tier() {
    // ideal_pool is the fleet's memory in one replica: N x the GPU blocks, and the LMCache the
    // fleet has, which is one tier when it is shared (N x when each replica has its own)
    // (10 chunks, one tier: 32 CPU hit tokens on this trace; 4 x 10 would give 256)
    let trace = multi_turn(8, 3, false);
    let p = Prepared::new(&trace, 16, Some(32)).unwrap();
    for schedule in [Schedule::Trace, Schedule::Vllm] {
        let c = config(5, Some(10), schedule);
        let mut big = c.clone();
        big.gpu.capacity = 20;
        let (want, row) = single(&p, &big);
        let (got, res) = fleet(&p, &c, &shared(4, "ideal_pool", true));
        assert!(
            got.iter().zip(&want).all(|(g, w)| g.hits == *w),
            "{schedule}"
        );
        assert_eq!(
            res.gpu_hit_tokens + res.cpu_hit_tokens,
            row.prefill_tokens_saved
        );
        assert_eq!(res.cpu_hit_tokens, 32, "{schedule}");
        assert_eq!(res.per_replica.len(), 1);
        // each replica with its own tier: ideal_pool has 4 x 10 chunks
        let (_, own) = fleet(&p, &c, &cluster(4, "ideal_pool"));
        assert_eq!(own.cpu_hit_tokens, 256, "{schedule}");
    }
}

#[test]
fn the_shared_tier_sees_the_replicas_in_time_order() {
    // trace schedule: r0 (replica 0) and r1 (replica 1) send the same 64-token prompt. r0's
    // store runs after the instant of its admission, so r1 admitted in the same instant finds
    // nothing, and a microsecond later both chunks (63 tokens: the last is recomputed)
    let prompt: Vec<u32> = (0..64).collect();
    let two = |dt: f64| {
        let mut t = multi_turn(2, 1, true);
        for (i, r) in t.requests.iter_mut().enumerate() {
            r.timestamp = i as f64 * dt;
            r.finish_time = Some(5.0);
            r.input_length = 64;
            r.content = Content::Tokens(prompt.clone());
        }
        t
    };
    let c = config(100, Some(10), Schedule::Trace);
    for (dt, want) in [(0.0, 0), (1e-6, 63)] {
        let trace = two(dt);
        let p = Prepared::new(&trace, 16, Some(32)).unwrap();
        let (got, _) = fleet(&p, &c, &shared(2, "round_robin", true));
        assert_eq!(got[1].replica, 1);
        assert_eq!(got[1].hits.gpu_hit_tokens, 0);
        assert_eq!(got[1].hits.cpu_hit_tokens, want, "dt {dt}");
        // each with its own tier: never
        let (own, _) = fleet(&p, &c, &cluster(2, "round_robin"));
        assert_eq!(own[1].hits.total(), 0, "dt {dt}");
    }
}

#[test]
fn the_shared_tier_sees_a_step_s_stores_at_its_end() {
    // vllm schedule, one request running at a time per replica (max_num_seqs 1), 10k prefill
    // tokens/s, 20 ms a decode step; round_robin deals r0 r2 to replica 0, r1 r3 to replica 1:
    //   replica 0: r0 (500 tokens) 0.00-0.05; r2 (prompt P, 8000 tokens) 0.05-0.85, its
    //              chunks stored at 0.85
    //   replica 1: r1 (5000 tokens) from 0.01, done at 0.51 (1 output token) or after 19
    //              decode steps at 0.89 (20); then r3 (P + 100 tokens) looks P up
    // at 0.51 the step storing P is still running: nothing; at 0.89 it is done: P's chunks.
    // (No request arrives after 0.03, so no step is cut short by an arrival.)
    let p_tokens: Vec<u32> = (0..8000).collect();
    let req = |i: usize, t: f64, prompt: Vec<u32>, out: u32| Request {
        id: format!("r{i}"),
        timestamp: t,
        finish_time: None,
        conversation: None,
        turn: 0,
        input_length: prompt.len() as u32,
        output_length: out,
        kind: None,
        content: Content::Tokens(prompt),
        output_tokens: None,
        output_times: None,
    };
    let mut c = config(2000, Some(100), Schedule::Vllm);
    c.engine.max_num_seqs = 1;
    for (r1_out, want_hit) in [(1, false), (20, true)] {
        let mut p3 = p_tokens.clone();
        p3.extend(100_000..100_100);
        let trace = Trace {
            requests: vec![
                req(0, 0.0, (50_000..50_500).collect(), 1),
                req(1, 0.01, (60_000..65_000).collect(), r1_out),
                req(2, 0.02, p_tokens.clone(), 1),
                req(3, 0.03, p3, 1),
            ],
            ..Default::default()
        };
        let p = Prepared::new(&trace, 16, Some(256)).unwrap();
        let (got, _) = fleet(&p, &c, &shared(2, "round_robin", true));
        assert_eq!(got[3].replica, 1);
        let label = format!("r1 with {r1_out} output tokens");
        assert!(
            (got[2].finish_s - 0.85).abs() < 1e-9,
            "{label}: {}",
            got[2].finish_s
        );
        assert_eq!(
            got[3].hits.cpu_hit_tokens > 0,
            want_hit,
            "{label}: {:?}",
            got[3]
        );
        if want_hit {
            assert!(got[3].hits.admitted_s > got[2].finish_s, "{label}");
        } else {
            assert!(got[3].hits.admitted_s < got[2].finish_s, "{label}");
        }
    }
}

#[test]
fn the_network_lengthens_the_steps_that_load() {
    // vllm schedule: a load from the shared tier lengthens the step that admits the request,
    // so TTFT and finishes move; the hits of this trace do not
    let trace = multi_turn(3, 2, false);
    let p = Prepared::new(&trace, 16, Some(32)).unwrap();
    let c = config(100, Some(100), Schedule::Vllm);
    let (free, free_res) = fleet(&p, &c, &shared(2, "round_robin", true));
    let mut slow = shared(2, "round_robin", false);
    slow.lmcache_network.gbit_per_s = 0.001; // 147 KB a token at 125 KB/s: over a second each
    let (paid, paid_res) = fleet(&p, &c, &slow);
    assert_eq!(free[3].hits.cpu_hit_tokens, 32);
    assert_eq!(paid[3].hits.cpu_hit_tokens, 32);
    assert!(paid[3].finish_s > free[3].finish_s + 30.0);
    assert!(paid_res.ttft_p90_s > free_res.ttft_p90_s);
}

#[test]
fn union_of_busy_spans() {
    assert_eq!(union_length(&mut [(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]), 4.0);
}
