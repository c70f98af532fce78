//! Why does LRU lose to Belady? Per trace and capacity, on the test part of the issue-17
//! protocol's split (first half of the time span = train), replays LRU and Belady through the
//! simulator's driver (`simulate`'s engine model, GPU tier, pinning) and breaks down the blocks
//! Belady hits and LRU misses (the gap), by what they are:
//!
//! - `shared`: referenced before by at least two (inferred) conversations (a system prompt, a
//!   common document), or `own` (only this conversation's earlier turns referenced it);
//! - the turn of the request in its (inferred) conversation (`first` turn: only a shared
//!   prefix can hit);
//! - the time since the block was last referenced, and since the conversation's previous
//!   request.
//!
//! It also prints what makes the room for Belady's extra hits: the share of the blocks a
//! request touches that are never referenced again (dead), by the request's turn and depth,
//! measured on the *train* part (the constants a policy may learn from).
//!
//! `cargo run --release -p inferencelab-learn --example gap_diagnosis -- TRACE [--infer-conversations] [CAP,...]`
//! (capacities default to the protocol's). Conversations are inferred for the breakdown in
//! every case (the prefix-chain rule of `--infer-conversations`); the replays use the trace as
//! the protocol reads it.

use std::collections::HashMap;

use inferencelab_cache::PolicyConfig;
use inferencelab_learn::eval::{interesting_capacities, Candidate, Split};
use inferencelab_sim::{plan, Prepared};
use inferencelab_trace::{read_trace_hashed, ReadOptions};

fn bucket_age(s: f64) -> usize {
    [10.0, 60.0, 300.0, 1800.0, f64::INFINITY]
        .iter()
        .position(|&b| s < b || b.is_infinite())
        .unwrap()
}
const AGE: [&str; 5] = ["<10s", "10-60s", "60-300s", "300-1800s", ">=1800s"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = &args[0];
    let infer_flag = args.iter().any(|a| a == "--infer-conversations");
    let caps: Vec<u64> = args
        .iter()
        .skip(1)
        .find(|a| a.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|a| a.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or_default();
    let mut trace = read_trace_hashed(path.as_ref(), &ReadOptions::default(), 16).unwrap();
    let has_ids = trace.requests.iter().any(|r| r.conversation.is_some());
    // conversations for the breakdown: the trace's own, or inferred
    let mut conv_trace = trace.clone();
    if !has_ids {
        inferencelab_trace::infer_conversations(&mut conv_trace);
    }
    if infer_flag && !has_ids {
        inferencelab_trace::infer_conversations(&mut trace);
    }
    let bs = plan::default_block_size(&trace);
    let prepared = Prepared::new(&trace, bs, None).unwrap();
    let split = Split::new(prepared, 0.5, true).with_validation_share(0.5);
    let caps = if caps.is_empty() {
        interesting_capacities(&split, 0.8, 3)
    } else {
        caps
    };
    let reqs = &trace.requests;
    let g = &split.prepared.gpu;
    let conv: Vec<u64> = conv_trace
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| r.conversation.unwrap_or(1 << 40 | i as u64))
        .collect();
    // per request: turn in its conversation, seconds since the conversation's previous request
    let mut last_of_conv: HashMap<u64, (u32, f64)> = HashMap::new();
    let mut turn = vec![0u32; reqs.len()];
    let mut conv_idle = vec![f64::INFINITY; reqs.len()];
    let mut has_next = vec![false; reqs.len()];
    let mut prev_req: HashMap<u64, usize> = HashMap::new();
    for (i, r) in reqs.iter().enumerate() {
        if let Some(&(t, ts)) = last_of_conv.get(&conv[i]) {
            turn[i] = t + 1;
            conv_idle[i] = r.timestamp - ts;
        }
        if let Some(&j) = prev_req.get(&conv[i]) {
            has_next[j] = true;
        }
        prev_req.insert(conv[i], i);
        last_of_conv.insert(conv[i], (turn[i], r.timestamp));
    }
    // per block reference: conversations that referenced the block before, last reference time
    #[derive(Default, Clone)]
    struct B {
        convs: Vec<u64>,
        last: f64,
    }
    let mut blocks: HashMap<u32, B> = HashMap::new();
    let mut sharing_at: Vec<Vec<(usize, f64)>> = Vec::with_capacity(reqs.len());
    // dead-after (never referenced again) per reference, by request: last reference index
    let mut last_ref: HashMap<u32, usize> = HashMap::new();
    for (i, r) in reqs.iter().enumerate() {
        let keys = g.request(i);
        let mut v = Vec::with_capacity(keys.len());
        for &k in keys {
            let b = blocks.entry(k).or_default();
            let others = b.convs.iter().filter(|&&c| c != conv[i]).count();
            let own = b.convs.contains(&conv[i]);
            v.push((others + own as usize, r.timestamp - b.last));
            if !b.convs.contains(&conv[i]) && b.convs.len() < 8 {
                b.convs.push(conv[i]);
            }
            b.last = r.timestamp;
            last_ref.insert(k, i);
        }
        sharing_at.push(v);
    }
    let n_conv = {
        let mut c = conv.clone();
        c.sort();
        c.dedup();
        c.len()
    };
    println!(
        "# {path}{}: {} requests, {} conversations ({}), block size {bs}, split at {:.1} s",
        if infer_flag {
            " --infer-conversations"
        } else {
            ""
        },
        reqs.len(),
        n_conv,
        if has_ids { "trace ids" } else { "inferred" },
        split.split - split.t0
    );
    // what a policy could learn on the train part: dead references by turn and by position
    let mut dead_by_turn = [[0u64; 2]; 4];
    let mut dead_by_pos = [[0u64; 2]; 4];
    let mut cont_by_turn = [[0u64; 2]; 4];
    for (i, r) in reqs.iter().enumerate() {
        if r.timestamp >= split.split {
            break;
        }
        let t = (turn[i] as usize).min(3);
        cont_by_turn[t][0] += 1;
        cont_by_turn[t][1] += has_next[i] as u64;
        let keys = g.request(i);
        for (d, &k) in keys.iter().enumerate() {
            let dead = last_ref[&k] == i;
            let pos = (4 * d / keys.len()).min(3);
            dead_by_turn[t][0] += 1;
            dead_by_turn[t][1] += dead as u64;
            dead_by_pos[pos][0] += 1;
            dead_by_pos[pos][1] += dead as u64;
        }
    }
    let pct = |x: [u64; 2]| 100.0 * x[1] as f64 / x[0].max(1) as f64;
    println!(
        "train part: P(conversation continues | turn 0,1,2,3+) = {:.0}% {:.0}% {:.0}% {:.0}%; \
         dead block refs by turn {:.0}% {:.0}% {:.0}% {:.0}%, by quarter of the prompt {:.0}% {:.0}% {:.0}% {:.0}%",
        pct(cont_by_turn[0]),
        pct(cont_by_turn[1]),
        pct(cont_by_turn[2]),
        pct(cont_by_turn[3]),
        pct(dead_by_turn[0]),
        pct(dead_by_turn[1]),
        pct(dead_by_turn[2]),
        pct(dead_by_turn[3]),
        pct(dead_by_pos[0]),
        pct(dead_by_pos[1]),
        pct(dead_by_pos[2]),
        pct(dead_by_pos[3]),
    );
    for &cap in &caps {
        let hits = |c: &Candidate| {
            let cfg = split.sim_config(c, cap);
            let mut h = vec![0u64; reqs.len()];
            inferencelab_sim::driver::run_observed(&split.prepared, &cfg, |i, x| {
                h[i] = x.gpu_hit_tokens
            })
            .unwrap();
            h
        };
        let _ = PolicyConfig::Lru;
        let lru = hits(&Candidate::Lru);
        let bel = hits(&Candidate::Belady);
        let (mut tot, mut lru_t, mut bel_t) = (0u64, 0u64, 0u64);
        let mut by_share = [0u64; 2];
        let mut by_turn = [0u64; 2];
        let mut by_age = [0u64; 5];
        let mut by_idle = [0u64; 5];
        let mut lru_more = 0u64;
        let (mut n_gain, mut n_lose) = (0, 0);
        for (i, r) in reqs.iter().enumerate() {
            if r.timestamp < split.split {
                continue;
            }
            tot += r.input_length as u64;
            lru_t += lru[i];
            bel_t += bel[i];
            if lru[i] > bel[i] {
                lru_more += lru[i] - bel[i];
                n_lose += 1;
            }
            if bel[i] <= lru[i] {
                continue;
            }
            n_gain += 1;
            let (lo, hi) = (
                (lru[i] / bs as u64) as usize,
                (bel[i].div_ceil(bs as u64) as usize).min(sharing_at[i].len()),
            );
            for &(convs, age) in &sharing_at[i][lo..hi] {
                let w = bs as u64;
                by_share[(convs >= 2) as usize] += w;
                by_turn[(turn[i] > 0) as usize] += w;
                by_age[bucket_age(age)] += w;
                by_idle[bucket_age(conv_idle[i])] += w;
            }
        }
        let sum: u64 = by_share.iter().sum::<u64>().max(1);
        let p = |x: u64| 100.0 * x as f64 / sum as f64;
        println!(
            "cap {cap}: test LRU {:.2}% Belady {:.2}% ({} requests gain, {} lose {:.2} pts); \
             gap blocks: shared {:.0}% own {:.0}%; first turn {:.0}% later turn {:.0}%; \
             block age {}; conversation idle {}",
            100.0 * lru_t as f64 / tot as f64,
            100.0 * bel_t as f64 / tot as f64,
            n_gain,
            n_lose,
            100.0 * lru_more as f64 / tot as f64,
            p(by_share[1]),
            p(by_share[0]),
            p(by_turn[0]),
            p(by_turn[1]),
            AGE.iter()
                .zip(by_age)
                .map(|(a, x)| format!("{a} {:.0}%", p(x)))
                .collect::<Vec<_>>()
                .join(" "),
            AGE.iter()
                .zip(by_idle)
                .map(|(a, x)| format!("{a} {:.0}%", p(x)))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
}
