//! `inferencelab simulate`: read a trace, build the grid of policies x capacities, run it in
//! parallel, print a table (or one JSON document) and write the summary JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use inferencelab_cache::PolicyConfig;
use inferencelab_sim::plan::{self, Capacity};
use inferencelab_sim::{
    grid::run_grid, models, HitSemantics, Prepared, SimConfig, TierConfig, TimingModel,
};
use inferencelab_trace::{read_trace, ReadOptions};
use serde_json::json;

use crate::cli::SimulateArgs;
use crate::output;

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads")?;
    }
    let read_started = Instant::now();
    let opts = ReadOptions {
        format: args.input_format,
        skip_invalid: args.skip_invalid,
    };
    let trace = read_trace(&args.input_file, &opts)?;
    let read_seconds = read_started.elapsed().as_secs_f64();
    for note in &trace.notes {
        eprintln!("note: {note}");
    }
    if trace.skipped > 0 {
        eprintln!(
            "note: skipped {} invalid records (--skip-invalid)",
            trace.skipped
        );
    }
    if !trace.has_reuse_info() {
        eprintln!(
            "note: {} carries no prefix-reuse information (lengths and timing only): every \
             hit ratio below is 0 by construction, not a measurement",
            args.input_file.display()
        );
    }

    let model = models::resolve(&args.model)?;
    let block_size = args
        .block_size
        .unwrap_or_else(|| plan::default_block_size(&trace));
    let chunk_size = args
        .chunk_size
        .unwrap_or_else(|| plan::default_chunk_size(&trace));
    let capacities: Vec<u64> = if !args.gpu_blocks.is_empty() {
        args.gpu_blocks.clone()
    } else if !args.gpu_cache_gb.is_empty() {
        args.gpu_cache_gb
            .iter()
            .map(|&gb| Capacity::Gib(gb).entries(&model, block_size))
            .collect()
    } else {
        bail!("give the GPU cache size: --gpu-blocks N[,N...] or --gpu-cache-gb G[,G...] (with --model)");
    };
    if capacities.is_empty() {
        bail!("--gpu-blocks/--gpu-cache-gb needs at least one value");
    }
    let cpu_chunks: Option<u64> = if args.no_cpu_tier {
        None
    } else if let Some(n) = args.cpu_chunks {
        Some(n)
    } else {
        let gb = args.cpu_cache_gb.unwrap_or(plan::LMCACHE_DEFAULT_CPU_GB);
        Some(Capacity::Gib(gb).entries(&model, chunk_size))
    };
    let disk_chunks = match (args.disk_chunks, args.disk_cache_gb) {
        (Some(n), _) => Some(n),
        (None, Some(gb)) => Some(Capacity::Gib(gb).entries(&model, chunk_size)),
        (None, None) => None,
    };
    if args.hit_semantics == HitSemantics::Any && cpu_chunks.is_some() {
        bail!(
            "--hit-semantics any models a classic single-tier cache over the block stream; \
             add --no-cpu-tier"
        );
    }
    let cpu_policy: Option<PolicyConfig> = match args.cpu_eviction_policy.as_str() {
        "same" => None,
        s => Some(
            s.parse()
                .map_err(|e: String| anyhow::anyhow!("--cpu-eviction-policy: {e}"))?,
        ),
    };

    let prepared = Prepared::new(&trace, block_size, cpu_chunks.map(|_| chunk_size))
        .with_context(|| format!("preparing {}", args.input_file.display()))?;

    let mut configs = Vec::new();
    for policy in &args.eviction_policy {
        for &cap in &capacities {
            let lm_policy = cpu_policy.clone().unwrap_or_else(|| policy.clone());
            configs.push(SimConfig {
                gpu: TierConfig {
                    capacity: cap,
                    policy: policy.clone(),
                },
                cpu: cpu_chunks.map(|n| TierConfig {
                    capacity: n,
                    policy: lm_policy.clone(),
                }),
                disk: disk_chunks.map(|n| TierConfig {
                    capacity: n,
                    policy: lm_policy.clone(),
                }),
                hit_semantics: args.hit_semantics,
                pinning: !args.no_pinning,
                timing: TimingModel {
                    prefill_tokens_per_s: args.prefill_tokens_per_s,
                    decode_ms_per_token: args.decode_ms_per_token,
                },
                window_seconds: args.window_seconds,
                model: Some(model.clone()),
            });
        }
    }

    let bar = if args.quiet || args.json {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(configs.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} simulating {pos}/{len} points [{elapsed}] {wide_bar}",
            )
            .expect("static template"),
        );
        b
    };
    let started = Instant::now();
    let results = run_grid(&prepared, &configs, &|_| bar.inc(1));
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();

    let mut rows = Vec::with_capacity(results.len());
    for (cfg, r) in configs.iter().zip(results) {
        rows.push(r.with_context(|| {
            format!(
                "policy {} at {} GPU blocks",
                cfg.gpu.policy, cfg.gpu.capacity
            )
        })?);
    }

    let summary = json!({
        "inferencelab_version": env!("CARGO_PKG_VERSION"),
        "command": "simulate",
        "input": {
            "path": args.input_file,
            "format": trace.format.map(|f| f.name()),
            "requests": trace.requests.len(),
            "prompt_tokens": trace.total_prompt_tokens(),
            "block_size": block_size,
            "chunk_size": cpu_chunks.map(|_| chunk_size),
            "block_refs": prepared.gpu.keys.len(),
            "distinct_blocks": prepared.gpu.num_objects,
            "skipped_records": trace.skipped,
            "notes": trace.notes,
            "has_reuse_info": trace.has_reuse_info(),
            "read_seconds": read_seconds,
        },
        "model": model,
        "grid_wall_seconds": wall,
        "results": rows,
    });
    let out_path = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.input_file));
    write_json(&out_path, &summary)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        output::print_simulation_table(&trace, &model.name, &rows);
        eprintln!("wrote {}", out_path.display());
    }
    Ok(())
}

fn default_output(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trace".into());
    PathBuf::from("outputs/simulation").join(format!("simulate_{stem}.json"))
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    inferencelab_trace::fsutil::write_atomic(path, &serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
