//! Issue 17: why does `conversation_aware`'s prediction alone lose to LRU at the larger caches?
//! On the VALIDATION part only (the trace is cut at the protocol's split, as `candidate_probe`
//! does), per trace and protocol capacity, replays LRU and candidates (`name:key=value,...`
//! over `ScorerConfig`'s keys, `adaptive` forced off) through the simulator's driver and breaks
//! the tokens each candidate loses / wins against LRU down by request:
//!
//! - the turn of the request in its conversation (trace ids, or inferred by the prefix rule);
//! - the time since its conversation's previous request (LRU's horizon shows as the idle time
//!   where LRU's hits fall off);
//! - whether the tokens are in the part shared with other conversations (a system prompt) or
//!   the conversation's own;
//! - the prediction the conversation's previous request got (`G` of its last block and `p`, from
//!   a tracker replay with the conversations, arrival times), relative to the real idle time.
//!
//! `cargo run --release -p inferencelab-learn --example loss_diagnosis -- [--traces demo,vllm,weka] CAND...`

use std::collections::HashMap;

use inferencelab_cache::learned::features::Tracker;
use inferencelab_cache::policy::conversation_aware::ScorerConfig;
use inferencelab_cache::Access;
use inferencelab_learn::eval::{interesting_capacities, Candidate, Split};
use inferencelab_sim::{plan, Prepared};
use inferencelab_trace::{read_trace_hashed, ReadOptions};
use rayon::prelude::*;

mod common;
use common::{take_traces, wanted, yaml_of, TRACES};

const IDLE: [f64; 6] = [10.0, 30.0, 60.0, 120.0, 300.0, f64::INFINITY];
const IDLE_NAMES: [&str; 6] = ["<10s", "10-30s", "30-60s", "60-120s", "120-300s", ">300s"];

fn idle_bucket(x: f64) -> usize {
    IDLE.iter().position(|&b| x < b).unwrap_or(IDLE.len() - 1)
}

fn parse_candidate(s: &str) -> (String, ScorerConfig) {
    let (name, kv) = s.split_once(':').unwrap_or((s, ""));
    let mut yaml = yaml_of(kv);
    if !yaml.contains("adaptive") {
        yaml.push_str("adaptive: false\n");
    }
    let cfg: ScorerConfig =
        serde_norway::from_str(&yaml).unwrap_or_else(|e| panic!("candidate {s}: {e}"));
    (name.to_string(), cfg)
}

/// Per request: hit tokens, from the driver.
fn hits(split: &Split<'_>, c: &Candidate, cap: u64, cut: &Prepared<'_>) -> Vec<u64> {
    let cfg = split.sim_config(c, cap);
    let mut h = vec![0u64; cut.trace.requests.len()];
    inferencelab_sim::driver::run_observed(cut, &cfg, |i, r| h[i] = r.gpu_hit_tokens).unwrap();
    h
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let only = take_traces(&mut args);
    let mut cands = vec![("default".to_string(), parse_candidate("default:").1)];
    cands.extend(args.iter().map(|a| parse_candidate(a)));
    // conversations are inferred here for every trace without ids: the protocol's copy of
    // Mooncake with trace-level ids would be the same run
    for (tname, path, _) in TRACES.iter().filter(|t| !t.2) {
        if !wanted(&only, tname) {
            continue;
        }
        let trace = read_trace_hashed(path.as_ref(), &ReadOptions::default(), 16).unwrap();
        let has_ids = trace.requests.iter().any(|r| r.conversation.is_some());
        let mut conv_trace = trace.clone();
        if !has_ids {
            inferencelab_trace::infer_conversations(&mut conv_trace);
        }
        let bs = plan::default_block_size(&trace);
        let prepared = Prepared::new(&trace, bs, None).unwrap();
        let split = Split::new(prepared, 0.5, true).with_validation_share(0.5);
        let caps = interesting_capacities(&split, 0.8, 3);
        let n = trace
            .requests
            .partition_point(|r| r.timestamp < split.split);
        let cut = trace.prefix(n);
        let cutp = Prepared::new(&cut, bs, None).unwrap();
        let g = &cutp.gpu;
        let reqs = &cut.requests;
        let bs64 = bs as u64;
        // conversations, turns, idle, shared prefix length (blocks referenced before by
        // another conversation), and the tracker's prediction for the previous request
        let conv: Vec<u64> = conv_trace.requests[..n]
            .iter()
            .enumerate()
            .map(|(i, r)| r.conversation.unwrap_or(1 << 40 | i as u64))
            .collect();
        let mut last: HashMap<u64, (usize, u32)> = HashMap::new();
        let mut turn = vec![0u32; n];
        let mut idle = vec![f64::INFINITY; n];
        let mut prev = vec![usize::MAX; n];
        let mut block_convs: HashMap<u32, (u64, bool)> = HashMap::new();
        let mut shared_blocks = vec![0u64; n];
        let mut tracker = Tracker::without_counters();
        // per request: (G of the last block, p) by the default config
        let def = ScorerConfig::default();
        let mut pred = vec![(f64::NAN, f64::NAN, 0u32); n];
        for i in 0..n {
            let r = &reqs[i];
            if let Some(&(j, t)) = last.get(&conv[i]) {
                turn[i] = t + 1;
                idle[i] = r.timestamp - reqs[j].timestamp;
                prev[i] = j;
            }
            last.insert(conv[i], (i, turn[i]));
            let keys = g.request(i);
            let mut leading_shared = true;
            for (d, &k) in keys.iter().enumerate() {
                let e = block_convs.entry(k).or_insert((conv[i], false));
                if e.0 != conv[i] {
                    e.1 = true;
                }
                if leading_shared && e.1 {
                    shared_blocks[i] += 1;
                } else {
                    leading_shared = false;
                }
                let a = Access {
                    timestamp: r.timestamp,
                    request: i as u32,
                    conversation: conv[i],
                    depth: d as u32,
                    ..Access::at(k, i as u64)
                };
                let s = tracker.observe(&a);
                if d + 1 == keys.len() {
                    pred[i] = (def.predicted_gap(&s), s.p_continue, s.uses);
                }
            }
        }
        let runs: Vec<(u64, Vec<Vec<u64>>)> = caps
            .par_iter()
            .map(|&cap| {
                let mut v = vec![hits(&split, &Candidate::Lru, cap, &cutp)];
                for (_, c) in &cands {
                    v.push(hits(&split, &Candidate::Scorer(c.clone()), cap, &cutp));
                }
                (cap, v)
            })
            .collect();
        let valid: Vec<usize> = (0..n)
            .filter(|&i| reqs[i].timestamp >= split.validation_from)
            .collect();
        let total: u64 = valid.iter().map(|&i| reqs[i].input_length as u64).sum();
        println!(
            "== {tname}: {} validation requests, {} prompt tokens, turns: {:?}",
            valid.len(),
            total,
            (0..5)
                .map(|t| valid.iter().filter(|&&i| turn[i].min(4) == t).count())
                .collect::<Vec<_>>()
        );
        for (cap, v) in &runs {
            let lru = &v[0];
            let lru_tot: u64 = valid.iter().map(|&i| lru[i]).sum();
            println!(
                "-- {tname} {cap}: LRU {:.2}%",
                100.0 * lru_tot as f64 / total as f64
            );
            // LRU hit share by idle bucket (own part of later turns)
            for (j, (name, _)) in cands.iter().enumerate() {
                let p = &v[j + 1];
                let tot: u64 = valid.iter().map(|&i| p[i]).sum();
                println!(
                    "   {name}: {:.2}% ({:+.2} pts)",
                    100.0 * tot as f64 / total as f64,
                    100.0 * (tot as f64 - lru_tot as f64) / total as f64
                );
                // lost/won tokens (points of the validation tokens) by turn x idle, split into
                // shared part and own part
                let mut lost = [[0.0f64; 6]; 5];
                let mut won = [[0.0f64; 6]; 5];
                let mut lost_shared = 0.0;
                let mut won_shared = 0.0;
                let mut lru_hit_by_idle = [(0u64, 0u64); 6];
                // prediction of the previous request vs real idle: lost tokens by G/idle ratio
                let mut lost_by_ratio = [0.0f64; 4];
                let mut won_by_ratio = [0.0f64; 4];
                for &i in &valid {
                    let sh = (shared_blocks[i] * bs64).min(reqs[i].input_length as u64);
                    let (a, b) = (lru[i], p[i]);
                    let t = turn[i].min(4) as usize;
                    let ib = idle_bucket(idle[i]);
                    if t > 0 {
                        lru_hit_by_idle[ib].0 += a.saturating_sub(sh);
                        lru_hit_by_idle[ib].1 += (reqs[i].input_length as u64).saturating_sub(sh);
                    }
                    let pts = |x: u64| 100.0 * x as f64 / total as f64;
                    // the shared part: min(hit, sh)
                    let (ash, bsh) = (a.min(sh), b.min(sh));
                    let (aown, bown) = (a - ash, b - bsh);
                    if ash > bsh {
                        lost_shared += pts(ash - bsh);
                    } else {
                        won_shared += pts(bsh - ash);
                    }
                    let rb = if prev[i] == usize::MAX {
                        3
                    } else {
                        let gp = pred[prev[i]].0;
                        let r = gp / idle[i];
                        if r < 0.5 {
                            0
                        } else if r < 2.0 {
                            1
                        } else {
                            2
                        }
                    };
                    if aown > bown {
                        lost[t][ib] += pts(aown - bown);
                        lost_by_ratio[rb] += pts(aown - bown);
                    } else {
                        won[t][ib] += pts(bown - aown);
                        won_by_ratio[rb] += pts(bown - aown);
                    }
                }
                println!(
                    "     shared part: lost {lost_shared:.2} won {won_shared:.2} pts; own part by prev G/idle (<0.5, 0.5-2, >2, no prev): lost {:.2?} won {:.2?}",
                    lost_by_ratio, won_by_ratio
                );
                for t in 0..5 {
                    let l: f64 = lost[t].iter().sum();
                    let w: f64 = won[t].iter().sum();
                    if l + w < 0.01 {
                        continue;
                    }
                    let cells: Vec<String> = (0..6)
                        .filter(|&b| lost[t][b] + won[t][b] >= 0.01)
                        .map(|b| format!("{} -{:.2}/+{:.2}", IDLE_NAMES[b], lost[t][b], won[t][b]))
                        .collect();
                    println!(
                        "     turn {t}{}: lost {l:.2} won {w:.2}: {}",
                        if t == 4 { "+" } else { "" },
                        cells.join(", ")
                    );
                }
                if j == 0 {
                    let cells: Vec<String> = (0..6)
                        .filter(|&b| lru_hit_by_idle[b].1 > 0)
                        .map(|b| {
                            format!(
                                "{} {:.0}% of {}",
                                IDLE_NAMES[b],
                                100.0 * lru_hit_by_idle[b].0 as f64 / lru_hit_by_idle[b].1 as f64,
                                lru_hit_by_idle[b].1
                            )
                        })
                        .collect();
                    println!(
                        "     LRU hits of the own part of later turns by idle: {}",
                        cells.join(", ")
                    );
                }
            }
        }
        // the tracker's predictions for later-turn requests: G vs real idle
        let mut ratios: Vec<(f64, f64, f64)> = valid
            .iter()
            .filter(|&&i| prev[i] != usize::MAX)
            .map(|&i| (pred[prev[i]].0, idle[i], pred[prev[i]].1))
            .collect();
        ratios.sort_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
        if !ratios.is_empty() {
            let q = |f: f64| {
                let x = ratios[((ratios.len() - 1) as f64 * f) as usize];
                x.0 / x.1
            };
            println!(
                "   predicted G of the previous request / real idle (later turns): p10 {:.2} median {:.2} p90 {:.2}; p_continue median {:.2}",
                q(0.1),
                q(0.5),
                q(0.9),
                {
                    let mut p: Vec<f64> = ratios.iter().map(|x| x.2).collect();
                    p.sort_by(f64::total_cmp);
                    p[p.len() / 2]
                }
            );
        }
        // dead conversations: the share of validation requests that are their conversation's
        // last within the cut trace, by turn, and the p_continue they were given
        let mut is_prev = vec![false; n];
        for i in 0..n {
            if prev[i] != usize::MAX {
                is_prev[prev[i]] = true;
            }
        }
        for t in 0..5u32 {
            let v: Vec<usize> = valid
                .iter()
                .copied()
                .filter(|&i| turn[i].min(4) == t)
                .collect();
            if v.is_empty() {
                continue;
            }
            let cont = v.iter().filter(|&&i| is_prev[i]).count();
            let mut pc: Vec<f64> = v.iter().map(|&i| pred[i].1).collect();
            pc.sort_by(f64::total_cmp);
            let mut gs: Vec<f64> = v.iter().map(|&i| pred[i].0).collect();
            gs.sort_by(f64::total_cmp);
            println!(
                "   turn {t}: {} requests, followed within the cut {:.0}%, p_continue median {:.2}, G median {:.1}s",
                v.len(),
                100.0 * cont as f64 / v.len() as f64,
                pc[pc.len() / 2],
                gs[gs.len() / 2]
            );
        }
    }
}
