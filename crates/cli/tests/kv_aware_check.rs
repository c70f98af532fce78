//! The golden copy of `scripts/kv_aware_check.sh` (issue 21): `serve --replicas 4` publishing
//! vLLM's KV cache events, the real `vllm-router` 0.1.17 with `--policy kv_aware` subscribed to
//! them, `bench` replaying the first 40 turns of `data/test_data.csv` through it. The fixture
//! keeps the events as a subscriber of the script's recorded them, the replicas' request lines
//! and the router's decision lines. This test replays the events again, independently of the
//! script's Python, and checks every figure the script recorded: on how many requests the router
//! chose a replica whose emulated GPU cache held the request's longest prefix at its arrival,
//! the cause of each exception, that the router's credited prefix (its debug log) is the events'
//! own on the replica it chose, and that its cost formula with the logs' loads picks its choice.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};

use serde_json::Value;

const BLOCK: usize = 16;
const FRESH_MS: f64 = 100.0;

fn lines(path: &std::path::Path) -> Vec<String> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let r: Box<dyn std::io::Read> = if path.extension().is_some_and(|x| x == "gz") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    BufReader::new(r).lines().map(Result::unwrap).collect()
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn year_of(ts: f64) -> i64 {
    let days = (ts / 86400.0).floor() as i64;
    let mut y = 1970 + days / 366;
    while days_from_civil(y + 1, 1, 1) <= days {
        y += 1;
    }
    y
}

/// The stamp of a vLLM log line (`MM-DD HH:MM:SS.ffffff [`), in seconds since the epoch (UTC).
fn stamp(line: &str, year: i64) -> Option<f64> {
    let mut words = line[..line.find(" [")?].rsplit(' ');
    let (time, date) = (words.next()?, words.next()?);
    let (mo, d) = date.split_once('-')?;
    let mut t = time.splitn(3, ':');
    let (h, mi, sec) = (t.next()?, t.next()?, t.next()?);
    let base = days_from_civil(year, mo.parse().ok()?, d.parse().ok()?) * 86400
        + h.parse::<i64>().ok()? * 3600
        + mi.parse::<i64>().ok()? * 60;
    Some(base as f64 + sec.parse::<f64>().ok()?)
}

/// The id after `marker` up to `end`.
fn id_after<'a>(line: &'a str, marker: &str, end: &str) -> Option<&'a str> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let id = &rest[..rest.find(end)?];
    (id.starts_with("chatcmpl-") || id.starts_with("cmpl-")).then_some(id)
}

#[derive(Default, Clone)]
struct Request {
    replica: usize,
    arrival: f64,
    finish: Option<f64>,
    tokens: Vec<u32>,
    index: i64,
}

#[derive(Default)]
struct Oracle {
    trie: HashMap<(u64, Vec<u32>), u64>,
    node_of: HashMap<u64, u64>,
    held: Vec<HashMap<u64, f64>>,
    removed_at: Vec<HashMap<u64, f64>>,
}

impl Oracle {
    fn apply(&mut self, b: &Value) {
        let r = b["r"].as_u64().unwrap() as usize;
        let ts = b["ts"].as_f64().unwrap();
        for e in b["ev"].as_array().unwrap() {
            match e[0].as_str().unwrap() {
                "S" => {
                    let mut node = match e[2].as_u64() {
                        Some(p) => *self
                            .node_of
                            .get(&p)
                            .expect("a stored block's parent is known"),
                        None => 0,
                    };
                    let tokens: Vec<u32> = e[3]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_u64().unwrap() as u32)
                        .collect();
                    for (i, h) in e[1].as_array().unwrap().iter().enumerate() {
                        let key = (node, tokens[i * BLOCK..(i + 1) * BLOCK].to_vec());
                        let next = self.trie.len() as u64 + 1;
                        node = *self.trie.entry(key).or_insert(next);
                        self.node_of.insert(h.as_u64().unwrap(), node);
                        self.held[r].insert(node, ts);
                    }
                }
                "R" => {
                    for h in e[1].as_array().unwrap() {
                        if let Some(&node) = self.node_of.get(&h.as_u64().unwrap()) {
                            if self.held[r].remove(&node).is_some() {
                                self.removed_at[r].insert(node, ts);
                            }
                        }
                    }
                }
                _ => {
                    for (&node, _) in self.held[r].iter() {
                        self.removed_at[r].insert(node, ts);
                    }
                    self.held[r].clear();
                }
            }
        }
    }

    /// The trie nodes of a prompt's blocks, at most (tokens - 1) / 16 of them.
    fn path(&self, tokens: &[u32]) -> Vec<u64> {
        let mut nodes = Vec::new();
        let mut node = 0;
        for i in 0..tokens.len().saturating_sub(1) / BLOCK {
            match self
                .trie
                .get(&(node, tokens[i * BLOCK..(i + 1) * BLOCK].to_vec()))
            {
                Some(&n) => {
                    node = n;
                    nodes.push(n);
                }
                None => break,
            }
        }
        nodes
    }

    fn prefix(&self, r: usize, nodes: &[u64]) -> usize {
        nodes
            .iter()
            .take_while(|n| self.held[r].contains_key(n))
            .count()
    }
}

/// One request as seen at its arrival: prefix blocks per replica, its decision line's index,
/// its new prefill tokens (the router's, else the events'), the youngest block's age (ms) of an
/// exception.
type Seen = (Vec<usize>, Option<usize>, usize, Option<f64>);

#[test]
fn kv_aware_lands_where_the_emulators_caches_hold_the_longest_prefix() {
    let dir = common::fixture("kv_aware_check");
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let urls: Vec<String> = std::fs::read_to_string(dir.join("worker_urls.txt"))
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    let n = urls.len();
    let mut batches: Vec<Value> = lines(&dir.join("events.jsonl.gz"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    batches.sort_by(|a, b| {
        let key = |x: &Value| {
            (
                x["ts"].as_f64().unwrap(),
                x["r"].as_u64().unwrap(),
                x["seq"].as_u64().unwrap(),
            )
        };
        key(a).partial_cmp(&key(b)).unwrap()
    });
    // every replica's events from sequence 0 on, none missing
    for k in 0..n {
        let seqs: Vec<u64> = batches
            .iter()
            .filter(|b| b["r"].as_u64() == Some(k as u64))
            .map(|b| b["seq"].as_u64().unwrap())
            .collect();
        let g = &golden["event_batches"][k.to_string()];
        assert_eq!(
            seqs.len() as u64,
            g["batches"].as_u64().unwrap(),
            "replica {k}"
        );
        if let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) {
            assert_eq!(*lo, 0, "replica {k}: events from the first batch on");
            assert_eq!(
                hi - lo + 1,
                seqs.len() as u64,
                "replica {k}: no batch missing"
            );
        }
    }
    let year = year_of(batches[0]["ts"].as_f64().unwrap());

    let mut reqs: HashMap<String, Request> = HashMap::new();
    let mut have = HashMap::new();
    for k in 0..n {
        let name = if k == 0 {
            "replica.log.gz".to_string()
        } else {
            format!("replica.replica{k}.log.gz")
        };
        for line in lines(&dir.join(name)) {
            let t = stamp(&line, year);
            if let Some(id) = id_after(&line, "Received request ", ":") {
                let r = reqs.entry(id.to_string()).or_default();
                r.replica = k;
                r.arrival = t.expect("a stamp on every request line");
                r.index = id
                    .rsplit('-')
                    .next()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(-1);
                *have.entry(id.to_string()).or_insert(0) += 1;
            } else if let Some(id) = id_after(&line, "Request ", " details: ") {
                let ids = &line[line.find("prompt_token_ids: [").unwrap() + 19..];
                let ids = &ids[..ids.find(']').unwrap()];
                reqs.entry(id.to_string()).or_default().tokens = ids
                    .split(',')
                    .filter(|x| !x.trim().is_empty())
                    .map(|x| x.trim().parse().unwrap())
                    .collect();
                *have.entry(id.to_string()).or_insert(0) += 2;
            } else if let Some(rest) = line.split_once("Generated response ").map(|x| x.1) {
                // `ID: output: ...` or `ID (streaming complete): output: ...`
                if rest.contains(": output: ") {
                    let id = rest.split([' ', ':']).next().unwrap();
                    reqs.entry(id.to_string()).or_default().finish = t;
                }
            }
        }
    }
    let mut reqs: Vec<Request> = reqs
        .into_iter()
        .filter(|(id, _)| have.get(id) == Some(&3))
        .map(|(_, r)| r)
        .collect();
    reqs.sort_by(|a, b| {
        (a.arrival, a.index)
            .partial_cmp(&(b.arrival, b.index))
            .unwrap()
    });
    assert_eq!(reqs.len() as u64, golden["requests"].as_u64().unwrap());

    // the router's decisions, in its order: worker, input tokens, credited tokens, new prefill
    let decisions: Vec<(String, usize, usize, usize)> = lines(&dir.join("router.out"))
        .iter()
        .filter_map(|l| {
            let field = |name: &str| {
                let rest = &l[l.find(name)? + name.len()..];
                Some(rest[..rest.find([' ', '"']).unwrap_or(rest.len())].to_string())
            };
            Some((
                field("worker=\"")?,
                field("input_tokens=")?.parse().ok()?,
                field("credited_prefix_tokens=")?.parse().ok()?,
                field("new_prefill_tokens=")?.parse().ok()?,
            ))
        })
        .collect();
    assert_eq!(
        decisions.len() as u64,
        golden["router_decisions"].as_u64().unwrap()
    );

    let mut oracle = Oracle {
        held: vec![HashMap::new(); n],
        removed_at: vec![HashMap::new(); n],
        ..Default::default()
    };
    let mut next = 0;
    let (mut right, mut matched, mut credit_equal, mut cost_agrees) = (0, 0, 0, 0);
    let mut causes: HashMap<&str, u64> = HashMap::new();
    let mut decisive = (0, 0);
    let mut per_replica = vec![0u64; n];
    // per request (arrival order): prefix blocks per replica, decision index, new prefill
    // tokens (the router's, else the events'), youngest block age of an exception
    let mut seen: Vec<Seen> = Vec::new();
    let mut used = vec![false; decisions.len()];
    let (mut ties, mut before_in_order) = (0u64, Vec::<(usize, usize)>::new());
    let mut credit_differs: HashMap<&str, u64> = HashMap::new();
    for (i, r) in reqs.iter().enumerate() {
        while next < batches.len() && batches[next]["ts"].as_f64().unwrap() < r.arrival {
            oracle.apply(&batches[next]);
            next += 1;
        }
        per_replica[r.replica] += 1;
        let nodes = oracle.path(&r.tokens);
        let pre: Vec<usize> = (0..n).map(|k| oracle.prefix(k, &nodes)).collect();
        let best = *pre.iter().max().unwrap();
        let ok = pre[r.replica] == best;
        right += ok as u64;
        if best > 0 && *pre.iter().min().unwrap() < best {
            decisive.0 += 1;
            decisive.1 += ok as u64;
        }
        // the decision line: the next unused one within 3 places with this replica and length
        let dec = (i.saturating_sub(3)..(i + 4).min(decisions.len())).find(|&j| {
            !used[j] && decisions[j].0 == urls[r.replica] && decisions[j].1 == r.tokens.len()
        });
        let mut new_prefill = r.tokens.len() - BLOCK * pre[r.replica];
        if let Some(j) = dec {
            used[j] = true;
            matched += 1;
            new_prefill = decisions[j].3;
            let credited = decisions[j].2;
            if credited == BLOCK * pre[r.replica] {
                credit_equal += 1;
            } else {
                // stale when the blocks in between were stored or removed just before arrival
                let (a, b) = (credited / BLOCK, pre[r.replica]);
                let (lo, hi) = (a.min(b), a.max(b));
                let young = nodes
                    .get(lo..hi)
                    .into_iter()
                    .flatten()
                    .filter_map(|node| {
                        oracle.held[r.replica]
                            .get(node)
                            .or(oracle.removed_at[r.replica].get(node))
                    })
                    .map(|t| (r.arrival - t) * 1e3)
                    .reduce(f64::min);
                let stale = nodes.len() >= hi && young.is_some_and(|y| y < FRESH_MS);
                *credit_differs
                    .entry(if stale { "stale" } else { "unexplained" })
                    .or_default() += 1;
            }
        }
        let mut youngest = None;
        if !ok {
            let mut ages: Vec<f64> = Vec::new();
            for k in (0..n).filter(|&k| pre[k] > pre[r.replica]) {
                for node in &nodes[pre[r.replica]..pre[k]] {
                    ages.push((r.arrival - oracle.held[k][node]) * 1e3);
                }
            }
            for node in &nodes[pre[r.replica]..best] {
                if let Some(t) = oracle.removed_at[r.replica].get(node) {
                    ages.push((r.arrival - t) * 1e3);
                }
            }
            youngest = ages.iter().copied().reduce(f64::min);
        }
        seen.push((pre, dec, new_prefill, youngest));
    }
    // the router's cost, (new prefill tokens + in-flight prefill tokens) x (requests in flight
    // + 1), with the requests it sent to a replica before this one (its decision order) that had
    // not finished at this one's arrival; their prefill tokens still counted (before their first
    // token) are not in the logs: none (`cost`) or all (`cost_hi`)
    for (i, r) in reqs.iter().enumerate() {
        let (pre, dec, _, youngest) = &seen[i];
        let before = |j: usize| match (seen[j].1, dec) {
            (Some(a), Some(b)) => a < *b,
            _ => reqs[j].arrival < r.arrival,
        };
        let busy: Vec<Vec<usize>> = (0..n)
            .map(|k| {
                (0..reqs.len())
                    .filter(|&j| {
                        j != i
                            && reqs[j].replica == k
                            && before(j)
                            && reqs[j].finish.is_none_or(|f| f > r.arrival)
                    })
                    .collect()
            })
            .collect();
        let cost: Vec<usize> = (0..n)
            .map(|k| (r.tokens.len() - BLOCK * pre[k]) * (busy[k].len() + 1))
            .collect();
        let cost_hi: Vec<usize> = (0..n)
            .map(|k| {
                let in_prefill: usize = busy[k].iter().map(|&j| seen[j].2).sum();
                (r.tokens.len() - BLOCK * pre[k] + in_prefill) * (busy[k].len() + 1)
            })
            .collect();
        let agrees = cost[r.replica] == *cost.iter().min().unwrap()
            || cost_hi[r.replica] == *cost_hi.iter().min().unwrap();
        cost_agrees += agrees as u64;
        // a tie on a fleet idle for the router too (nothing in flight, nothing finished less
        // than FRESH_MS before): the chosen replica comes first in the router's worker order
        let idle = busy.iter().all(Vec::is_empty)
            && !reqs.iter().any(|q| {
                q.finish
                    .is_some_and(|f| (0.0..FRESH_MS).contains(&((r.arrival - f) * 1e3)))
            });
        let tied: Vec<usize> = (0..n)
            .filter(|&k| cost[k] == *cost.iter().min().unwrap())
            .collect();
        if idle && agrees && tied.len() > 1 {
            ties += 1;
            for &k in tied.iter().filter(|&&k| k != r.replica) {
                before_in_order.push((r.replica, k));
            }
        }
        if pre[r.replica] != *pre.iter().max().unwrap() {
            let longer: Vec<usize> = (0..n).filter(|&k| pre[k] > pre[r.replica]).collect();
            let cause = if longer.iter().all(|&k| cost[r.replica] <= cost[k])
                || longer.iter().all(|&k| cost_hi[r.replica] <= cost_hi[k])
            {
                "load"
            } else if youngest.is_some_and(|y| y < FRESH_MS) {
                "fresh"
            } else {
                "unexplained"
            };
            *causes.entry(cause).or_default() += 1;
        }
    }
    assert_eq!(
        right,
        golden["landed_on_longest_prefix"].as_u64().unwrap(),
        "requests on a replica holding their longest prefix"
    );
    for cause in ["load", "fresh", "unexplained"] {
        assert_eq!(
            causes.get(cause).copied().unwrap_or(0),
            golden["exception_causes"][cause].as_u64().unwrap(),
            "{cause}"
        );
    }
    assert_eq!(
        decisive.0,
        golden["decisive_requests"].as_u64().unwrap(),
        "decisive"
    );
    assert_eq!(
        decisive.1,
        golden["decisive_landed_right"].as_u64().unwrap()
    );
    assert_eq!(
        matched,
        golden["router_decisions_matched"].as_u64().unwrap()
    );
    assert_eq!(
        credit_equal,
        golden["router_credit_equals_oracle"].as_u64().unwrap()
    );
    for view in ["stale", "unexplained"] {
        assert_eq!(
            credit_differs.get(view).copied().unwrap_or(0),
            golden["router_credit_differs"][view].as_u64().unwrap(),
            "router's credit differs: {view}"
        );
    }
    assert_eq!(
        cost_agrees,
        golden["cost_model_agrees"].as_u64().unwrap(),
        "the router's cost formula with the logs' loads picks its choice"
    );
    // the ties' constraints fit one worker order: peel replicas nothing must precede
    let mut left: Vec<usize> = (0..n).collect();
    while let Some(at) = left.iter().position(|&k| {
        !before_in_order
            .iter()
            .any(|&(a, b)| b == k && left.contains(&a))
    }) {
        left.remove(at);
    }
    assert_eq!(ties, golden["idle_ties"].as_u64().unwrap(), "idle ties");
    assert_eq!(
        left.is_empty(),
        golden["idle_ties_fit_one_order"].as_bool().unwrap(),
        "the router breaks ties in one worker order"
    );
    assert!(
        left.is_empty(),
        "tie-breaks in no single order: {before_in_order:?}"
    );
    let golden_per: Vec<u64> = golden["requests_per_replica"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(per_replica, golden_per);
    // what the run showed: the router's view of the chosen replica is the events' own, every
    // decision matched a request, and the prefix decided where no load was in the way (the
    // bars are the recorded run's; a new fixture documents its own in docs/replicas.md)
    assert_eq!(matched, reqs.len() as u64);
    assert_eq!(credit_differs.get("unexplained"), None);
    assert_eq!(causes.get("unexplained").copied().unwrap_or(0), 0);
    assert_eq!(cost_agrees, reqs.len() as u64);
    assert!(
        decisive.0 > reqs.len() as u64 / 2,
        "the trace exercises prefixes"
    );
}
