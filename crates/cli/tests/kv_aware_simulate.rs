//! `simulate --router kv_aware` against the real vllm-router 0.1.17's recorded decisions: the
//! golden copy of `scripts/kv_aware_check.sh` (`fixtures/kv_aware_check/`, 40 turns over 4
//! emulated replicas) through `--replica-logs`, with the router's own worker order learned from
//! its ties. The simulation's cost rule must pick the router's replica for every request (the
//! old "longest prefix first, then least loaded" rule picked it for 33 of 40 here).

mod common;

use std::io::Read;

use serde_json::Value;

/// The fixture's analysed requests (`requests.jsonl.gz`: the router's choice, and the cost of
/// every replica with the in-flight prefill tokens bounded either way, `cost` / `cost_hi`).
fn requests() -> Vec<Value> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(common::fixture("kv_aware_check/requests.jsonl.gz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The router's worker order as its ties show it: wherever the cheapest replicas (by both cost
/// bounds) were several and the router took one of them, that one comes before the others;
/// the order is these constraints sorted (the lowest replica first where they leave a choice).
fn learned_order(reqs: &[Value], n: usize) -> Vec<usize> {
    let costs = |r: &Value, key: &str| -> Vec<u64> {
        r[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect()
    };
    let mut before = vec![vec![false; n]; n];
    for r in reqs {
        let (lo, hi) = (costs(r, "cost"), costs(r, "cost_hi"));
        let (min_lo, min_hi) = (*lo.iter().min().unwrap(), *hi.iter().min().unwrap());
        let tie: Vec<usize> = (0..n)
            .filter(|&k| lo[k] == min_lo && hi[k] == min_hi)
            .collect();
        let chosen = r["replica"].as_u64().unwrap() as usize;
        if tie.len() > 1 && tie.contains(&chosen) {
            for &k in tie.iter().filter(|&&k| k != chosen) {
                before[chosen][k] = true;
            }
        }
    }
    let mut order = Vec::new();
    let mut left: Vec<usize> = (0..n).collect();
    while !left.is_empty() {
        let at = left
            .iter()
            .position(|&k| !left.iter().any(|&j| before[j][k]))
            .expect("the router's ties fit one worker order");
        order.push(left.remove(at));
    }
    order
}

#[test]
fn simulated_kv_aware_picks_the_real_routers_replica_on_its_recorded_run() {
    let reqs = requests();
    let order = learned_order(&reqs, 4);
    // the router sent every idle tie to replica 2, then to replica 0
    assert_eq!(order[..2], [2, 0]);
    let urls: Vec<String> =
        std::fs::read_to_string(common::fixture("kv_aware_check/worker_urls.txt"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
    let log = |k: usize| {
        common::fixture(&if k == 0 {
            "kv_aware_check/replica.log.gz".to_string()
        } else {
            format!("kv_aware_check/replica.replica{k}.log.gz")
        })
    };
    let tmp = tempfile::tempdir().unwrap();
    let per = tmp.path().join("per.jsonl");
    let summary = tmp.path().join("sim.json");
    let ordered_urls: Vec<&str> = order.iter().map(|&k| urls[k].as_str()).collect();
    let out = common::bin()
        .args(["simulate", "-i"])
        .arg(log(order[0]))
        .arg("--replica-logs")
        .args(order[1..].iter().map(|&k| log(k)))
        .args(["--replicas", "4", "--router", "kv_aware"])
        .args(["--router-worker-urls", &ordered_urls.join(",")])
        .args(["--gpu-blocks", "600", "--no-cpu-tier", "-q"])
        .arg("--per-request")
        .arg(&per)
        .arg("-o")
        .arg(&summary)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let doc: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let actual = &doc["points"][0]["actual"];
    assert_eq!(actual["requests"], 40, "{actual}");
    assert_eq!(actual["same_replica"], 40, "{actual}");
    // the real split, in the learned order: [29, 11, 0, 0] (replicas 2, 0, then 1 and 3 unused)
    assert_eq!(
        actual["requests_per_replica_actual"],
        serde_json::json!([29, 11, 0, 0])
    );
    let rows: Vec<Value> = std::fs::read_to_string(&per)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|r| r["replica"] == r["actual_replica"]));
}
