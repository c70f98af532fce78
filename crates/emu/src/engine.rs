//! The emulated engine: vLLM V1's scheduler and GPU prefix cache plus LMCache's CPU tier, as one
//! synchronous, deterministic state machine driven by a clock the caller passes in.
//!
//! Cache semantics are exactly `inferencelab_sim::driver`'s (DESIGN.md sections 3 and 4; one
//! truth: the same `BlockCache` and policies):
//! - GPU tier: chained hashes of full `block_size` blocks of prompt tokens; a request hits the
//!   leading run of cached blocks, at most `floor((n-1)/B)*B` tokens. The hit blocks are pinned
//!   head first, then the remaining blocks are referenced (inserted or refreshed) tail first and
//!   pinned; a finished request unpins its blocks tail first (vLLM's reverse-order free).
//! - LMCache tier: chained hashes of full `chunk_size` chunks; the leading stored chunks hit,
//!   `need to load = min(lmcache_hit, n-1) - gpu_hit` (negative: nothing to load), and every full
//!   chunk of every prompt is then stored (referenced head first).
//! - Both happen when the scheduler admits the request, in admission order.
//!
//! Scheduling follows vLLM V1's `Scheduler.schedule` in outline: a token budget per step
//! (`max_num_batched_tokens`); running requests first (one decode token each, or the next chunk
//! of their prefill: chunked prefill), then waiting requests first come first served while the
//! budget lasts, fewer than `max_num_seqs` run and the GPU cache can pin their blocks (a request
//! that does not fit waits, and so does everything behind it). A request that completes its
//! prefill in a step produces its first token at the end of that step; every later step produces
//! one more. A finished request releases its blocks at the end of its last step, before the next
//! step admits anyone (vLLM frees in `update_from_output`, then schedules).
//!
//! Known deviations from vLLM: only prompt blocks are cached (decode tokens' blocks are neither
//! hashed nor counted against the capacity, as in the simulator); no preemption (a request is
//! admitted only when all its prompt blocks can be pinned, so running requests never run out of
//! blocks); no EOS: a request generates exactly its output length.

use std::collections::VecDeque;

use inferencelab_cache::{Access, AnyPolicy, BlockCache, EntryId, Outcome, PolicyConfig, NEVER};
use inferencelab_sim::ModelSpec;
use inferencelab_trace::hash::chained_block_hashes;
use rustc_hash::FxHashMap;

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
            block_size: inferencelab_sim::plan::VLLM_DEFAULT_BLOCK,
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
    /// Full chunks of the prompt (all stored after the lookup).
    pub chunks: u64,
    /// Chunks that were new to the store.
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

struct Waiting {
    key: ReqKey,
    arrival_us: u64,
    prompt: Prompt,
    max_tokens: u32,
}

struct Running {
    key: ReqKey,
    arrival_us: u64,
    admitted_us: u64,
    prompt_len: u64,
    /// Tokens whose KV exists (cached, loaded or computed).
    computed: u64,
    max_tokens: u32,
    generated: u32,
    first_token_us: u64,
    cached_tokens: u64,
    /// GPU entries pinned, head first.
    pinned: Vec<EntryId>,
}

/// The emulated engine.
pub struct Engine {
    config: EngineConfig,
    gpu: BlockCache<AnyPolicy>,
    gpu_ids: FxHashMap<u64, u32>,
    /// Mirror of the GPU cache's pin counts (entry id -> count), so admission can tell how many
    /// blocks are free to evict without scanning.
    gpu_pins: Vec<u32>,
    pinned_blocks: u64,
    cpu: Option<BlockCache<AnyPolicy>>,
    cpu_ids: FxHashMap<u64, u32>,
    gpu_clock: u64,
    cpu_clock: u64,
    waiting: VecDeque<Waiting>,
    running: Vec<Running>,
    now_us: u64,
    first_admission_us: Option<u64>,
    admitted: u64,
    next_key: ReqKey,
    counters: Counters,
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

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        assert!(config.block_size > 0, "block size must be positive");
        assert!(config.max_num_batched_tokens > 0 && config.max_num_seqs > 0);
        let gpu = build_tier(config.num_gpu_blocks, &config.gpu_policy);
        let cpu = config
            .lmcache
            .as_ref()
            .map(|l| build_tier(l.num_chunks, &l.policy));
        Engine {
            config,
            gpu,
            gpu_ids: FxHashMap::default(),
            gpu_pins: Vec::new(),
            pinned_blocks: 0,
            cpu,
            cpu_ids: FxHashMap::default(),
            gpu_clock: 0,
            cpu_clock: 0,
            waiting: VecDeque::new(),
            running: Vec::new(),
            now_us: 0,
            first_admission_us: None,
            admitted: 0,
            next_key: 0,
            counters: Counters::default(),
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

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// vLLM's `kv_cache_usage`: the fraction of GPU blocks held by running requests (cached but
    /// unreferenced blocks are free to reuse, so they do not count).
    pub fn kv_cache_usage(&self) -> f64 {
        if self.config.num_gpu_blocks == 0 {
            0.0
        } else {
            self.pinned_blocks as f64 / self.config.num_gpu_blocks as f64
        }
    }

    /// Blocks in the GPU cache (pinned or not).
    pub fn gpu_cached_blocks(&self) -> u64 {
        self.gpu.len()
    }

    pub fn gpu_evictions(&self) -> u64 {
        self.gpu.evictions
    }

    /// LMCache's CPU tier: chunks held and chunks evicted.
    pub fn cpu_chunks(&self) -> Option<(u64, u64)> {
        self.cpu.as_ref().map(|c| (c.len(), c.evictions))
    }

    /// Check that a request could ever run, without queueing it.
    pub fn check(&self, prompt: &Prompt, max_tokens: u32) -> Result<(), SubmitError> {
        if prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if max_tokens == 0 {
            return Err(SubmitError::NoOutput);
        }
        if !self.config.gpu_policy.is_unbounded()
            && prompt.num_blocks() as u64 > self.config.num_gpu_blocks
        {
            return Err(SubmitError::TooLong {
                tokens: prompt.len(),
                needed: prompt.num_blocks(),
                capacity: self.config.num_gpu_blocks,
                block_size: self.config.block_size,
            });
        }
        Ok(())
    }

    /// Queue a request that arrived at `arrival_us`. It is admitted by a later [`step`].
    ///
    /// [`step`]: Engine::step
    pub fn submit(
        &mut self,
        prompt: Prompt,
        max_tokens: u32,
        arrival_us: u64,
    ) -> Result<ReqKey, SubmitError> {
        self.check(&prompt, max_tokens)?;
        let key = self.next_key;
        self.next_key += 1;
        self.waiting.push_back(Waiting {
            key,
            arrival_us,
            prompt,
            max_tokens,
        });
        Ok(key)
    }

    /// Drop a request (the client went away). A running request releases its blocks now, tail
    /// first. Returns whether the request was known.
    pub fn abort(&mut self, key: ReqKey) -> bool {
        if let Some(i) = self.waiting.iter().position(|w| w.key == key) {
            self.waiting.remove(i);
            return true;
        }
        if let Some(i) = self.running.iter().position(|r| r.key == key) {
            let r = self.running.remove(i);
            self.release(&r.pinned);
            return true;
        }
        false
    }

    /// vLLM's `reset_prefix_cache`: forget every cached GPU block. Refused (false) while any
    /// block is in use, as in vLLM.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.pinned_blocks > 0 {
            return false;
        }
        self.gpu = build_tier(self.config.num_gpu_blocks, &self.config.gpu_policy);
        self.gpu_pins.clear();
        true
    }

    fn release(&mut self, pinned: &[EntryId]) {
        for &e in pinned.iter().rev() {
            self.gpu.unpin(e, self.gpu_clock);
            let p = &mut self.gpu_pins[e as usize];
            *p -= 1;
            if *p == 0 {
                self.pinned_blocks -= 1;
            }
        }
    }

    fn pin_mirror(&mut self, e: EntryId) {
        let i = e as usize;
        if self.gpu_pins.len() <= i {
            self.gpu_pins.resize(i + 1, 0);
        }
        if self.gpu_pins[i] == 0 {
            self.pinned_blocks += 1;
        }
        self.gpu_pins[i] += 1;
    }

    fn gpu_id(&self, h: u64) -> Option<u32> {
        self.gpu_ids.get(&h).copied()
    }

    /// Leading cached blocks of `prompt` and whether its blocks can all be pinned now.
    fn fits(&self, prompt: &Prompt) -> (usize, bool) {
        let lead = prompt
            .gpu_hashes
            .iter()
            .take_while(|&&h| self.gpu_id(h).is_some_and(|id| self.gpu.contains(id)))
            .count();
        if self.config.gpu_policy.is_unbounded() {
            return (lead, true);
        }
        // Leading blocks nobody pins yet become pinned; every other block needs a slot of its
        // own. A block after the first miss is never pinned by another request (a pinned block's
        // whole chain is pinned and cached, so it would be in the leading run).
        let newly_pinned_lead = prompt.gpu_hashes[..lead]
            .iter()
            .filter(|&&h| {
                let e = self
                    .gpu
                    .lookup(self.gpu_ids[&h])
                    .expect("leading block is cached");
                self.gpu_pins.get(e as usize).copied().unwrap_or(0) == 0
            })
            .count() as u64;
        let rest = (prompt.num_blocks() - lead) as u64;
        (
            lead,
            self.pinned_blocks + newly_pinned_lead + rest <= self.config.num_gpu_blocks,
        )
    }

    /// Admit a request: the simulator driver's per-request cache work, in its order.
    fn admit(&mut self, w: Waiting, lead: usize, now_us: u64) -> (Admission, Running) {
        let index = self.admitted;
        self.admitted += 1;
        let first = *self.first_admission_us.get_or_insert(now_us);
        let timestamp = (now_us - first) as f64 / 1e6;
        let bs = self.config.block_size as u64;
        let len = w.prompt.len() as u64;
        let cap_tokens = len.saturating_sub(1) / bs * bs;
        let access = |obj: u32, depth: usize, time: u64| Access {
            obj,
            time,
            timestamp,
            request: index as u32,
            conversation: u64::MAX,
            turn: 0,
            kind: u32::MAX,
            depth: depth as u32,
            next_use: NEVER,
        };

        // --- GPU tier: pin the leading hits head first, then the rest tail first
        let keys: Vec<u32> = w
            .prompt
            .gpu_hashes
            .iter()
            .map(|&h| intern(&mut self.gpu_ids, h))
            .collect();
        let mut pinned: Vec<EntryId> = Vec::with_capacity(keys.len());
        for (d, &k) in keys[..lead].iter().enumerate() {
            self.gpu_clock += 1;
            match self.gpu.access(&access(k, d, self.gpu_clock), true) {
                Outcome::Hit(e) => pinned.push(e),
                other => unreachable!("leading block {d} was cached, got {other:?}"),
            }
        }
        let mut rest: Vec<EntryId> = Vec::with_capacity(keys.len() - lead);
        for d in (lead..keys.len()).rev() {
            self.gpu_clock += 1;
            match self.gpu.access(&access(keys[d], d, self.gpu_clock), true) {
                Outcome::Hit(e) | Outcome::Inserted(e) => rest.push(e),
                Outcome::Rejected => unreachable!("admission checked that the blocks fit"),
            }
        }
        pinned.extend(rest.into_iter().rev());
        for &e in &pinned {
            self.pin_mirror(e);
        }
        let gpu_hit_tokens = (lead as u64 * bs).min(cap_tokens);

        // --- LMCache: leading stored chunks, then store every full chunk head first
        let mut loaded_tokens = 0;
        let lmcache = match (self.cpu.as_mut(), self.config.lmcache.as_ref()) {
            (Some(cpu), Some(tier)) => {
                let ckeys: Vec<u32> = w
                    .prompt
                    .chunk_hashes
                    .iter()
                    .map(|&h| intern(&mut self.cpu_ids, h))
                    .collect();
                let lead_c = ckeys.iter().take_while(|&&k| cpu.contains(k)).count() as u64;
                let mut hit_tokens = lead_c * tier.chunk_size as u64;
                if hit_tokens >= len {
                    hit_tokens = len - 1;
                }
                let need_to_load = hit_tokens as i64 - gpu_hit_tokens as i64;
                loaded_tokens = need_to_load.max(0) as u64;
                let mut new_chunks = 0;
                for (d, &k) in ckeys.iter().enumerate() {
                    self.cpu_clock += 1;
                    if let Outcome::Inserted(_) = cpu.access(&access(k, d, self.cpu_clock), false) {
                        new_chunks += 1;
                    }
                }
                let c = &mut self.counters;
                c.lmcache_lookups += 1;
                c.lmcache_requested_tokens += len;
                c.lmcache_hit_tokens += hit_tokens;
                if loaded_tokens > 0 {
                    c.lmcache_retrieves += 1;
                }
                if !ckeys.is_empty() {
                    c.lmcache_stores += 1;
                }
                c.lmcache_stored_tokens += new_chunks * tier.chunk_size as u64;
                c.external_prefix_cache_queries += len - gpu_hit_tokens;
                c.external_prefix_cache_hits += loaded_tokens;
                Some(LmcacheLookup {
                    hit_tokens,
                    need_to_load,
                    chunks: ckeys.len() as u64,
                    new_chunks,
                })
            }
            _ => None,
        };

        let c = &mut self.counters;
        c.prompt_tokens += len;
        c.prefix_cache_queries += len;
        c.prefix_cache_hits += gpu_hit_tokens;
        let computed = gpu_hit_tokens + loaded_tokens;
        (
            Admission {
                key: w.key,
                index,
                prompt_tokens: len,
                gpu_hit_tokens,
                loaded_tokens,
                lmcache,
            },
            Running {
                key: w.key,
                arrival_us: w.arrival_us,
                admitted_us: now_us,
                prompt_len: len,
                computed,
                max_tokens: w.max_tokens,
                generated: 0,
                first_token_us: 0,
                cached_tokens: computed,
                pinned,
            },
        )
    }

    /// Run one scheduler step starting at `now_us` (or at the end of the previous step, if
    /// later). Returns `None` when there is nothing to run.
    pub fn step(&mut self, now_us: u64) -> Option<StepReport> {
        let start = now_us.max(self.now_us);
        let t = &self.config.timing;
        let mut budget = self.config.max_num_batched_tokens as u64;
        let mut report = StepReport {
            start_us: start,
            ..Default::default()
        };
        let mut seconds = 0.0f64;
        // scheduled tokens per running request, aligned with `self.running`
        let mut scheduled: Vec<u64> = Vec::with_capacity(self.running.len());
        let mut decoders = 0u64;
        let mut decode_context = 0u64;
        for r in &self.running {
            let n = if budget == 0 {
                0
            } else if r.computed < r.prompt_len {
                let n = (r.prompt_len - r.computed).min(budget);
                seconds += t.prefill_seconds(r.computed, r.computed + n);
                report.prefill_tokens += n;
                n
            } else {
                decoders += 1;
                decode_context += r.prompt_len + r.generated as u64;
                1
            };
            budget -= n;
            scheduled.push(n);
        }
        let mut loaded = 0u64;
        while budget > 0 && self.running.len() < self.config.max_num_seqs as usize {
            let Some(w) = self.waiting.front() else { break };
            let (lead, fits) = self.fits(&w.prompt);
            if !fits {
                break;
            }
            let w = self.waiting.pop_front().expect("front exists");
            let (admission, r) = self.admit(w, lead, start);
            let n = (r.prompt_len - r.computed).min(budget);
            seconds += self
                .config
                .timing
                .prefill_seconds(r.computed, r.computed + n);
            report.prefill_tokens += n;
            loaded += admission.loaded_tokens;
            budget -= n;
            scheduled.push(n);
            report.admitted.push(admission);
            self.running.push(r);
        }
        let t = &self.config.timing;
        if scheduled.iter().all(|&n| n == 0) {
            return None;
        }
        report.decode_tokens = decoders;
        seconds += t.overhead_seconds()
            + t.decode_seconds(decoders, decode_context)
            + t.load_seconds(loaded);
        let end = start + ((seconds * 1e6).round() as u64).max(1);
        report.end_us = end;

        // --- outputs at the end of the step
        let mut done: Vec<usize> = Vec::new();
        for (i, (r, &n)) in self.running.iter_mut().zip(&scheduled).enumerate() {
            if n == 0 {
                continue;
            }
            let produces = if r.computed < r.prompt_len {
                r.computed += n;
                r.computed == r.prompt_len
            } else {
                true
            };
            if !produces {
                continue;
            }
            if r.generated == 0 {
                r.first_token_us = end;
            }
            let index = r.generated;
            r.generated += 1;
            let finished = r.generated >= r.max_tokens;
            report.tokens.push(TokenEvent {
                key: r.key,
                index,
                finished,
            });
            if finished {
                done.push(i);
            }
        }
        self.counters.generation_tokens += report.tokens.len() as u64;
        // finished requests release their blocks in admission order, each tail first
        for &i in &done {
            let r = &self.running[i];
            report.finished.push(Finished {
                key: r.key,
                prompt_tokens: r.prompt_len,
                output_tokens: r.generated,
                cached_tokens: r.cached_tokens,
                arrival_us: r.arrival_us,
                admitted_us: r.admitted_us,
                first_token_us: r.first_token_us,
                finish_us: end,
            });
            let pinned = std::mem::take(&mut self.running[i].pinned);
            self.release(&pinned);
        }
        self.counters.requests_finished += done.len() as u64;
        for &i in done.iter().rev() {
            self.running.remove(i);
        }
        self.now_us = end;
        Some(report)
    }

    /// Check the engine's invariants (tests call it after every step).
    pub fn validate(&self) -> Result<(), String> {
        self.gpu.validate()?;
        if let Some(c) = &self.cpu {
            c.validate()?;
        }
        let pinned: u64 = self.running.iter().map(|r| r.pinned.len() as u64).sum();
        let mirror: u64 = self.gpu_pins.iter().map(|&p| p as u64).sum();
        if pinned != mirror {
            return Err(format!(
                "running requests pin {pinned} blocks, mirror says {mirror}"
            ));
        }
        let distinct = self.gpu_pins.iter().filter(|&&p| p > 0).count() as u64;
        if distinct != self.pinned_blocks {
            return Err(format!(
                "{distinct} distinct pinned blocks, counter says {}",
                self.pinned_blocks
            ));
        }
        if !self.config.gpu_policy.is_unbounded() && self.pinned_blocks > self.config.num_gpu_blocks
        {
            return Err("more blocks pinned than the GPU holds".into());
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::timing::GpuProfile;
    use inferencelab_sim::{HitSemantics, Prepared, SimConfig, TierConfig, TimingModel};
    use inferencelab_trace::{Content, Request, Trace};

    pub(crate) fn config(gpu_blocks: u64, lmcache: Option<(u32, u64)>) -> EngineConfig {
        let model = inferencelab_sim::models::resolve("qwen-8b").unwrap();
        let timing = Timing::derive(&model, &GpuProfile::default(), None, None);
        let mut c = EngineConfig::new(model, timing, gpu_blocks);
        c.lmcache = lmcache.map(|(chunk_size, num_chunks)| LmcacheTier {
            chunk_size,
            num_chunks,
            policy: PolicyConfig::Lru,
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
        pub admitted_us: u64,
        pub finish_us: u64,
        pub output_tokens: u32,
    }

    /// Drive the engine like the server does: submit what has arrived, step, repeat.
    pub(crate) fn drive(engine: &mut Engine, mut arrivals: Vec<Arrival>) -> Vec<Served> {
        arrivals.sort_by_key(|a| a.at_us);
        let mut pending: VecDeque<Arrival> = arrivals.into();
        let mut prompts: FxHashMap<ReqKey, Vec<u32>> = FxHashMap::default();
        let mut served: Vec<Served> = Vec::new();
        let mut by_key: FxHashMap<ReqKey, usize> = FxHashMap::default();
        let mut now = 0u64;
        loop {
            while pending.front().is_some_and(|a| a.at_us <= now) {
                let a = pending.pop_front().unwrap();
                let p = Prompt::for_config(a.tokens.clone(), engine.config());
                let key = engine.submit(p, a.max_tokens, a.at_us).unwrap();
                prompts.insert(key, a.tokens);
            }
            match engine.step(now) {
                Some(r) => {
                    engine.validate().unwrap();
                    for a in &r.admitted {
                        by_key.insert(a.key, served.len());
                        served.push(Served {
                            admission: a.clone(),
                            tokens: prompts[&a.key].clone(),
                            admitted_us: r.start_us,
                            finish_us: 0,
                            output_tokens: 0,
                        });
                    }
                    for f in &r.finished {
                        let s = &mut served[by_key[&f.key]];
                        s.finish_us = f.finish_us;
                        s.output_tokens = f.output_tokens;
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

    /// The simulator's view of the same run: requests at their admission times, finishing when
    /// the engine finished them, same capacities and policies, pinning on.
    pub(crate) fn simulate(engine: &Engine, served: &[Served]) -> inferencelab_sim::ResultRow {
        let c = engine.config();
        let t0 = served.first().map_or(0, |s| s.admitted_us);
        let secs = |us: u64| (us - t0) as f64 / 1e6;
        let trace = Trace {
            requests: served
                .iter()
                .map(|s| Request {
                    id: s.admission.key.to_string(),
                    timestamp: secs(s.admitted_us),
                    finish_time: Some(secs(s.finish_us)),
                    conversation: None,
                    turn: 0,
                    input_length: s.tokens.len() as u32,
                    output_length: s.output_tokens,
                    kind: None,
                    content: Content::Tokens(s.tokens.clone()),
                    output_tokens: None,
                })
                .collect(),
            ..Default::default()
        };
        let chunk = c.lmcache.as_ref().map(|l| l.chunk_size);
        let prepared = Prepared::new(&trace, c.block_size, chunk).unwrap();
        let sim = SimConfig {
            gpu: TierConfig {
                capacity: c.num_gpu_blocks,
                policy: c.gpu_policy.clone(),
            },
            cpu: c.lmcache.as_ref().map(|l| TierConfig {
                capacity: l.num_chunks,
                policy: l.policy.clone(),
            }),
            disk: None,
            hit_semantics: HitSemantics::Prefix,
            pinning: true,
            timing: TimingModel::default(),
            window_seconds: 60.0,
            model: None,
            engine: Default::default(),
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
        // GPU 5 blocks, chunks of 32 tokens. r0 = 1 2 3 4 fills both tiers; r1 = 5 6 7 8 needs 4
        // slots: the free one plus r0's 4, 3, 2 (freed tail first, so evicted first). r2 =
        // 1 2 3 4 9: the GPU still has block 1 (16 tokens); LMCache has chunks (1 2) (3 4): 64
        // tokens, need to load 64 - 16 = 48.
        let mut e = Engine::new(config(5, Some((32, 100))));
        let s = drive(
            &mut e,
            sequential(vec![
                blocks(&[1, 2, 3, 4]),
                blocks(&[5, 6, 7, 8]),
                blocks(&[1, 2, 3, 4, 9]),
            ]),
        );
        assert_eq!(s[2].admission.gpu_hit_tokens, 16);
        let lm = s[2].admission.lmcache.unwrap();
        assert_eq!((lm.hit_tokens, lm.need_to_load), (64, 48));
        assert_eq!(s[2].admission.cached_tokens(), 64);
        assert_eq!(
            e.counters().external_prefix_cache_queries,
            64 + 64 + 80 - 16
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
        // capacity 4: r0 (4 blocks) runs long; r1 (3 other blocks) arrives while r0 runs and
        // must wait until r0 finishes; then it evicts r0's blocks, tail first
        let mut e = Engine::new(config(4, None));
        let s = drive(
            &mut e,
            vec![
                Arrival {
                    at_us: 0,
                    tokens: blocks(&[1, 2, 3, 4]),
                    max_tokens: 50,
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
            e.submit(p, 1, 0),
            Err(SubmitError::TooLong { .. })
        ));
        let p = Prompt::for_config(vec![], e.config());
        assert_eq!(e.submit(p, 1, 0), Err(SubmitError::EmptyPrompt));
    }

    #[test]
    fn continuous_batching_times_steps_and_orders_tokens() {
        let mut e = Engine::new(config(1000, None));
        let p = Prompt::for_config(blocks(&[1, 2]), e.config());
        let k = e.submit(p, 3, 0).unwrap();
        // step 1: prefill of 32 tokens -> first token at its end
        let r1 = e.step(0).unwrap();
        assert_eq!(r1.prefill_tokens, 32);
        assert_eq!(
            r1.tokens,
            vec![TokenEvent {
                key: k,
                index: 0,
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
        e.submit(Prompt::for_config(tokens, e.config()), 1, 0)
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
        e.submit(Prompt::for_config(blocks(&[1, 2]), e.config()), 5, 0)
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
            .submit(Prompt::for_config(blocks(&[1, 2]), e.config()), 50, 0)
            .unwrap();
        e.step(0).unwrap();
        assert!(e.kv_cache_usage() > 0.0);
        assert!(e.abort(k));
        assert_eq!(e.kv_cache_usage(), 0.0);
        e.validate().unwrap();
        assert!(!e.abort(k));
    }

    /// SplitMix64, for seeded random workloads.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Multi-turn conversations sharing a few system prompts, arriving concurrently.
    pub(crate) fn multi_turn(seed: u64, conversations: usize, turns: usize) -> Vec<Arrival> {
        let mut rng = Rng(seed);
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
                if cpu.is_some() && gpu == 60 {
                    assert!(row.gpu_evictions > 0, "seed {seed}: the GPU never evicted");
                    assert!(row.cpu_hit_tokens > 0, "seed {seed}: LMCache never hit");
                }
            }
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
