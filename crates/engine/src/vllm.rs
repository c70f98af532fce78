//! vLLM V1's scheduler (`vllm/v1/core/sched/scheduler.py`, 0.33, synchronous, FCFS) over its
//! KV cache manager (`kv_cache_manager.py::allocate_slots`), one step at a time. It knows no
//! clock: the caller adds requests as they arrive, calls [`Scheduler::schedule`], decides how
//! long the step takes, then calls [`Scheduler::update`].
//!
//! What it follows, with vLLM's names:
//! - `schedule`: running requests first, in order, each its remaining tokens up to the token
//!   budget (`max_num_batched_tokens`); when `allocate_slots` fails the *last* running request
//!   is preempted (blocks freed, `num_computed_tokens = 0`, back to the front of the waiting
//!   queue) until it fits or the request itself was preempted. Then, only if nobody was
//!   preempted, waiting requests FCFS while the budget lasts and fewer than `max_num_seqs` run:
//!   prefix lookup (leading cached blocks, at most `num_tokens - 1` tokens), the connector's
//!   external hit beyond it, chunked prefill to the budget, and `allocate_slots` with
//!   `full_sequence_must_fit` (`scheduler_reserve_full_isl`, default on: the whole sequence must
//!   fit, counting hit blocks that sit in the free queue); the first request that does not fit
//!   stops the loop.
//! - `allocate_slots`: touch the hit blocks, allocate blocks up to `computed + new` tokens, then
//!   `cache_blocks` up to `min(computed + new, num_tokens)`: blocks are hashed when scheduled, so
//!   a request admitted later in the same step already hits them. Generated tokens extend the
//!   sequence (`append_output_token_ids`), so answer blocks are cached too; the last sampled
//!   token is never computed.
//! - `update_from_output`: a request whose computed tokens reach `num_tokens` samples one token;
//!   at `max_tokens` it finishes and frees its blocks (reverse order).
//! - `num_cached_tokens` (the API's `cached_tokens`) is set at the first admission; a
//!   preempted request's later lookups are counted apart (`preempted_*` in `PrefixCacheStats`).
//!
//! Not modelled: the async scheduler (it caches decode blocks one step later), priorities,
//! speculative decoding, encoder inputs, the watermark (0 by default), `long_prefill_token_threshold`
//! (0 by default).

use std::collections::VecDeque;

use inferencelab_cache::{Access, EvictionPolicy, ObjId};

use crate::pool::{KvPool, Slot};

/// vLLM's scheduler and cache settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    /// `--block-size`.
    pub block_size: u32,
    /// `--max-num-batched-tokens`: token budget per step.
    pub max_num_batched_tokens: u32,
    /// `--max-num-seqs`.
    pub max_num_seqs: u32,
    /// `--enable-chunked-prefill` (on by default in V1).
    pub enable_chunked_prefill: bool,
    /// `scheduler_reserve_full_isl` (on by default in 0.33).
    pub reserve_full_isl: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            block_size: 16,
            max_num_batched_tokens: 8192,
            max_num_seqs: 256,
            enable_chunked_prefill: true,
            reserve_full_isl: true,
        }
    }
}

/// What vLLM asks a KV connector (LMCache) around its own cache.
pub trait KvConnector {
    /// At a lookup (first admission, or after a preemption): tokens beyond the local hit the
    /// connector can load (`get_num_new_matched_tokens`).
    fn matched(&mut self, req: usize, num_tokens: u64, local_hit_tokens: u64) -> u64;
    /// The request was admitted with these local and external hits (`update_state_after_alloc`;
    /// the load happens in this step).
    fn admitted(&mut self, req: usize, local_hit_tokens: u64, external_tokens: u64);
    /// After a step's forward pass: the request's computed tokens went from `before` to `after`
    /// (stores happen here). Called only while `before` is short of the prompt: LMCache stores
    /// prompt chunks only, so decode steps need no call.
    fn computed(&mut self, req: usize, before: u64, after: u64);
    /// The request was preempted or finished.
    fn released(&mut self, _req: usize) {}
}

/// No connector: plain vLLM.
pub struct NoConnector;

impl KvConnector for NoConnector {
    fn matched(&mut self, _: usize, _: u64, _: u64) -> u64 {
        0
    }
    fn admitted(&mut self, _: usize, _: u64, _: u64) {}
    fn computed(&mut self, _: usize, _: u64, _: u64) {}
}

/// One request as the scheduler tracks it.
#[derive(Debug, Clone)]
pub struct SeqState {
    /// The caller's request index.
    pub req: usize,
    pub prompt_tokens: u64,
    pub max_tokens: u32,
    /// Output tokens sampled so far.
    pub generated: u32,
    pub num_computed_tokens: u64,
    pub slots: Vec<Slot>,
    /// `num_cached_tokens`, set at the first admission.
    pub num_cached_tokens: Option<u64>,
    /// Local (GPU) hit tokens at the first admission.
    pub gpu_hit_tokens: u64,
    /// Connector hit tokens at the first admission.
    pub external_hit_tokens: u64,
    pub num_preemptions: u32,
    /// Its leading blocks the pool was told it wants while it waits (`KvPool::want`).
    pub wanted: usize,
}

impl SeqState {
    pub fn num_tokens(&self) -> u64 {
        self.prompt_tokens + self.generated as u64
    }
}

/// One request's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    pub req: usize,
    pub tokens: u64,
    /// A decode step (prompt done and at least one token sampled), for time models.
    pub decode: bool,
    /// `num_computed_tokens` before this step.
    pub computed_before: u64,
}

/// A token sampled at the end of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub req: usize,
    /// 0 for the first output token.
    pub index: u32,
    pub finished: bool,
}

/// What one `schedule` call decided.
#[derive(Debug, Clone, Default)]
pub struct StepPlan {
    pub scheduled: Vec<Scheduled>,
    /// Requests admitted from the waiting queue (first time or resumed), in order.
    pub admitted: Vec<usize>,
    pub preempted: Vec<usize>,
}

impl StepPlan {
    /// Prompt (prefill or recompute) tokens in the step and whether it decodes.
    pub fn work(&self) -> (u64, bool) {
        let prefill = self
            .scheduled
            .iter()
            .filter(|s| !s.decode)
            .map(|s| s.tokens)
            .sum();
        (prefill, self.scheduled.iter().any(|s| s.decode))
    }
}

/// vLLM's `PrefixCacheStats`, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// First admissions: prompt tokens looked up and local hit tokens.
    pub queries: u64,
    pub hits: u64,
    pub requests: u64,
    /// Lookups of resumed (preempted) requests.
    pub preempted_queries: u64,
    pub preempted_hits: u64,
    pub preempted_requests: u64,
}

/// The scheduler.
pub struct Scheduler<P> {
    pub config: SchedulerConfig,
    pub pool: KvPool<P>,
    waiting: VecDeque<SeqState>,
    running: Vec<SeqState>,
    pub stats: PrefixCacheStats,
    pub num_preemptions: u64,
    /// Finished requests' blocks are freed one step late ([`Scheduler::delay_free_until_sent`]).
    delay_free: bool,
    /// The blocks of requests that finished in the last step, freed at the end of the next.
    held: Vec<Vec<Slot>>,
    /// The last this many requests of `waiting` were added since the last `schedule()`, and the
    /// pool was not told yet what they want (their keys come with `schedule`'s sequences;
    /// nothing is evicted in between). `add_request` pushes at the back; preemptions push at
    /// the front, within `schedule`.
    unannounced: usize,
}

/// The sequence keys of a request (full blocks of prompt + answer, head first) and how a block
/// reference is described to the policy.
pub trait Sequences {
    fn keys(&self, req: usize) -> &[ObjId];
    fn access(&self, req: usize, obj: ObjId, depth: usize, clock: u64) -> Access;
}

impl<P: EvictionPolicy> Scheduler<P> {
    pub fn new(config: SchedulerConfig, pool: KvPool<P>) -> Self {
        assert!(config.block_size > 0 && config.max_num_batched_tokens > 0);
        assert!(config.max_num_seqs > 0);
        Scheduler {
            config,
            pool,
            waiting: VecDeque::new(),
            running: Vec::new(),
            stats: PrefixCacheStats::default(),
            num_preemptions: 0,
            delay_free: false,
            held: Vec::new(),
            unannounced: 0,
        }
    }

    /// Keep a finished request's blocks until the end of the next step, as vLLM does with a
    /// connector that sends asynchronously: `_free_request` skips `_free_blocks` when the
    /// connector's `request_finished` returns true (`vllm/v1/core/sched/scheduler.py:2723-2742`;
    /// LMCache's multi-process connector does whenever it stores, `lmcache_mp_connector.py:
    /// 1578-1580`), and the worker reports the request's stores done from the next step's
    /// `get_finished(finished_req_ids)`, whose `update_from_output` frees the blocks after
    /// that step's own finishes (`_update_from_kv_xfer_finished`, `scheduler.py:3209-3235`).
    /// Assumed: the request's stores completed by then (its prompt's were sent steps before).
    /// When nothing runs the next step has no forward pass and ends at once: `schedule()`
    /// frees held blocks first when no request is running.
    pub fn delay_free_until_sent(&mut self, on: bool) {
        self.delay_free = on;
    }

    /// Free the blocks of requests whose send was reported done.
    fn free_held(&mut self) {
        for slots in std::mem::take(&mut self.held) {
            self.pool.free(&slots);
        }
    }

    /// Whether a request of `num_tokens` tokens can ever fit in the pool (vLLM refuses longer
    /// ones when they arrive).
    pub fn fits_ever(&self, num_tokens: u64) -> bool {
        num_tokens.div_ceil(self.config.block_size as u64) <= self.pool.cache.capacity()
    }

    /// Queue a request (`add_request`).
    pub fn add_request(&mut self, req: usize, prompt_tokens: u64, max_tokens: u32) {
        self.waiting.push_back(SeqState {
            req,
            prompt_tokens,
            max_tokens: max_tokens.max(1),
            generated: 0,
            num_computed_tokens: 0,
            slots: Vec::new(),
            num_cached_tokens: None,
            gpu_hit_tokens: 0,
            external_hit_tokens: 0,
            num_preemptions: 0,
            wanted: 0,
        });
        self.unannounced += 1;
    }

    /// Tell the pool the blocks waiting request `r` will look up: its prompt's, or after a
    /// preemption the prompt and answer blocks it had (what vLLM has hashed), as far as its
    /// admission's lookup goes (`num_tokens - 1` tokens: a block-aligned sequence's last block
    /// is hashed but never hit, `schedule`'s `max_hit`).
    fn announce(pool: &mut KvPool<P>, seqs: &dyn Sequences, bs: u64, r: &mut SeqState) {
        let keys = seqs.keys(r.req);
        let known = ((r.num_tokens().saturating_sub(1) / bs) as usize).min(keys.len());
        r.wanted = pool.want(&keys[..known], r.req as u64);
    }

    /// Request `r` leaves the waiting queue.
    fn withdraw(pool: &mut KvPool<P>, seqs: &dyn Sequences, r: &mut SeqState) {
        if r.wanted > 0 {
            pool.unwant(&seqs.keys(r.req)[..r.wanted], r.req as u64);
            r.wanted = 0;
        }
    }

    pub fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Drop the request at the head of the waiting queue (it can never be scheduled).
    pub fn drop_head(&mut self, seqs: &dyn Sequences) -> Option<SeqState> {
        if self.unannounced == self.waiting.len() {
            self.unannounced = self.unannounced.saturating_sub(1);
        }
        let mut r = self.waiting.pop_front()?;
        Self::withdraw(&mut self.pool, seqs, &mut r);
        Some(r)
    }

    fn preempt_last(
        &mut self,
        plan: &mut StepPlan,
        conn: &mut dyn KvConnector,
        seqs: &dyn Sequences,
    ) -> SeqState {
        let mut r = self.running.pop().expect("a running request to preempt");
        self.pool.free(&r.slots);
        r.slots.clear();
        r.num_computed_tokens = 0;
        r.num_preemptions += 1;
        self.num_preemptions += 1;
        conn.released(r.req);
        plan.preempted.push(r.req);
        Self::announce(&mut self.pool, seqs, self.config.block_size as u64, &mut r);
        r
    }

    /// One `schedule()` call.
    pub fn schedule(&mut self, seqs: &dyn Sequences, conn: &mut dyn KvConnector) -> StepPlan {
        let bs = self.config.block_size as u64;
        // full blocks to hash once `tokens` are computed (capped by the known keys)
        let cacheable = |tokens: u64, keys: usize| ((tokens / bs) as usize).min(keys);
        if self.running.is_empty() && !self.held.is_empty() {
            // the step after the finishes ran no forward pass ([`delay_free_until_sent`])
            self.free_held();
        }
        // the queue's tail, in one pass (a search per request was O(queue) each, quadratic
        // when thousands arrive between two steps)
        let tail = self.waiting.len() - std::mem::take(&mut self.unannounced);
        for r in self.waiting.range_mut(tail..) {
            Self::announce(&mut self.pool, seqs, bs, r);
        }
        let mut plan = StepPlan::default();
        let mut budget = self.config.max_num_batched_tokens as u64;

        // --- running requests
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let r = &self.running[i];
            let n = (r.num_tokens() - r.num_computed_tokens).min(budget);
            if n == 0 {
                i += 1;
                continue;
            }
            let need = (r.num_computed_tokens + n)
                .div_ceil(bs)
                .saturating_sub(r.slots.len() as u64);
            let mut self_preempted = false;
            while need > self.pool.free_blocks() {
                let victim = self.preempt_last(&mut plan, conn, seqs);
                let is_self = self.running.len() == i;
                self.waiting.push_front(victim);
                if is_self {
                    self_preempted = true;
                    break;
                }
            }
            if self_preempted {
                break;
            }
            let r = &mut self.running[i];
            let keys = seqs.keys(r.req);
            let req = r.req;
            self.pool.allocate(need as usize, &mut r.slots);
            let before = r.num_computed_tokens;
            let cached_now = cacheable((before + n).min(r.num_tokens()), keys.len());
            let cached_before = cacheable(before, keys.len());
            if cached_now > cached_before {
                let access = |k: ObjId, d: usize, t: u64| seqs.access(req, k, d, t);
                self.pool
                    .cache_blocks(&mut r.slots, keys, cached_before, cached_now, &access);
            }
            let decode = before >= r.prompt_tokens && r.generated >= 1;
            plan.scheduled.push(Scheduled {
                req,
                tokens: n,
                decode,
                computed_before: before,
            });
            budget -= n;
            i += 1;
        }

        // --- waiting requests, only when nobody was preempted
        while plan.preempted.is_empty()
            && budget > 0
            && !self.waiting.is_empty()
            && self.running.len() < self.config.max_num_seqs as usize
        {
            let r = self.waiting.front().expect("not empty");
            let keys = seqs.keys(r.req);
            let num_tokens = r.num_tokens();
            let max_hit = (num_tokens.saturating_sub(1) / bs) as usize;
            let hits = self.pool.leading_hits(keys, max_hit);
            let local = hits as u64 * bs;
            let external = conn
                .matched(r.req, num_tokens, local)
                .min(num_tokens - local);
            let computed = local + external;
            let mut n = num_tokens - computed;
            if !self.config.enable_chunked_prefill && n > budget {
                break;
            }
            n = n.min(budget);
            let evictable = self.pool.evictable_among(&keys[..hits]);
            let free = self.pool.free_blocks();
            if self.config.reserve_full_isl
                && num_tokens.div_ceil(bs) - hits as u64 + evictable > free
            {
                break;
            }
            let new_blocks = (computed + n).div_ceil(bs) - hits as u64;
            if new_blocks + evictable > free {
                break;
            }
            let mut r = self.waiting.pop_front().expect("not empty");
            Self::withdraw(&mut self.pool, seqs, &mut r);
            let req = r.req;
            let access = |k: ObjId, d: usize, t: u64| seqs.access(req, k, d, t);
            self.pool.touch(&keys[..hits], &mut r.slots, &access);
            self.pool.allocate(new_blocks as usize, &mut r.slots);
            let cached_now = cacheable((computed + n).min(num_tokens), keys.len());
            self.pool
                .cache_blocks(&mut r.slots, keys, hits, cached_now, &access);
            if r.num_preemptions == 0 {
                self.stats.requests += 1;
                self.stats.queries += num_tokens;
                self.stats.hits += local;
            } else {
                self.stats.preempted_requests += 1;
                self.stats.preempted_queries += num_tokens;
                self.stats.preempted_hits += local;
            }
            if r.num_cached_tokens.is_none() {
                r.num_cached_tokens = Some(computed);
                r.gpu_hit_tokens = local;
                r.external_hit_tokens = external;
            }
            conn.admitted(req, local, external);
            r.num_computed_tokens = computed;
            plan.admitted.push(req);
            plan.scheduled.push(Scheduled {
                req,
                tokens: n,
                decode: false,
                computed_before: computed,
            });
            budget -= n;
            self.running.push(r);
        }
        plan
    }

    /// `update_from_output` after the step ran: computed tokens advance, requests that reached
    /// their sequence's end sample a token, finished ones free their blocks. Returns the
    /// finished requests, in the step's order.
    pub fn update(&mut self, plan: &StepPlan, conn: &mut dyn KvConnector) -> Vec<SeqState> {
        self.update_with_tokens(plan, conn, &mut Vec::new())
    }

    /// [`update`](Scheduler::update), also telling which requests sampled a token.
    pub fn update_with_tokens(
        &mut self,
        plan: &StepPlan,
        conn: &mut dyn KvConnector,
        produced: &mut Vec<Produced>,
    ) -> Vec<SeqState> {
        let mut finished = Vec::new();
        let mut newly_held = Vec::new();
        // `plan.scheduled` lists running requests in running order (preemption only pops
        // requests not yet scheduled, admissions are pushed at the end), so one cursor walks
        // both; finished requests leave in one pass at the end.
        let mut pos = 0;
        let mut any_finished = false;
        for s in &plan.scheduled {
            while pos < self.running.len() && self.running[pos].req != s.req {
                pos += 1;
            }
            if pos == self.running.len() {
                // not running any more (or out of order): look it up
                let Some(p) = self.running.iter().position(|r| r.req == s.req) else {
                    pos = 0;
                    continue;
                };
                pos = p;
            }
            let r = &mut self.running[pos];
            let before = r.num_computed_tokens;
            r.num_computed_tokens += s.tokens;
            if before < r.prompt_tokens {
                conn.computed(r.req, before, r.num_computed_tokens);
            }
            if r.num_computed_tokens >= r.num_tokens() {
                r.generated += 1;
                let done = r.generated >= r.max_tokens;
                produced.push(Produced {
                    req: r.req,
                    index: r.generated - 1,
                    finished: done,
                });
                if done {
                    // what it generated is known now, before its blocks are freed
                    self.pool.cache.policy.on_finish(r.req as u32, r.generated);
                    // freed now, in the step's order (the free queue's order depends on it)
                    let slots = std::mem::take(&mut r.slots);
                    if self.delay_free {
                        newly_held.push(slots.clone());
                    } else {
                        self.pool.free(&slots);
                    }
                    conn.released(r.req);
                    let mut done = r.clone();
                    done.slots = slots;
                    r.max_tokens = 0; // marks it for removal below
                    finished.push(done);
                    any_finished = true;
                }
            }
        }
        if any_finished {
            self.running.retain(|r| r.max_tokens != 0);
        }
        if self.delay_free {
            // the last step's finished requests, after this step's finishes
            self.free_held();
            self.held = newly_held;
            if self.running.is_empty() && self.waiting.is_empty() {
                // nothing to run: the next step is an empty one and ends at once
                self.free_held();
            }
        }
        finished
    }

    /// Drop a request wherever it is (the client went away); a running one frees its blocks.
    /// `seqs` still knows its keys (a waiting request's wanted blocks are withdrawn).
    pub fn abort(&mut self, req: usize, conn: &mut dyn KvConnector, seqs: &dyn Sequences) -> bool {
        if let Some(i) = self.waiting.iter().position(|r| r.req == req) {
            if i >= self.waiting.len() - self.unannounced {
                self.unannounced -= 1;
            }
            let mut r = self.waiting.remove(i).expect("found");
            Self::withdraw(&mut self.pool, seqs, &mut r);
            conn.released(req);
            return true;
        }
        if let Some(i) = self.running.iter().position(|r| r.req == req) {
            let r = self.running.remove(i);
            self.pool.free(&r.slots);
            conn.released(req);
            return true;
        }
        false
    }

    /// The running requests, in scheduling order.
    pub fn running(&self) -> &[SeqState] {
        &self.running
    }

    /// Blocks held by running requests and by finished ones not freed yet (vLLM's
    /// `kv_cache_usage` numerator).
    pub fn blocks_in_use(&self) -> u64 {
        let held: usize = self.held.iter().map(Vec::len).sum();
        self.running
            .iter()
            .map(|r| r.slots.len() as u64)
            .sum::<u64>()
            + held as u64
    }

    /// Check the pool and the requests' blocks against each other.
    pub fn validate(&self) -> Result<(), String> {
        self.pool.cache.validate()?;
        let raw: u64 = self
            .running
            .iter()
            .flat_map(|r| &r.slots)
            .chain(self.held.iter().flatten())
            .filter(|s| **s == Slot::Raw)
            .count() as u64;
        if raw != self.pool.cache.reserved() {
            return Err(format!(
                "{raw} raw blocks held, {} reserved",
                self.pool.cache.reserved()
            ));
        }
        for r in &self.running {
            if (r.slots.len() as u64)
                < r.num_computed_tokens
                    .div_ceil(self.config.block_size as u64)
            {
                return Err(format!("request {} holds too few blocks", r.req));
            }
        }
        if self.waiting.iter().any(|r| !r.slots.is_empty()) {
            return Err("a waiting request holds blocks".into());
        }
        // distinct blocks per request: what `KvPool::want` records
        let told: usize = self.waiting.iter().map(|r| r.wanted).sum();
        if self.pool.wanted_pairs() > told {
            return Err(format!(
                "the pool holds {} wanted blocks, the waiting requests {told}",
                self.pool.wanted_pairs()
            ));
        }
        if self.running.iter().any(|r| r.wanted > 0) {
            return Err("a running request still wants blocks".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferencelab_cache::{AnyPolicy, BlockCache, PolicyConfig};

    /// Requests' sequence keys given directly (prompt blocks then answer blocks).
    struct Keys(Vec<Vec<ObjId>>);

    impl Sequences for Keys {
        fn keys(&self, req: usize) -> &[ObjId] {
            &self.0[req]
        }
        fn access(&self, _req: usize, obj: ObjId, _d: usize, clock: u64) -> Access {
            Access::at(obj, clock)
        }
    }

    fn scheduler(usable: u64, budget: u32) -> Scheduler<AnyPolicy> {
        Scheduler::new(
            SchedulerConfig {
                block_size: 4,
                max_num_batched_tokens: budget,
                ..Default::default()
            },
            KvPool::new(BlockCache::new(usable, PolicyConfig::Lru.build(usable))),
        )
    }

    /// Step until idle, checking the invariants; returns finished requests in order.
    fn run(s: &mut Scheduler<AnyPolicy>, keys: &Keys) -> Vec<SeqState> {
        let mut done = Vec::new();
        for _ in 0..10_000 {
            if !s.has_unfinished() {
                return done;
            }
            let plan = s.schedule(keys, &mut NoConnector);
            assert!(!plan.scheduled.is_empty(), "stuck");
            done.extend(s.update(&plan, &mut NoConnector));
            s.validate().unwrap();
        }
        panic!("did not finish");
    }

    #[test]
    fn answer_blocks_are_cached_and_hit_by_the_next_turn() {
        // block size 4. r0: prompt 6 tokens (1 full block a + 2 tokens), 7 output tokens: 12
        // tokens computed -> blocks a b c cached (b, c hold the answer). r1 repeats the whole
        // exchange plus 3 tokens (15 tokens): hits a b c = 12 tokens (at most 14).
        let keys = Keys(vec![vec![1, 2, 3], vec![1, 2, 3]]);
        let mut s = scheduler(100, 64);
        s.add_request(0, 6, 7);
        let done = run(&mut s, &keys);
        assert_eq!(done[0].generated, 7);
        s.add_request(1, 15, 1);
        let done = run(&mut s, &keys);
        assert_eq!(done[0].num_cached_tokens, Some(12));
        assert_eq!(s.stats.hits, 12);
    }

    /// `usable` blocks of 4 tokens, 8 tokens a step, `conversation_aware` (its defaults, with or
    /// without the waiting queue).
    fn queue_aware(usable: u64, waiting_queue: bool) -> Scheduler<AnyPolicy> {
        let scorer = inferencelab_cache::policy::conversation_aware::ScorerConfig {
            waiting_queue,
            ..Default::default()
        };
        let policy = PolicyConfig::ConversationAware(scorer).build(usable);
        Scheduler::new(
            SchedulerConfig {
                block_size: 4,
                max_num_batched_tokens: 8,
                ..Default::default()
            },
            KvPool::new(BlockCache::new(usable, policy)),
        )
    }

    #[test]
    fn blocks_a_waiting_request_will_hit_are_kept_for_it() {
        // 4 usable blocks of 4 tokens, budget 8 tokens a step. r0 caches [1, 2], then r1 caches
        // [3, 4] (more recent). r2 (new blocks [5, 6]) and r3 (repeats [1, 2], then 7) arrive
        // together; r2 is admitted first and needs 2 blocks while r3 waits. LRU evicts r0's
        // blocks, which r3 would hit; a policy that reads the waiting queue evicts r1's.
        for waiting_queue in [false, true] {
            let keys = Keys(vec![vec![1, 2], vec![3, 4], vec![5, 6], vec![1, 2, 7]]);
            let mut s = queue_aware(4, waiting_queue);
            assert_eq!(s.pool.tracks_waiting(), waiting_queue);
            for r in 0..2 {
                s.add_request(r, 8, 1);
                run(&mut s, &keys);
            }
            s.add_request(2, 8, 1);
            s.add_request(3, 12, 1);
            let plan = s.schedule(&keys, &mut NoConnector);
            assert_eq!(plan.admitted, vec![2]);
            assert_eq!(s.pool.wanted_pairs(), if waiting_queue { 2 } else { 0 });
            s.update(&plan, &mut NoConnector);
            s.validate().unwrap();
            let done = run(&mut s, &keys);
            let r3 = done.iter().find(|r| r.req == 3).unwrap();
            assert_eq!(r3.gpu_hit_tokens, if waiting_queue { 8 } else { 0 });
            assert_eq!(s.pool.wanted_pairs(), 0);
        }
    }

    #[test]
    fn a_waiting_request_wants_only_the_blocks_its_lookup_can_hit() {
        // 4 usable blocks of 4 tokens, budget 8 tokens a step. r0 caches [1, 2], r1 [3, 4].
        // r2 (new blocks [5, 6]) is admitted and needs 2 blocks while r3 and r4 wait. r3's
        // prompt is exactly [1, 2] (8 tokens): vLLM looks up at most num_tokens - 1 tokens, so
        // r3 can hit block 1 only, and block 2 is wanted by nobody. r4 (12 tokens) will hit
        // [3, 4]. The victims are block 2, then the latest request's deepest block, 4: r4
        // still hits block 3. (Wanting block 2 for r3 made both victims r4's.)
        let keys = Keys(vec![
            vec![1, 2],
            vec![3, 4],
            vec![5, 6],
            vec![1, 2],
            vec![3, 4, 7],
        ]);
        let mut s = queue_aware(4, true);
        for r in 0..2 {
            s.add_request(r, 8, 1);
            run(&mut s, &keys);
        }
        s.add_request(2, 8, 1);
        s.add_request(3, 8, 1);
        s.add_request(4, 12, 1);
        let plan = s.schedule(&keys, &mut NoConnector);
        assert_eq!(plan.admitted, vec![2]);
        // r3 wants block 1, r4 blocks 3 and 4 (7 is past its lookup too)
        assert_eq!(s.pool.wanted_pairs(), 3);
        s.update(&plan, &mut NoConnector);
        s.validate().unwrap();
        let done = run(&mut s, &keys);
        let hit = |req: usize| done.iter().find(|r| r.req == req).unwrap().gpu_hit_tokens;
        assert_eq!((hit(3), hit(4)), (4, 4));
    }

    #[test]
    fn requests_added_between_two_steps_are_announced_at_the_next() {
        // r0 runs; r1, r2 and r3 arrive, r2 leaves before the next step: that step announces
        // r1 and r3 (the queue's tail), admits r1 and leaves r3's 2 cached blocks wanted
        let keys = Keys(vec![vec![1, 2], vec![5, 6], vec![1, 2, 3], vec![1, 2, 4]]);
        let mut s = queue_aware(8, true);
        s.add_request(0, 8, 1);
        run(&mut s, &keys);
        for (r, len) in [(1, 8), (2, 12), (3, 12)] {
            s.add_request(r, len, 1);
        }
        assert!(s.abort(2, &mut NoConnector, &keys));
        let plan = s.schedule(&keys, &mut NoConnector);
        assert_eq!(
            (plan.admitted.as_slice(), s.pool.wanted_pairs()),
            (&[1][..], 2)
        );
        s.update(&plan, &mut NoConnector);
        s.validate().unwrap();
        let done = run(&mut s, &keys);
        assert_eq!(done.iter().find(|r| r.req == 3).unwrap().gpu_hit_tokens, 8);
        assert_eq!(s.pool.wanted_pairs(), 0);
    }

    #[test]
    fn an_aborted_waiting_request_wants_nothing_any_more() {
        let keys = Keys(vec![vec![1, 2], vec![1, 2, 3]]);
        let mut s = queue_aware(4, true);
        s.add_request(0, 8, 1);
        s.add_request(1, 12, 1);
        let plan = s.schedule(&keys, &mut NoConnector);
        assert_eq!(
            (plan.admitted.as_slice(), s.pool.wanted_pairs()),
            (&[0][..], 2)
        );
        assert!(s.abort(1, &mut NoConnector, &keys));
        assert_eq!(s.pool.wanted_pairs(), 0);
        s.update(&plan, &mut NoConnector);
        s.validate().unwrap();
        run(&mut s, &keys);
    }

    #[test]
    fn a_request_waits_until_its_whole_prompt_fits() {
        // 4 usable blocks; r0 (8 tokens, 4 outputs) holds 3 blocks at its peak; r1 (12 tokens)
        // needs 3 blocks: it waits for r0 to finish, although its first chunk would fit
        let keys = Keys(vec![vec![1, 2], vec![5, 6, 7]]);
        let mut s = scheduler(4, 4);
        s.add_request(0, 8, 4);
        s.add_request(1, 12, 1);
        let plan = s.schedule(&keys, &mut NoConnector);
        assert_eq!(plan.admitted, vec![0]);
        let done = run(&mut s, &keys);
        let order: Vec<usize> = done.iter().map(|r| r.req).collect();
        assert_eq!(order, vec![0, 1]);
        assert_eq!(s.num_preemptions, 0);
    }

    #[test]
    fn with_delayed_frees_a_finished_requests_blocks_are_held_one_more_step() {
        // 6 usable blocks of 4 tokens. r0 (8 tokens, 8 outputs) and r1 (8 tokens, 2 outputs)
        // are admitted in step 1 (2 blocks each) and take a decode block each in step 2, where
        // r1 finishes; r2 (12 tokens, 3 blocks) waits for room.
        //   freed at the finish:  step 3 admits r2 (r1's 3 blocks free)
        //   delayed (LMCache mp): r1's blocks stay held through step 3 (in use: 6), freed at
        //                         its end; step 4 admits r2
        let keys = Keys(vec![vec![1, 2, 3], vec![8, 9], vec![11, 12, 13]]);
        let steps = |delay: bool| {
            let mut s = scheduler(6, 64);
            s.delay_free_until_sent(delay);
            s.add_request(0, 8, 8);
            s.add_request(1, 8, 2);
            s.add_request(2, 12, 1);
            let mut in_use = Vec::new();
            for step in 1.. {
                let plan = s.schedule(&keys, &mut NoConnector);
                if plan.admitted.contains(&2) {
                    return (step, in_use);
                }
                s.update(&plan, &mut NoConnector);
                s.validate().unwrap();
                in_use.push(s.blocks_in_use());
                assert!(step < 10, "r2 never admitted");
            }
            unreachable!()
        };
        assert_eq!(steps(false), (3, vec![4, 3]));
        assert_eq!(steps(true), (4, vec![4, 6, 3]));
        // alone: nothing runs or waits after it, the next step is empty and frees at once
        let mut s = scheduler(6, 64);
        s.delay_free_until_sent(true);
        s.add_request(0, 8, 1);
        let plan = s.schedule(&keys, &mut NoConnector);
        assert_eq!(s.update(&plan, &mut NoConnector).len(), 1);
        assert_eq!(s.blocks_in_use(), 0);
        s.validate().unwrap();
    }

    #[test]
    fn decode_without_a_free_block_preempts_the_last_running_request() {
        // 4 usable blocks, both prompts fit (2 blocks each, 8 tokens); each needs a third block
        // for its decode: the later one is preempted (freed, recomputed later) and its
        // num_cached_tokens stays the first admission's
        let keys = Keys(vec![vec![1, 2, 3], vec![5, 6, 7]]);
        let mut s = scheduler(4, 64);
        s.add_request(0, 8, 3);
        s.add_request(1, 8, 3);
        let done = run(&mut s, &keys);
        assert_eq!(s.num_preemptions, 1);
        let r1 = done.iter().find(|r| r.req == 1).unwrap();
        assert_eq!(r1.num_preemptions, 1);
        assert_eq!(r1.num_cached_tokens, Some(0));
        assert_eq!(s.stats.preempted_requests, 1);
        assert_eq!(s.pool.cache.reserved(), 0);
    }

    /// A policy that records what it is told (finishes and unpins), over LRU.
    #[derive(Default)]
    struct Spy {
        lru: inferencelab_cache::policy::lru::Lru,
        events: Vec<String>,
    }

    impl EvictionPolicy for Spy {
        fn on_insert(&mut self, e: u32, a: &Access) {
            self.lru.on_insert(e, a);
        }
        fn on_hit(&mut self, e: u32, a: &Access) {
            self.lru.on_hit(e, a);
        }
        fn on_pin(&mut self, e: u32) {
            self.lru.on_pin(e);
        }
        fn on_unpin(&mut self, e: u32, now: u64) {
            self.events.push(format!("unpin {e}"));
            self.lru.on_unpin(e, now);
        }
        fn on_finish(&mut self, request: u32, output_tokens: u32) {
            self.events
                .push(format!("finish {request} {output_tokens}"));
        }
        fn evict(&mut self, pins: inferencelab_cache::Pins<'_>) -> Option<u32> {
            self.lru.evict(pins)
        }
        fn on_remove(&mut self, e: u32) {
            self.lru.on_remove(e);
        }
    }

    #[test]
    fn the_policy_hears_of_a_finish_and_its_answer_before_the_unpins() {
        let mut s = Scheduler::new(
            SchedulerConfig {
                block_size: 4,
                max_num_batched_tokens: 64,
                ..Default::default()
            },
            KvPool::new(BlockCache::new(16, Spy::default())),
        );
        // request 0: 8 prompt tokens and 3 answer tokens (2 full blocks hashed, then its tail)
        let keys = Keys(vec![vec![1, 2, 3]]);
        s.add_request(0, 8, 3);
        for _ in 0..100 {
            if !s.has_unfinished() {
                break;
            }
            let plan = s.schedule(&keys, &mut NoConnector);
            s.update(&plan, &mut NoConnector);
        }
        assert!(!s.has_unfinished());
        let events = &s.pool.cache.policy.events;
        assert_eq!(
            events.first().map(String::as_str),
            Some("finish 0 3"),
            "{events:?}"
        );
        assert!(events.len() > 1 && events[1..].iter().all(|e| e.starts_with("unpin")));
    }
}
