//! The emulated engine: vLLM V1's scheduler over its block pool, with LMCache as its KV
//! connector, driven by a clock the caller passes in. The rules are `inferencelab_engine`'s, the
//! same ones `simulate --schedule vllm` replays (one truth: DESIGN.md sections 3 and 4):
//! admission when the whole prompt fits, chunked prefill under the token budget, blocks hashed
//! when scheduled, generated tokens cached (prompt + output - 1), preemption of the last running
//! request when a decode block cannot be had, the null block, LMCache's lookup at admission and
//! stores as prompt chunks are computed.
//!
//! This module adds what a server needs around them: request keys, the step's duration from the
//! time model ([`Timing`]), the tokens each step produces, the counters behind `/metrics`.
//!
//! Known deviations from vLLM: no EOS (a request generates exactly its output length, whose
//! token ids the caller gives at submission); the synchronous scheduler only (a real 0.33 server
//! defaults to the async one, which caches decode blocks one step later).

use inferencelab_cache::{Access, AnyPolicy, BlockCache, ObjId, PolicyConfig, NEVER};
use inferencelab_engine::lmcache::{Bound, ChunkSource, Connector, LmcacheTier as Storage};
use inferencelab_engine::lmcache_mp::{usage_ratio, MpCounters};
use inferencelab_engine::vllm::{Produced, Scheduler, SchedulerConfig, Sequences};
use inferencelab_engine::{KvPool, NoConnector};
pub use inferencelab_engine::{LmcacheMode, MpEviction};
use inferencelab_models::ModelSpec;
use inferencelab_trace::hash::{block_hash, chained_block_hashes, NONE_HASH};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

use crate::timing::Timing;

/// The engine's handle on a request (assigned by [`Engine::submit`], increasing).
pub type ReqKey = u64;

/// LMCache's local CPU backend.
#[derive(Debug, Clone, PartialEq)]
pub struct LmcacheTier {
    /// Tokens per chunk (LMCache `chunk_size`, default 256).
    pub chunk_size: u32,
    /// Capacity in chunks (from `max_local_cpu_size`).
    pub num_chunks: u64,
    /// LMCache `cache_policy` (default LRU).
    pub policy: PolicyConfig,
    /// In-process (`LMCacheConnectorV1`) or the multi-process server's L1 rules
    /// (`lmcache server` + `LMCacheMPConnector`, `inferencelab_engine::lmcache_mp`).
    pub mode: LmcacheMode,
}

/// The multi-process L1's figures behind `lmcache_mp_*` (what `lmcache server` shows on its
/// HTTP port).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MpMetrics {
    pub counters: MpCounters,
    /// `lmcache_mp_l1_usage_ratio`: chunks held over L1's unrounded size in chunks.
    pub l1_usage_ratio: f64,
}

/// Everything the engine needs to know at start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// vLLM `--block-size` (16).
    pub block_size: u32,
    /// vLLM `num_gpu_blocks`.
    pub num_gpu_blocks: u64,
    pub gpu_policy: PolicyConfig,
    /// `None`: no KV connector (plain vLLM).
    pub lmcache: Option<LmcacheTier>,
    /// vLLM `--max-num-batched-tokens` (8192).
    pub max_num_batched_tokens: u32,
    /// vLLM `--max-num-seqs` (256).
    pub max_num_seqs: u32,
    pub timing: Timing,
    pub model: ModelSpec,
}

impl EngineConfig {
    /// vLLM's defaults around a model and a GPU cache size.
    pub fn new(model: ModelSpec, timing: Timing, num_gpu_blocks: u64) -> Self {
        EngineConfig {
            block_size: inferencelab_engine::SchedulerConfig::default().block_size,
            num_gpu_blocks,
            gpu_policy: PolicyConfig::Lru,
            lmcache: None,
            max_num_batched_tokens: 8192,
            max_num_seqs: 256,
            timing,
            model,
        }
    }
}

/// A prompt with its block and chunk hashes computed once (callers can do it off the
/// scheduler's thread).
#[derive(Debug, Clone)]
pub struct Prompt {
    pub tokens: Vec<u32>,
    gpu_hashes: Vec<u64>,
    chunk_hashes: Vec<u64>,
}

impl Prompt {
    pub fn new(tokens: Vec<u32>, block_size: u32, chunk_size: Option<u32>) -> Self {
        let gpu_hashes = chained_block_hashes(&tokens, block_size as usize);
        let chunk_hashes = chunk_size
            .map(|c| chained_block_hashes(&tokens, c as usize))
            .unwrap_or_default();
        Prompt {
            tokens,
            gpu_hashes,
            chunk_hashes,
        }
    }

    /// A prompt hashed for `config`'s block and chunk sizes.
    pub fn for_config(tokens: Vec<u32>, config: &EngineConfig) -> Self {
        Prompt::new(
            tokens,
            config.block_size,
            config.lmcache.as_ref().map(|l| l.chunk_size),
        )
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Full GPU blocks of the prompt.
    pub fn num_blocks(&self) -> usize {
        self.gpu_hashes.len()
    }
}

/// Why a request cannot be served at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("max_tokens must be at least 1")]
    NoOutput,
    #[error(
        "this prompt needs {needed} KV-cache blocks ({tokens} tokens at block size {block_size}) \
         but the GPU cache has only {capacity}; raise --gpu-blocks/--gpu-cache-gb or shorten it"
    )]
    TooLong {
        tokens: usize,
        needed: usize,
        capacity: u64,
        block_size: u32,
    },
}

/// What LMCache did for one request at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmcacheLookup {
    /// Leading tokens LMCache holds, minus one when that is the whole prompt (LMCache's
    /// `num_external_hit_tokens`).
    pub hit_tokens: u64,
    /// `hit_tokens - gpu_hit_tokens`, as LMCache logs it (negative: the GPU already has more).
    pub need_to_load: i64,
    /// Full chunks of the prompt.
    pub chunks: u64,
    /// Chunks it newly put in the CPU in the step that admitted it (LMCache stores as the
    /// prefill computes them; a prompt chunked over several steps stores more later).
    pub new_chunks: u64,
}

/// One request admitted by a step: its cache outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub key: ReqKey,
    /// Admission order, from 0 (the simulator's request index on the server's log).
    pub index: u64,
    pub prompt_tokens: u64,
    /// vLLM's prefix-cache hit (`prefix_cache_hits` increment).
    pub gpu_hit_tokens: u64,
    /// Tokens loaded from LMCache: `max(0, need_to_load)`.
    pub loaded_tokens: u64,
    pub lmcache: Option<LmcacheLookup>,
}

impl Admission {
    /// vLLM's `num_cached_tokens` (the API's `prompt_tokens_details.cached_tokens`): local plus
    /// external hits.
    pub fn cached_tokens(&self) -> u64 {
        self.gpu_hit_tokens + self.loaded_tokens
    }
}

/// A token produced at the end of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEvent {
    pub key: ReqKey,
    /// 0 for the first output token.
    pub index: u32,
    /// The token id (the one given at submission).
    pub id: u32,
    /// This was the request's last token.
    pub finished: bool,
}

/// A request that finished in a step, with its timeline (engine microseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub key: ReqKey,
    pub prompt_tokens: u64,
    pub output_tokens: u32,
    pub cached_tokens: u64,
    pub arrival_us: u64,
    pub admitted_us: u64,
    pub first_token_us: u64,
    pub finish_us: u64,
    /// Times vLLM's scheduler preempted it.
    pub preemptions: u32,
}

/// What one step did. Admissions happen at `start_us`; tokens and finishes at `end_us`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    pub start_us: u64,
    pub end_us: u64,
    pub admitted: Vec<Admission>,
    pub tokens: Vec<TokenEvent>,
    pub finished: Vec<Finished>,
    /// Prompt tokens computed in this step (prefill chunks, excluding cached tokens).
    pub prefill_tokens: u64,
    pub decode_tokens: u64,
}

/// Cumulative counters behind vLLM's and LMCache's Prometheus metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `vllm:prompt_tokens` (every prompt token of an admitted request, as vLLM counts it).
    pub prompt_tokens: u64,
    /// `vllm:generation_tokens`.
    pub generation_tokens: u64,
    /// `vllm:prefix_cache_queries`: prompt tokens looked up.
    pub prefix_cache_queries: u64,
    /// `vllm:prefix_cache_hits`: GPU hit tokens.
    pub prefix_cache_hits: u64,
    /// `vllm:external_prefix_cache_queries`: `prompt - gpu_hit` per request with a connector.
    pub external_prefix_cache_queries: u64,
    /// `vllm:external_prefix_cache_hits`: tokens loaded from LMCache.
    pub external_prefix_cache_hits: u64,
    /// `vllm:request_success` (finish reason length).
    pub requests_finished: u64,
    /// LMCache `num_lookup_requests` / `num_retrieve_requests` / `num_store_requests`.
    pub lmcache_lookups: u64,
    pub lmcache_retrieves: u64,
    pub lmcache_stores: u64,
    /// LMCache `num_requested_tokens` (prompt tokens asked for) and `num_hit_tokens`.
    pub lmcache_requested_tokens: u64,
    pub lmcache_hit_tokens: u64,
    /// LMCache `num_stored_tokens` (tokens of chunks new to the store).
    pub lmcache_stored_tokens: u64,
}

/// A request the engine knows (waiting or running).
struct Entry {
    arrival_us: u64,
    prompt_len: u64,
    /// Full GPU blocks of prompt + output - 1 tokens, interned.
    seq_keys: Vec<ObjId>,
    /// Full LMCache chunks of the prompt, interned.
    chunk_keys: Vec<ObjId>,
    output: Vec<u32>,
    generated: u32,
    /// Admission order of the first admission, and when it happened.
    index: Option<u64>,
    admitted_us: u64,
    first_token_us: u64,
    cached_tokens: u64,
}

/// The engine's requests as the scheduler and the connector see them.
struct Book {
    entries: FxHashMap<usize, Entry>,
    /// The policies' time origin: the start of the first step with work (set by `step`
    /// before its `schedule()`, so the first admissions' references are timed from it).
    first_admission_us: Option<u64>,
    /// The start of the step being scheduled: the time of the references of requests admitted
    /// in it (their `admitted_us` is set once `schedule()` returns).
    step_us: u64,
}

impl Book {
    fn access(&self, req: usize, obj: ObjId, depth: usize, clock: u64) -> Access {
        let e = &self.entries[&req];
        let first = self.first_admission_us.unwrap_or(0);
        let at = if e.index.is_some() {
            e.admitted_us
        } else {
            self.step_us
        };
        Access {
            obj,
            time: clock,
            timestamp: at.saturating_sub(first) as f64 / 1e6,
            // the engine's request key: dense from 0 in submission order, known from arrival
            // (the learned policies' shadows index their runs by it)
            request: req as u32,
            conversation: u64::MAX,
            turn: 0,
            kind: u32::MAX,
            depth: depth as u32,
            next_use: NEVER,
        }
    }
}

impl Sequences for Book {
    fn keys(&self, req: usize) -> &[ObjId] {
        &self.entries[&req].seq_keys
    }
    fn access(&self, req: usize, obj: ObjId, depth: usize, clock: u64) -> Access {
        Book::access(self, req, obj, depth, clock)
    }
}

impl ChunkSource for Book {
    fn chunks(&self, req: usize) -> &[ObjId] {
        &self.entries[&req].chunk_keys
    }
    fn prompt_tokens(&self, req: usize) -> u64 {
        self.entries[&req].prompt_len
    }
    fn access(&self, req: usize, obj: ObjId, depth: usize, clock: u64) -> Access {
        Book::access(self, req, obj, depth, clock)
    }
}

/// The emulated engine.
pub struct Engine {
    config: EngineConfig,
    sched: Scheduler<AnyPolicy>,
    lm: Option<Connector<AnyPolicy>>,
    book: Book,
    gpu_ids: FxHashMap<u64, u32>,
    cpu_ids: FxHashMap<u64, u32>,
    now_us: u64,
    admitted: u64,
    next_key: ReqKey,
    counters: Counters,
    /// Submitted requests the scheduler has not seen yet, in arrival order: a request that
    /// arrives while a step runs joins the next `schedule()` after that step's end, as in vLLM
    /// (see [`Engine::step`]).
    arriving: VecDeque<(usize, u64, u32)>,
    /// LMCache's multi-process eviction loop ticks from the first step's start (see
    /// [`Engine::lmcache_clock`]).
    lm_origin_us: Option<u64>,
}

fn build_tier(capacity: u64, policy: &PolicyConfig) -> BlockCache<AnyPolicy> {
    let cap = if policy.is_unbounded() {
        u64::MAX
    } else {
        capacity
    };
    BlockCache::new(cap, policy.build(cap))
}

fn intern(ids: &mut FxHashMap<u64, u32>, h: u64) -> u32 {
    let next = ids.len() as u32;
    *ids.entry(h).or_insert(next)
}

/// The GPU pool of `num_gpu_blocks` (block 0 is vLLM's null block).
fn gpu_pool(config: &EngineConfig) -> KvPool<AnyPolicy> {
    KvPool::new(build_tier(
        config.num_gpu_blocks.saturating_sub(1),
        &config.gpu_policy,
    ))
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        assert!(config.block_size > 0, "block size must be positive");
        assert!(config.max_num_batched_tokens > 0 && config.max_num_seqs > 0);
        let mut sched = Scheduler::new(
            SchedulerConfig {
                block_size: config.block_size,
                max_num_batched_tokens: config.max_num_batched_tokens,
                max_num_seqs: config.max_num_seqs,
                ..Default::default()
            },
            gpu_pool(&config),
        );
        // LMCache's multi-process connector: blocks freed when the stores are reported done
        sched.delay_free_until_sent(
            config
                .lmcache
                .as_ref()
                .is_some_and(|l| matches!(l.mode, LmcacheMode::Mp(_))),
        );
        let lm = config.lmcache.as_ref().map(|l| {
            Connector::new(Storage::new(
                l.chunk_size,
                build_tier(l.num_chunks, &l.policy),
                None,
            ))
            .with_mode(l.mode)
        });
        Engine {
            config,
            sched,
            lm,
            book: Book {
                entries: FxHashMap::default(),
                first_admission_us: None,
                step_us: 0,
            },
            gpu_ids: FxHashMap::default(),
            cpu_ids: FxHashMap::default(),
            now_us: 0,
            admitted: 0,
            next_key: 0,
            counters: Counters::default(),
            arriving: VecDeque::new(),
            lm_origin_us: None,
        }
    }

    /// The connector's clock reached `us`: in multi-process mode LMCache's eviction loop runs the
    /// ticks due by then (`Connector::advance_to`, seconds since the first step's start, as
    /// `simulate` counts from the first arrival). While the engine idles no tick runs: the
    /// next step runs those due first, so `/metrics` read while idle shows L1 as the last step
    /// left it.
    /// The server idles: LMCache's multi-process eviction loop ticks until L1 is below its
    /// watermark (`Connector::settle`), as `simulate` ends a run.
    pub fn lmcache_settle(&mut self) {
        if let Some(c) = self.lm.as_mut() {
            c.settle();
        }
    }

    fn lmcache_clock(&mut self, us: u64) {
        if let Some(c) = self.lm.as_mut() {
            let origin = *self.lm_origin_us.get_or_insert(us);
            c.advance_to(us.saturating_sub(origin) as f64 / 1e6);
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The engine's clock: the end of the last step.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// The key the next [`submit`](Engine::submit) will return.
    pub fn next_key(&self) -> ReqKey {
        self.next_key
    }

    pub fn num_running(&self) -> usize {
        self.sched.num_running()
    }

    pub fn num_waiting(&self) -> usize {
        self.sched.num_waiting() + self.arriving.len()
    }

    pub fn is_idle(&self) -> bool {
        !self.sched.has_unfinished() && self.arriving.is_empty()
    }

    /// vLLM's `kv_cache_usage`: the fraction of GPU blocks held by running requests (cached but
    /// unreferenced blocks are free to reuse, so they do not count).
    pub fn kv_cache_usage(&self) -> f64 {
        if self.config.num_gpu_blocks == 0 {
            0.0
        } else {
            self.sched.blocks_in_use() as f64 / self.config.num_gpu_blocks as f64
        }
    }

    /// Blocks in the GPU cache (held or not).
    pub fn gpu_cached_blocks(&self) -> u64 {
        self.sched.pool.cache.len()
    }

    pub fn gpu_evictions(&self) -> u64 {
        self.sched.pool.cache.evictions
    }

    /// Whether the GPU cache holds the block of chained hash `hash` now (`--kv-events-config`
    /// diffs this step to step to publish vLLM's `BlockStored` / `BlockRemoved`).
    pub fn gpu_block_cached(&self, hash: u64) -> bool {
        self.gpu_ids
            .get(&hash)
            .is_some_and(|&id| self.sched.pool.cache.contains(id))
    }

    /// LMCache's CPU tier: chunks held and chunks evicted.
    pub fn cpu_chunks(&self) -> Option<(u64, u64)> {
        self.lm
            .as_ref()
            .map(|c| (c.tier.cpu.len(), c.tier.cpu.evictions))
    }

    /// The multi-process L1's counters and usage (None in-process or without LMCache).
    pub fn lmcache_mp(&self) -> Option<MpMetrics> {
        let c = self.lm.as_ref()?;
        let LmcacheMode::Mp(e) = c.mode else {
            return None;
        };
        Some(MpMetrics {
            counters: c.mp,
            l1_usage_ratio: usage_ratio(&c.tier.cpu, e.l1_size_chunks),
        })
    }

    /// vLLM's preemptions so far.
    pub fn preemptions(&self) -> u64 {
        self.sched.num_preemptions
    }

    /// Check that a request could ever run, without queueing it: its whole sequence (prompt +
    /// output - 1 tokens) must fit in the usable blocks.
    pub fn check(&self, prompt: &Prompt, max_tokens: u32) -> Result<(), SubmitError> {
        if prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if max_tokens == 0 {
            return Err(SubmitError::NoOutput);
        }
        let tokens = prompt.len() + max_tokens as usize - 1;
        let needed = tokens.div_ceil(self.config.block_size as usize);
        let usable = self.config.num_gpu_blocks.saturating_sub(1);
        if !self.config.gpu_policy.is_unbounded() && needed as u64 > usable {
            return Err(SubmitError::TooLong {
                tokens,
                needed,
                capacity: usable,
                block_size: self.config.block_size,
            });
        }
        Ok(())
    }

    /// Queue a request that arrived at `arrival_us`, with the token ids it will generate (its
    /// output length is theirs). It is admitted by a later [`step`](Engine::step).
    pub fn submit(
        &mut self,
        prompt: Prompt,
        output: Vec<u32>,
        arrival_us: u64,
    ) -> Result<ReqKey, SubmitError> {
        let max_tokens = output.len().min(u32::MAX as usize) as u32;
        self.check(&prompt, max_tokens)?;
        let key = self.next_key;
        self.next_key += 1;
        // answer blocks: the prompt's hashes extended by the output (prompt + output - 1 tokens)
        let bs = self.config.block_size as usize;
        let mut hashes = prompt.gpu_hashes.clone();
        let total = (prompt.len() + max_tokens as usize - 1) / bs;
        if total > hashes.len() {
            let tail: Vec<u32> = prompt.tokens[hashes.len() * bs..]
                .iter()
                .chain(&output[..max_tokens as usize - 1])
                .copied()
                .collect();
            let mut parent = hashes.last().copied().unwrap_or(NONE_HASH);
            for block in tail.chunks_exact(bs).take(total - hashes.len()) {
                parent = block_hash(parent, block);
                hashes.push(parent);
            }
        }
        let seq_keys = hashes
            .iter()
            .map(|&h| intern(&mut self.gpu_ids, h))
            .collect();
        let chunk_keys = prompt
            .chunk_hashes
            .iter()
            .map(|&h| intern(&mut self.cpu_ids, h))
            .collect();
        self.book.entries.insert(
            key as usize,
            Entry {
                arrival_us,
                prompt_len: prompt.len() as u64,
                seq_keys,
                chunk_keys,
                output,
                generated: 0,
                index: None,
                admitted_us: 0,
                first_token_us: 0,
                cached_tokens: 0,
            },
        );
        // in arrival order (the core submits in the order it hears of requests)
        let at = self
            .arriving
            .iter()
            .rposition(|&(_, a, _)| a <= arrival_us)
            .map_or(0, |i| i + 1);
        self.arriving
            .insert(at, (key as usize, arrival_us, max_tokens));
        Ok(key)
    }

    /// Hand the scheduler every request that arrived by `gate`.
    fn take_arrivals(&mut self, gate: u64) {
        while let Some(&(req, arrival, max_tokens)) = self.arriving.front() {
            if arrival > gate {
                break;
            }
            self.arriving.pop_front();
            let prompt_len = self.book.entries[&req].prompt_len;
            self.sched.add_request(req, prompt_len, max_tokens);
        }
    }

    /// When the next request that has not reached the scheduler arrived (emulated us).
    pub fn next_arrival_us(&self) -> Option<u64> {
        self.arriving.front().map(|&(_, a, _)| a)
    }

    /// Drop a request (the client went away). A running request releases its blocks now, tail
    /// first. Returns whether the request was known.
    pub fn abort(&mut self, key: ReqKey) -> bool {
        let req = key as usize;
        if let Some(i) = self.arriving.iter().position(|&(r, _, _)| r == req) {
            self.arriving.remove(i);
            self.book.entries.remove(&req);
            return true;
        }
        self.lmcache_clock(self.now_us);
        let known = match self.lm.as_mut() {
            Some(conn) => {
                let mut b = Bound {
                    conn,
                    src: &self.book,
                };
                self.sched.abort(req, &mut b, &self.book)
            }
            None => self.sched.abort(req, &mut NoConnector, &self.book),
        };
        if let Some(c) = self.lm.as_mut() {
            c.forget(req);
        }
        self.book.entries.remove(&req);
        known
    }

    /// vLLM's `reset_prefix_cache`: forget every cached GPU block. Refused (false) while any
    /// block is in use, as in vLLM.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.sched.blocks_in_use() > 0 || self.sched.pool.cache.reserved() > 0 {
            return false;
        }
        self.sched.pool = gpu_pool(&self.config);
        true
    }

    /// Run one scheduler step starting at `now_us` (or at the end of the previous step, if
    /// later). Returns `None` when there is nothing to run.
    pub fn step(&mut self, now_us: u64) -> Option<StepReport> {
        let start = now_us.max(self.now_us);
        // Requests join the scheduler at a step start. While requests run, that is those that
        // arrived by the end of the previous step: one that arrives after it (the core took a
        // moment to start this step) waits for the next, as a request that reaches vLLM's
        // engine core after `schedule()` does. This also makes the log's times tell the
        // schedule: a request is admitted at the end of the step in flight when it arrived.
        let gate = if self.sched.num_running() > 0 {
            self.now_us
        } else {
            start
        };
        self.take_arrivals(gate);
        if !self.sched.has_unfinished() {
            return None;
        }
        self.lmcache_clock(start);
        self.book.first_admission_us.get_or_insert(start);
        self.book.step_us = start;
        let mut plan = match self.lm.as_mut() {
            Some(conn) => {
                let mut b = Bound {
                    conn,
                    src: &self.book,
                };
                self.sched.schedule(&self.book, &mut b)
            }
            None => self.sched.schedule(&self.book, &mut NoConnector),
        };
        if plan.scheduled.is_empty() {
            return None;
        }
        let mut report = StepReport {
            start_us: start,
            ..Default::default()
        };

        // --- first admissions: their cache outcome
        let loaded = self.admit(&plan.admitted, start, &mut report);

        // --- the step's duration
        let t = &self.config.timing;
        let mut seconds = t.overhead_seconds() + t.load_seconds(loaded);
        let mut decoders = 0u64;
        let mut decode_context = 0u64;
        for s in &plan.scheduled {
            if s.decode {
                decoders += 1;
                decode_context += s.computed_before + s.tokens;
            } else {
                seconds += t.prefill_seconds(s.computed_before, s.computed_before + s.tokens);
                report.prefill_tokens += s.tokens;
            }
        }
        report.decode_tokens = decoders;
        seconds += t.decode_seconds(decoders, decode_context);
        let end = start + ((seconds * 1e6).round() as u64).max(1);
        report.end_us = end;

        // --- outputs at the end of the step
        let stored_before: Vec<(usize, u64)> = match self.lm.as_ref() {
            Some(c) => report
                .admitted
                .iter()
                .map(|a| {
                    let r = a.key as usize;
                    (r, c.state(r).map_or(0, |s| s.stored_chunks))
                })
                .collect(),
            None => Vec::new(),
        };
        let mut produced: Vec<Produced> = Vec::new();
        self.lmcache_clock(end);
        let finished = match self.lm.as_mut() {
            Some(conn) => {
                let mut b = Bound {
                    conn,
                    src: &self.book,
                };
                self.sched.update_with_tokens(&plan, &mut b, &mut produced)
            }
            None => self
                .sched
                .update_with_tokens(&plan, &mut NoConnector, &mut produced),
        };
        if let Some(c) = self.lm.as_ref() {
            for (a, (r, before)) in report.admitted.iter_mut().zip(stored_before) {
                if let (Some(l), Some(st)) = (a.lmcache.as_mut(), c.state(r)) {
                    l.new_chunks = st.stored_chunks - before;
                }
            }
            let lc = c.counters;
            let k = &mut self.counters;
            k.lmcache_lookups = lc.lookups;
            k.lmcache_requested_tokens = lc.requested_tokens;
            k.lmcache_hit_tokens = lc.hit_tokens;
            k.lmcache_retrieves = lc.retrieves;
            k.lmcache_stores = lc.stores;
            k.lmcache_stored_tokens = lc.stored_tokens;
        }
        for p in &produced {
            let e = self.book.entries.get_mut(&p.req).expect("known");
            if p.index == 0 {
                e.first_token_us = end;
            }
            e.generated = p.index + 1;
            report.tokens.push(TokenEvent {
                key: p.req as ReqKey,
                index: p.index,
                id: e.output[p.index as usize],
                finished: p.finished,
            });
        }
        self.counters.generation_tokens += produced.len() as u64;
        for f in finished {
            let e = self
                .book
                .entries
                .remove(&f.req)
                .expect("finished request is known");
            if let Some(c) = self.lm.as_mut() {
                c.forget(f.req);
            }
            report.finished.push(Finished {
                key: f.req as ReqKey,
                prompt_tokens: e.prompt_len,
                output_tokens: e.generated,
                cached_tokens: e.cached_tokens,
                arrival_us: e.arrival_us,
                admitted_us: e.admitted_us,
                first_token_us: e.first_token_us,
                finish_us: end,
                preemptions: f.num_preemptions,
            });
        }
        self.counters.requests_finished += report.finished.len() as u64;
        plan.scheduled.clear();
        self.now_us = end;
        Some(report)
    }

    /// Record the step's first admissions (a resumed preemption is not one): each request's
    /// index, GPU and LMCache hits, the counters, and its line in `report`. The tokens LMCache
    /// loads for them, which the step's duration pays for.
    fn admit(&mut self, admitted: &[usize], start: u64, report: &mut StepReport) -> u64 {
        let mut loaded = 0u64;
        for &req in admitted {
            let e = self
                .book
                .entries
                .get_mut(&req)
                .expect("admitted request is known");
            if e.index.is_some() {
                continue; // resumed after a preemption
            }
            let s = self
                .sched
                .running()
                .iter()
                .find(|r| r.req == req)
                .expect("admitted request runs");
            let gpu_hit_tokens = s.gpu_hit_tokens;
            let loaded_tokens = s.external_hit_tokens;
            e.index = Some(self.admitted);
            self.admitted += 1;
            e.admitted_us = start;
            e.cached_tokens = gpu_hit_tokens + loaded_tokens;
            let len = e.prompt_len;
            let lmcache = self
                .lm
                .as_ref()
                .and_then(|c| c.state(req))
                .map(|st| LmcacheLookup {
                    hit_tokens: st.hit_tokens,
                    need_to_load: st.hit_tokens as i64 - gpu_hit_tokens as i64,
                    chunks: e.chunk_keys.len() as u64,
                    new_chunks: 0,
                });
            if let Some(st) = self.lm.as_ref().and_then(|c| c.state(req)) {
                loaded += st.first.map_or(0, |f| f.loaded_tokens);
            }
            let c = &mut self.counters;
            c.prompt_tokens += len;
            c.prefix_cache_queries += len;
            c.prefix_cache_hits += gpu_hit_tokens;
            if lmcache.is_some() {
                c.external_prefix_cache_queries += len - gpu_hit_tokens;
                c.external_prefix_cache_hits += loaded_tokens;
            }
            report.admitted.push(Admission {
                key: req as ReqKey,
                index: e.index.expect("just set"),
                prompt_tokens: len,
                gpu_hit_tokens,
                loaded_tokens,
                lmcache,
            });
        }
        loaded
    }

    /// Check the engine's invariants (tests call it after every step).
    pub fn validate(&self) -> Result<(), String> {
        self.sched.validate()?;
        if let Some(c) = &self.lm {
            c.tier.cpu.validate()?;
        }
        let known = self.sched.num_running() + self.sched.num_waiting();
        if known != self.book.entries.len() {
            return Err(format!(
                "{known} requests scheduled, {} known",
                self.book.entries.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;

    use crate::timing::GpuProfile;
    use inferencelab_sim::{Prepared, SimConfig, TierConfig};
    use inferencelab_trace::rng::SplitMix64;
    use inferencelab_trace::{Content, Request, Trace};

    pub(crate) fn config(gpu_blocks: u64, lmcache: Option<(u32, u64)>) -> EngineConfig {
        let model = inferencelab_models::resolve("qwen-8b").unwrap();
        let timing = Timing::derive(&model, &GpuProfile::default(), None, None);
        let mut c = EngineConfig::new(model, timing, gpu_blocks);
        c.lmcache = lmcache.map(|(chunk_size, num_chunks)| LmcacheTier {
            chunk_size,
            num_chunks,
            policy: PolicyConfig::Lru,
            mode: LmcacheMode::InProcess,
        });
        c
    }

    /// One request of a scenario: arrival (µs), prompt, output tokens.
    pub(crate) struct Arrival {
        pub at_us: u64,
        pub tokens: Vec<u32>,
        pub max_tokens: u32,
    }

    /// What happened to one request, in admission order.
    #[derive(Debug, Clone)]
    pub(crate) struct Served {
        pub admission: Admission,
        pub tokens: Vec<u32>,
        pub output: Vec<u32>,
        pub arrival_us: u64,
        pub admitted_us: u64,
        pub finish_us: u64,
        pub output_tokens: u32,
        /// When each output token was sampled (the end of its step) and its place among the
        /// step's tokens (a log writes them in that order).
        pub token_us: Vec<(u64, u32)>,
        pub preemptions: u32,
    }

    /// A request's answer: distinct token ids (their blocks are cached but only a prompt that
    /// repeats them would hit).
    pub(crate) fn answer(n: u32) -> Vec<u32> {
        (0..n).map(|j| 900_000 + j).collect()
    }

    /// Drive the engine like the server does: submit what has arrived, step, repeat.
    pub(crate) fn drive(engine: &mut Engine, mut arrivals: Vec<Arrival>) -> Vec<Served> {
        arrivals.sort_by_key(|a| a.at_us);
        let mut pending: VecDeque<Arrival> = arrivals.into();
        let mut prompts: FxHashMap<ReqKey, (Vec<u32>, u64)> = FxHashMap::default();
        let mut served: Vec<Served> = Vec::new();
        let mut by_key: FxHashMap<ReqKey, usize> = FxHashMap::default();
        let mut now = 0u64;
        loop {
            while pending.front().is_some_and(|a| a.at_us <= now) {
                let a = pending.pop_front().unwrap();
                let p = Prompt::for_config(a.tokens.clone(), engine.config());
                let key = engine.submit(p, answer(a.max_tokens), a.at_us).unwrap();
                prompts.insert(key, (a.tokens, a.at_us));
            }
            match engine.step(now) {
                Some(r) => {
                    engine.validate().unwrap();
                    for a in &r.admitted {
                        by_key.insert(a.key, served.len());
                        served.push(Served {
                            admission: a.clone(),
                            tokens: prompts[&a.key].0.clone(),
                            output: Vec::new(),
                            arrival_us: prompts[&a.key].1,
                            admitted_us: r.start_us,
                            finish_us: 0,
                            output_tokens: 0,
                            token_us: Vec::new(),
                            preemptions: 0,
                        });
                    }
                    for (k, t) in r.tokens.iter().enumerate() {
                        served[by_key[&t.key]].token_us.push((r.end_us, k as u32));
                    }
                    for f in &r.finished {
                        let s = &mut served[by_key[&f.key]];
                        s.finish_us = f.finish_us;
                        s.output_tokens = f.output_tokens;
                        s.output = answer(f.output_tokens);
                        s.preemptions = f.preemptions;
                    }
                    now = r.end_us;
                }
                None => match pending.front() {
                    Some(a) => now = now.max(a.at_us),
                    None => break,
                },
            }
        }
        assert!(engine.is_idle());
        served
    }

    /// The simulator's view of the same run, as a server log with per-token lines gives it:
    /// requests at their arrival times with their output ids and the times their tokens were
    /// sampled, finishing when the engine finished them, same capacities and policies
    /// (`--schedule trace`).
    pub(crate) fn simulate(engine: &Engine, served: &[Served]) -> inferencelab_sim::ResultRow {
        let c = engine.config();
        let mut served: Vec<&Served> = served.iter().collect();
        served.sort_by_key(|s| (s.arrival_us, s.admission.key));
        let t0 = served.first().map_or(0, |s| s.arrival_us);
        let secs = |us: u64| (us - t0) as f64 / 1e6;
        let trace = Trace {
            requests: served
                .iter()
                .map(|s| Request {
                    id: s.admission.key.to_string(),
                    timestamp: secs(s.arrival_us),
                    finish_time: Some(secs(s.finish_us)),
                    conversation: None,
                    turn: 0,
                    input_length: s.tokens.len() as u32,
                    output_length: s.output_tokens,
                    kind: None,
                    content: Content::Tokens(s.tokens.clone()),
                    output_tokens: Some(s.output.clone()),
                    // a microsecond log gives a step's lines one instant
                    output_times: Some(s.token_us.iter().map(|&(t, _)| secs(t)).collect()),
                })
                .collect(),
            ..Default::default()
        };
        let chunk = c.lmcache.as_ref().map(|l| l.chunk_size);
        let prepared = Prepared::new(&trace, c.block_size, chunk).unwrap();
        let sim = SimConfig {
            cpu: c.lmcache.as_ref().map(|l| TierConfig {
                capacity: l.num_chunks,
                policy: l.policy.clone(),
            }),
            engine: {
                let mut m = inferencelab_sim::EngineModel {
                    schedule: inferencelab_sim::Schedule::Trace,
                    ..Default::default()
                };
                if let Some(LmcacheMode::Mp(e)) = c.lmcache.as_ref().map(|l| l.mode) {
                    m.lmcache_mode = inferencelab_sim::LmcacheMode::Mp;
                    m.mp_trigger_watermark = e.trigger_watermark;
                    m.mp_eviction_ratio = e.eviction_ratio;
                    m.mp_l1_size_chunks = e.l1_size_chunks;
                }
                m
            },
            ..SimConfig::gpu_only(c.num_gpu_blocks, c.gpu_policy.clone())
        };
        inferencelab_sim::run(&prepared, &sim).unwrap()
    }

    /// Engine and simulator agree on every hit and eviction count.
    pub(crate) fn assert_agrees(engine: &Engine, served: &[Served]) -> inferencelab_sim::ResultRow {
        let row = simulate(engine, served);
        let gpu: u64 = served.iter().map(|s| s.admission.gpu_hit_tokens).sum();
        let cpu: u64 = served.iter().map(|s| s.admission.loaded_tokens).sum();
        assert_eq!(row.gpu_hit_tokens, gpu, "GPU hit tokens");
        assert_eq!(row.cpu_hit_tokens, cpu, "LMCache hit tokens");
        assert_eq!(row.gpu_rejections, 0);
        assert_eq!(row.gpu_evictions, engine.gpu_evictions(), "GPU evictions");
        assert_eq!(
            row.cpu_evictions,
            engine.cpu_chunks().map_or(0, |c| c.1),
            "LMCache evictions"
        );
        assert_eq!(engine.counters().prefix_cache_hits, gpu);
        assert_eq!(engine.counters().external_prefix_cache_hits, cpu);
        row
    }

    /// Blocks of 16 tokens named by small integers: block `b` at any position is the same 16
    /// tokens (chained hashing makes the position matter, as in vLLM).
    fn blocks(ids: &[u32]) -> Vec<u32> {
        ids.iter()
            .flat_map(|&b| (0..16).map(move |i| b * 16 + i))
            .collect()
    }

    /// Requests one after the other: each arrives well after the previous one finished.
    fn sequential(prompts: Vec<Vec<u32>>) -> Vec<Arrival> {
        prompts
            .into_iter()
            .enumerate()
            .map(|(i, tokens)| Arrival {
                at_us: i as u64 * 10_000_000,
                tokens,
                max_tokens: 4,
            })
            .collect()
    }

    #[test]
    fn only_the_leading_run_hits() {
        // r0 caches A B C; r1 = X B C: its B and C hash differently (the chain carries X), no
        // hit; r2 = A B Y: two leading blocks hit
        let mut e = Engine::new(config(100, None));
        let s = drive(
            &mut e,
            sequential(vec![
                blocks(&[1, 2, 3]),
                blocks(&[9, 2, 3]),
                blocks(&[1, 2, 7]),
            ]),
        );
        let hits: Vec<u64> = s.iter().map(|s| s.admission.gpu_hit_tokens).collect();
        assert_eq!(hits, vec![0, 0, 32]);
        assert_agrees(&e, &s);
    }

    #[test]
    fn at_most_n_minus_one_tokens_hit() {
        // the same 32-token prompt twice: both blocks cached, floor(31/16)*16 = 16 tokens hit
        let mut e = Engine::new(config(100, None));
        let s = drive(&mut e, sequential(vec![blocks(&[1, 2]), blocks(&[1, 2])]));
        assert_eq!(s[1].admission.gpu_hit_tokens, 16);
        assert_eq!(s[1].admission.cached_tokens(), 16);
        assert_eq!(e.counters().prefix_cache_queries, 64);
        assert_agrees(&e, &s);
    }

    #[test]
    fn shared_prefixes_hit_and_partial_tails_are_never_cached() {
        let sys: Vec<u32> = (0..40).collect();
        let a: Vec<u32> = sys.iter().copied().chain(100..120).collect();
        let b: Vec<u32> = sys.iter().copied().chain(200..230).collect();
        let mut e = Engine::new(config(100, None));
        let s = drive(&mut e, sequential(vec![a, b]));
        // 40 shared tokens = 2 full shared blocks
        assert_eq!(s[1].admission.gpu_hit_tokens, 32);
        assert_eq!(e.gpu_cached_blocks(), 3 + 2);
        assert_agrees(&e, &s);
    }

    #[test]
    fn lmcache_serves_what_the_gpu_evicted_and_need_to_load_is_the_difference() {
        // 7 GPU blocks = 6 usable (the null block), chunks of 32 tokens, 4 output tokens.
        // r0 = 1 2 3 4 (+3 decode tokens: a 5th, unhashed block) fills both tiers; when it
        // finishes, 2 slots are empty and its blocks 4 3 2 1 are free, tail first. r1 = 5 6 7
        // (+3: 4 blocks) takes the 2 empty slots and evicts 4 and 3. r2 = 1 2 3 4 9: the GPU
        // still has 1 2 (32 tokens); LMCache has chunks (1 2) (3 4): 64 tokens, need to load 32.
        let mut e = Engine::new(config(7, Some((32, 100))));
        let s = drive(
            &mut e,
            sequential(vec![
                blocks(&[1, 2, 3, 4]),
                blocks(&[5, 6, 7]),
                blocks(&[1, 2, 3, 4, 9]),
            ]),
        );
        assert_eq!(s[2].admission.gpu_hit_tokens, 32);
        let lm = s[2].admission.lmcache.unwrap();
        assert_eq!((lm.hit_tokens, lm.need_to_load), (64, 32));
        assert_eq!(s[2].admission.cached_tokens(), 64);
        // r1 evicted 4 3; r2 (5 prompt blocks + a decode block, 2 of them hits) takes r1's
        // freed unhashed slot and evicts 7 6 5
        assert_eq!(e.gpu_evictions(), 2 + 3);
        assert_eq!(
            e.counters().external_prefix_cache_queries,
            64 + 48 + 80 - 32
        );
        assert_agrees(&e, &s);
    }

    #[test]
    fn full_prompt_hit_in_lmcache_still_recomputes_one_token_and_need_to_load_can_be_negative() {
        let mut e = Engine::new(config(100, Some((32, 100))));
        let s = drive(
            &mut e,
            sequential(vec![blocks(&[1, 2, 3, 4]), blocks(&[1, 2, 3, 4])]),
        );
        // GPU: floor(63/16)*16 = 48; LMCache: 64 - 1 = 63, so 15 tokens to load
        assert_eq!(s[1].admission.gpu_hit_tokens, 48);
        let lm = s[1].admission.lmcache.unwrap();
        assert_eq!((lm.hit_tokens, lm.need_to_load), (63, 15));
        // a GPU hit beyond LMCache's: 40 tokens = 2 GPU blocks hit (32), LMCache has 1 chunk (32)
        let mut e = Engine::new(config(100, Some((32, 100))));
        let long: Vec<u32> = blocks(&[1, 2, 3]);
        let s = drive(&mut e, sequential(vec![long.clone(), long[..40].to_vec()]));
        let lm = s[1].admission.lmcache.unwrap();
        assert_eq!(
            (
                s[1].admission.gpu_hit_tokens,
                lm.hit_tokens,
                lm.need_to_load
            ),
            (32, 32, 0)
        );
        assert_agrees(&e, &s);
    }

    #[test]
    fn requests_wait_while_the_gpu_cache_is_pinned_and_run_when_it_frees() {
        // 6 blocks = 5 usable: r0 (4 prompt blocks, a 5th for its decode token) runs; r1 (3
        // other blocks) arrives while r0 runs and must wait until r0 finishes (its whole prompt
        // must fit); then it takes the empty slot and evicts r0's blocks 4 and 3 (freed tail
        // first), and 2 for its own decode block
        let mut e = Engine::new(config(6, None));
        let s = drive(
            &mut e,
            vec![
                Arrival {
                    at_us: 0,
                    tokens: blocks(&[1, 2, 3, 4]),
                    max_tokens: 2,
                },
                Arrival {
                    at_us: 1000,
                    tokens: blocks(&[5, 6, 7]),
                    max_tokens: 2,
                },
            ],
        );
        assert!(s[1].admitted_us >= s[0].finish_us);
        assert_eq!(e.gpu_evictions(), 3);
        assert_agrees(&e, &s);
    }

    #[test]
    fn a_prompt_larger_than_the_gpu_cache_is_refused() {
        let mut e = Engine::new(config(2, None));
        let p = Prompt::for_config(blocks(&[1, 2, 3]), e.config());
        assert!(matches!(
            e.submit(p, answer(1), 0),
            Err(SubmitError::TooLong { .. })
        ));
        let p = Prompt::for_config(vec![], e.config());
        assert_eq!(e.submit(p, answer(1), 0), Err(SubmitError::EmptyPrompt));
    }

    #[test]
    fn continuous_batching_times_steps_and_orders_tokens() {
        let mut e = Engine::new(config(1000, None));
        let p = Prompt::for_config(blocks(&[1, 2]), e.config());
        let k = e.submit(p, answer(3), 0).unwrap();
        // step 1: prefill of 32 tokens -> first token at its end
        let r1 = e.step(0).unwrap();
        assert_eq!(r1.prefill_tokens, 32);
        assert_eq!(
            r1.tokens,
            vec![TokenEvent {
                key: k,
                index: 0,
                id: answer(3)[0],
                finished: false
            }]
        );
        // step 2 and 3: one decode token each; the last one finishes and unpins
        let r2 = e.step(r1.end_us).unwrap();
        assert_eq!(r2.decode_tokens, 1);
        let r3 = e.step(r2.end_us).unwrap();
        assert!(r3.tokens[0].finished);
        assert_eq!(r3.finished[0].output_tokens, 3);
        assert_eq!(e.kv_cache_usage(), 0.0);
        assert!(e.step(r3.end_us).is_none());
        // a decode step of a big batch takes longer than of a small one
        let t = &e.config().timing;
        assert!(t.decode_seconds(256, 256 * 2000) > t.decode_seconds(1, 2000));
    }

    #[test]
    fn chunked_prefill_respects_the_token_budget() {
        let mut c = config(1000, None);
        c.max_num_batched_tokens = 100;
        let mut e = Engine::new(c);
        let tokens: Vec<u32> = (0..250).collect();
        e.submit(Prompt::for_config(tokens, e.config()), answer(1), 0)
            .unwrap();
        let mut now = 0;
        let mut chunks = vec![];
        while let Some(r) = e.step(now) {
            chunks.push(r.prefill_tokens);
            now = r.end_us;
        }
        assert_eq!(chunks, vec![100, 100, 50]);
    }

    #[test]
    fn reset_prefix_cache_is_refused_while_blocks_are_in_use() {
        let mut e = Engine::new(config(100, None));
        e.submit(
            Prompt::for_config(blocks(&[1, 2]), e.config()),
            answer(5),
            0,
        )
        .unwrap();
        let r = e.step(0).unwrap();
        assert!(!e.reset_prefix_cache());
        let mut now = r.end_us;
        while let Some(r) = e.step(now) {
            now = r.end_us;
        }
        assert!(e.reset_prefix_cache());
        assert_eq!(e.gpu_cached_blocks(), 0);
    }

    #[test]
    fn abort_releases_the_blocks() {
        let mut e = Engine::new(config(100, None));
        let k = e
            .submit(
                Prompt::for_config(blocks(&[1, 2]), e.config()),
                answer(50),
                0,
            )
            .unwrap();
        e.step(0).unwrap();
        assert!(e.kv_cache_usage() > 0.0);
        assert!(e.abort(k));
        assert_eq!(e.kv_cache_usage(), 0.0);
        e.validate().unwrap();
        assert!(!e.abort(k));
    }

    /// Multi-turn conversations sharing a few system prompts, arriving concurrently.
    pub(crate) fn multi_turn(seed: u64, conversations: usize, turns: usize) -> Vec<Arrival> {
        // a SplitMix64 stream from `seed`
        let mut rng = SplitMix64::new(seed);
        let systems: Vec<Vec<u32>> = (0..3)
            .map(|s| (0..(100 + 60 * s)).map(|i| 1000 * (s + 1) + i).collect())
            .collect();
        let mut out = Vec::new();
        for c in 0..conversations {
            let mut history = systems[rng.below(3) as usize].clone();
            let mut t = rng.below(2_000_000);
            for turn in 0..turns {
                let user = 10 + rng.below(120) as usize;
                history.extend((0..user).map(|_| 50_000 + rng.below(50_000) as u32));
                let max_tokens = 1 + rng.below(40) as u32;
                out.push(Arrival {
                    at_us: t,
                    tokens: history.clone(),
                    max_tokens,
                });
                // the answer becomes part of the next turn's prompt
                history.extend((0..max_tokens).map(|i| 200_000 + (c * 100 + turn) as u32 * 64 + i));
                t += 200_000 + rng.below(1_500_000);
            }
        }
        out
    }

    #[test]
    fn concurrent_multi_turn_workloads_agree_with_the_simulator() {
        // small GPU caches force evictions and waiting; LMCache catches what the GPU evicts
        for seed in 0..6 {
            for (gpu, cpu) in [(60, Some((64, 40))), (200, Some((32, 100))), (120, None)] {
                let mut e = Engine::new(config(gpu, cpu));
                let s = drive(&mut e, multi_turn(seed, 12, 5));
                assert_eq!(s.len(), 60);
                let row = assert_agrees(&e, &s);
                assert!(row.gpu_hit_tokens > 0, "seed {seed}: no GPU hits at all");
                // each finished request reports its preemptions (`vllm:request_num_preemptions`)
                let preempted: u64 = s.iter().map(|s| s.preemptions as u64).sum();
                assert_eq!(preempted, e.preemptions(), "seed {seed}");
                assert_eq!(row.preemptions, e.preemptions(), "seed {seed}");
                if cpu.is_some() && gpu == 60 {
                    assert!(row.gpu_evictions > 0, "seed {seed}: the GPU never evicted");
                    assert!(row.cpu_hit_tokens > 0, "seed {seed}: LMCache never hit");
                }
            }
        }
    }

    /// `serve --lmcache-mode mp`: the emulator's L1 follows `lmcache server`'s rules (the
    /// engine crate's connector in mp mode), checked against `simulate --lmcache-mode mp` on
    /// the same run, after the server idled (the eviction loop settled): every figure on every
    /// seed. (Before LMCache's eviction loop ran on the clock, the emulator evicted after each
    /// store at a step's end and the simulator at the admission's stamp, and seeds 0 and 1
    /// parted by 1 and 17 lookup-hit chunks.)
    #[test]
    fn the_multi_process_l1_agrees_with_simulate_lmcache_mode_mp() {
        let mut evicted = 0;
        for seed in 0..6 {
            // 40 chunks of 64 tokens: evicting; the pass frees 20 % of the keys at 80 %
            let mut c = config(60, Some((64, 40)));
            c.lmcache.as_mut().unwrap().mode = LmcacheMode::Mp(MpEviction {
                trigger_watermark: 0.8,
                eviction_ratio: 0.2,
                l1_size_chunks: 40.0,
            });
            let mut e = Engine::new(c);
            let s = drive(&mut e, multi_turn(seed, 12, 5));
            e.lmcache_settle();
            let row = simulate(&e, &s);
            let mp = e.lmcache_mp().expect("mp figures");
            let sim = row.lmcache_mp.expect("simulate's mp figures");
            let gpu: u64 = s.iter().map(|s| s.admission.gpu_hit_tokens).sum();
            assert_eq!(row.gpu_hit_tokens, gpu, "seed {seed}: GPU hit tokens");
            let ours = [
                s.iter().map(|s| s.admission.loaded_tokens).sum::<u64>(),
                mp.counters.lookup_hit_tokens,
                mp.counters.l1_write_chunks,
                mp.counters.l1_read_chunks,
                e.cpu_chunks().map_or(0, |c| c.1),
            ];
            let theirs = [
                row.cpu_hit_tokens,
                sim.lookup_hit_tokens,
                sim.l1_write_chunks,
                sim.l1_read_chunks,
                row.cpu_evictions,
            ];
            // [LMCache hit tokens, lookup hit tokens, L1 writes, L1 reads, L1 evictions]
            assert_eq!(theirs, ours, "seed {seed}: simulate vs the emulator");
            assert_eq!(
                mp.counters.lookup_requested_tokens,
                sim.lookup_requested_tokens
            );
            assert!(mp.counters.lookup_hit_tokens > 0, "seed {seed}: no L1 hit");
            assert!(
                mp.l1_usage_ratio < 0.8,
                "seed {seed}: above the watermark at the end"
            );
            evicted += row.cpu_evictions;
        }
        assert!(evicted > 0, "no seed evicted from L1");
    }

    /// The smart policies serve too (they once asked for a 32 GiB buffer: the references of a
    /// request being admitted carried no request id, and the judge's shadows index runs by it),
    /// with requests waiting for blocks so that the waiting queue is read.
    #[test]
    fn the_smart_policies_serve_with_their_waiting_queue() {
        for policy in ["conversation_aware", "lightgbm"] {
            let mut c = config(80, Some((64, 30)));
            c.gpu_policy = policy.parse().unwrap();
            if policy == "lightgbm" {
                let model = concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../configs/lightgbm_default.txt"
                );
                c.gpu_policy = PolicyConfig::Lightgbm(
                    inferencelab_cache::policy::lightgbm::LightGbmConfig::load(model.as_ref())
                        .unwrap(),
                );
            }
            c.lmcache.as_mut().unwrap().policy = c.gpu_policy.clone();
            let mut e = Engine::new(c);
            let arrivals = multi_turn(7, 10, 4);
            let n = arrivals.len();
            let s = drive(&mut e, arrivals);
            assert_eq!(s.len(), n, "{policy}");
            assert!(
                s.iter().any(|r| r.admitted_us > r.arrival_us),
                "{policy}: nobody waited"
            );
            assert!(e.gpu_evictions() > 0, "{policy}");
        }
    }

    #[test]
    fn other_policies_agree_with_the_simulator_too() {
        for policy in ["fifo", "lfu", "mru", "arc", "s3fifo", "sieve", "ideal"] {
            let mut c = config(80, Some((64, 30)));
            c.gpu_policy = policy.parse().unwrap();
            c.lmcache.as_mut().unwrap().policy = policy.parse().unwrap();
            let mut e = Engine::new(c);
            let s = drive(&mut e, multi_turn(7, 10, 4));
            assert_agrees(&e, &s);
        }
    }
}
