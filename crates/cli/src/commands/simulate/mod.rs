//! `inferencelab simulate`: read a trace, build the grid of policies x capacities, run it in
//! parallel, print a table (or one JSON document) and write the summary JSON.

mod fleet;
mod lmcache_log;
mod lookup;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use inferencelab_cache::PolicyConfig;
use inferencelab_learn::eval::{gap_closed, SMART};
use inferencelab_models as models;
use inferencelab_sim::plan::{self, Capacity};
use inferencelab_sim::resolve::{PointSpec, PolicyFiles, TierPolicy};
use inferencelab_sim::ResultRow;
use inferencelab_sim::{grid::run_grid, EngineModel, Prepared, SimConfig, TimingModel};
use inferencelab_trace::fsutil::write_json;
use serde_json::json;

use crate::cli::SimulateArgs;
use crate::output;
use crate::progress::Progress;

/// The GPU policies of the run, their files loaded: the requested ones, plus LRU and Belady when
/// a smart policy needs them for its comparison.
fn resolve_policies(args: &SimulateArgs, files: &PolicyFiles) -> anyhow::Result<Vec<PolicyConfig>> {
    let mut policies: Vec<PolicyConfig> = Vec::new();
    for p in &args.eviction_policy {
        if !policies.iter().any(|q| q.name() == p.name()) {
            policies.push(p.clone());
        }
    }
    let has = |policies: &[PolicyConfig], n: &str| policies.iter().any(|p| p.name() == n);
    if args.scorer_config.is_some() && !has(&policies, "conversation_aware") {
        bail!("--scorer-config configures --eviction-policy conversation_aware, which is not in the run");
    }
    if args.lightgbm_model.is_some() && !has(&policies, "lightgbm") {
        bail!("--lightgbm-model configures --eviction-policy lightgbm, which is not in the run");
    }
    if SMART.iter().any(|s| has(&policies, s)) {
        // a fleet runs online policies only: LRU alone is the reference there
        let fleet = args.replicas.is_some();
        let baselines: &[PolicyConfig] = if fleet {
            &[PolicyConfig::Lru]
        } else {
            &[PolicyConfig::Lru, PolicyConfig::Belady]
        };
        let added: Vec<PolicyConfig> = baselines
            .iter()
            .filter(|b| !has(&policies, b.name()))
            .cloned()
            .collect();
        if !added.is_empty() {
            eprintln!(
                "note: also running {} for the comparison{}",
                added
                    .iter()
                    .map(PolicyConfig::name)
                    .collect::<Vec<_>>()
                    .join(" and "),
                if fleet {
                    " (--replicas runs no oracle, so no Belady and no gap closed)"
                } else {
                    " (gap closed = (P - LRU) / (Belady - LRU))"
                }
            );
            policies.extend(added);
        }
    }
    policies
        .into_iter()
        .map(|p| super::load_policy(p, files))
        .collect()
}

/// What `--input-file` gave: the trace, the lookup log's settings when it was one, and how
/// long reading took.
struct Input {
    trace: inferencelab_trace::Trace,
    /// `--replica-logs`: each request's replica in the fleet's logs.
    actual: Option<Vec<usize>>,
    lookup: Option<lookup::Lookup>,
    read_seconds: f64,
}

/// Read `--input-file` (a trace, a log or an LMCache lookup log), printing the reader's notes.
fn read_input(args: &SimulateArgs) -> anyhow::Result<Input> {
    lmcache_log::check_args(args)?;
    if !args.replica_logs.is_empty() {
        return fleet::read_logs(args);
    }
    let read_started = Instant::now();
    let opts = args.input.read_options();
    let (mut trace, lookup) = lookup::read(args, &opts)?;
    args.input.infer(&mut trace);
    let read_seconds = read_started.elapsed().as_secs_f64();
    output::print_read_notes(&trace);
    lmcache_log::attach(args, &mut trace)?;
    if !trace.has_reuse_info() {
        eprintln!(
            "note: {} carries no prefix-reuse information (lengths and timing only): every \
             hit ratio below is 0 by construction, not a measurement",
            args.input.input_file.display()
        );
    }

    Ok(Input {
        trace,
        actual: None,
        lookup,
        read_seconds,
    })
}

/// What the engine model did (vLLM's rules): schedule, answer blocks, requests that never fit,
/// queueing and preemptions.
fn print_engine_notes(rows: &[ResultRow]) {
    if let Some(r) = rows.first().filter(|r| r.schedule.is_some()) {
        let src = r.answer_sources.unwrap_or_default();
        eprintln!(
            "GPU tier: vLLM's rules, schedule {} (--schedule), {} usable blocks per point \
             (num_gpu_blocks - 1: the null block); answer blocks {} (--answer-blocks): \
             {} from logged outputs, {} from the follow-up prompt, {} never reused, {} none",
            r.schedule.as_deref().unwrap_or("?"),
            r.usable_gpu_blocks,
            r.answer_blocks.as_deref().unwrap_or("?"),
            src.logged,
            src.next_prompt,
            src.fresh,
            src.none
        );
        for r in rows.iter().filter(|r| r.gpu_rejections > 0) {
            eprintln!(
                "warning: {} at {} GPU blocks: {} requests can never fit in {} usable blocks \
                 (prompt + output - 1 tokens); vLLM refuses them. They count as misses: \
                 raise --gpu-blocks",
                r.policy, r.gpu_blocks, r.gpu_rejections, r.usable_gpu_blocks
            );
        }
        let pre: u64 = rows.iter().map(|r| r.preemptions).sum();
        let queued: u64 = rows.iter().map(|r| r.queued_requests).sum();
        if pre > 0 || queued > 0 {
            eprintln!(
                "  {queued} requests admitted after their arrival (waiting for a step, blocks \
                 or the token budget; queue_p50/p90_s below), {pre} preemptions (all points)"
            );
        }
    }
}

/// The warning when the engine model falls behind the trace at some point (its median
/// admission delay above `queueing::FALLS_BEHIND_MEDIAN_S`), naming the worst point.
fn falls_behind(
    args: &SimulateArgs,
    trace: &inferencelab_trace::Trace,
    rows: &[ResultRow],
) -> Option<String> {
    use inferencelab_sim::queueing;
    let behind: Vec<&ResultRow> = rows
        .iter()
        .filter(|r| queueing::falls_behind(r.queue_delay_p50_s))
        .collect();
    let worst = behind
        .iter()
        .max_by(|a, b| a.queue_delay_p50_s.total_cmp(&b.queue_delay_p50_s))?;
    Some(output::falls_behind_warning(&output::Backlog {
        point: format!("{} at {} GPU blocks", worst.policy, worst.gpu_blocks),
        behind: behind.len(),
        points: rows.len(),
        p50_s: worst.queue_delay_p50_s,
        p90_s: worst.queue_delay_p90_s,
        prompt_tokens: worst.prompt_tokens,
        uncached_tokens: worst.prompt_tokens - worst.prefill_tokens_saved,
        span_s: trace.span_s(),
        engines: 1,
        prefill_tokens_per_s: args.prefill_tokens_per_s.get(),
        fix: "--prefill-tokens-per-s N (a fleet: --replicas N; more memory: --gpu-blocks)",
    }))
}

/// The tiers' sizes as the flags give them (`gpu: None`: none given, the trace's working set
/// decides).
struct Sizes {
    gpu: Option<Vec<Capacity>>,
    /// An LMCache lookup log without a GPU tier: nothing runs concurrently.
    lookup_alone: bool,
    /// One LMCache tier size per grid column (`[None]`: no tier).
    cpu: Vec<Option<Capacity>>,
    disk: Option<Capacity>,
}

fn sizes(
    args: &SimulateArgs,
    lookup: Option<&lookup::Lookup>,
    chunk_size: u32,
) -> anyhow::Result<Sizes> {
    let given_capacities: Option<Vec<Capacity>> = if !args.gpu_blocks.is_empty() {
        Some(
            args.gpu_blocks
                .iter()
                .map(|&n| Capacity::Entries(n))
                .collect(),
        )
    } else if !args.gpu_cache_gb.is_empty() {
        Some(
            args.gpu_cache_gb
                .iter()
                .map(|&gb| Capacity::Gib(gb.get()))
                .collect(),
        )
    } else if lookup.is_some() {
        eprintln!(
            "note: LMCache lookup log: the LMCache tier alone, one lookup at a time in log order \
             (give --gpu-blocks for a vLLM GPU tier on top)"
        );
        Some(vec![Capacity::Entries(0)])
    } else {
        None
    };
    // a lookup log without a GPU tier: nothing runs concurrently
    let lookup_alone =
        lookup.is_some() && given_capacities.as_deref() == Some(&[Capacity::Entries(0)]);
    let cpu: Vec<Option<Capacity>> = if args.no_cpu_tier {
        vec![None]
    } else if let Some(n) = args.cpu_chunks {
        vec![Some(Capacity::Entries(n))]
    } else {
        let gbs: Vec<f64> = if args.cpu_cache_gb.is_empty() {
            vec![plan::LMCACHE_DEFAULT_CPU_GB]
        } else {
            args.cpu_cache_gb.iter().map(|g| g.get()).collect()
        };
        gbs.into_iter()
            .map(|gb| {
                Ok(Some(match lookup {
                    Some(l) => Capacity::Entries(lookup::cpu_chunks(args, l, chunk_size, gb)?),
                    None => Capacity::Gib(gb),
                }))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let disk = match (args.disk_chunks, args.disk_cache_gb) {
        (Some(n), _) => Some(Capacity::Entries(n)),
        (None, Some(gb)) => Some(Capacity::Gib(gb.get())),
        (None, None) => None,
    };
    Ok(Sizes {
        gpu: given_capacities,
        lookup_alone,
        cpu,
        disk,
    })
}

/// Attach each online-retraining lightgbm's models over this trace's GPU blocks (the LMCache
/// tier sees only the GPU's misses, a different stream: it keeps the static model).
fn retrain_online(
    mut policies: Vec<PolicyConfig>,
    trace: &inferencelab_trace::Trace,
    prepared: &Prepared<'_>,
    with_lmcache: bool,
    cpu_policy: Option<&PolicyConfig>,
) -> Vec<PolicyConfig> {
    for p in policies.iter_mut() {
        if let PolicyConfig::Lightgbm(c) = p {
            if inferencelab_learn::online::attach(c, trace, &prepared.gpu) {
                eprintln!(
                    "note: lightgbm retrains online: {} models over the trace (every {} s on the \
                     past {} s)",
                    c.schedule.as_ref().map_or(0, |s| s.len()),
                    c.retrain.map_or(0.0, |r| r.every_seconds),
                    c.retrain.map_or(0.0, |r| r.window_seconds)
                );
            }
        }
    }
    let lm_lightgbm_retrains = with_lmcache
        && cpu_policy
            .into_iter()
            .chain(if cpu_policy.is_none() {
                &policies[..]
            } else {
                &[]
            })
            .any(|p| matches!(p, PolicyConfig::Lightgbm(c) if c.retrain.is_some()));
    if lm_lightgbm_retrains {
        eprintln!("note: the LMCache tier's lightgbm uses its model file without retraining");
    }
    policies
}

/// The summary's `input` section: what was read and how it was cut into blocks and chunks.
fn input_json(args: &SimulateArgs, input: &Input, grid: &Grid<'_>) -> serde_json::Value {
    let (trace, lookup, prepared) = (&input.trace, input.lookup.as_ref(), &grid.prepared);
    json!({
        "path": super::path_text(&args.input.input_file),
        "format": trace.format.map(|f| f.name()),
        "requests": trace.requests.len(),
        "prompt_tokens": trace.total_prompt_tokens(),
        "block_size": grid.block_size,
        "chunk_size": grid.chunk_size,
        "tensor_parallel_size": args.tensor_parallel_size,
        "pipeline_parallel_size": args.pipeline_parallel_size,
        "block_refs": prepared.gpu.keys.len(),
        "distinct_blocks": prepared.gpu.num_objects,
        "skipped_records": trace.skipped,
        "notes": trace.notes,
        "has_reuse_info": trace.has_reuse_info(),
        "lmcache_lookup": lookup.map(|l| json!({
            "chunk_size": l.chunk_size,
            "kv_bytes_per_chunk": args.kv_bytes_per_chunk.unwrap_or(l.kv_bytes_per_chunk),
            "models": l.models,
        })),
        "lmcache_rules": args.lmcache_rules.to_string(),
        "read_seconds": input.read_seconds,
        "input_bytes": trace.input_bytes,
        "text_bytes": trace.text_bytes,
    })
}

/// The engine model of the flags (`--gpu-model`, `--schedule`, LMCache's rules and mode).
fn engine_model(args: &SimulateArgs) -> EngineModel {
    EngineModel {
        rules: args.gpu_model == "vllm",
        schedule: args.schedule,
        answers: args.answer_blocks,
        max_num_batched_tokens: args.max_num_batched_tokens,
        max_num_seqs: args.max_num_seqs,
        lmcache_rules: args.lmcache_rules,
        lmcache_mode: args.lmcache_mode,
        mp_trigger_watermark: args.lmcache_eviction_trigger_watermark,
        mp_eviction_ratio: args.lmcache_eviction_ratio,
        // set by `PointSpec::resolve` from the CPU tier's size
        mp_l1_size_chunks: 0.0,
    }
}

/// Per smart policy and capacity: its hit ratios beside LRU's and Belady's of the same run, and
/// the share of the LRU→Belady gap it closes (GPU prefix-cache hits, and all tiers).
fn comparisons(rows: &[ResultRow]) -> Vec<serde_json::Value> {
    let find = |policy: &str, of: &ResultRow| {
        rows.iter().find(|r| {
            r.policy == policy && r.gpu_blocks == of.gpu_blocks && r.cpu_chunks == of.cpu_chunks
        })
    };
    rows.iter()
        .filter(|r| SMART.contains(&r.policy.as_str()))
        .filter_map(|r| {
            let lru = find("lru", r)?;
            let belady = find("belady", r)?;
            Some(json!({
                "policy": r.policy,
                "gpu_blocks": r.gpu_blocks,
                "cpu_chunks": r.cpu_chunks,
                "token_hit_ratio": r.token_hit_ratio,
                "lru_token_hit_ratio": lru.token_hit_ratio,
                "belady_token_hit_ratio": belady.token_hit_ratio,
                "gap_closed": gap_closed(r.token_hit_ratio, lru.token_hit_ratio, belady.token_hit_ratio),
                // the judge (LRU as a second expert): where the prediction and LRU disagreed,
                // the share of the evictions the prediction decided
                "disagreements": r.eviction_judge.map(|j| j.decided_by_prediction + j.decided_by_lru),
                "prediction_decided": r.eviction_judge.map(|j| j.prediction_share()).filter(|x| x.is_finite()),
                "total_token_hit_ratio": r.total_token_hit_ratio,
                "lru_total_token_hit_ratio": lru.total_token_hit_ratio,
                "belady_total_token_hit_ratio": belady.total_token_hit_ratio,
                "total_gap_closed": gap_closed(
                    r.total_token_hit_ratio,
                    lru.total_token_hit_ratio,
                    belady.total_token_hit_ratio
                ),
            }))
        })
        .collect()
}

/// The smart policies of the run that read the waiting queue (`waiting_queue`).
pub(super) fn queue_readers(configs: &[SimConfig]) -> Vec<&'static str> {
    let mut names: Vec<&str> = configs
        .iter()
        .filter(|c| match &c.gpu.policy {
            PolicyConfig::ConversationAware(s) => s.waiting_queue,
            PolicyConfig::Lightgbm(l) => l.waiting_queue,
            _ => false,
        })
        .map(|c| c.gpu.policy.name())
        .collect();
    names.dedup();
    names
}

/// The line saying that `names` kept the blocks waiting requests will look up, and that
/// requests waited (`waited`): their gain over LRU is then partly the queue's, not the
/// prediction's.
pub(super) fn waiting_queue_line(names: &[&str], waited: &str) -> String {
    format!(
        "waiting queue: {} evicted last the blocks that requests waiting to be admitted will look \
         up (`waiting_queue`, on by default; docs/policies.md \"The waiting queue\"), and \
         {waited}, so part of the gain over LRU is the queue's; `waiting_queue: false` in the \
         --scorer-config or the lightgbm YAML shows the prediction alone.",
        names.join(" and ")
    )
}

/// [`waiting_queue_line`] for a single server's rows, when some of the readers' requests
/// waited.
fn waiting_queue_note(configs: &[SimConfig], rows: &[ResultRow]) -> Option<String> {
    let names = queue_readers(configs);
    let waited = rows
        .iter()
        .filter(|r| names.contains(&r.policy.as_str()))
        .map(|r| r.queued_requests)
        .max()
        .filter(|&n| n > 0)?;
    Some(waiting_queue_line(
        &names,
        &format!("up to {waited} requests waited here"),
    ))
}

fn print_comparisons(cmp: &[serde_json::Value], with_cpu: bool) {
    if cmp.is_empty() {
        return;
    }
    let pct = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{:.2}%", 100.0 * x))
    };
    let gap = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{:.1}%", 100.0 * x))
    };
    // the judge's share of the disagreements: "-" without a judge (`adaptive: false`) or without
    // any disagreement
    let decided = |c: &serde_json::Value| match (
        c["prediction_decided"].as_f64(),
        c["disagreements"].as_u64(),
    ) {
        (Some(x), Some(n)) => format!("{:.0}% of {n}", 100.0 * x),
        _ => "-".to_string(),
    };
    let mut header = vec![
        "policy",
        "gpu_blocks",
        "token_hit",
        "lru",
        "belady",
        "gap_closed",
        "prediction_decided",
    ];
    if with_cpu {
        header.extend(["total_hit", "lru_total", "belady_total", "total_gap_closed"]);
    }
    // a --cpu-cache-gb grid: the LMCache tier's size per row
    let cpu_column = cmp.iter().any(|c| c["cpu_chunks"] != cmp[0]["cpu_chunks"]);
    if cpu_column {
        header.insert(2, "cpu_chunks");
    }
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for c in cmp {
        let mut row = vec![
            c["policy"].as_str().unwrap_or("?").to_string(),
            c["gpu_blocks"].to_string(),
            pct(&c["token_hit_ratio"]),
            pct(&c["lru_token_hit_ratio"]),
            pct(&c["belady_token_hit_ratio"]),
            gap(&c["gap_closed"]),
            decided(c),
        ];
        if with_cpu {
            row.extend([
                pct(&c["total_token_hit_ratio"]),
                pct(&c["lru_total_token_hit_ratio"]),
                pct(&c["belady_total_token_hit_ratio"]),
                gap(&c["total_gap_closed"]),
            ]);
        }
        if cpu_column {
            row.insert(2, c["cpu_chunks"].to_string());
        }
        table.push(row);
    }
    println!();
    println!(
        "share of the LRU->Belady gap closed, (P - LRU) / (Belady - LRU), same run (\"-\": \
         Belady does not beat LRU); prediction_decided: of the evictions where the prediction and \
         LRU wanted different victims, the share its judge let the prediction decide (0%: the \
         policy ran as LRU):"
    );
    crate::output::print_table(&table);
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads")?;
    }
    // policies first: a missing model or scorer file fails before the trace is read
    let files = PolicyFiles {
        scorer_config: args.scorer_config.clone(),
        lightgbm_model: args.lightgbm_model.clone(),
    };
    let policies = resolve_policies(&args, &files)?;
    let run_started = Instant::now();
    let input = read_input(&args)?;
    let model = models::resolve(&args.model)?
        .with_parallelism(args.tensor_parallel_size, args.pipeline_parallel_size);
    for w in model_fit_warnings(&args, &input.trace, &model) {
        eprintln!("warning: {w}");
    }
    let grid = plan_grid(&args, &files, policies, &input, &model)?;
    if let Some(n) = args.replicas {
        let actual = input.actual.as_deref();
        return fleet::run(
            &args,
            &input.trace,
            actual,
            &grid.prepared,
            &grid.configs,
            n,
        );
    }
    let (rows, wall) = run_points(&args, &input.trace, &grid)?;

    let summary = json!({
        "inferencelab_version": env!("CARGO_PKG_VERSION"),
        "command": "simulate",
        "input": input_json(&args, &input, &grid),
        "model": model,
        "grid_wall_seconds": wall,
        "peak_rss_bytes": peak_rss_bytes(),
        "results": rows,
        "comparisons": comparisons(&rows),
    });
    let out_path = args.output.clone().unwrap_or_else(|| default_output(&args));
    write_json(&out_path, &summary).with_context(|| format!("writing {}", out_path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_engine_notes(&rows);
        output::print_simulation_table(&input.trace, &model.name, &rows);
        print_comparisons(&comparisons(&rows), grid.chunk_size.is_some());
        if let Some(n) = waiting_queue_note(&grid.configs, &rows) {
            println!("{n}");
        }
    }
    if let Some(w) = falls_behind(&args, &input.trace, &rows) {
        eprintln!("warning: {w}");
    }
    eprintln!("{}", scale_line(&input, run_started));
    eprintln!(
        "wrote {}; chart it with `inferencelab plot --summary-file {}` (several files are \
         drawn together)",
        out_path.display(),
        out_path.display()
    );
    Ok(())
}

/// The run's points over the prepared trace.
struct Grid<'t> {
    prepared: Prepared<'t>,
    configs: Vec<SimConfig>,
    block_size: u32,
    /// `None`: no LMCache tier.
    chunk_size: Option<u32>,
}

/// The grid of the flags: every policy at every GPU and LMCache size, over the trace cut into
/// blocks (and chunks).
fn plan_grid<'t>(
    args: &SimulateArgs,
    files: &PolicyFiles,
    policies: Vec<PolicyConfig>,
    input: &'t Input,
    model: &models::ModelSpec,
) -> anyhow::Result<Grid<'t>> {
    let (trace, lookup) = (&input.trace, input.lookup.as_ref());
    let block_size = args
        .block_size
        .unwrap_or_else(|| plan::default_block_size(trace));
    let chunk_size = args.chunk_size.unwrap_or_else(|| match lookup {
        // a lookup log's own chunks (plan's default would coarsen chunks under 256 tokens)
        Some(l) => l.chunk_size,
        None => plan::default_chunk_size(trace),
    });
    let sizes = sizes(args, lookup, chunk_size)?;
    if sizes.lookup_alone
        && args.lmcache_rules == inferencelab_sim::LmcacheRules::Engine
        && policies.iter().any(PolicyConfig::is_unbounded)
    {
        bail!(
            "an LMCache lookup log with no GPU tier: --eviction-policy ideal would make vLLM's \
             GPU tier unbounded; give the LMCache tier's bound with --cpu-eviction-policy ideal \
             (and -p lru), or use --lmcache-rules simulator"
        );
    }
    let cpu_policy = cpu_policy(args, files, sizes.lookup_alone)?;
    // every column has a tier or none does
    let with_cpu = sizes.cpu[0].is_some();
    let prepared = Prepared::new(trace, block_size, with_cpu.then_some(chunk_size))
        .with_context(|| format!("preparing {}", args.input.input_file.display()))?;
    let gpus = sizes
        .gpu
        .unwrap_or_else(|| default_gpu_sizes(&prepared, block_size));
    let policies = retrain_online(policies, trace, &prepared, with_cpu, cpu_policy.as_ref());
    let base = PointSpec {
        disk: sizes.disk,
        cpu_policy,
        hit_semantics: args.hit_semantics,
        pinning: !args.no_pinning && !sizes.lookup_alone,
        timing: TimingModel {
            prefill_tokens_per_s: args.prefill_tokens_per_s.get(),
            decode_ms_per_token: args.decode_ms_per_token.get(),
        },
        window_seconds: args.window_seconds.get(),
        engine: engine_model(args),
        ..PointSpec::new(
            Some(model.clone()),
            block_size,
            chunk_size,
            Capacity::Entries(0),
            PolicyConfig::Lru,
        )
    };
    let configs = base.grid(&policies, &gpus, &sizes.cpu)?;
    Ok(Grid {
        prepared,
        configs,
        block_size,
        chunk_size: with_cpu.then_some(chunk_size),
    })
}

/// `--cpu-eviction-policy`, its files loaded (`None`: the GPU tier's policy). Default: LRU, as
/// LMCache's; for a lookup log alone, the policy of `-p`.
fn cpu_policy(
    args: &SimulateArgs,
    files: &PolicyFiles,
    lookup_alone: bool,
) -> anyhow::Result<Option<PolicyConfig>> {
    let default = if lookup_alone {
        TierPolicy::Same
    } else {
        TierPolicy::Policy(PolicyConfig::Lru)
    };
    match args.cpu_eviction_policy.clone().unwrap_or(default) {
        TierPolicy::Same => Ok(None),
        TierPolicy::Policy(p) => Ok(Some(
            super::load_policy(p, files).context("--cpu-eviction-policy")?,
        )),
    }
}

/// No `--gpu-blocks`/`--gpu-cache-gb`: fractions of the trace's working set, with a note.
fn default_gpu_sizes(prepared: &Prepared<'_>, block_size: u32) -> Vec<Capacity> {
    let c = default_capacities(prepared.gpu.num_objects);
    eprintln!(
        "note: no --gpu-blocks/--gpu-cache-gb given: simulating {} GPU blocks (10%, 25%, 50% \
         and 100% of the trace's {} distinct {}-token blocks)",
        c.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        prepared.gpu.num_objects,
        block_size
    );
    c.into_iter().map(Capacity::Entries).collect()
}

/// Run every point (in parallel, or one by one with `--per-request`), with a progress bar:
/// the rows in grid order and the grid's wall time.
fn run_points(
    args: &SimulateArgs,
    trace: &inferencelab_trace::Trace,
    grid: &Grid<'_>,
) -> anyhow::Result<(Vec<ResultRow>, f64)> {
    let configs = &grid.configs;
    let mut bar = Progress::new(
        args.quiet || args.json,
        configs.len() as u64,
        "{spinner} simulating {pos}/{len} points [{elapsed}] {wide_bar}",
        "simulate",
        "points",
    );
    let started = Instant::now();
    let results = match &args.per_request {
        None => run_grid(&grid.prepared, configs, &|_| bar.inc(1)),
        Some(path) => {
            let r = write_per_request(path, trace, &grid.prepared, configs);
            bar.inc(configs.len() as u64);
            r?
        }
    };
    bar.finish();
    let wall = started.elapsed().as_secs_f64();
    let rows = configs
        .iter()
        .zip(results)
        .map(|(cfg, r)| {
            r.with_context(|| {
                format!(
                    "policy {} at {} GPU blocks",
                    cfg.gpu.policy, cfg.gpu.capacity
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((rows, wall))
}

/// Run the points one by one, writing every request's outcome as a JSON line as it is known.
fn write_per_request(
    path: &Path,
    trace: &inferencelab_trace::Trace,
    prepared: &Prepared<'_>,
    configs: &[SimConfig],
) -> anyhow::Result<Vec<inferencelab_sim::SimResult<inferencelab_sim::ResultRow>>> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::File::create(path)
        .with_context(|| format!("--per-request: creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let tag = configs.len() > 1;
    let mut results = Vec::with_capacity(configs.len());
    for cfg in configs {
        let mut failed: Option<std::io::Error> = None;
        let row = inferencelab_sim::driver::run_observed(prepared, cfg, |i, h| {
            if failed.is_some() {
                return;
            }
            let r = &trace.requests[i];
            let mut line = json!({
                "request_id": r.id,
                "prompt_tokens": r.input_length,
                "gpu_hit_tokens": h.gpu_hit_tokens,
                "cpu_hit_tokens": h.cpu_hit_tokens,
                "disk_hit_tokens": h.disk_hit_tokens,
                "lmcache_hit_tokens": h.cpu_hit_tokens + h.disk_hit_tokens,
                "admitted_s": h.admitted_s,
                "preemptions": h.preemptions,
            });
            if h.rejected {
                line["rejected"] = json!(true);
            }
            if tag {
                line["policy"] = json!(cfg.gpu.policy.name());
                line["gpu_blocks"] = json!(cfg.gpu.capacity);
                if let Some(c) = &cfg.cpu {
                    line["cpu_chunks"] = json!(c.capacity);
                }
            }
            if let Err(e) = writeln!(out, "{line}") {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e).with_context(|| format!("--per-request: writing {}", path.display()));
        }
        results.push(row);
    }
    out.flush()
        .with_context(|| format!("--per-request: writing {}", path.display()))?;
    Ok(results)
}

/// `outputs/simulation/simulate_<input>_<policies>_<digest>.json`: the digest covers every flag
/// that changes a figure, so three runs with other policies or sizes leave three files (`plot
/// --summary-file` takes them all), while the same command run again replaces its own file.
fn default_output(args: &SimulateArgs) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let stem = args
        .input
        .input_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trace".into());
    let mut key = args.clone();
    // flags that change where and how results are shown, not what they are
    key.output = None;
    key.json = false;
    key.quiet = false;
    key.threads = None;
    key.per_request = None;
    // FNV-1a: stable across Rust versions, unlike std's DefaultHasher
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    format!("{key:?}").hash(&mut h);
    let mut policies = args
        .eviction_policy
        .iter()
        .map(PolicyConfig::name)
        .collect::<Vec<_>>()
        .join("-");
    if policies.len() > 40 {
        policies.truncate(40);
    }
    PathBuf::from("outputs/simulation").join(format!(
        "simulate_{stem}_{policies}_{:08x}.json",
        h.finish() as u32
    ))
}

/// GPU sizes to simulate when none are given: fractions of the trace's working set (its distinct
/// blocks), so any trace gets a small curve from "tight" to "everything fits".
fn default_capacities(distinct_blocks: u32) -> Vec<u64> {
    let n = u64::from(distinct_blocks.max(1));
    let mut caps: Vec<u64> = [10, 25, 50, 100]
        .iter()
        .map(|pct| (n * pct).div_ceil(100).max(1))
        .collect();
    caps.dedup();
    caps
}

/// Peak resident memory of this process so far (Linux `VmHWM`), `None` elsewhere.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The figures issue 19 makes first-class: how much text was read, how fast (reading alone and
/// the whole run), and the peak memory.
fn scale_line(input: &Input, run_started: Instant) -> String {
    let (trace, read_seconds) = (&input.trace, input.read_seconds);
    let mb = |b: u64| b as f64 / 1e6;
    let total = run_started.elapsed().as_secs_f64();
    let stored = if trace.input_bytes != trace.text_bytes && trace.input_bytes > 0 {
        format!(" ({:.1} MB as stored)", mb(trace.input_bytes))
    } else {
        String::new()
    };
    format!(
        "read {:.1} MB of text{stored} in {read_seconds:.2} s ({:.0} MB/s); whole run {total:.2} s \
         ({:.0} MB/s of input); peak RSS {}",
        mb(trace.text_bytes),
        mb(trace.text_bytes) / read_seconds.max(1e-9),
        mb(trace.text_bytes) / total.max(1e-9),
        peak_rss_bytes().map_or("unknown (no /proc/self/status)".to_string(), |b| format!(
            "{:.0} MB",
            mb(b)
        ))
    )
}

/// [`models::fit_warnings`] for this run: the largest token id of the trace, and for a vLLM
/// log the model its start line names (read from the first 4 MiB of a plain-text log).
fn model_fit_warnings(
    args: &SimulateArgs,
    trace: &inferencelab_trace::Trace,
    model: &models::ModelSpec,
) -> Vec<String> {
    use std::io::Read;
    let max_token_id = trace.max_token_id();
    let mut log = models::LogModel::default();
    if trace.format == Some(inferencelab_trace::Format::VllmLog) {
        let mut head = Vec::new();
        if let Ok(f) = std::fs::File::open(&args.input.input_file) {
            let _ = f.take(4 << 20).read_to_end(&mut head);
        }
        log = models::LogModel::from_log_head(&String::from_utf8_lossy(&head));
    }
    models::fit_warnings(model, &args.model, &log, max_token_id)
}
