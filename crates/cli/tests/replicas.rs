//! `simulate --replicas N --router P` (issue 21): one replica is the single server for every
//! router, the fleet's figures add up, and what is not implemented says so.

mod common;

use common::{repo, simulate_json};

const LOG: &str = "data/traces/vllm-logs/server_vllm-0.33_synthetic_200req.log";
const ROUTERS: [&str; 8] = [
    "round_robin",
    "random",
    "power_of_two",
    "consistent_hash",
    "sticky_least_loaded",
    "cache_aware",
    "kv_aware",
    "ideal_pool",
];

#[test]
fn one_replica_is_the_single_server_for_every_router() {
    let log = repo(LOG);
    let log = log.to_str().unwrap();
    let base = [
        "-i",
        log,
        "--gpu-blocks",
        "300",
        "--cpu-cache-gb",
        "0.05",
        "-q",
    ];
    let single = simulate_json(&base);
    let row = &single["results"][0];
    assert!(
        row["gpu_evictions"].as_u64().unwrap() > 0,
        "a pool that evicts"
    );
    for router in ROUTERS {
        let mut args = base.to_vec();
        args.extend(["--replicas", "1", "--router", router]);
        let fleet = simulate_json(&args);
        let r = &fleet["points"][0]["result"];
        assert_eq!(r["gpu_hit_tokens"], row["gpu_hit_tokens"], "{router}");
        assert_eq!(r["cpu_hit_tokens"], row["cpu_hit_tokens"], "{router}");
        assert_eq!(r["prompt_tokens"], row["prompt_tokens"], "{router}");
        assert_eq!(
            r["per_replica"][0]["gpu_evictions"], row["gpu_evictions"],
            "{router}"
        );
    }
}

#[test]
fn a_fleet_reports_every_replica_and_names_what_is_partial() {
    let log = repo(LOG);
    let log = log.to_str().unwrap();
    let doc = simulate_json(&[
        "-i",
        log,
        "--gpu-blocks",
        "2000",
        "--no-cpu-tier",
        "-q",
        "--replicas",
        "4",
        "--router",
        "round_robin",
    ]);
    let r = &doc["points"][0]["result"];
    let per = r["per_replica"].as_array().unwrap();
    assert_eq!(per.len(), 4);
    // 200 requests dealt in turn
    assert!(per.iter().all(|p| p["requests"] == 50));
    assert_eq!(r["imbalance"], 1.0);
    assert!(doc["partial"].as_str().unwrap().contains("issue 21"));
    // a routing that loses hits: below the single server's
    let single = simulate_json(&["-i", log, "--gpu-blocks", "2000", "--no-cpu-tier", "-q"]);
    let one = single["results"][0]["gpu_hit_tokens"].as_u64().unwrap();
    assert!(r["gpu_hit_tokens"].as_u64().unwrap() < one);
}

#[test]
fn a_fleet_runs_the_smart_policies_beside_lru_without_belady() {
    // `simulate` adds LRU and Belady beside a smart policy; a fleet runs no oracle, so only LRU
    let log = repo(LOG);
    let doc = simulate_json(&[
        "-i",
        log.to_str().unwrap(),
        "-p",
        "conversation_aware",
        "--gpu-blocks",
        "300",
        "--no-cpu-tier",
        "-q",
        "--replicas",
        "2",
    ]);
    let policies: Vec<&str> = doc["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(policies, ["conversation_aware", "lru"], "{doc}");
    // at 200 blocks requests wait: the table says the queue had a part, as a single server's does
    let dir = tempfile::tempdir().unwrap();
    let out = common::bin()
        .args(["simulate", "-i"])
        .arg(&log)
        .args([
            "-p",
            "conversation_aware",
            "--gpu-blocks",
            "200",
            "--no-cpu-tier",
        ])
        .args(["--replicas", "2", "--output"])
        .arg(dir.path().join("fleet.json"))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("waiting queue: conversation_aware") && stdout.contains("p90 up to"),
        "{stdout}"
    );
}

/// Per request of a `--per-request` file: (replica, GPU hit tokens, CPU hit tokens).
fn per_request(path: &std::path::Path) -> Vec<(u64, u64, u64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let n = |k: &str| v[k].as_u64().unwrap();
            (n("replica"), n("gpu_hit_tokens"), n("cpu_hit_tokens"))
        })
        .collect()
}

#[test]
fn one_shared_lmcache_tier_serves_what_another_replica_stored() {
    let log = repo(LOG);
    let log = log.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "-i",
        log,
        "--gpu-blocks",
        "600",
        "-q",
        "--router",
        "round_robin",
    ];
    let run = |replicas: &str, extra: &[&str], name: &str| {
        let lines = dir.path().join(name);
        let mut args = base.to_vec();
        args.extend([
            "--replicas",
            replicas,
            "--per-request",
            lines.to_str().unwrap(),
        ]);
        args.extend(extra);
        let doc = simulate_json(&args);
        (doc["points"][0]["result"].clone(), per_request(&lines))
    };
    // one replica: the shared tier is its own tier (free network: every figure equal; the
    // log's times keep every hit with the default network too, which only adds to TTFT)
    let (own, own_req) = run("1", &[], "own1.jsonl");
    let free = ["--lmcache-shared", "--lmcache-network-gbps", "inf"];
    let free = [&free[..], &["--lmcache-network-latency-ms", "0"]].concat();
    let (one, one_req) = run("1", &free, "one1.jsonl");
    assert_eq!(one["per_replica"], own["per_replica"]);
    assert_eq!(one["ttft_p90_s"], own["ttft_p90_s"]);
    assert_eq!(one_req, own_req);
    assert!(own["cpu_hit_tokens"].as_u64().unwrap() > 0, "LMCache hits");
    let (paid, paid_req) = run("1", &["--lmcache-shared"], "paid1.jsonl");
    assert_eq!(paid_req, own_req);
    assert!(paid["lmcache_load_s"].as_f64().unwrap() > 0.0);
    assert!(paid["ttft_p90_s"].as_f64().unwrap() >= own["ttft_p90_s"].as_f64().unwrap());

    // 4 replicas dealt in turn: requests whose own replica had nothing of them (no GPU and
    // no LMCache hit) hit the shared tier, filled by the other replicas
    let (own, own_req) = run("4", &[], "own4.jsonl");
    let (one, one_req) = run("4", &["--lmcache-shared"], "one4.jsonl");
    assert_eq!(one["lmcache_shared"], true);
    let rescued = own_req
        .iter()
        .zip(&one_req)
        .filter(|(o, s)| o.0 == s.0 && o.1 + o.2 == 0 && s.2 > 0)
        .count();
    assert!(
        rescued > 0,
        "no request hit the shared tier where its own had nothing"
    );
    assert!(one["cpu_hit_tokens"].as_u64().unwrap() > own["cpu_hit_tokens"].as_u64().unwrap());
    // the figures add up
    let per = one["per_replica"].as_array().unwrap();
    let sum = |k: &str| per.iter().map(|p| p[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        sum("cpu_hit_tokens"),
        one["cpu_hit_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        one_req.iter().map(|r| r.2).sum::<u64>(),
        one["cpu_hit_tokens"].as_u64().unwrap()
    );
    assert_eq!(sum("requests"), 200);
}

#[test]
fn unimplemented_and_wrong_flags_are_refused_with_the_fix() {
    let log = repo(LOG);
    let run = |extra: &[&str]| {
        let out = common::bin()
            .args([
                "simulate",
                "-i",
                log.to_str().unwrap(),
                "--gpu-blocks",
                "500",
                "-q",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["--replicas", "2", "--lmcache-shared", "--no-cpu-tier"]).contains("drop one"));
    assert!(run(&[
        "--replicas",
        "2",
        "--lmcache-shared",
        "--lmcache-network-gbps",
        "0"
    ])
    .contains("bandwidth above 0"));
    // the network's flags belong to a shared tier
    assert!(run(&["--replicas", "2", "--lmcache-network-gbps", "10"]).contains("--lmcache-shared"));
    assert!(run(&["--router", "round_robin"]).contains("--replicas"));
    assert!(run(&["--replicas", "2", "--router", "nearest"]).contains("cache_aware"));
    assert!(run(&["--replicas", "0"]).contains("from 1 to 4096"));
}

/// One HTTP/1.1 request with `Connection: close`: the status and the body (not chunked).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        rest.to_string(),
    )
}

fn prefix_cache_hits(addr: &str) -> f64 {
    let (_, text) = http(addr, "GET", "/metrics", "");
    text.lines()
        .find(|l| l.starts_with("vllm:prefix_cache_hits_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn serve_replicas_listen_apart_with_their_own_caches() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fleet.log");
    let mut child = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--replicas",
            "2",
            "--port",
            "0",
            "--gpu-blocks",
            "200",
        ])
        .args([
            "--no-cpu-tier",
            "--enable-log-requests",
            "--time-scale",
            "0",
        ])
        .arg("--log-file")
        .arg(&log)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut addrs = Vec::new();
    while addrs.len() < 2 {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "serve exited");
        if let Some((_, a)) = line.trim().split_once(" listening on http://") {
            addrs.push(a.to_string());
        }
    }
    // the same 64-word prompt twice to replica 0, once to replica 1: only 0 hits
    let prompt = (0..64)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let body = format!(r#"{{"model":"qwen-8b","prompt":"{prompt}","max_tokens":2}}"#);
    for a in [&addrs[0], &addrs[0], &addrs[1]] {
        assert_eq!(http(a, "POST", "/v1/completions", &body).0, 200);
    }
    assert!(prefix_cache_hits(&addrs[0]) > 0.0);
    assert_eq!(prefix_cache_hits(&addrs[1]), 0.0);
    let _ = child.kill();
    let _ = child.wait();
    // one log per replica
    let received = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .matches("Received request")
            .count()
    };
    assert_eq!(received(&log), 2);
    assert_eq!(received(&dir.path().join("fleet.replica1.log")), 1);
}

#[test]
fn batch_has_lmcache_shared_as_an_axis_with_simulates_figures() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, _) = batch_summary(
        dir.path(),
        "shared",
        format!(
            "name: shared\ntraces:\n  - path: {}\n    name: vllm200\ngpu_blocks: [600]\n\
             cpu_cache_gb: [5]\npolicies: [lru]\nreplicas: [2]\nrouters: [round_robin]\n\
             lmcache_shared: [false, true]\n",
            repo(LOG).display()
        ),
    );
    let rows = doc["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let row = |shared: bool| {
        rows.iter()
            .find(|r| r["lmcache_shared"] == shared)
            .unwrap_or_else(|| panic!("no row with lmcache_shared {shared}"))
    };
    let log = repo(LOG);
    let log = log.to_str().unwrap();
    for shared in [false, true] {
        let mut args = vec![
            "-i",
            log,
            "--gpu-blocks",
            "600",
            "--cpu-cache-gb",
            "5",
            "-q",
            "--replicas",
            "2",
            "--router",
            "round_robin",
        ];
        if shared {
            args.push("--lmcache-shared");
        }
        let sim = simulate_json(&args);
        let r = &sim["points"][0]["result"];
        for k in [
            "cpu_hit_tokens",
            "gpu_hit_tokens",
            "ttft_p90_s",
            "lmcache_load_s",
        ] {
            assert_eq!(row(shared)[k], r[k], "{k} shared {shared}");
        }
    }
    assert!(
        row(true)["cpu_hit_tokens"].as_u64().unwrap()
            > row(false)["cpu_hit_tokens"].as_u64().unwrap()
    );
    // a shared row carries its network; a per-replica row has none
    assert_eq!(row(true)["lmcache_network_gbit_per_s"], 100.0);
    assert_eq!(row(true)["lmcache_network_latency_ms"], 0.5);
    assert!(row(false)["lmcache_network_gbit_per_s"].is_null());
}

#[test]
fn batch_grids_over_replicas_and_routers_and_plot_draws_them_per_router() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, out_dir) = batch_summary(
        dir.path(),
        "fleet",
        format!(
            "name: fleet\ntraces:\n  - path: {}\n    name: vllm200\ngpu_blocks: [300]\n\
             policies: [lru]\nreplicas: [1, 2]\nrouters: [round_robin, ideal_pool]\n",
            repo(LOG).display()
        ),
    );
    let rows = doc["results"].as_array().unwrap();
    let at = |n: u64, r: &str| {
        rows.iter()
            .find(|x| x["replicas"] == n && x["router"] == r)
            .unwrap_or_else(|| panic!("no row for {n} x {r}"))
    };
    assert_eq!(rows.len(), 4);
    assert!(rows
        .iter()
        .all(|r| r["error"].is_null() && r["policy"] == "lru"));
    // one replica is the single server, whatever the router
    let log = repo(LOG);
    let log = log.to_str().unwrap();
    let single = simulate_json(&["-i", log, "--gpu-blocks", "300", "--no-cpu-tier", "-q"]);
    for r in ["round_robin", "ideal_pool"] {
        assert_eq!(
            at(1, r)["gpu_hit_tokens"],
            single["results"][0]["gpu_hit_tokens"]
        );
    }
    // a fleet point is `simulate --replicas N --router P` at the same size
    let fleet = simulate_json(&[
        "-i",
        log,
        "--gpu-blocks",
        "300",
        "--no-cpu-tier",
        "-q",
        "--replicas",
        "2",
        "--router",
        "round_robin",
    ]);
    let want = &fleet["points"][0]["result"];
    let got = at(2, "round_robin");
    for k in [
        "gpu_hit_tokens",
        "token_hit_ratio",
        "imbalance",
        "ttft_p90_s",
        "per_replica",
    ] {
        assert_eq!(got[k], want[k], "{k}");
    }
    // two replicas round-robin hit less than one pool of their memory
    assert!(
        got["gpu_hit_tokens"].as_u64().unwrap()
            < at(2, "ideal_pool")["gpu_hit_tokens"].as_u64().unwrap()
    );
    // batch drew the fleet charts: hit ratio and p90 TTFT against replicas
    let plots = out_dir.join("plots");
    for f in [
        "fleet_hit_ratio_vs_replicas.png",
        "fleet_hit_ratio_vs_replicas.svg",
        "fleet_ttft_p90_vs_replicas.png",
    ] {
        assert!(plots.join(f).is_file(), "{f}");
    }
    let svg = std::fs::read_to_string(plots.join("fleet_hit_ratio_vs_replicas.svg")).unwrap();
    assert!(svg.contains("round_robin") && svg.contains("ideal_pool"));
    let html = std::fs::read_to_string(plots.join("report.html")).unwrap();
    assert!(html.contains("4 fleet rows"), "report names the fleet rows");

    // a router the registry does not know is refused with the list, naming the file
    let yaml = dir.path().join("fleet.yaml");
    std::fs::write(
        &yaml,
        "traces: [t.jsonl]\ngpu_blocks: [300]\npolicies: [lru]\nreplicas: [2]\nrouters: [nearest]\n",
    )
    .unwrap();
    let out = common::bin()
        .args(["batch", "-q", "--yaml"])
        .arg(&yaml)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for want in ["fleet.yaml", "unknown router 'nearest'", "cache_aware"] {
        assert!(err.contains(want), "{want:?} in {err}");
    }
    std::fs::write(
        &yaml,
        "traces: [t.jsonl]\ngpu_blocks: [300]\npolicies: [lru]\nrouters: [round_robin]\n",
    )
    .unwrap();
    let out = common::bin()
        .args(["batch", "-q", "--yaml"])
        .arg(&yaml)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("`routers` needs `replicas`"));
}

#[test]
fn plot_draws_several_simulate_fleet_runs_as_lines_per_router() {
    let dir = tempfile::tempdir().unwrap();
    let log = repo(LOG);
    let mut files = Vec::new();
    for (router, n) in [
        ("round_robin", "2"),
        ("round_robin", "4"),
        ("cache_aware", "2"),
    ] {
        let out_file = dir.path().join(format!("{router}_{n}.json"));
        let out = common::bin()
            .args(["simulate", "-i"])
            .arg(&log)
            .args([
                "--gpu-blocks",
                "500",
                "--no-cpu-tier",
                "-q",
                "--replicas",
                n,
            ])
            .args(["--router", router, "--output"])
            .arg(&out_file)
            .output()
            .unwrap();
        common::assert_ok(&out);
        files.push(out_file);
    }
    let plots = dir.path().join("plots");
    let out = common::bin()
        .arg("plot")
        .arg("-i")
        .args(&files)
        .arg("-o")
        .arg(&plots)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let svg = std::fs::read_to_string(plots.join("fleet_hit_ratio_vs_replicas.svg")).unwrap();
    assert!(svg.contains("round_robin") && svg.contains("cache_aware"));
    let html = std::fs::read_to_string(plots.join("report.html")).unwrap();
    assert!(html.contains("3 fleet rows"), "{html}");
}

#[test]
fn serve_refuses_a_kv_events_config_vllm_would_not_take() {
    for (json, want) in [
        (r#"{"enable_kv_cache_event": true}"#, "unknown field"),
        (
            r#"{"enable_kv_cache_events": true, "publisher": "kafka"}"#,
            "expected zmq or null",
        ),
    ] {
        let out = common::bin()
            .args(["serve", "--port", "0", "--kv-events-config", json])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{json}");
        assert!(
            err.contains("--kv-events-config") && err.contains(want),
            "{err}"
        );
    }
}

/// `batch -q --yaml DIR/NAME.yaml --output-dir DIR/out` with `yaml` as the file: the summary
/// JSON and the output directory.
fn batch_summary(
    dir: &std::path::Path,
    name: &str,
    yaml: String,
) -> (serde_json::Value, std::path::PathBuf) {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let out_dir = dir.join("out");
    let out = common::bin()
        .args(["batch", "-q", "--yaml"])
        .arg(&file)
        .arg("--output-dir")
        .arg(&out_dir)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let doc =
        serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    (doc, out_dir)
}
