//! `simulate --replicas N --router P`: the fleet of `inferencelab_sim::cluster` on every point
//! of the grid (issue 21; docs/replicas.md). A table per point, one summary JSON, and with
//! `--per-request` one JSON line per request naming its replica.

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

/// Run the fleet on every point and report.
pub(crate) fn run(
    args: &SimulateArgs,
    trace: &Trace,
    prepared: &Prepared<'_>,
    configs: &[SimConfig],
    replicas: usize,
) -> anyhow::Result<()> {
    let fleet = ClusterConfig {
        replicas,
        router: args.router.clone(),
        worker_urls: args.router_worker_urls.clone(),
        lmcache_shared: args.lmcache_shared,
        ..Default::default()
    };
    let mut lines = match &args.per_request {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--per-request {}", p.display()))?,
        )),
        None => None,
    };
    let mut results: Vec<ClusterResult> = Vec::new();
    for cfg in configs {
        let mut routed = Vec::new();
        let r = cluster::run_observed(prepared, cfg, &fleet, |x| routed.push(x))
            .with_context(|| format!("{} replicas, router {}", replicas, fleet.router))?;
        if let Some(out) = lines.as_mut() {
            routed.sort_by_key(|x| x.req);
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
        "partial": "issue 21: per-replica LMCache only (no --lmcache-shared); TTFT from the time model",
        "points": configs.iter().zip(&results).map(|(c, r)| json!({
            "policy": c.gpu.policy.name(),
            "gpu_blocks_per_replica": c.gpu.capacity,
            "result": r,
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
        for (c, r) in configs.iter().zip(&results) {
            println!(
                "{} replicas, router {}, {} at {} GPU blocks each: token hit ratio {:.4} (GPU \
                 {:.4}), imbalance {:.2}, queueing p50/p90 {:.3}/{:.3} s, TTFT p50/p90 \
                 {:.3}/{:.3} s (time model){}",
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
        }
    }
    eprintln!("wrote {}", out_path.display());
    Ok(())
}
