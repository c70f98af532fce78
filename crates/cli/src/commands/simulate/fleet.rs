//! `simulate --replicas N --router P`: the fleet of `inferencelab_sim::cluster` on every point
//! of the grid (issue 21; docs/replicas.md). A table per point, one summary JSON, and with
//! `--per-request` one JSON line per request naming its replica. With `--replica-logs`, the
//! fleet's own logs are read together and the assignment that happened is reported beside the
//! simulated one.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use inferencelab_sim::cluster::{self, ClusterConfig, ClusterResult};
use inferencelab_sim::{Prepared, SimConfig};
use inferencelab_trace::fsutil::write_json;
use inferencelab_trace::Trace;
use serde_json::json;

use crate::cli::SimulateArgs;
use crate::output::print_table;

/// `--input-file` and `--replica-logs`: every replica's vLLM log (token ids kept), merged by
/// time (`cluster::fleet_logs`).
pub(super) fn read_logs(args: &SimulateArgs) -> anyhow::Result<super::Input> {
    let started = std::time::Instant::now();
    let opts = args.input.read_options();
    let mut parts = Vec::new();
    let others = replica_logs(args)?;
    let logs = 1 + others.len();
    if let Some(replicas) = args.replicas.filter(|&n| n != logs) {
        anyhow::bail!(
            "--replicas {replicas} with {logs} replica logs (--input-file and --replica-logs): \
             give one log per replica"
        );
    }
    let paths = std::iter::once(&args.input.input_file).chain(&others);
    for (k, path) in paths.enumerate() {
        let what = || format!("replica {k}'s log {}", path.display());
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut inferencelab_trace::input::open(path)
                .with_context(what)?
                .reader,
            &mut text,
        )
        .with_context(what)?;
        // a replica the router never picked logged no request: an empty part
        let Some(first) = cluster::fleet_logs::first_request_stamp(text.as_bytes()) else {
            eprintln!(
                "note: {} has no `Received request` line: no request went there",
                what()
            );
            parts.push((
                Trace {
                    source: path.clone(),
                    ..Trace::default()
                },
                f64::INFINITY,
            ));
            continue;
        };
        let trace = inferencelab_trace::vllm_log::parse(path, &text, &opts).with_context(what)?;
        parts.push((trace, first));
    }
    let merged = cluster::fleet_logs::merge(parts).map_err(anyhow::Error::msg)?;
    let mut trace = merged.trace;
    args.input.infer(&mut trace);
    crate::output::print_read_notes(&trace);
    eprintln!(
        "fleet logs: {} requests from {} replica logs, merged by time (same second: the \
         client's index when the ids carry one)",
        trace.requests.len(),
        1 + others.len()
    );
    Ok(super::Input {
        trace,
        actual: Some(merged.actual),
        lookup: None,
        read_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The other replicas' logs: `--replica-logs` as given, or, when it is one directory, the files
/// in it named as `serve --replicas` and the experiment runner name them beside replica 0's
/// `STEM.log`: `STEM.replica1.log`, `STEM.replica2.log`, ... (consecutive from 1).
pub(super) fn replica_logs(args: &SimulateArgs) -> anyhow::Result<Vec<PathBuf>> {
    let [dir] = args.replica_logs.as_slice() else {
        return Ok(args.replica_logs.clone());
    };
    if !dir.is_dir() {
        return Ok(args.replica_logs.clone());
    }
    let first = &args.input.input_file;
    let name = first.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let stem = name.strip_suffix(".log").unwrap_or(name);
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("--replica-logs {}", dir.display()))?
    {
        let path = entry?.path();
        let k = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.strip_prefix(stem)?
                    .strip_prefix(".replica")?
                    .strip_suffix(".log")
            })
            .and_then(|k| k.parse::<usize>().ok());
        if let Some(k) = k {
            found.push((k, path));
        }
    }
    found.sort();
    if found.is_empty() {
        anyhow::bail!(
            "--replica-logs {}: no {stem}.replicaK.log in it (the names `serve --replicas` and \
             the experiment runner give replica K's log beside replica 0's {name}); give the \
             other replicas' logs as files instead",
            dir.display()
        );
    }
    for (i, (k, _)) in found.iter().enumerate() {
        if *k != i + 1 {
            anyhow::bail!(
                "--replica-logs {}: {stem}.replica{}.log is missing (found up to \
                 {stem}.replica{}.log); every replica from 1 needs its log",
                dir.display(),
                i + 1,
                found.last().map_or(0, |f| f.0)
            );
        }
    }
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Run the fleet on every point and report.
pub(crate) fn run(
    args: &SimulateArgs,
    trace: &Trace,
    actual: Option<&[usize]>,
    prepared: &Prepared<'_>,
    configs: &[SimConfig],
    replicas: usize,
) -> anyhow::Result<()> {
    let mut fleet = ClusterConfig {
        replicas,
        router: args.router.clone(),
        worker_urls: args.router_worker_urls.clone(),
        lmcache_shared: args.lmcache_shared,
        ..Default::default()
    };
    if let Some(g) = args.lmcache_network_gbps {
        fleet.lmcache_network.gbit_per_s = g;
    }
    if let Some(ms) = args.lmcache_network_latency_ms {
        fleet.lmcache_network.latency_ms = ms;
    }
    if fleet.lmcache_shared && configs.iter().all(|c| c.cpu.is_none()) {
        anyhow::bail!(
            "--lmcache-shared with the LMCache tier off (--no-cpu-tier): drop one of the two"
        );
    }
    let mut lines = match &args.per_request {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--per-request {}", p.display()))?,
        )),
        None => None,
    };
    let mut results: Vec<ClusterResult> = Vec::new();
    let mut agreements: Vec<serde_json::Value> = Vec::new();
    for cfg in configs {
        let mut routed = Vec::new();
        let r = cluster::run_observed(prepared, cfg, &fleet, |x| routed.push(x))
            .with_context(|| format!("{} replicas, router {}", replicas, fleet.router))?;
        routed.sort_by_key(|x| x.req);
        if let Some(actual) = actual {
            let same = routed.iter().filter(|x| actual[x.req] == x.replica).count();
            let mut per = vec![0u64; replicas];
            for &k in actual {
                per[k] += 1;
            }
            agreements.push(json!({
                "requests": routed.len(),
                "same_replica": same,
                "same_replica_share": if routed.is_empty() { 0.0 } else { same as f64 / routed.len() as f64 },
                "requests_per_replica_actual": per,
            }));
        }
        if let Some(out) = lines.as_mut() {
            for x in routed {
                let q = &trace.requests[x.req];
                let line = json!({
                    "request_id": q.id,
                    "replica": x.replica,
                    "prompt_tokens": q.input_length,
                    "gpu_hit_tokens": x.hits.gpu_hit_tokens,
                    "cpu_hit_tokens": x.hits.cpu_hit_tokens,
                    "disk_hit_tokens": x.hits.disk_hit_tokens,
                    "admitted_s": x.hits.admitted_s,
                    "policy": cfg.gpu.policy.name(),
                    "gpu_blocks": cfg.gpu.capacity,
                });
                let mut line = line;
                if let Some(a) = actual {
                    line["actual_replica"] = json!(a[x.req]);
                }
                writeln!(out, "{line}")?;
            }
        }
        results.push(r);
    }
    if let Some(mut out) = lines {
        out.flush()?;
    }
    let summary = json!({
        "inferencelab_version": env!("CARGO_PKG_VERSION"),
        "command": "simulate",
        "input": { "path": crate::commands::path_text(&args.input.input_file), "requests": trace.requests.len() },
        "fleet": fleet,
        "partial": "issue 21: TTFT and queueing from the time model; a shared LMCache's loads are charged at the network's bandwidth and latency, a replica's own tier's PCIe loads are not charged",
        "points": configs.iter().zip(&results).enumerate().map(|(i, (c, r))| json!({
            "policy": c.gpu.policy.name(),
            "gpu_blocks_per_replica": c.gpu.capacity,
            "result": r,
            "actual": agreements.get(i),
        })).collect::<Vec<_>>(),
        // the same points as rows, for `plot` (several runs drawn together: one line per router)
        "results": configs.iter().zip(&results).map(|(c, r)| cluster::result_row(c, r)).collect::<Vec<_>>(),
    });
    let out_path = args.output.clone().unwrap_or_else(|| {
        let stem = args
            .input
            .input_file
            .file_stem()
            .map_or("trace".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from(format!(
            "outputs/simulation/fleet_{stem}_{}x{replicas}.json",
            fleet.router
        ))
    });
    write_json(&out_path, &summary).with_context(|| format!("writing {}", out_path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        for (i, (c, r)) in configs.iter().zip(&results).enumerate() {
            print_point(c, r, agreements.get(i));
        }
        let names = super::queue_readers(configs);
        let worst_p90 = configs
            .iter()
            .zip(&results)
            .filter(|(c, _)| names.contains(&c.gpu.policy.name()))
            .map(|(_, r)| r.queue_delay_p90_s)
            .fold(0.0, f64::max);
        if worst_p90 > 0.0 {
            println!(
                "{}",
                super::waiting_queue_line(
                    &names,
                    &format!(
                        "requests waited here (p90 up to {} s)",
                        crate::output::secs(worst_p90)
                    )
                )
            );
        }
    }
    if let Some(w) = falls_behind(args, trace, configs, &results) {
        eprintln!("warning: {w}");
    }
    eprintln!("wrote {}", out_path.display());
    Ok(())
}

/// The warning when the fleet falls behind the trace at some point (its median queueing above
/// `queueing::FALLS_BEHIND_MEDIAN_S`), naming the worst point.
fn falls_behind(
    args: &SimulateArgs,
    trace: &Trace,
    configs: &[SimConfig],
    results: &[ClusterResult],
) -> Option<String> {
    use inferencelab_sim::queueing;
    let behind: Vec<(&SimConfig, &ClusterResult)> = configs
        .iter()
        .zip(results)
        .filter(|(_, r)| queueing::falls_behind(r.queue_delay_p50_s))
        .collect();
    let (c, worst) = behind
        .iter()
        .max_by(|a, b| a.1.queue_delay_p50_s.total_cmp(&b.1.queue_delay_p50_s))?;
    let saved = worst.gpu_hit_tokens + worst.cpu_hit_tokens + worst.disk_hit_tokens;
    Some(crate::output::falls_behind_warning(
        &crate::output::Backlog {
            point: format!(
                "{} replicas, router {}, {} at {} GPU blocks each",
                worst.replicas,
                worst.router,
                c.gpu.policy.name(),
                c.gpu.capacity
            ),
            behind: behind.len(),
            points: results.len(),
            p50_s: worst.queue_delay_p50_s,
            p90_s: worst.queue_delay_p90_s,
            prompt_tokens: worst.prompt_tokens,
            uncached_tokens: worst.prompt_tokens.saturating_sub(saved),
            span_s: trace.span_s(),
            engines: worst.replicas,
            prefill_tokens_per_s: args.prefill_tokens_per_s.get(),
            fix: "--prefill-tokens-per-s N or more --replicas (more memory: --gpu-blocks)",
        },
    ))
}

/// One point's figures: the fleet's line, the per-replica table, and the logs' own assignment
/// beside the simulated one (`--replica-logs`).
fn print_point(c: &SimConfig, r: &ClusterResult, agreement: Option<&serde_json::Value>) {
    println!(
        "{} replicas, router {}, {} at {} GPU blocks each: token hit ratio {:.4} (GPU \
         {:.4}), imbalance {:.2}, queueing p50/p90 {:.3}/{:.3} s, TTFT p50/p90 \
         {:.3}/{:.3} s (time model){}{}",
        r.replicas,
        r.router,
        c.gpu.policy.name(),
        c.gpu.capacity,
        r.token_hit_ratio,
        r.gpu_token_hit_ratio,
        r.imbalance,
        r.queue_delay_p50_s,
        r.queue_delay_p90_s,
        r.ttft_p50_s,
        r.ttft_p90_s,
        r.compute_saved_ratio
            .map_or(String::new(), |x| format!(", compute saved {x:.4}")),
        if r.lmcache_shared {
            format!(
                "; one shared LMCache tier, {:.3} s of network loads",
                r.lmcache_load_s
            )
        } else {
            String::new()
        },
    );
    let mut table = vec![[
        "replica",
        "requests",
        "prompt tok",
        "GPU hit",
        "CPU hit",
        "hit ratio",
        "busy s",
    ]
    .map(String::from)
    .to_vec()];
    for p in &r.per_replica {
        table.push(vec![
            p.replica.to_string(),
            p.requests.to_string(),
            p.prompt_tokens.to_string(),
            p.gpu_hit_tokens.to_string(),
            p.cpu_hit_tokens.to_string(),
            format!("{:.4}", p.token_hit_ratio),
            format!("{:.1}", p.busy_s),
        ]);
    }
    print_table(&table);
    if let Some(a) = agreement {
        println!(
            "the logs' own assignment: requests per replica {}; the simulation picked \
             the same replica for {} of {} requests ({:.1} %)",
            a["requests_per_replica_actual"],
            a["same_replica"],
            a["requests"],
            a["same_replica_share"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
}
