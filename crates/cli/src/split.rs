//! The trace and its train/validation/test split as `sweep` and `train` take them (flags,
//! loading, the capacities judged), and what both print and write.

use std::path::Path;

use anyhow::{bail, Context};
use clap::Args;
use inferencelab_learn::eval::{self, Baseline, Comparison, Split};
use inferencelab_sim::{plan, queueing, EngineModel, Prepared, TimingModel};
use inferencelab_trace::checked::Positive;
use inferencelab_trace::{read_trace, read_trace_hashed, Trace};

use crate::cli::InputArgs;

use crate::output::{falls_behind_warning, print_table, secs, Backlog};
use crate::progress::Progress;

/// The trace and its train/validation/test split, shared by `sweep` and `train`.
#[derive(Args, Debug)]
pub struct SplitArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Share of the trace's time span used for fitting; the rest is the held-back test part.
    #[arg(long, default_value_t = 0.5)]
    pub train_fraction: f64,
    /// Share of the train part, at its end, on which choices are made (the validation part;
    /// the earlier train requests only warm the cache); 1 = the whole train part.
    #[arg(long, default_value_t = 0.5)]
    pub validation_share: f64,
    /// GPU capacities in blocks, comma separated (default: up to 3 where LRU reaches less than
    /// 80% of the infinite cache on the test part).
    #[arg(long, value_delimiter = ',')]
    pub capacities: Vec<u64>,
    /// Tokens per GPU block (id traces default to their own block size).
    #[arg(long)]
    pub block_size: Option<u32>,
    /// Do not pin the blocks of running requests.
    #[arg(long)]
    pub no_pinning: bool,
    /// GPU-tier model, as `simulate --gpu-model`: vllm (vLLM's engine rules, `simulate`'s
    /// default, so the figures are the ones `simulate --no-cpu-tier` shows) or abstract (the
    /// classic prefix model over prompt blocks).
    #[arg(long, default_value = "vllm", value_parser = ["vllm", "abstract"])]
    pub gpu_model: String,
    /// As `simulate --prefill-tokens-per-s`: the engine model's prefill rate (its speed, hence
    /// its admission queue).
    #[arg(long, default_value = "10000")]
    pub prefill_tokens_per_s: Positive,
}

impl SplitArgs {
    /// The trace, read as `simulate` reads it (conversations inferred when asked).
    pub fn trace(&self) -> anyhow::Result<Trace> {
        // a vLLM log's token ids hashed as they are read (issue 19), at the gcd of the block
        // size and 16: --infer-conversations compares 16-token prefixes, and finds from ids
        // hashed at a divisor of 16 what it finds from the tokens
        let (mut g, mut b) = (16, self.block_size.unwrap_or(plan::VLLM_DEFAULT_BLOCK));
        while b != 0 {
            (g, b) = (b, g % b);
        }
        load_trace(&self.input, Some(g))
    }

    /// Its train/validation/test split.
    pub fn prepare<'t>(&self, trace: &'t Trace) -> anyhow::Result<Split<'t>> {
        let mut split = prepare_split(
            trace,
            self.block_size,
            self.train_fraction,
            self.validation_share,
            !self.no_pinning,
        )?;
        split.timing.prefill_tokens_per_s = self.prefill_tokens_per_s.get();
        Ok(split.with_engine(EngineModel {
            rules: self.gpu_model == "vllm",
            ..EngineModel::default()
        }))
    }

    /// The capacities to report and the baselines there, with the validation part settled
    /// (`settle_validation`).
    pub fn settle(&self, split: &mut Split<'_>) -> anyhow::Result<(Vec<u64>, Vec<Baseline>)> {
        let capacities = capacities_or_default(split, &self.capacities)?;
        eprintln!("{}", evaluated_as(split, &capacities));
        let base = settle_validation(split, &capacities);
        Ok((capacities, base))
    }
}

/// Read a trace as `simulate` does, printing the reader's notes.
pub fn load_trace(input: &InputArgs, hash_block: Option<u32>) -> anyhow::Result<Trace> {
    let opts = input.read_options();
    let mut trace = match hash_block {
        Some(g) => read_trace_hashed(&input.input_file, &opts, g)?,
        None => read_trace(&input.input_file, &opts)?,
    };
    input.infer(&mut trace);
    crate::output::print_read_notes(&trace);
    if !trace.has_reuse_info() {
        bail!(
            "{} carries no prefix-reuse information: there is nothing to learn or tune",
            input.input_file.display()
        );
    }
    Ok(trace)
}

/// The train/test split and the capacities to report.
pub fn prepare_split<'t>(
    trace: &'t Trace,
    block_size: Option<u32>,
    train_fraction: f64,
    validation_share: f64,
    pinning: bool,
) -> anyhow::Result<Split<'t>> {
    if train_fraction.is_nan() || train_fraction <= 0.0 || train_fraction >= 1.0 {
        bail!("--train-fraction must be between 0 and 1 (exclusive), got {train_fraction}");
    }
    if validation_share.is_nan() || validation_share <= 0.0 || validation_share > 1.0 {
        bail!("--validation-share must be in (0, 1], got {validation_share}");
    }
    let bs = block_size.unwrap_or_else(|| plan::default_block_size(trace));
    let prepared = Prepared::new(trace, bs, None)
        .with_context(|| format!("preparing {}", trace.source.display()))?;
    let split =
        Split::new(prepared, train_fraction, pinning).with_validation_share(validation_share);
    let reqs = &trace.requests;
    let n_train = reqs.iter().filter(|r| r.timestamp < split.split).count();
    if n_train == 0 || n_train == reqs.len() {
        bail!(
            "the split at {:.1} s leaves one part empty ({n_train} of {} requests before it); \
             change --train-fraction",
            split.split - split.t0,
            reqs.len()
        );
    }
    let n_valid = reqs
        .iter()
        .filter(|r| r.timestamp >= split.validation_from && r.timestamp < split.split)
        .count();
    eprintln!(
        "split at {:.1} s of trace time: {n_train} train requests (choices made on the last \
         {n_valid}, from {:.1} s), {} test requests",
        split.split - split.t0,
        split.validation_from - split.t0,
        reqs.len() - n_train
    );
    Ok(split)
}

/// LRU, Belady and the infinite cache at `capacities`, after checking that the validation part
/// can tell policies apart: where Belady does not beat LRU on it at any capacity, no eviction
/// choice matters there and every candidate ties, so choices fall back to the whole train part
/// (a note says so).
pub fn settle_validation(split: &mut Split<'_>, capacities: &[u64]) -> Vec<Baseline> {
    let base = eval::baselines(split, capacities);
    let informative = base
        .iter()
        .any(|b| b.belady.validation.hit_tokens > b.lru.validation.hit_tokens);
    if informative || split.validation_from <= split.t0 {
        return base;
    }
    eprintln!(
        "note: on the validation part (from {:.1} s) Belady does not beat LRU at any capacity, \
         so nothing can be chosen there: choosing on the whole train part instead",
        split.validation_from - split.t0
    );
    split.validation_from = split.t0;
    eval::baselines(split, capacities)
}

/// What the figures are: the GPU tier of `simulate`'s model at the capacities, so a user can
/// reproduce any cell with `simulate`.
pub fn evaluated_as(split: &Split<'_>, capacities: &[u64]) -> String {
    let caps = capacities
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let config = split.sim_config(
        &eval::Candidate::Lru,
        capacities.first().copied().unwrap_or(1),
    );
    let model = if split.engine.rules {
        format!(
            "vLLM's engine rules (answer blocks, null block, admission; schedule {})",
            inferencelab_sim::driver::effective_schedule(split.prepared.trace, &config)
        )
    } else {
        "the abstract prefix model (--gpu-model abstract)".to_string()
    };
    format!(
        "evaluated with {model}, GPU tier only, {}pinning, at {caps} GPU blocks of {} tokens: \
         the figures `simulate --gpu-blocks {caps} --no-cpu-tier{}{}{}` gives",
        if split.pinning { "" } else { "no " },
        split.prepared.gpu.block_size,
        if split.pinning { "" } else { " --no-pinning" },
        if split.engine.rules {
            ""
        } else {
            " --gpu-model abstract"
        },
        if split.timing.prefill_tokens_per_s == TimingModel::default().prefill_tokens_per_s {
            String::new()
        } else {
            format!(
                " --prefill-tokens-per-s {}",
                split.timing.prefill_tokens_per_s
            )
        },
    )
}

pub fn capacities_or_default(split: &Split<'_>, given: &[u64]) -> anyhow::Result<Vec<u64>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let caps = eval::interesting_capacities(split, 0.8, 3);
    if caps.is_empty() {
        bail!(
            "found no capacity where LRU reaches between 5% and 80% of the infinite cache; give \
             --capacities"
        );
    }
    eprintln!(
        "capacities (LRU below 80% of the infinite cache): {}",
        caps.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(caps)
}

pub fn progress_bar(quiet: bool, what: &str) -> Progress {
    Progress::new(
        quiet,
        0,
        &format!("{{spinner}} {what} {{pos}}/{{len}} simulations [{{elapsed}}] {{wide_bar}}"),
        what,
        "simulations",
    )
}

pub fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

pub fn gap(x: Option<f64>) -> String {
    x.map_or("-".into(), |g| format!("{:.1}%", 100.0 * g))
}

/// The comparison table every learned-policy report prints: per capacity, the policy beside
/// LRU, Belady and the infinite cache on the train, validation (the end of train, where
/// choices are made) and test parts, and the share of the LRU→Belady gap it closes.
pub fn print_comparisons(rows: &[Comparison]) {
    let header = [
        "policy",
        "capacity",
        "part",
        "policy_hit",
        "lru_hit",
        "belady_hit",
        "ideal_hit",
        "lru/ideal",
        "gap_closed",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        for (part, x) in [
            ("train", &r.train),
            ("valid", &r.validation),
            ("test", &r.test),
        ] {
            table.push(vec![
                r.policy.clone(),
                r.capacity.to_string(),
                part.into(),
                pct(x.policy),
                pct(x.lru),
                pct(x.belady),
                pct(x.ideal),
                pct(x.lru_of_ideal),
                gap(x.gap_closed),
            ]);
        }
    }
    print_table(&table);
}

/// The engine model's queueing on the test part, LRU's run at each capacity (the baselines'):
/// one line on stdout, a warning on stderr when it falls behind the trace, and the figures for
/// the summary JSON (0 under `--gpu-model abstract`, which admits at arrival: no line then).
pub fn report_queueing(split: &Split<'_>, base: &[Baseline]) -> serde_json::Value {
    let json = serde_json::Value::Array(
        base.iter()
            .map(|b| {
                serde_json::json!({
                    "capacity": b.capacity,
                    "policy": "lru",
                    "part": "test",
                    "queue_delay_p50_s": b.lru.test.queue_delay_p50_s,
                    "queue_delay_p90_s": b.lru.test.queue_delay_p90_s,
                })
            })
            .collect(),
    );
    if !split.engine.rules {
        return json;
    }
    let cells: Vec<String> = base
        .iter()
        .map(|b| {
            let t = &b.lru.test;
            format!(
                "{} blocks {} s (p90 {} s)",
                b.capacity,
                secs(t.queue_delay_p50_s),
                secs(t.queue_delay_p90_s)
            )
        })
        .collect();
    println!(
        "median admission delay on the test part (arrival to first scheduling, LRU): {}",
        cells.join(", ")
    );
    let behind: Vec<&Baseline> = base
        .iter()
        .filter(|b| queueing::falls_behind(b.lru.test.queue_delay_p50_s))
        .collect();
    let worst = behind.iter().max_by(|a, b| {
        a.lru
            .test
            .queue_delay_p50_s
            .total_cmp(&b.lru.test.queue_delay_p50_s)
    });
    if let Some(w) = worst {
        let t = &w.lru.test;
        let last = split
            .prepared
            .trace
            .requests
            .iter()
            .map(|r| r.timestamp)
            .fold(split.split, f64::max);
        let warning = falls_behind_warning(&Backlog {
            point: format!("LRU at {} GPU blocks, test part", w.capacity),
            behind: behind.len(),
            points: base.len(),
            p50_s: t.queue_delay_p50_s,
            p90_s: t.queue_delay_p90_s,
            prompt_tokens: t.prompt_tokens,
            uncached_tokens: t.prompt_tokens - t.hit_tokens,
            span_s: last - split.split,
            engines: 1,
            prefill_tokens_per_s: split.timing.prefill_tokens_per_s,
            fix: "--prefill-tokens-per-s N (more memory: other --capacities)",
        });
        eprintln!("warning: {warning}");
    }
    json
}

pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    inferencelab_trace::fsutil::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trace".into())
}
