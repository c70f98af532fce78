//! The replay driver: feeds a prepared trace through the vLLM GPU tier and LMCache's CPU (and
//! disk) tiers with the engines' rules (DESIGN.md sections 3 and 4) and collects the metrics.

use std::sync::OnceLock;
use std::time::Instant;

use inferencelab_cache::{EntryId, Outcome};
use inferencelab_trace::{AnswerBlocks, BlockedTrace, Blocking, SequenceBlocks, Trace};

use crate::config::{HitSemantics, LmcacheRules, Schedule, SimConfig};
use crate::engine_run::{self, build_tier, Describe, Lmcache, Served};
use crate::error::{SimError, SimResult};
use crate::gpu_tier::GpuTier;
use crate::queueing::AdmissionDelays;
use crate::result::{ratio, ResultRow as Row, Window};

/// A trace cut into GPU blocks and LMCache chunks once, shared by every point of a grid.
pub struct Prepared<'t> {
    pub trace: &'t Trace,
    pub gpu: BlockedTrace,
    pub cpu: Option<BlockedTrace>,
    gpu_next_flat: OnceLock<Vec<u64>>,
    gpu_next_by_request: OnceLock<Vec<u64>>,
    cpu_next_by_request: OnceLock<Vec<u64>>,
    kinds: OnceLock<Vec<u32>>,
    /// Sequence blocks (prompt + answer) per answer mode, and their oracle.
    seqs: [OnceLock<SequenceBlocks>; 4],
    seq_next: [OnceLock<Vec<u64>>; 4],
}

fn answer_slot(a: AnswerBlocks) -> usize {
    match a {
        AnswerBlocks::Auto => 0,
        AnswerBlocks::NextPrompt => 1,
        AnswerBlocks::Fresh => 2,
        AnswerBlocks::Off => 3,
    }
}

impl<'t> Prepared<'t> {
    /// Cut `trace` into `block_size`-token GPU blocks and (when `chunk_size` is given)
    /// LMCache chunks.
    pub fn new(trace: &'t Trace, block_size: u32, chunk_size: Option<u32>) -> SimResult<Self> {
        let gpu = BlockedTrace::build(
            trace,
            Blocking {
                block_size,
                include_partial: true,
            },
        )?;
        let cpu = chunk_size
            .map(|c| {
                BlockedTrace::build(
                    trace,
                    Blocking {
                        block_size: c,
                        include_partial: false,
                    },
                )
            })
            .transpose()?;
        Ok(Prepared {
            trace,
            gpu,
            cpu,
            gpu_next_flat: OnceLock::new(),
            gpu_next_by_request: OnceLock::new(),
            cpu_next_by_request: OnceLock::new(),
            kinds: OnceLock::new(),
            seqs: Default::default(),
            seq_next: Default::default(),
        })
    }

    /// Dense request-type ids (`Trace::kind_ids`), computed once.
    pub fn kinds(&self) -> &[u32] {
        self.kinds.get_or_init(|| self.trace.kind_ids())
    }

    /// The LMCache chunks' oracle, when [`annotate_for`](Prepared::annotate_for) computed it.
    pub(crate) fn cpu_next_by_request_slice(&self) -> Option<&[u64]> {
        self.cpu_next_by_request.get().map(Vec::as_slice)
    }

    /// Every request's sequence (prompt + answer) in GPU blocks, for an answer mode.
    pub fn sequences(&self, answers: AnswerBlocks) -> SimResult<&SequenceBlocks> {
        let lock = &self.seqs[answer_slot(answers)];
        if lock.get().is_none() {
            let built = SequenceBlocks::build(self.trace, self.gpu.block_size, answers)?;
            let _ = lock.set(built);
        }
        Ok(lock.get().expect("just set"))
    }

    /// Compute the oracle annotations a point needs, ahead of timing it.
    pub fn annotate_for(&self, config: &SimConfig) {
        if config.gpu.policy.needs_oracle() {
            match config.hit_semantics {
                HitSemantics::Prefix if !config.engine.rules => {
                    self.gpu_next_by_request
                        .get_or_init(|| self.gpu.next_use_by_request());
                }
                HitSemantics::Prefix => {
                    let a = config.engine.answers;
                    if let Ok(seq) = self.sequences(a) {
                        self.seq_next[answer_slot(a)]
                            .get_or_init(|| seq.blocks.next_use_by_request());
                    }
                }
                HitSemantics::Any => {
                    self.gpu_next_flat.get_or_init(|| self.gpu.next_use_flat());
                }
            }
        }
        let lm_oracle = [&config.cpu, &config.disk]
            .into_iter()
            .flatten()
            .any(|t| t.policy.needs_oracle());
        if let (true, Some(cpu)) = (lm_oracle, &self.cpu) {
            self.cpu_next_by_request
                .get_or_init(|| cpu.next_use_by_request());
        }
    }
}

/// Check a configuration against a prepared trace before running it.
pub fn check(prepared: &Prepared<'_>, config: &SimConfig) -> SimResult<()> {
    if config.hit_semantics == HitSemantics::Any && (config.cpu.is_some() || config.disk.is_some())
    {
        return Err(SimError::Config(
            "--hit-semantics any models a classic single-tier cache over the block stream; add \
             --no-cpu-tier (LMCache's tier is only defined for prefix hits)"
                .into(),
        ));
    }
    if config.cpu.is_some() && prepared.cpu.is_none() {
        return Err(SimError::Config(
            "the CPU tier is on but the trace was prepared without a chunk size".into(),
        ));
    }
    if config.disk.is_some() && config.cpu.is_none() {
        return Err(SimError::Config(
            "a disk tier needs the CPU tier (LMCache's local disk backend sits behind it)".into(),
        ));
    }
    if !config.window_seconds.is_finite() || config.window_seconds <= 0.0 {
        return Err(SimError::Config(format!(
            "--window-seconds {} is not allowed: give a finite number of seconds greater than 0",
            config.window_seconds
        )));
    }
    let windows = window_count(prepared.trace, config.window_seconds);
    if windows > MAX_WINDOWS as f64 {
        let reqs = &prepared.trace.requests;
        let t0 = reqs.first().map_or(0.0, |r| r.timestamp);
        let span = reqs.iter().map(|r| r.timestamp).fold(t0, f64::max) - t0;
        return Err(SimError::Config(format!(
            "the trace spans {span:.0} s: {windows:.3e} time-series windows of {} s, more than \
             the limit of {MAX_WINDOWS}; raise --window-seconds (batch YAML: window_seconds) to \
             at least {:.0}, or check the trace's timestamps (one far-off time stretches it)",
            config.window_seconds,
            (span / (MAX_WINDOWS - 1) as f64).ceil()
        )));
    }
    Ok(())
}

/// The most time-series windows one row may hold: 100,000 windows are 69 days at the default 60
/// s, about 25 MB of summary JSON per row. Each window is materialised (also the empty ones), so
/// a stray timestamp decades away would otherwise allocate gigabytes.
pub const MAX_WINDOWS: u64 = 100_000;

/// Windows of `window_seconds` from the first request's arrival to the last (as an `f64`: a
/// far-off timestamp must not overflow the count).
pub fn window_count(trace: &Trace, window_seconds: f64) -> f64 {
    let Some(first) = trace.requests.first() else {
        return 0.0;
    };
    let last = trace
        .requests
        .iter()
        .map(|r| r.timestamp)
        .fold(first.timestamp, f64::max);
    ((last - first.timestamp) / window_seconds).floor() + 1.0
}

/// What one request got from the caches, in tokens, and when it was admitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RequestHits {
    /// vLLM's own prefix-cache hit at the request's first admission.
    pub gpu_hit_tokens: u64,
    /// LMCache tokens loaded beyond it, by the tier they came from.
    pub cpu_hit_tokens: u64,
    pub disk_hit_tokens: u64,
    /// Trace seconds of the first admission (the arrival under `--hit-semantics any`).
    pub admitted_s: f64,
    /// Times vLLM preempted it (scheduler mode).
    pub preemptions: u32,
    /// It can never fit in the GPU pool (vLLM refuses it); counted with no hits.
    pub rejected: bool,
}

impl RequestHits {
    /// Prompt tokens not recomputed (vLLM's `cached_tokens` with a KV connector counts these).
    pub fn total(&self) -> u64 {
        self.gpu_hit_tokens + self.cpu_hit_tokens + self.disk_hit_tokens
    }
}

/// Run one simulation point.
pub fn run(prepared: &Prepared<'_>, config: &SimConfig) -> SimResult<Row> {
    run_observed(prepared, config, |_, _| {})
}

/// Per-request figures summed into a row and its windows.
struct Tally<'c> {
    config: &'c SimConfig,
    t0: f64,
    kv_bytes: Option<u64>,
    windows: Vec<Window>,
    requests_with_hits: u64,
    flops_total: f64,
    flops_saved: f64,
    bytes_cpu: u64,
    bytes_disk: u64,
    delays: AdmissionDelays,
}

impl Tally<'_> {
    fn record(
        &mut self,
        row: &mut Row,
        r: &inferencelab_trace::Request,
        block_refs: u64,
        hit_blocks: u64,
        hits: &RequestHits,
    ) {
        let len = r.input_length as u64;
        let saved = hits.total();
        row.requests += 1;
        row.prompt_tokens += len;
        row.block_refs += block_refs;
        row.gpu_hit_blocks += hit_blocks;
        row.gpu_hit_tokens += hits.gpu_hit_tokens;
        row.cpu_hit_tokens += hits.cpu_hit_tokens;
        row.disk_hit_tokens += hits.disk_hit_tokens;
        if saved > 0 {
            self.requests_with_hits += 1;
        }
        self.delays.record(r.timestamp, hits.admitted_s);
        if let Some(b) = self.kv_bytes {
            self.bytes_cpu += hits.cpu_hit_tokens * b;
            self.bytes_disk += hits.disk_hit_tokens * b;
        }
        if let Some(m) = &self.config.model {
            self.flops_total += m.prefill_flops(len);
            self.flops_saved += m.prefill_flops(saved);
        }
        let ws = self.config.window_seconds;
        let w = ((r.timestamp - self.t0) / ws).max(0.0) as usize;
        if self.windows.len() <= w {
            let start = self.windows.len();
            self.windows.extend((start..=w).map(|k| Window {
                start: k as f64 * ws,
                ..Default::default()
            }));
        }
        let win = &mut self.windows[w];
        win.requests += 1;
        win.prompt_tokens += len;
        win.block_refs += block_refs;
        win.gpu_hit_blocks += hit_blocks;
        win.gpu_hit_tokens += hits.gpu_hit_tokens;
        win.cpu_hit_tokens += hits.cpu_hit_tokens;
        win.disk_hit_tokens += hits.disk_hit_tokens;
    }

    fn finish(mut self, row: &mut Row, lmcache: bool, has_disk: bool) {
        for w in &mut self.windows {
            w.token_hit_ratio = ratio(
                w.gpu_hit_tokens + w.cpu_hit_tokens + w.disk_hit_tokens,
                w.prompt_tokens,
            );
        }
        row.windows = self.windows;
        row.block_hit_ratio = ratio(row.gpu_hit_blocks, row.block_refs);
        row.token_hit_ratio = ratio(row.gpu_hit_tokens, row.prompt_tokens);
        row.cpu_token_hit_ratio = ratio(row.cpu_hit_tokens, row.prompt_tokens);
        row.disk_token_hit_ratio = ratio(row.disk_hit_tokens, row.prompt_tokens);
        row.prefill_tokens_saved = row.gpu_hit_tokens + row.cpu_hit_tokens + row.disk_hit_tokens;
        row.total_token_hit_ratio = ratio(row.prefill_tokens_saved, row.prompt_tokens);
        row.request_hit_rate = ratio(self.requests_with_hits, row.requests);
        (row.queue_delay_p50_s, row.queue_delay_p90_s) = self.delays.p50_p90();
        if self.kv_bytes.is_some() && lmcache {
            row.bytes_loaded_from_cpu = Some(self.bytes_cpu);
            row.bytes_loaded_from_disk = has_disk.then_some(self.bytes_disk);
        }
        if self.config.model.is_some() {
            row.prefill_flops_total = Some(self.flops_total);
            row.prefill_flops_saved = Some(self.flops_saved);
            row.compute_saved_ratio = Some(if self.flops_total > 0.0 {
                self.flops_saved / self.flops_total
            } else {
                0.0
            });
        }
        row.block_refs_per_second = if row.sim_seconds > 0.0 {
            row.block_refs as f64 / row.sim_seconds
        } else {
            0.0
        };
    }
}

/// The schedule `config` asks for on this trace (`auto` resolved; no pinning means every
/// request finishes before the next, which only the `trace` schedule models).
pub fn effective_schedule(trace: &Trace, config: &SimConfig) -> Schedule {
    match config.engine.schedule {
        _ if !config.pinning => Schedule::Trace,
        Schedule::Auto => {
            if !trace.requests.is_empty() && trace.requests.iter().all(|r| r.finish_time.is_some())
            {
                Schedule::Trace
            } else {
                Schedule::Vllm
            }
        }
        s => s,
    }
}

/// [`run`], telling `observe` what each request (by its index in the trace) got. Requests are
/// reported when their hits are known: in arrival order under `--hit-semantics any` and the
/// `trace` schedule, in finish order under the `vllm` schedule.
pub fn run_observed(
    prepared: &Prepared<'_>,
    config: &SimConfig,
    mut observe: impl FnMut(usize, RequestHits),
) -> SimResult<Row> {
    check(prepared, config)?;
    prepared.annotate_for(config);
    if config.engine.schedule == Schedule::Vllm && !config.pinning {
        return Err(SimError::Config(
            "--schedule vllm replays vLLM's scheduler, where running requests always hold their \
             blocks; drop --no-pinning (or use --schedule trace)"
                .into(),
        ));
    }
    let mut row = row_of_point(prepared, config);
    let mut tally = Tally {
        config,
        t0: prepared
            .trace
            .requests
            .first()
            .map(|r| r.timestamp)
            .unwrap_or(0.0),
        kv_bytes: config.model.as_ref().map(|m| m.kv_bytes_per_token()),
        windows: Vec::new(),
        requests_with_hits: 0,
        flops_total: 0.0,
        flops_saved: 0.0,
        bytes_cpu: 0,
        bytes_disk: 0,
        delays: AdmissionDelays::default(),
    };
    let started = Instant::now();
    if config.engine.lmcache_rules == LmcacheRules::Simulator {
        // LMCache's own lookup-log simulator's rules: the LMCache tier alone
        let reqs = &prepared.trace.requests;
        let totals = crate::lmcache_simulator::run(prepared, config, |i, h| {
            tally.record(&mut row, &reqs[i], 0, 0, &h);
            observe(i, h);
        })?;
        totals.report(&mut row);
        row.sim_seconds = started.elapsed().as_secs_f64();
        tally.finish(&mut row, true, false);
        return Ok(row);
    }
    match config.hit_semantics {
        sem if sem == HitSemantics::Any || !config.engine.rules => {
            replay_block_stream(prepared, config, sem, &mut row, &mut tally, &mut observe);
        }
        _ => replay_engine(prepared, config, &mut row, &mut tally, &mut observe)?,
    }
    row.sim_seconds = started.elapsed().as_secs_f64();
    tally.finish(&mut row, config.cpu.is_some(), config.disk.is_some());
    Ok(row)
}

/// A row with the point's parameters (policy, sizes, model) and no figures yet.
fn row_of_point(prepared: &Prepared<'_>, config: &SimConfig) -> Row {
    let bs = prepared.gpu.block_size as u64;
    let chunk = prepared.cpu.as_ref().map(|c| c.block_size as u64);
    let kv_bytes = config.model.as_ref().map(|m| m.kv_bytes_per_token());
    Row {
        policy: config.gpu.policy.name().to_string(),
        cpu_policy: config.cpu.as_ref().map(|c| c.policy.name().to_string()),
        hit_semantics: config.hit_semantics.to_string(),
        pinning: config.pinning,
        model: config.model.as_ref().map(|m| m.name.clone()),
        block_size: bs as u32,
        chunk_size: config.cpu.as_ref().and(chunk.map(|c| c as u32)),
        gpu_blocks: config.gpu.capacity,
        unbounded: config.gpu.policy.is_unbounded(),
        gpu_cache_gb: kv_bytes.map(|b| gib(config.gpu.capacity, bs, b)),
        cpu_chunks: config.cpu.as_ref().map(|c| c.capacity),
        cpu_cache_gb: config
            .cpu
            .as_ref()
            .zip(kv_bytes.zip(chunk))
            .map(|(c, (b, ch))| gib(c.capacity, ch, b)),
        disk_chunks: config.disk.as_ref().map(|c| c.capacity),
        ..Default::default()
    }
}

/// A classic cache over the block stream (`--hit-semantics any`: every cached block hits), or
/// the abstract prefix model (`--gpu-model abstract`: the leading run hits; blocks referenced
/// tail first). Requests in arrival order; LMCache serves each alone.
fn replay_block_stream(
    prepared: &Prepared<'_>,
    config: &SimConfig,
    sem: HitSemantics,
    row: &mut Row,
    tally: &mut Tally<'_>,
    observe: &mut impl FnMut(usize, RequestHits),
) {
    let trace = prepared.trace;
    let reqs = &trace.requests;
    let bs = prepared.gpu.block_size as u64;
    let oracle = if !config.gpu.policy.needs_oracle() {
        None
    } else if sem == HitSemantics::Any {
        prepared.gpu_next_flat.get().map(Vec::as_slice)
    } else {
        prepared.gpu_next_by_request.get().map(Vec::as_slice)
    };
    let describe = Describe {
        trace,
        kinds: prepared.kinds(),
        blocks: &prepared.gpu,
        oracle,
    };
    let cpu_oracle = prepared.cpu_next_by_request.get().map(Vec::as_slice);
    let mut lm = Lmcache::new(config, prepared, cpu_oracle);
    let mut gpu = GpuTier::new(build_tier(&config.gpu, config.gpu.capacity));
    for (i, r) in reqs.iter().enumerate() {
        gpu.finish_until(r.timestamp);
        let keys = prepared.gpu.request(i);
        let access = |k: u32, d: usize, t: u64| describe.access(i, k, d, t);
        let (hits, pinned) = if sem == HitSemantics::Prefix {
            gpu.serve_prefix(keys, config.pinning, access)
        } else {
            let mut hits = 0u64;
            let mut pinned: Vec<EntryId> = Vec::new();
            for (d, &k) in keys.iter().enumerate() {
                gpu.clock += 1;
                match gpu.cache.access(&access(k, d, gpu.clock), config.pinning) {
                    Outcome::Hit(e) => {
                        hits += 1;
                        pinned.push(e);
                    }
                    Outcome::Inserted(e) => pinned.push(e),
                    Outcome::Rejected => {}
                }
            }
            (hits, pinned)
        };
        let len = r.input_length as u64;
        let gpu_hit_tokens = (hits * bs).min(len.saturating_sub(1) / bs * bs);
        let (mut cpu_hit_tokens, mut disk_hit_tokens) = (0, 0);
        if let Some(lm) = lm.as_mut() {
            let budget = config.engine.max_num_batched_tokens as u64;
            lm.at(r.timestamp);
            (cpu_hit_tokens, disk_hit_tokens) = lm.serve_alone(i, len, gpu_hit_tokens, budget);
        }
        let h = RequestHits {
            gpu_hit_tokens,
            cpu_hit_tokens,
            disk_hit_tokens,
            admitted_s: r.timestamp,
            preemptions: 0,
            rejected: false,
        };
        tally.record(row, r, keys.len() as u64, hits, &h);
        observe(i, h);
        if config.pinning {
            gpu.hold(
                config.timing.finish_time(r, h.total()),
                i as u64,
                r.output_length,
                pinned,
            );
            row.max_pinned_blocks = row.max_pinned_blocks.max(gpu.pinned_now());
        }
    }
    row.gpu_evictions = gpu.cache.evictions;
    row.gpu_rejections = gpu.cache.rejections;
    row.eviction_judge = inferencelab_cache::EvictionPolicy::judge(&gpu.cache.policy);
    row.usable_gpu_blocks = config.gpu.capacity;
    if let Some(lm) = lm.as_mut() {
        lm.settle();
        lm.report(row);
    }
}

/// The engines' rules (DESIGN.md sections 3 and 4): vLLM's block pool over the prompt and
/// answer blocks, under the trace's own timing or vLLM's scheduler, with LMCache beside it.
fn replay_engine(
    prepared: &Prepared<'_>,
    config: &SimConfig,
    row: &mut Row,
    tally: &mut Tally<'_>,
    observe: &mut impl FnMut(usize, RequestHits),
) -> SimResult<()> {
    let trace = prepared.trace;
    let reqs = &trace.requests;
    let bs = prepared.gpu.block_size as u64;
    let answers = config.engine.answers;
    let seq = prepared.sequences(answers)?;
    let oracle = config
        .gpu
        .policy
        .needs_oracle()
        .then(|| {
            prepared.seq_next[answer_slot(answers)]
                .get()
                .map(Vec::as_slice)
        })
        .flatten();
    let describe = Describe {
        trace,
        kinds: prepared.kinds(),
        blocks: &seq.blocks,
        oracle,
    };
    let cpu_oracle = prepared.cpu_next_by_request.get().map(Vec::as_slice);
    let mut lm = Lmcache::new(config, prepared, cpu_oracle);
    // block 0 is vLLM's null block; 0 blocks: no GPU prefix cache
    let usable = if config.gpu.policy.is_unbounded() {
        u64::MAX
    } else {
        config.gpu.capacity.saturating_sub(1)
    };
    let schedule = effective_schedule(trace, config);
    let mut serve = |s: Served| {
        let r = &reqs[s.req];
        let refs = prepared.gpu.request(s.req).len() as u64;
        tally.record(row, r, refs, s.hits.gpu_hit_tokens / bs, &s.hits);
        observe(s.req, s.hits);
    };
    let totals = engine_run::run(
        schedule,
        config,
        seq,
        describe,
        lm.as_mut(),
        usable,
        &mut serve,
    );
    row.gpu_evictions = totals.evictions;
    row.eviction_judge = totals.judge;
    row.gpu_rejections = totals.rejections;
    row.preemptions = totals.preemptions;
    row.queued_requests = totals.queued;
    row.max_pinned_blocks = totals.max_in_use;
    row.usable_gpu_blocks = config.gpu.capacity.saturating_sub(1);
    row.schedule = Some(schedule.to_string());
    row.answer_blocks = Some(answers.to_string());
    row.answer_sources = Some(seq.sources);
    if let Some(lm) = &lm {
        lm.report(row);
    }
    Ok(())
}

/// GiB of `entries` of `unit_tokens` tokens (in `f64`: `--gpu-blocks 18446744073709551615`
/// must not overflow).
fn gib(entries: u64, unit_tokens: u64, bytes_per_token: u64) -> f64 {
    entries as f64 * unit_tokens as f64 * bytes_per_token as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferencelab_cache::PolicyConfig;
    use inferencelab_trace::{Content, Request};

    use crate::config::TierConfig;

    fn req(t: f64, input_length: u32, content: Content) -> Request {
        Request {
            id: format!("{t}"),
            timestamp: t,
            finish_time: None,
            conversation: None,
            turn: 0,
            input_length,
            output_length: 10,
            kind: None,
            content,
            output_tokens: None,
            output_times: None,
        }
    }

    fn id_trace(block_size: u32, reqs: Vec<(u32, Vec<u64>)>) -> Trace {
        Trace {
            requests: reqs
                .into_iter()
                .enumerate()
                .map(|(i, (len, ids))| req(i as f64, len, Content::HashIds(ids)))
                .collect(),
            block_size: Some(block_size),
            partial_last_block: true,
            ..Default::default()
        }
    }

    fn config(gpu_blocks: u64, cpu_chunks: Option<u64>, pinning: bool) -> SimConfig {
        SimConfig {
            cpu: cpu_chunks.map(|n| TierConfig {
                capacity: n,
                policy: PolicyConfig::Lru,
            }),
            pinning,
            ..SimConfig::gpu_only(gpu_blocks, PolicyConfig::Lru)
        }
    }

    #[test]
    fn only_the_leading_run_hits() {
        // request 0 caches [1,2,3]; request 1 = [9,2,3]: blocks 2 and 3 are cached but follow
        // a miss, so nothing hits; request 2 = [1,2,7]: two leading hits
        let t = id_trace(
            16,
            vec![
                (48, vec![1, 2, 3]),
                (48, vec![9, 2, 3]),
                (48, vec![1, 2, 7]),
            ],
        );
        let p = Prepared::new(&t, 16, None).unwrap();
        let r = run(&p, &config(100, None, false)).unwrap();
        assert_eq!(r.block_refs, 9);
        assert_eq!(r.gpu_hit_blocks, 2);
        assert_eq!(r.gpu_hit_tokens, 32);
        assert_eq!(r.request_hit_rate, 1.0 / 3.0);
    }

    #[test]
    fn at_most_n_minus_one_tokens_hit() {
        // the same 32-token prompt twice: both blocks are cached, but vLLM looks up at most
        // num_tokens - 1 tokens, so only floor(31/16) = 1 block (16 tokens) hits
        let t = id_trace(16, vec![(32, vec![1, 2]), (32, vec![1, 2])]);
        let p = Prepared::new(&t, 16, None).unwrap();
        let r = run(&p, &config(100, None, false)).unwrap();
        assert_eq!(r.gpu_hit_blocks, 1);
        assert_eq!(r.gpu_hit_tokens, 16);
        assert_eq!(r.token_hit_ratio, 16.0 / 64.0);
    }

    #[test]
    fn tokens_are_hashed_and_shared_prefixes_hit() {
        let sys: Vec<u32> = (0..40).collect();
        let a: Vec<u32> = sys.iter().copied().chain(100..120).collect();
        let b: Vec<u32> = sys.iter().copied().chain(200..230).collect();
        let t = Trace {
            requests: vec![
                req(0.0, a.len() as u32, Content::Tokens(a)),
                req(1.0, b.len() as u32, Content::Tokens(b)),
            ],
            ..Default::default()
        };
        let p = Prepared::new(&t, 16, None).unwrap();
        let r = run(&p, &config(100, None, false)).unwrap();
        // 40 shared tokens = 2 full shared blocks (the 3rd block differs)
        assert_eq!(r.gpu_hit_tokens, 32);
        assert_eq!(r.block_refs, 3 + 4);
    }

    #[test]
    fn lmcache_serves_what_the_gpu_evicted_and_need_to_load_is_the_difference() {
        // 6 GPU blocks = 5 usable (block 0 is the null block); chunks are 2 blocks (32 tokens);
        // the CPU holds plenty. r0 = [1,2,3,4] (64 tokens) fills both tiers; r1 = [5..9] needs
        // 5 blocks: the empty one, then r0's four (freed tail first, so 4, 3, 2, 1 go first).
        // r2 = [1,2,3,4,8]: the GPU has none of it, LMCache has chunks (1,2) and (3,4): 64
        // tokens to load.
        let t = id_trace(
            16,
            vec![
                (64, vec![1, 2, 3, 4]),
                (80, vec![5, 6, 7, 8, 9]),
                (80, vec![1, 2, 3, 4, 8]),
            ],
        );
        let p = Prepared::new(&t, 16, Some(32)).unwrap();
        let r = run(&p, &config(6, Some(100), false)).unwrap();
        assert_eq!(r.usable_gpu_blocks, 5);
        assert_eq!(r.gpu_hit_tokens, 0);
        assert_eq!(r.cpu_hit_tokens, 64);
        assert_eq!(r.cpu_hit_chunks, 2);
        assert_eq!(r.prefill_tokens_saved, 64);
    }

    #[test]
    fn full_prompt_hit_in_lmcache_still_recomputes_one_token() {
        let t = id_trace(16, vec![(64, vec![1, 2, 3, 4]), (64, vec![1, 2, 3, 4])]);
        let p = Prepared::new(&t, 16, Some(32)).unwrap();
        let r = run(&p, &config(0, Some(100), false)).unwrap();
        assert_eq!(r.cpu_hit_tokens, 63);
    }

    #[test]
    fn the_disk_tier_serves_what_the_cpu_tier_evicted() {
        // no GPU cache; chunks of 2 blocks; the CPU holds 1 chunk, the disk 10 (written
        // through). r0 = [1,2] stores chunk A; r1 = [3,4] stores C, evicting A from the CPU
        // (still on disk); r2 = [1,2,9]: the CPU run is empty, the disk run is A: 32 tokens
        // from disk.
        let t = id_trace(
            16,
            vec![(32, vec![1, 2]), (32, vec![3, 4]), (48, vec![1, 2, 9])],
        );
        let p = Prepared::new(&t, 16, Some(32)).unwrap();
        let mut c = config(0, Some(1), false);
        c.disk = Some(TierConfig {
            capacity: 10,
            policy: PolicyConfig::Lru,
        });
        let r = run(&p, &c).unwrap();
        assert_eq!(r.disk_hit_tokens, 32);
        assert_eq!(r.cpu_hit_tokens, 0);
        assert_eq!(r.prefill_tokens_saved, 32);
        // without the disk tier nothing hits
        c.disk = None;
        let r = run(&p, &c).unwrap();
        assert_eq!(r.prefill_tokens_saved, 0);
    }

    #[test]
    fn a_store_longer_than_the_cpu_tier_keeps_the_prompt_head() {
        // LMCache allocates a slot for every chunk before putting any and stops when nothing is
        // evictable: a 2-chunk prompt in a 1-chunk tier keeps its FIRST chunk, which the same
        // prompt then hits (the last chunk could never hit without the first)
        let t = id_trace(16, vec![(64, vec![1, 2, 3, 4]), (80, vec![1, 2, 3, 4, 9])]);
        let p = Prepared::new(&t, 16, Some(32)).unwrap();
        let r = run(&p, &config(0, Some(1), false)).unwrap();
        assert_eq!(r.cpu_hit_tokens, 32);
    }

    #[test]
    fn pinned_blocks_of_running_requests_are_not_evicted() {
        // 3 GPU blocks = 2 usable; r0 (2 blocks) runs until t=100; r1 arrives while r0 runs
        // and needs 2 other blocks: it waits (vLLM admits a request only when its whole prompt
        // fits) and is admitted at r0's finish, evicting r0's blocks. r2 arrives after both and
        // hits r1's first block (at most num_tokens - 1 tokens).
        let mut t = id_trace(
            16,
            vec![(32, vec![1, 2]), (32, vec![3, 4]), (32, vec![3, 4])],
        );
        t.requests[0].finish_time = Some(100.0);
        t.requests[1].finish_time = Some(100.5);
        t.requests[2].timestamp = 200.0;
        let p = Prepared::new(&t, 16, None).unwrap();
        let mut admitted = Vec::new();
        let mut c = config(3, None, true);
        c.engine.schedule = Schedule::Trace;
        let r = run_observed(&p, &c, |i, h| admitted.push((i, h.admitted_s))).unwrap();
        assert_eq!(admitted, vec![(0, 0.0), (1, 100.0), (2, 200.0)]);
        assert_eq!(r.queued_requests, 1);
        assert_eq!(r.gpu_rejections, 0);
        assert_eq!(r.gpu_hit_blocks, 1);
        assert_eq!(r.max_pinned_blocks, 2);
        // a prompt longer than the pool never runs
        c.gpu.capacity = 2;
        let r = run(&p, &c).unwrap();
        assert_eq!(r.gpu_rejections, 3);
    }

    #[test]
    fn any_semantics_counts_every_cached_block() {
        let t = id_trace(16, vec![(48, vec![1, 2, 3]), (48, vec![9, 2, 3])]);
        let p = Prepared::new(&t, 16, None).unwrap();
        let mut c = config(100, None, false);
        c.hit_semantics = HitSemantics::Any;
        let r = run(&p, &c).unwrap();
        assert_eq!(r.gpu_hit_blocks, 2);
        c.cpu = Some(TierConfig {
            capacity: 10,
            policy: PolicyConfig::Lru,
        });
        assert!(run(&p, &c)
            .unwrap_err()
            .to_string()
            .contains("--no-cpu-tier"));
    }

    #[test]
    fn a_far_off_timestamp_is_refused_not_allocated() {
        let mut trace = id_trace(16, (0..10).map(|i| (48, vec![1, 2, 3 + i])).collect());
        trace.requests.last_mut().unwrap().timestamp = 1e308;
        let prepared = Prepared::new(&trace, 16, None).unwrap();
        let mut c = config(100, None, true);
        let err = run(&prepared, &c).unwrap_err().to_string();
        assert!(err.contains("raise --window-seconds"), "{err}");
        c.window_seconds = 1e-300;
        trace.requests.last_mut().unwrap().timestamp = trace.requests[0].timestamp + 1.0;
        let prepared = Prepared::new(&trace, 16, None).unwrap();
        let err = run(&prepared, &c).unwrap_err().to_string();
        assert!(err.contains("more than the limit of 100000"), "{err}");
    }

    #[test]
    fn windows_partition_the_totals() {
        let t = id_trace(16, (0..10).map(|i| (48, vec![1, 2, 3 + i])).collect());
        let p = Prepared::new(&t, 16, None).unwrap();
        let mut c = config(100, None, false);
        c.window_seconds = 3.0;
        let r = run(&p, &c).unwrap();
        assert_eq!(r.windows.len(), 4);
        assert_eq!(r.windows.iter().map(|w| w.requests).sum::<u64>(), 10);
        assert_eq!(
            r.windows.iter().map(|w| w.gpu_hit_tokens).sum::<u64>(),
            r.gpu_hit_tokens
        );
    }
}
