//! The demo: the embedded emulator, the bundled conversations, the simulator's prediction.

use std::path::{Path, PathBuf};

use anyhow::Context;
use inferencelab_bench::conversations;
use inferencelab_trace::checked::Scale;
use inferencelab_trace::{read_trace, ReadOptions};

use super::{attribute, bench_against, finish, BenchArgs, BenchOutput};

/// The demo: embedded emulator, bundled conversations, simulator prediction.
pub(super) fn demo(rt: &tokio::runtime::Runtime, args: &BenchArgs) -> anyhow::Result<()> {
    use inferencelab_emu::engine::{EngineConfig, LmcacheTier};
    use inferencelab_emu::server::{self, ServerConfig};
    use inferencelab_emu::timing::{GpuProfile, Timing};
    use inferencelab_models as models;

    let dir = args
        .output_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("outputs/logs/bench_demo"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let csv = match &args.input_file {
        Some(p) => p.clone(),
        None if Path::new("data/test_data.csv").exists() => PathBuf::from("data/test_data.csv"),
        None => {
            let p = dir.join("demo_data.csv");
            let f =
                std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
            inferencelab_convert::write_demo_csv(40, args.seed, std::io::BufWriter::new(f))
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "note: data/test_data.csv not found here (the demo reads it from the working \
                 directory); generated 40 demo conversations into {}",
                p.display()
            );
            p
        }
    };
    let conversations =
        conversations::from_csv(&csv, args.tokens_per_second.get(), args.think_time.get())?;
    // Fit the recorded timeline into about --demo-seconds of replay: the same scale drives the
    // emulated GPU clock, so the server log's timeline is the trace's.
    let span = conversations
        .iter()
        .map(|c| {
            let start = c.turns[0].timestamp.unwrap_or(0.0);
            let body: f64 = c
                .turns
                .iter()
                .map(|t| t.think_s + t.max_tokens as f64 / 50.0)
                .sum();
            start + body
        })
        .fold(0.0f64, f64::max);
    let scale = if args.time_scale.get() != 1.0 {
        args.time_scale
    } else {
        Scale::try_from((span / args.demo_seconds.get().max(1.0)).clamp(1.0, 1e6))
            .map_err(anyhow::Error::msg)?
    };
    let scale_f = scale.get();
    let model_name = "qwen-8b";
    let model = models::resolve(model_name)?;
    let timing = Timing::derive(&model, &GpuProfile::default(), None, None);
    let chunk_size = inferencelab_sim::plan::LMCACHE_DEFAULT_CHUNK;
    let block_size = inferencelab_sim::plan::VLLM_DEFAULT_BLOCK;
    let cpu_chunks = model.blocks_in_gib(args.demo_cpu_cache_gb.get(), chunk_size);
    let mut engine = EngineConfig::new(model.clone(), timing, args.demo_gpu_blocks);
    engine.lmcache = Some(LmcacheTier {
        chunk_size,
        num_chunks: cpu_chunks,
        policy: inferencelab_cache::PolicyConfig::Lru,
        mode: Default::default(),
    });
    let log_path = dir.join("server.log");
    let mut cfg = ServerConfig::new(engine, model_name);
    cfg.time_scale = scale_f;
    cfg.seed = args.seed;
    cfg.enable_log_requests = true;
    // per-token lines: simulate places each decode block when its token was sampled
    cfg.enable_log_outputs = true;
    cfg.enable_prompt_tokens_details = true;
    // Microsecond log stamps (vLLM prints whole seconds): with them the simulator sees the exact
    // order of arrivals and finishes, so its prediction below can match the server to the token.
    cfg.log_time_decimals = 6;
    cfg.log = Some(Box::new(std::io::BufWriter::new(
        std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?,
    )));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("binding a loopback port for the embedded server")?;
    let handle = {
        let _guard = rt.enter();
        server::spawn(listener, cfg).context("starting the embedded server")?
    };
    let base = format!("http://{}", handle.addr);
    eprintln!(
        "demo: embedded emulator (qwen-8b, {} GPU blocks, LMCache {} GiB = {} chunks) on {base}; \
         replaying {} conversations from {} at {scale_f:.0}x",
        args.demo_gpu_blocks,
        args.demo_cpu_cache_gb,
        cpu_chunks,
        conversations.len(),
        csv.display()
    );
    let mut bargs = args.clone();
    bargs.model = Some(model_name.into());
    bargs.output_dir = Some(dir.clone());
    bargs.time_scale = scale;
    bargs.input_file = Some(csv.clone());
    let out = bench_against(rt, &bargs, &base, Some(conversations));
    rt.block_on(handle.shutdown())
        .context("stopping the embedded server")?;
    let out = out?;
    finish(&out)?;
    eprintln!("wrote {} (vLLM-format server log)", log_path.display());
    attribute(&out, &log_path, &args.metric_percentiles)?;

    // The simulator on the server's own log, same configuration.
    let trace = read_trace(&log_path, &ReadOptions::default())
        .with_context(|| format!("reading {}", log_path.display()))?;
    let prepared = inferencelab_sim::driver::Prepared::new(&trace, block_size, Some(chunk_size))?;
    let sim_cfg = inferencelab_sim::config::SimConfig {
        gpu: inferencelab_sim::config::TierConfig {
            capacity: args.demo_gpu_blocks,
            policy: inferencelab_cache::PolicyConfig::Lru,
        },
        cpu: Some(inferencelab_sim::config::TierConfig {
            capacity: cpu_chunks,
            policy: inferencelab_cache::PolicyConfig::Lru,
        }),
        disk: None,
        hit_semantics: inferencelab_sim::HitSemantics::Prefix,
        pinning: true,
        timing: Default::default(),
        window_seconds: 60.0,
        model: Some(model),
        engine: Default::default(),
    };
    let row = inferencelab_sim::driver::run(&prepared, &sim_cfg)?;
    out!("{}", comparison_table(&out, &row));
    Ok(())
}

/// Predicted (simulator on the server log) next to measured (the server's counters and the
/// API's cached_tokens).
pub(crate) fn comparison_table(out: &BenchOutput, row: &inferencelab_sim::ResultRow) -> String {
    let d = |n: &str| out.scrape.as_ref().and_then(|s| s.delta(n));
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let mut s = String::new();
    s.push_str(&format!(
        "{:=^66}\n{:<34}{:>16}{:>16}\n",
        " Hit tokens: simulator vs server ", "", "predicted", "measured"
    ));
    let mut line = |label: &str, p: Option<f64>, m: Option<f64>| {
        s.push_str(&format!("{:<34}{:>16}{:>16}\n", label, fmt(p), fmt(m)));
    };
    line(
        "prompt tokens",
        Some(row.prompt_tokens as f64),
        d("vllm:prompt_tokens_total").or(Some(out.summary.total_input_tokens as f64)),
    );
    line(
        "GPU prefix cache hit tokens",
        Some(row.gpu_hit_tokens as f64),
        d("vllm:prefix_cache_hits_total"),
    );
    line(
        "LMCache hit tokens (loaded)",
        Some(row.cpu_hit_tokens as f64),
        d("vllm:external_prefix_cache_hits_total"),
    );
    line(
        "cached tokens (GPU + LMCache)",
        Some((row.gpu_hit_tokens + row.cpu_hit_tokens) as f64),
        Some(out.summary.total_cached_tokens as f64),
    );
    let pr = |h: u64| {
        if row.prompt_tokens > 0 {
            h as f64 / row.prompt_tokens as f64 * 100.0
        } else {
            0.0
        }
    };
    s.push_str(&format!(
        "{:<34}{:>15.2}%{:>15.2}%\n",
        "token hit ratio",
        pr(row.gpu_hit_tokens + row.cpu_hit_tokens),
        out.summary.cached_token_ratio * 100.0
    ));
    s.push_str(&"=".repeat(66));
    s.push('\n');
    s
}
