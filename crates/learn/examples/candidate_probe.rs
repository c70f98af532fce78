//! Issue 17: try candidate `conversation_aware` settings on the protocol's cells without looking
//! at the test parts. Per bundled trace (as `scripts/policy_protocol.sh` reads them) and the
//! protocol's capacities (LRU below 80% of the ideal on the test part: chosen from LRU alone),
//! replays LRU, Belady and each candidate through the simulator's driver (`simulate`'s engine
//! model, GPU tier, pinning) **only up to the split**, and prints the train and validation
//! parts' token hit ratios and the share of the LRU→Belady gap each candidate closes there.
//!
//! `cargo run --release -p inferencelab-learn --example candidate_probe -- [--traces a,b] CAND...`
//! where a candidate is `name:key=value,key=value` over `ScorerConfig`'s YAML keys (on top of
//! the defaults), e.g. `turn:gap_by_turn=true,infer_conversations=true`. Traces: `demo`,
//! `vllm`, `weka`, `mooncake`, `mooncake_inferred` (default: all; the demo log must have been
//! converted first, as the protocol script does). A candidate named `lightgbm...` is the
//! bundled `lightgbm` model with its calibration instead, e.g. `lightgbm_alone:adaptive=false`.
//! `PROBE_PREFILL=N` runs an engine model that prefills N tokens/s (the protocol's `--paced N`).

use inferencelab_cache::policy::conversation_aware::ScorerConfig;
use inferencelab_cache::policy::lightgbm::LightGbmConfig;
use inferencelab_learn::eval::{gap_closed, interesting_capacities, Candidate, Split};
use inferencelab_sim::{plan, Prepared};
use inferencelab_trace::{read_trace_hashed, ReadOptions};
use rayon::prelude::*;

mod common;
use common::{take_traces, wanted, yaml_of, TRACES};

fn parse_candidate(s: &str) -> (String, Candidate) {
    let (name, kv) = s.split_once(':').unwrap_or((s, ""));
    if name.starts_with("lightgbm") {
        return (name.to_string(), lightgbm_candidate(kv));
    }
    let yaml = yaml_of(kv);
    let cfg: ScorerConfig = if yaml.is_empty() {
        ScorerConfig::default()
    } else {
        serde_norway::from_str(&yaml).unwrap_or_else(|e| panic!("candidate {s}: {e}"))
    };
    (name.to_string(), Candidate::Scorer(cfg))
}

/// A candidate named `lightgbm...`: the bundled model with its calibration
/// (`configs/lightgbm_default.yaml`, as `train --model bundled --as-is` runs it), with
/// `key=value` overrides of `LightGbmConfig`'s YAML keys (e.g. `adaptive=false`).
fn lightgbm_candidate(kv: &str) -> Candidate {
    let base = std::fs::read_to_string("configs/lightgbm_default.yaml")
        .expect("configs/lightgbm_default.yaml");
    let mut map: serde_norway::Mapping = serde_norway::from_str(&base).unwrap();
    map.remove("name");
    for x in kv.split(',').filter(|x| !x.is_empty()) {
        let (k, v) = x.split_once('=').expect("key=value");
        map.insert(k.into(), serde_norway::from_str(v).unwrap());
    }
    let mut cfg: LightGbmConfig = serde_norway::from_value(serde_norway::Value::Mapping(map))
        .unwrap_or_else(|e| panic!("lightgbm candidate {kv}: {e}"));
    cfg.model.ensure_loaded().expect("the bundled model");
    Candidate::LightGbm(cfg)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let only = take_traces(&mut args);
    let mut cands: Vec<(String, Candidate)> =
        vec![("default".into(), Candidate::Scorer(ScorerConfig::default()))];
    cands.extend(args.iter().map(|a| parse_candidate(a)));
    // per candidate: validation gaps closed (cells where Belady beats LRU there), worst
    // validation difference to LRU (points)
    let mut summary: Vec<(Vec<f64>, f64)> = vec![(Vec::new(), 0.0); cands.len()];
    for (tname, path, infer) in TRACES {
        if !wanted(&only, tname) {
            continue;
        }
        let mut trace = read_trace_hashed(path.as_ref(), &ReadOptions::default(), 16)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        if infer && trace.requests.iter().all(|r| r.conversation.is_none()) {
            inferencelab_trace::infer_conversations(&mut trace);
        }
        let bs = plan::default_block_size(&trace);
        let prepared = Prepared::new(&trace, bs, None).unwrap();
        let mut split = Split::new(prepared, 0.5, true).with_validation_share(0.5);
        // `PROBE_PREFILL=N`: an engine model prefilling N tokens/s (the protocol's `--paced N`)
        if let Ok(r) = std::env::var("PROBE_PREFILL") {
            split.timing.prefill_tokens_per_s = r.parse().expect("PROBE_PREFILL: tokens/s");
        }
        if std::env::var_os("PROBE_DUMP").is_some() {
            dump_turn_gaps(&split);
            for cap in interesting_capacities(&split, 0.8, 3) {
                admission_delays(&split, cap);
            }
        }
        let caps = interesting_capacities(&split, 0.8, 3);
        let until = split.split;
        let mut jobs: Vec<(u64, Candidate)> = Vec::new();
        for &c in &caps {
            jobs.push((c, Candidate::Lru));
            jobs.push((c, Candidate::Belady));
            for (_, cand) in &cands {
                jobs.push((c, cand.clone()));
            }
        }
        let runs: Vec<_> = jobs
            .par_iter()
            .map(|(cap, c)| split.run(c, *cap, until))
            .collect();
        let per = 2 + cands.len();
        for (k, &cap) in caps.iter().enumerate() {
            let r = &runs[k * per..(k + 1) * per];
            let (lru, bel) = (&r[0], &r[1]);
            println!(
                "{tname} {cap}: train LRU {:.2} Belady {:.2} | valid LRU {:.2} Belady {:.2}",
                100.0 * lru.train.token_hit_ratio(),
                100.0 * bel.train.token_hit_ratio(),
                100.0 * lru.validation.token_hit_ratio(),
                100.0 * bel.validation.token_hit_ratio(),
            );
            for (j, (name, _)) in cands.iter().enumerate() {
                let p = &r[2 + j];
                let g = |f: fn(&inferencelab_learn::replay::SplitCounts) -> f64| {
                    gap_closed(f(p), f(lru), f(bel))
                        .map_or("-".to_string(), |x| format!("{:.1}%", 100.0 * x))
                };
                let sm = &mut summary[j];
                if let Some(x) = gap_closed(
                    p.validation.token_hit_ratio(),
                    lru.validation.token_hit_ratio(),
                    bel.validation.token_hit_ratio(),
                ) {
                    sm.0.push(100.0 * x);
                }
                sm.1 = sm.1.min(
                    100.0 * (p.validation.token_hit_ratio() - lru.validation.token_hit_ratio()),
                );
                println!(
                    "  {name:>24}: train {:.2} ({:>7}, {:+.2} pts)  valid {:.2} ({:>7}, {:+.2} pts)",
                    100.0 * p.train.token_hit_ratio(),
                    g(|c| c.train.token_hit_ratio()),
                    100.0 * (p.train.token_hit_ratio() - lru.train.token_hit_ratio()),
                    100.0 * p.validation.token_hit_ratio(),
                    g(|c| c.validation.token_hit_ratio()),
                    100.0 * (p.validation.token_hit_ratio() - lru.validation.token_hit_ratio()),
                );
            }
        }
    }
    println!("summary (validation parts): candidate, mean gap closed over cells, worst difference to LRU");
    for ((name, _), (g, w)) in cands.iter().zip(&summary) {
        println!(
            "  {name:>24}: {:6.1}% over {} cells, worst {:+.2} pts",
            g.iter().sum::<f64>() / g.len().max(1) as f64,
            g.len(),
            w
        );
    }
}

/// What the tracker has learned per turn at the split and at the end of the trace (first block
/// of each request only): the typical gap after a request of that turn, and the continuation.
fn dump_turn_gaps(split: &Split<'_>) {
    use inferencelab_cache::learned::features::Tracker;
    use inferencelab_cache::Access;
    let mut tr = Tracker::without_counters();
    let reqs = &split.prepared.trace.requests;
    let mut shown = false;
    let mut by_turn: Vec<(f64, f64, u64)> = vec![(0.0, 0.0, 0); 17];
    for (i, r) in reqs.iter().enumerate() {
        if !shown && r.timestamp >= split.split {
            shown = true;
            let line: Vec<String> = by_turn
                .iter()
                .enumerate()
                .filter(|x| x.1 .2 > 0)
                .map(|(k, x)| format!("{k}: gap {:.1} p {:.2} (n {})", x.0, x.1, x.2))
                .collect();
            println!("  at the split: {}", line.join("; "));
        }
        let keys = split.prepared.gpu.request(i);
        if keys.is_empty() {
            continue;
        }
        for (d, &k) in keys.iter().enumerate() {
            let a = Access {
                timestamp: r.timestamp,
                request: i as u32,
                conversation: r.conversation.unwrap_or(u64::MAX),
                depth: d as u32,
                ..Access::at(k, i as u64)
            };
            let s = tr.observe(&a);
            if d == 0 && s.conv_requests > 0 {
                let b = &mut by_turn[(s.conv_requests as usize).min(16)];
                *b = (s.log_turn_gap.exp_m1(), s.p_continue, b.2 + 1);
            }
        }
    }
}

/// How far the engine's clock runs behind the arrivals: admission delay quantiles per part.
pub fn admission_delays(split: &Split<'_>, cap: u64) {
    let cfg = split.sim_config(&Candidate::Lru, cap);
    let reqs = &split.prepared.trace.requests;
    let mut d = vec![(0.0, false); reqs.len()];
    inferencelab_sim::driver::run_observed(&split.prepared, &cfg, |i, h| {
        d[i] = (
            h.admitted_s - reqs[i].timestamp,
            reqs[i].timestamp >= split.split,
        )
    })
    .unwrap();
    for part in [false, true] {
        let mut v: Vec<f64> = d.iter().filter(|x| x.1 == part).map(|x| x.0).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            continue;
        }
        let q = |f: f64| v[((v.len() - 1) as f64 * f) as usize];
        println!(
            "  cap {cap} {}: admission delay s: median {:.1} p90 {:.1} max {:.1}",
            if part { "test" } else { "train" },
            q(0.5),
            q(0.9),
            q(1.0)
        );
    }
}
