//! The fleet table of docs/replicas.md (issue 21): every router at several fleet sizes on one
//! trace in one go, GPU tier only (LRU), `num_gpu_blocks` per replica, the `vllm` schedule for
//! traces without finish times (`simulate --replicas N --router P` runs one router).
//!
//! `cargo run --release -p inferencelab-sim --example fleet -- TRACE GPU_BLOCKS N[,N...]`

use std::path::Path;
use std::time::Instant;

use inferencelab_cache::PolicyConfig;
use inferencelab_sim::cluster::{self, registry, ClusterConfig};
use inferencelab_sim::{Prepared, SimConfig};
use inferencelab_trace::{read_trace, ReadOptions};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, blocks, ns] = &args[..] else {
        return Err("usage: fleet TRACE GPU_BLOCKS N[,N...]".into());
    };
    let trace = read_trace(Path::new(path), &ReadOptions::default()).map_err(|e| e.to_string())?;
    let blocks: u64 = blocks.parse().map_err(|_| "GPU_BLOCKS: a number")?;
    let bs = inferencelab_sim::plan::default_block_size(&trace);
    let prepared = Prepared::new(&trace, bs, None).map_err(|e| e.to_string())?;
    let config = SimConfig {
        ..SimConfig::gpu_only(blocks, PolicyConfig::Lru)
    };
    println!(
        "| N | router | hit ratio | vs ideal_pool | imbalance | queue p90 s | TTFT p90 s | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in ns.split(',') {
        let n: usize = n.parse().map_err(|_| "N: a number")?;
        let run = |router: &str| {
            let k = ClusterConfig {
                replicas: n,
                router: router.into(),
                ..Default::default()
            };
            let t = Instant::now();
            let r = cluster::run(&prepared, &config, &k).map_err(|e| e.to_string());
            r.map(|r| (r, t.elapsed().as_secs_f64()))
        };
        let (ideal, _) = run("ideal_pool")?;
        for name in registry::names() {
            let (r, wall) = run(name)?;
            println!(
                "| {n} | {name} | {:.4} | {:+.4} | {:.2} | {:.3} | {:.3} | {:.3} |",
                r.token_hit_ratio,
                r.token_hit_ratio - ideal.token_hit_ratio,
                r.imbalance,
                r.queue_delay_p90_s,
                r.ttft_p90_s,
                wall
            );
        }
    }
    Ok(())
}
