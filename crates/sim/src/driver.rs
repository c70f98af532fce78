//! The replay driver: feeds a prepared trace through the vLLM GPU tier and LMCache's CPU (and
//! disk) tiers with the engines' rules (DESIGN.md sections 3 and 4) and collects the metrics.

use std::sync::OnceLock;
use std::time::Instant;

use inferencelab_cache::{Access, AnyPolicy, BlockCache, EntryId, Outcome, NEVER};
use inferencelab_trace::{BlockedTrace, Blocking, Trace};

use crate::config::{HitSemantics, SimConfig, TierConfig};
use crate::error::{SimError, SimResult};
use crate::gpu_tier::GpuTier;
use crate::result::{ratio, SimResult as Row, Window};

/// A trace cut into GPU blocks and LMCache chunks once, shared by every point of a grid.
pub struct Prepared<'t> {
    pub trace: &'t Trace,
    pub gpu: BlockedTrace,
    pub cpu: Option<BlockedTrace>,
    gpu_next_by_request: OnceLock<Vec<u64>>,
    gpu_next_flat: OnceLock<Vec<u64>>,
    cpu_next_by_request: OnceLock<Vec<u64>>,
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
            gpu_next_by_request: OnceLock::new(),
            gpu_next_flat: OnceLock::new(),
            cpu_next_by_request: OnceLock::new(),
        })
    }

    /// Compute the oracle annotations a point needs, ahead of timing it.
    pub fn annotate_for(&self, config: &SimConfig) {
        if config.gpu.policy.needs_oracle() {
            match config.hit_semantics {
                HitSemantics::Prefix => {
                    self.gpu_next_by_request
                        .get_or_init(|| self.gpu.next_use_by_request());
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

fn build_tier(t: &TierConfig) -> BlockCache<AnyPolicy> {
    let cap = if t.policy.is_unbounded() {
        u64::MAX
    } else {
        t.capacity
    };
    BlockCache::new(cap, t.policy.build(cap))
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
    if config.window_seconds.is_nan() || config.window_seconds <= 0.0 {
        return Err(SimError::Config("--window-seconds must be positive".into()));
    }
    Ok(())
}

/// What one request got from the caches, in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestHits {
    pub gpu_hit_tokens: u64,
    pub cpu_hit_tokens: u64,
    pub disk_hit_tokens: u64,
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

/// [`run`], telling `observe` what each request (by its index in the trace) got.
pub fn run_observed(
    prepared: &Prepared<'_>,
    config: &SimConfig,
    mut observe: impl FnMut(usize, RequestHits),
) -> SimResult<Row> {
    check(prepared, config)?;
    prepared.annotate_for(config);
    let trace = prepared.trace;
    let reqs = &trace.requests;
    let bs = prepared.gpu.block_size as u64;
    let chunk = prepared.cpu.as_ref().map(|c| c.block_size as u64);
    let kv_bytes = config.model.as_ref().map(|m| m.kv_bytes_per_token());

    let gpu_oracle: Option<&[u64]> = if config.gpu.policy.needs_oracle() {
        match config.hit_semantics {
            HitSemantics::Prefix => prepared.gpu_next_by_request.get().map(Vec::as_slice),
            HitSemantics::Any => prepared.gpu_next_flat.get().map(Vec::as_slice),
        }
    } else {
        None
    };
    let cpu_oracle = prepared.cpu_next_by_request.get().map(Vec::as_slice);

    let mut gpu = GpuTier::new(build_tier(&config.gpu));
    let mut cpu = config.cpu.as_ref().map(build_tier);
    let mut disk = config.disk.as_ref().map(build_tier);

    let mut row = Row {
        policy: config.gpu.policy.name().to_string(),
        cpu_policy: config.cpu.as_ref().map(|c| c.policy.name().to_string()),
        hit_semantics: config.hit_semantics.to_string(),
        pinning: config.pinning,
        model: config.model.as_ref().map(|m| m.name.clone()),
        block_size: bs as u32,
        chunk_size: config.cpu.as_ref().and(chunk.map(|c| c as u32)),
        gpu_blocks: config.gpu.capacity,
        unbounded: config.gpu.policy.is_unbounded(),
        gpu_cache_gb: kv_bytes.map(|b| gib(config.gpu.capacity * bs * b)),
        cpu_chunks: config.cpu.as_ref().map(|c| c.capacity),
        cpu_cache_gb: config
            .cpu
            .as_ref()
            .zip(kv_bytes.zip(chunk))
            .map(|(c, (b, ch))| gib(c.capacity * ch * b)),
        disk_chunks: config.disk.as_ref().map(|c| c.capacity),
        ..Default::default()
    };
    let t0 = reqs.first().map(|r| r.timestamp).unwrap_or(0.0);
    let mut windows: Vec<Window> = Vec::new();
    let mut cpu_clock = 0u64;
    let mut requests_with_hits = 0u64;
    let mut flops_total = 0.0f64;
    let mut flops_saved = 0.0f64;
    let mut bytes_cpu = 0u64;
    let mut bytes_disk = 0u64;

    let started = Instant::now();
    let kinds = prepared.trace.kind_ids();
    for (i, r) in reqs.iter().enumerate() {
        // finish (unpin) every request done by this arrival: chain tail first
        gpu.finish_until(r.timestamp);
        let keys = prepared.gpu.request(i);
        let offset = prepared.gpu.offsets[i];
        let len = r.input_length as u64;
        let cap_tokens = len.saturating_sub(1) / bs * bs;
        let conversation = r.conversation.unwrap_or(u64::MAX);
        let access = |obj: u32, depth: usize, time: u64, next_use: u64| Access {
            obj,
            time,
            timestamp: r.timestamp,
            request: i as u32,
            conversation,
            turn: r.turn,
            kind: kinds[i],
            depth: depth as u32,
            next_use,
        };
        let gpu_next = |pos: usize| gpu_oracle.map_or(NEVER, |o| o[offset + pos]);

        // --- GPU tier
        let (hit_blocks, pinned) = match config.hit_semantics {
            HitSemantics::Prefix => gpu.serve_prefix(keys, config.pinning, |k, d, time| {
                access(k, d, time, gpu_next(d))
            }),
            HitSemantics::Any => {
                let mut hits = 0u64;
                let mut pinned: Vec<EntryId> = Vec::new();
                for (d, &k) in keys.iter().enumerate() {
                    gpu.clock += 1;
                    let a = access(k, d, gpu.clock, gpu_next(d));
                    match gpu.cache.access(&a, config.pinning) {
                        Outcome::Hit(e) => {
                            hits += 1;
                            pinned.push(e);
                        }
                        Outcome::Inserted(e) => pinned.push(e),
                        Outcome::Rejected => {}
                    }
                }
                (hits, pinned)
            }
        };
        let gpu_hit_tokens = (hit_blocks * bs).min(cap_tokens);

        // --- LMCache tiers: leading run of chunks stored in CPU or disk
        let mut cpu_tokens = 0u64;
        let mut disk_tokens = 0u64;
        if let (Some(cpu), Some(chunks), Some(c)) = (cpu.as_mut(), prepared.cpu.as_ref(), chunk) {
            let ckeys = chunks.request(i);
            let coff = chunks.offsets[i];
            let in_cpu: Vec<bool> = ckeys
                .iter()
                .take_while(|&&k| cpu.contains(k) || disk.as_ref().is_some_and(|d| d.contains(k)))
                .map(|&k| cpu.contains(k))
                .collect();
            let lead_c = in_cpu.len() as u64;
            row.chunk_refs += ckeys.len() as u64;
            row.cpu_hit_chunks += lead_c;
            // the full prompt hitting means vLLM still recomputes the last token
            let lmcache_hit = (lead_c * c).min(len.saturating_sub(1));
            let total = gpu_hit_tokens.max(lmcache_hit);
            // attribute [gpu_hit_tokens, total) to the chunk that holds each token
            let mut pos = gpu_hit_tokens;
            while pos < total {
                let j = (pos / c) as usize;
                let end = ((j as u64 + 1) * c).min(total);
                if in_cpu[j] {
                    cpu_tokens += end - pos;
                } else {
                    disk_tokens += end - pos;
                }
                pos = end;
            }
            // LMCache retrieves and stores chunks in prefix order (head first)
            let cpu_next = |pos: usize| cpu_oracle.map_or(NEVER, |o| o[coff + pos]);
            for (d, &k) in ckeys.iter().enumerate() {
                cpu_clock += 1;
                let a = access(k, d, cpu_clock, cpu_next(d));
                cpu.access(&a, false);
                if let Some(disk) = disk.as_mut() {
                    disk.access(&a, false);
                }
            }
        }

        // --- metrics
        let hits = RequestHits {
            gpu_hit_tokens,
            cpu_hit_tokens: cpu_tokens,
            disk_hit_tokens: disk_tokens,
        };
        observe(i, hits);
        let saved = hits.total();
        row.requests += 1;
        row.prompt_tokens += len;
        row.block_refs += keys.len() as u64;
        row.gpu_hit_blocks += hit_blocks;
        row.gpu_hit_tokens += gpu_hit_tokens;
        row.cpu_hit_tokens += cpu_tokens;
        row.disk_hit_tokens += disk_tokens;
        if saved > 0 {
            requests_with_hits += 1;
        }
        if let Some(b) = kv_bytes {
            bytes_cpu += cpu_tokens * b;
            bytes_disk += disk_tokens * b;
        }
        if let Some(m) = &config.model {
            flops_total += m.prefill_flops(len);
            flops_saved += m.prefill_flops(saved);
        }
        let w = ((r.timestamp - t0) / config.window_seconds).max(0.0) as usize;
        if windows.len() <= w {
            let start = windows.len();
            windows.extend((start..=w).map(|k| Window {
                start: k as f64 * config.window_seconds,
                ..Default::default()
            }));
        }
        let win = &mut windows[w];
        win.requests += 1;
        win.prompt_tokens += len;
        win.block_refs += keys.len() as u64;
        win.gpu_hit_blocks += hit_blocks;
        win.gpu_hit_tokens += gpu_hit_tokens;
        win.cpu_hit_tokens += cpu_tokens;
        win.disk_hit_tokens += disk_tokens;

        if config.pinning {
            gpu.hold(config.timing.finish_time(r, saved), i as u64, pinned);
            row.max_pinned_blocks = row.max_pinned_blocks.max(gpu.pinned_now());
        }
    }
    row.sim_seconds = started.elapsed().as_secs_f64();

    for w in &mut windows {
        w.token_hit_ratio = ratio(
            w.gpu_hit_tokens + w.cpu_hit_tokens + w.disk_hit_tokens,
            w.prompt_tokens,
        );
    }
    row.windows = windows;
    row.block_hit_ratio = ratio(row.gpu_hit_blocks, row.block_refs);
    row.token_hit_ratio = ratio(row.gpu_hit_tokens, row.prompt_tokens);
    row.cpu_token_hit_ratio = ratio(row.cpu_hit_tokens, row.prompt_tokens);
    row.disk_token_hit_ratio = ratio(row.disk_hit_tokens, row.prompt_tokens);
    row.prefill_tokens_saved = row.gpu_hit_tokens + row.cpu_hit_tokens + row.disk_hit_tokens;
    row.total_token_hit_ratio = ratio(row.prefill_tokens_saved, row.prompt_tokens);
    row.request_hit_rate = ratio(requests_with_hits, row.requests);
    if kv_bytes.is_some() && cpu.is_some() {
        row.bytes_loaded_from_cpu = Some(bytes_cpu);
        row.bytes_loaded_from_disk = disk.as_ref().map(|_| bytes_disk);
    }
    if config.model.is_some() {
        row.prefill_flops_total = Some(flops_total);
        row.prefill_flops_saved = Some(flops_saved);
        row.compute_saved_ratio = Some(if flops_total > 0.0 {
            flops_saved / flops_total
        } else {
            0.0
        });
    }
    row.gpu_evictions = gpu.cache.evictions;
    row.gpu_rejections = gpu.cache.rejections;
    row.cpu_evictions = cpu.as_ref().map_or(0, |c| c.evictions);
    row.disk_evictions = disk.as_ref().map_or(0, |c| c.evictions);
    row.block_refs_per_second = if row.sim_seconds > 0.0 {
        row.block_refs as f64 / row.sim_seconds
    } else {
        0.0
    };
    debug_assert!(gpu.cache.validate().is_ok());
    Ok(row)
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferencelab_cache::PolicyConfig;
    use inferencelab_trace::{Content, Request};

    use crate::config::TimingModel;

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
            gpu: TierConfig {
                capacity: gpu_blocks,
                policy: PolicyConfig::Lru,
            },
            cpu: cpu_chunks.map(|n| TierConfig {
                capacity: n,
                policy: PolicyConfig::Lru,
            }),
            disk: None,
            hit_semantics: HitSemantics::Prefix,
            pinning,
            timing: TimingModel::default(),
            window_seconds: 60.0,
            model: None,
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
        // the same 32-token prompt twice: both blocks are cached, but vLLM recomputes the last
        // token, so only floor(31/16)*16 = 16 tokens count
        let t = id_trace(16, vec![(32, vec![1, 2]), (32, vec![1, 2])]);
        let p = Prepared::new(&t, 16, None).unwrap();
        let r = run(&p, &config(100, None, false)).unwrap();
        assert_eq!(r.gpu_hit_blocks, 2);
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
        // GPU holds 2 blocks; chunks are 2 blocks (32 tokens); CPU holds plenty.
        // r0 = [1,2,3,4] (64 tokens) fills both tiers; r1 = [5,6] evicts 1,2... from the GPU
        // (LRU keeps only 2 blocks); r2 = [1,2,3,4,8]: GPU has nothing of it, LMCache has
        // chunks (1,2) and (3,4) -> lmcache hit 64 tokens, need to load 64.
        let t = id_trace(
            16,
            vec![
                (64, vec![1, 2, 3, 4]),
                (32, vec![5, 6]),
                (80, vec![1, 2, 3, 4, 8]),
            ],
        );
        let p = Prepared::new(&t, 16, Some(32)).unwrap();
        let r = run(&p, &config(2, Some(100), false)).unwrap();
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
        // chunks of 2 blocks; CPU holds 1 chunk, disk holds 10 (write-through).
        // r0 = [1,2,3,4]: stores chunks A=(1,2) and B=(3,4); the CPU keeps only B.
        // r1 = [1,2,3,4,9] with no GPU cache: A is on disk only, B in CPU and disk:
        // 32 tokens from disk, 32 from the CPU.
        let t = id_trace(16, vec![(64, vec![1, 2, 3, 4]), (80, vec![1, 2, 3, 4, 9])]);
        let p = Prepared::new(&t, 16, Some(32)).unwrap();
        let mut c = config(0, Some(1), false);
        c.disk = Some(TierConfig {
            capacity: 10,
            policy: PolicyConfig::Lru,
        });
        let r = run(&p, &c).unwrap();
        assert_eq!(r.disk_hit_tokens, 32);
        assert_eq!(r.cpu_hit_tokens, 32);
        assert_eq!(r.prefill_tokens_saved, 64);
        // without the disk tier only what the CPU holds counts, and it is not a leading run
        c.disk = None;
        let r = run(&p, &c).unwrap();
        assert_eq!(r.prefill_tokens_saved, 0);
    }

    #[test]
    fn pinned_blocks_of_running_requests_are_not_evicted() {
        // capacity 2; r0 (2 blocks) runs for a long time; r1 arrives while r0 runs and needs 2
        // other blocks: both admissions are refused (every block pinned). r2 arrives after r0
        // finished and hits r0's blocks.
        let mut t = id_trace(
            16,
            vec![(32, vec![1, 2]), (32, vec![3, 4]), (32, vec![1, 2])],
        );
        t.requests[0].finish_time = Some(100.0);
        t.requests[1].finish_time = Some(100.5);
        t.requests[2].timestamp = 200.0;
        let p = Prepared::new(&t, 16, None).unwrap();
        let r = run(&p, &config(2, None, true)).unwrap();
        assert_eq!(r.gpu_rejections, 2);
        assert_eq!(r.gpu_hit_blocks, 2);
        assert_eq!(r.max_pinned_blocks, 2);
        // without pinning r1 evicts r0's blocks
        let r = run(&p, &config(2, None, false)).unwrap();
        assert_eq!(r.gpu_rejections, 0);
        assert_eq!(r.gpu_hit_blocks, 0);
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
