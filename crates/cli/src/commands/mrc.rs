//! `inferencelab mrc`: the whole LRU hit-ratio curve of the GPU tier in one pass (stack
//! distances), optionally checked against one point simulation per capacity.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use inferencelab_cache::PolicyConfig;
use inferencelab_models as models;
use inferencelab_sim::mrc::{log_spaced_capacities, lru_curve};
use inferencelab_sim::plan;
use inferencelab_sim::{HitSemantics, Prepared, SimConfig, TierConfig, TimingModel};
use inferencelab_trace::{read_trace_hashed, Format, ReadOptions};
use serde_json::json;

#[derive(Args, Debug)]
pub struct MrcArgs {
    /// Trace or vLLM server log.
    #[arg(long, short = 'i')]
    pub input_file: PathBuf,
    /// Force the input format instead of detecting it.
    #[arg(long)]
    pub input_format: Option<Format>,
    /// Skip (and count) invalid records instead of stopping at the first one.
    #[arg(long)]
    pub skip_invalid: bool,
    /// GPU capacities in blocks (default: --points log-spaced sizes up to the distinct blocks).
    #[arg(long, value_delimiter = ',')]
    pub gpu_blocks: Vec<u64>,
    /// Number of log-spaced capacities when --gpu-blocks is not given.
    #[arg(long, default_value_t = 30)]
    pub points: usize,
    /// Tokens per GPU block (vLLM --block-size); id traces default to their own block size.
    #[arg(long)]
    pub block_size: Option<u32>,
    /// prefix: vLLM's leading-run hits; any: every cached block hits (classic simulators).
    #[arg(long, default_value = "prefix")]
    pub hit_semantics: HitSemantics,
    /// Model for the GiB column.
    #[arg(long, short = 'm', default_value = "qwen-8b")]
    pub model: String,
    /// Also run one LRU simulation per capacity (no pinning, no LMCache) and fail on any
    /// difference.
    #[arg(long)]
    pub check: bool,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write the curve as JSON here.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

pub fn run(args: MrcArgs) -> anyhow::Result<()> {
    // a vLLM log's token ids hashed as they are read, at the GPU block size (issue 19)
    let trace = read_trace_hashed(
        &args.input_file,
        &ReadOptions {
            format: args.input_format,
            skip_invalid: args.skip_invalid,
        },
        args.block_size.unwrap_or(plan::VLLM_DEFAULT_BLOCK).max(1),
    )?;
    for note in &trace.notes {
        eprintln!("note: {note}");
    }
    let model = models::resolve(&args.model)?;
    let bs = args
        .block_size
        .unwrap_or_else(|| plan::default_block_size(&trace));
    let prepared = Prepared::new(&trace, bs, None)?;
    let caps = if args.gpu_blocks.is_empty() {
        log_spaced_capacities(prepared.gpu.num_objects as u64, args.points)
    } else {
        args.gpu_blocks.clone()
    };
    let started = Instant::now();
    let curve = lru_curve(&prepared, args.hit_semantics, &caps);
    let curve_seconds = started.elapsed().as_secs_f64();
    let mut checked = None;
    if args.check {
        let started = Instant::now();
        let mut mismatches = Vec::new();
        for pt in &curve {
            let cfg = SimConfig {
                gpu: TierConfig {
                    capacity: pt.gpu_blocks,
                    policy: PolicyConfig::Lru,
                },
                cpu: None,
                disk: None,
                hit_semantics: args.hit_semantics,
                pinning: false,
                timing: TimingModel::default(),
                window_seconds: 60.0,
                model: None,
                // the curve is the abstract prefix model's (docs/semantics.md)
                engine: inferencelab_sim::EngineModel {
                    rules: false,
                    ..Default::default()
                },
            };
            let row = inferencelab_sim::run(&prepared, &cfg)?;
            if (row.gpu_hit_blocks, row.gpu_hit_tokens) != (pt.gpu_hit_blocks, pt.gpu_hit_tokens) {
                mismatches.push(pt.gpu_blocks);
            }
        }
        let sims_seconds = started.elapsed().as_secs_f64();
        if !mismatches.is_empty() {
            bail!("the one-pass curve differs from point simulations at capacities {mismatches:?}");
        }
        checked = Some(sims_seconds);
        eprintln!(
            "check: {} point simulations agree exactly ({sims_seconds:.3} s for the points vs \
             {curve_seconds:.3} s for the whole curve)",
            curve.len()
        );
    }
    let doc = json!({
        "command": "mrc",
        "input": super::path_text(&args.input_file),
        "policy": "lru",
        "hit_semantics": args.hit_semantics,
        "pinning": false,
        "block_size": bs,
        "model": model.name,
        "distinct_blocks": prepared.gpu.num_objects,
        "curve_seconds": curve_seconds,
        "point_simulations_seconds": checked,
        "curve": curve,
    });
    if let Some(path) = &args.output {
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    if args.json {
        println!("{doc}");
        return Ok(());
    }
    println!(
        "LRU curve of {} ({} hits, block size {bs}, no pinning, GPU tier only), {} points in {:.3} s",
        args.input_file.display(),
        args.hit_semantics,
        curve.len(),
        curve_seconds
    );
    println!(
        "{:>12} {:>10} {:>10} {:>10}",
        "gpu_blocks", "GiB", "block_hit", "token_hit"
    );
    for pt in &curve {
        println!(
            "{:>12} {:>10.2} {:>10.4} {:>9.2}%",
            pt.gpu_blocks,
            (pt.gpu_blocks * bs as u64 * model.kv_bytes_per_token()) as f64 / (1u64 << 30) as f64,
            pt.block_hit_ratio,
            pt.token_hit_ratio * 100.0
        );
    }
    Ok(())
}
