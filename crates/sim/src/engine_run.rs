//! The GPU tier with vLLM's engine rules (DESIGN.md section 3) and LMCache's tier with its
//! engine's rules (section 4), under one of two schedules (`docs/semantics.md`):
//!
//! - `trace`: the logged arrival and finish times, vLLM's block rules in between. A request is
//!   admitted when it arrives or, FCFS, at the first later step where its whole prompt fits,
//!   the step's token budget is not spent and fewer than `max_num_seqs` run (`schedule()`'s
//!   waiting loop; a step is a finish or a block allocation here). It takes its prompt's blocks
//!   (the partial tail too); its decode blocks are allocated one by one when the step that
//!   computes their first token starts (`allocate_slots`), its output tokens being spread
//!   evenly between its admission and its finish (logged, else the time model's); full blocks
//!   are hashed as they fill. A block the pool cannot give preempts the most recently admitted
//!   running request (`self.running.pop()`, maybe the request itself): its blocks are freed,
//!   it goes back to the front of the queue and, admitted again, recomputes its prompt and the
//!   tokens it had sampled (its hits stay those of its first admission). At the finish its
//!   blocks are freed tail first. Without pinning every request finishes before the next
//!   arrives.
//!
//!   vLLM 0.33's rules followed, under `vllm/v1/core/`: `sched/scheduler.py::schedule` (running
//!   requests allocate before waiting ones are admitted; a failed `allocate_slots` preempts
//!   `self.running.pop()` until it fits or the request itself went; waiting requests only when
//!   nobody was preempted, `while token_budget > 0`, below `max_num_active_reqs`),
//!   `_preempt_request` (blocks freed, `num_computed_tokens = 0`, `waiting.prepend_request`),
//!   the `num_preemptions <= 0` guard on `prefill_stats` (hits of the first admission),
//!   `kv_cache_manager.py::allocate_slots` (blocks for `num_computed + num_new` tokens,
//!   `full_sequence_must_fit`, `cache_blocks` up to `min(computed + new, num_tokens)`),
//!   `block_pool.py::free_blocks` and `single_type_kv_cache_manager.py::free` (reverse order;
//!   hashed blocks to the tail, others to the head).
//!
//!   Events of one instant run in vLLM's order: finishes, then running requests' blocks, then
//!   admissions (none when the step preempted); a request arriving at a step's end joins the
//!   next `schedule()`. With per-token times a decode block is hashed when the step computing
//!   its last token starts and the next one allocated when the step after needs it.
//!
//!   What a log cannot tell, and the rule used instead: 1-second stamps keep the file order
//!   only (the reader spreads a second's lines a microsecond apart; finer stamps are one
//!   instant each); without per-token lines, when each token was sampled (even pace; vLLM's
//!   first token waits for the prefill and a step slows when a prefill joins it); prefill
//!   chunks (the whole prompt's blocks are taken at admission, vLLM takes them chunk by chunk).
//!   Deviation: a request alone in a pool too small for its whole sequence stops growing
//!   (vLLM would preempt it for good; it refuses such requests by length up front).
//! - `vllm`: the trace is replayed through `inferencelab_engine::vllm::Scheduler` in virtual
//!   time; a step takes `prefill tokens / prefill_tokens_per_s`, plus `decode_ms_per_token` when
//!   it decodes.
//!
//! In both, the LMCache lookup happens at admission (once per admission attempt, kept until
//! the request is admitted), the load right after, and stores as prompt chunks are computed.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use inferencelab_cache::{
    Access, AnyPolicy, BlockCache, EvictionPolicy, JudgeCounts, ObjId, NEVER,
};
use inferencelab_engine::lmcache::{ChunkSource, Connector, LmcacheTier, RequestState};
use inferencelab_engine::pool::{KvPool, Slot};
use inferencelab_engine::vllm::{KvConnector, Scheduler, SchedulerConfig, Sequences, StepPlan};
use inferencelab_trace::{BlockedTrace, SequenceBlocks, Trace};

use crate::config::{Schedule, SimConfig, TierConfig};
use crate::driver::{Prepared, RequestHits};

/// How one request's block references are described to a policy.
pub(crate) struct Describe<'a> {
    pub trace: &'a Trace,
    pub kinds: &'a [u32],
    pub blocks: &'a BlockedTrace,
    pub oracle: Option<&'a [u64]>,
}

impl Describe<'_> {
    pub fn access(&self, req: usize, obj: ObjId, depth: usize, clock: u64) -> Access {
        let r = &self.trace.requests[req];
        Access {
            obj,
            time: clock,
            timestamp: r.timestamp,
            request: req as u32,
            conversation: r.conversation.unwrap_or(u64::MAX),
            turn: r.turn,
            kind: self.kinds[req],
            depth: depth as u32,
            next_use: self
                .oracle
                .map_or(NEVER, |o| o[self.blocks.offsets[req] + depth]),
        }
    }
}

struct SeqView<'a> {
    seq: &'a SequenceBlocks,
    describe: Describe<'a>,
}

impl Sequences for SeqView<'_> {
    fn keys(&self, req: usize) -> &[ObjId] {
        self.seq.request(req)
    }
    fn access(&self, req: usize, obj: ObjId, depth: usize, clock: u64) -> Access {
        self.describe.access(req, obj, depth, clock)
    }
}

/// The GPU pool of `usable` blocks; 0 blocks means no GPU prefix cache at all (vLLM without
/// prefix caching: nothing hits, nothing waits for blocks).
pub(crate) fn gpu_pool(t: &TierConfig, usable: u64) -> KvPool<AnyPolicy> {
    if usable == 0 {
        KvPool::without_caching(build_tier(t, u64::MAX))
    } else {
        KvPool::new(build_tier(t, usable))
    }
}

pub(crate) fn build_tier(t: &TierConfig, capacity: u64) -> BlockCache<AnyPolicy> {
    let cap = if t.policy.is_unbounded() {
        u64::MAX
    } else {
        capacity
    };
    BlockCache::new(cap, t.policy.build(cap))
}

/// The trace's chunks as LMCache's connector sees them.
impl ChunkSource for Describe<'_> {
    fn chunks(&self, req: usize) -> &[ObjId] {
        self.blocks.request(req)
    }
    fn prompt_tokens(&self, req: usize) -> u64 {
        self.trace.requests[req].input_length as u64
    }
    fn access(&self, req: usize, obj: ObjId, depth: usize, clock: u64) -> Access {
        Describe::access(self, req, obj, depth, clock)
    }
}

/// LMCache as vLLM's KV connector over the trace's chunks: `engine::lmcache::Connector`, the
/// one `serve` uses.
pub(crate) struct Lmcache<'a> {
    pub conn: Connector<AnyPolicy>,
    describe: Describe<'a>,
}

impl<'a> Lmcache<'a> {
    pub fn new(
        config: &SimConfig,
        prepared: &'a Prepared<'a>,
        oracle: Option<&'a [u64]>,
    ) -> Option<Self> {
        let (cpu, chunks) = (config.cpu.as_ref()?, prepared.cpu.as_ref()?);
        let tier = LmcacheTier::new(
            chunks.block_size,
            build_tier(cpu, cpu.capacity),
            config.disk.as_ref().map(|d| build_tier(d, d.capacity)),
        );
        Some(Lmcache {
            conn: Connector::new(tier)
                .with_mode(config.engine.lmcache_engine_mode())
                .with_logged_loop(inferencelab_engine::LoggedLoop::new(
                    &prepared.trace.lmcache_evicting_ticks_s,
                )),
            describe: Describe {
                trace: prepared.trace,
                kinds: prepared.kinds(),
                blocks: chunks,
                oracle,
            },
        })
    }

    /// Store a prompt whose prefill runs from `computed` tokens to `len` in steps of at most
    /// `budget` tokens (vLLM's token budget): LMCache stores after every forward step, from
    /// where the previous step's store ended (`vllm_v1_adapter.py:1104-1259`), so a later step's
    /// store can evict what an earlier one put.
    pub fn store_prefill(&mut self, req: usize, computed: u64, len: u64, budget: u64) {
        for done in inferencelab_engine::lmcache::prefill_steps(computed, len, budget) {
            self.conn.computed(&self.describe, req, done);
        }
    }

    /// A request served start to end before anything else touches the tier (the abstract
    /// prefix model): lookup, load, the prefill's stores. Returns its CPU and disk hit tokens.
    pub fn serve_alone(
        &mut self,
        req: usize,
        len: u64,
        gpu_hit_tokens: u64,
        budget: u64,
    ) -> (u64, u64) {
        let got = self
            .conn
            .serve_alone(&self.describe, req, len, gpu_hit_tokens, budget);
        (got.cpu_hit_tokens, got.disk_hit_tokens)
    }

    /// The clock reached `now` (trace seconds): LMCache's multi-process eviction loop runs the
    /// ticks due by then (`Connector::advance_to`). Called before every connector event.
    pub fn at(&mut self, now: f64) {
        self.conn.advance_to(now);
    }

    /// The run is over: the multi-process eviction loop ticks until L1 is below its watermark
    /// (`Connector::settle`).
    pub fn settle(&mut self) {
        self.conn.settle();
    }

    /// What the request's first admission loaded.
    pub fn first(&self, req: usize) -> (u64, u64) {
        first_loaded(self.conn.state(req))
    }

    /// [`first`](Lmcache::first) of a request that is done: its connector state is dropped
    /// (kept, a run's state would grow with every request it has seen).
    pub fn take_first(&mut self, req: usize) -> (u64, u64) {
        first_loaded(self.conn.forget(req).as_ref())
    }

    /// The LMCache figures of a result row.
    pub fn report(&self, row: &mut crate::result::ResultRow) {
        let tier = &self.conn.tier;
        row.chunk_refs = self.conn.counters.chunk_refs;
        row.cpu_hit_chunks = self.conn.counters.hit_chunks;
        row.cpu_evictions = tier.cpu.evictions;
        row.disk_evictions = tier.disk.as_ref().map_or(0, |d| d.evictions);
        if let inferencelab_engine::LmcacheMode::Mp(e) = self.conn.mode {
            let mp = &self.conn.mp;
            row.lmcache_mode = Some("mp".to_string());
            row.lmcache_mp = Some(crate::result::LmcacheMpFigures {
                lookup_requested_tokens: mp.lookup_requested_tokens,
                lookup_hit_tokens: mp.lookup_hit_tokens,
                l1_write_chunks: mp.l1_write_chunks,
                l1_read_chunks: mp.l1_read_chunks,
                l1_evicted_chunks: tier.cpu.evictions,
                refused_stores: mp.refused_stores,
                l1_usage_ratio: inferencelab_engine::lmcache_mp::usage_ratio(
                    &tier.cpu,
                    e.l1_size_chunks,
                ),
            });
        }
    }
}

fn first_loaded(state: Option<&RequestState>) -> (u64, u64) {
    state
        .and_then(|s| s.first)
        .map_or((0, 0), |r| (r.cpu_hit_tokens, r.disk_hit_tokens))
}

impl KvConnector for Lmcache<'_> {
    fn matched(&mut self, req: usize, num_tokens: u64, local_hit_tokens: u64) -> u64 {
        self.conn
            .matched(&self.describe, req, num_tokens, local_hit_tokens)
    }

    fn admitted(&mut self, req: usize, local_hit_tokens: u64, _external: u64) {
        self.conn.admitted(&self.describe, req, local_hit_tokens);
    }

    fn computed(&mut self, req: usize, _before: u64, after: u64) {
        self.conn.computed(&self.describe, req, after);
    }

    fn released(&mut self, req: usize) {
        self.conn.released(req);
    }
}

/// What the GPU-tier replay reports per request.
pub(crate) struct Served {
    pub req: usize,
    pub hits: RequestHits,
    /// Trace seconds when it finished (its blocks freed); NaN for a rejected request.
    pub finish_s: f64,
}

impl Served {
    /// A request that can never fit in the pool: vLLM refuses it; it counts with no hits.
    fn rejected(req: usize) -> Self {
        Served {
            req,
            hits: RequestHits {
                admitted_s: f64::NAN,
                rejected: true,
                ..Default::default()
            },
            finish_s: f64::NAN,
        }
    }
}

/// What loading KV from LMCache costs in time, when the run charges it: a shared LMCache tier
/// is LMCache's remote backend, its loads cross the network (`crate::cluster`, `--lmcache-shared`).
/// A replica's own tier (and a single server's) is not charged: its PCIe copies are left out of
/// simulate's time model, as they always were.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LoadCost {
    /// Bytes of KV per token (the model's).
    pub kv_bytes_per_token: u64,
    pub bytes_per_s: f64,
    /// Per load (one request's retrieve).
    pub latency_s: f64,
}

impl LoadCost {
    /// Seconds to load `tokens` tokens of KV in one retrieve; 0 when nothing is loaded.
    pub fn seconds(&self, tokens: u64) -> f64 {
        if tokens == 0 {
            return 0.0;
        }
        self.latency_s + (tokens * self.kv_bytes_per_token) as f64 / self.bytes_per_s
    }
}

/// Totals of a GPU-tier replay beyond the per-request hits.
#[derive(Default)]
pub(crate) struct TierTotals {
    pub evictions: u64,
    pub rejections: u64,
    pub preemptions: u64,
    pub queued: u64,
    pub max_in_use: u64,
    /// The GPU policy's judge, if it has one (adaptive `conversation_aware`, `lightgbm`).
    pub judge: Option<JudgeCounts>,
}

/// A request holding blocks under the `trace` schedule.
struct Running {
    req: usize,
    slots: Vec<Slot>,
    /// This admission's time (a preempted request is admitted again later).
    start: f64,
    finish: f64,
    /// Output tokens sampled before this admission (0 unless it was preempted).
    generated: u32,
    /// Leading blocks hashed so far.
    hashed: usize,
    /// It could not get a block with nobody else to preempt: it grows no further.
    stalled: bool,
    /// Its prompt fit in the token budget of the step that admitted it: that step ends when it
    /// samples its first token.
    one_step_prefill: bool,
}

/// What happens to a running request at a time: it finishes, or the step that computes its
/// next block's first token starts and needs that block. At equal times a finish comes
/// first: vLLM frees a finished request's blocks at the end of a step, before the next
/// `schedule()` allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    Finish,
    /// A finished request's blocks are freed, its KV send reported done (LMCache's
    /// multi-process connector; [`TraceTier::kv_sent_at`]).
    Release,
    Grow,
    /// The end of the step in flight when a request arrived, known from the running requests'
    /// per-token times: the next `schedule()` admits, after the running requests' blocks.
    Admit,
}

struct Event {
    time: f64,
    kind: EventKind,
    req: usize,
    /// The request's admission count when the event was planned (a preemption cancels it).
    epoch: u32,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    // min-heap on (time, kind, request)
    fn cmp(&self, o: &Self) -> Ordering {
        o.time
            .total_cmp(&self.time)
            .then(o.kind.cmp(&self.kind))
            .then(o.req.cmp(&self.req))
    }
}

enum Admit {
    /// Admitted with this many prompt tokens to compute; `finished` without pinning.
    Admitted {
        prefill: u64,
        finished: Option<Served>,
    },
    NoRoom,
    Never,
}

/// The `trace` schedule's state, stepped by [`run`] or, one replica each, by the cluster
/// driver (`crate::cluster`): [`arrive`](TraceTier::arrive) per routed request in arrival
/// order, [`run_until`](TraceTier::run_until) to look at it between arrivals,
/// [`close`](TraceTier::close) at the end.
pub(crate) struct TraceTier<'a, 'b> {
    config: &'a SimConfig,
    seq: &'a SequenceBlocks,
    describe: Describe<'a>,
    lm: Option<&'b mut Lmcache<'a>>,
    pool: KvPool<AnyPolicy>,
    /// Running requests in admission order (vLLM's `self.running`).
    running: Vec<Running>,
    events: BinaryHeap<Event>,
    /// FCFS; a preempted request goes back to the front with the tokens it had sampled.
    waiting: VecDeque<(usize, u32)>,
    /// The head of `waiting` did not fit and no block was freed since: a step that only
    /// allocates does not retry it (free blocks only shrink; a block it hashes would help only
    /// a head that repeats a running request's answer, which a next turn does after the
    /// finish); a finish or a preemption does.
    head_waits_for_room: bool,
    /// Per request: first admission's hits, its finish, admissions so far, preemptions.
    hits: Vec<Option<RequestHits>>,
    finish: Vec<f64>,
    epoch: Vec<u32>,
    preemptions: Vec<u32>,
    totals: TierTotals,
    in_use: u64,
    bs: u64,
    /// LMCache stores of admitted prefills, run when they are due ([`PendingStore::due`]).
    pending_stores: Vec<PendingStore>,
    /// Loads from LMCache take this long (a shared tier), else they are free.
    load_cost: Option<LoadCost>,
    /// Finished requests whose blocks vLLM still holds until their KV send is reported done,
    /// in finish order: (when they are freed, blocks).
    held: Vec<(f64, Vec<Slot>)>,
    /// Per request: its leading blocks the pool was told it wants while it waits
    /// (`KvPool::want`, for a policy that reads the waiting queue).
    wanted: Vec<u32>,
}

/// An admitted prefill's LMCache stores, not run yet.
struct PendingStore {
    /// The admission, or the end of the prefill's step (its first token's time, from the log).
    at: f64,
    /// `at` is the step's end: events at that instant (the next `schedule()`) see the stores;
    /// at an admission's stamp they do not (a request admitted in the same step).
    step_end: bool,
    req: usize,
    computed: u64,
    len: u64,
}

impl PendingStore {
    fn due(&self, now: f64) -> bool {
        self.at < now || (self.step_end && self.at <= now)
    }
}

impl TraceTier<'_, '_> {
    /// Run the LMCache stores due by `now` ([`PendingStore::due`]).
    pub(crate) fn flush_stores(&mut self, now: f64) {
        if !self.pending_stores.iter().any(|p| p.due(now)) {
            return;
        }
        let budget = self.config.engine.max_num_batched_tokens as u64;
        let (mut due, later): (Vec<_>, Vec<_>) =
            self.pending_stores.drain(..).partition(|p| p.due(now));
        self.pending_stores = later;
        // in time order (stable: admissions of one instant keep their order)
        due.sort_by(|a, b| a.at.total_cmp(&b.at));
        if let Some(lm) = self.lm.as_deref_mut() {
            for p in due {
                lm.at(p.at);
                lm.store_prefill(p.req, p.computed, p.len, budget);
            }
        }
    }

    fn prompt(&self, j: usize) -> u64 {
        self.describe.trace.requests[j].input_length as u64
    }

    fn output(&self, j: usize) -> u32 {
        self.describe.trace.requests[j].output_length
    }

    /// Tokens vLLM computes for a request that runs to its end: the last sampled token never is.
    fn final_tokens(&self, j: usize) -> u64 {
        self.prompt(j) + self.output(j).saturating_sub(1) as u64
    }

    /// Admit request `j`, which sampled `generated` tokens before (a preempted request), at
    /// `now` if the pool can hold its tokens.
    fn admit(&mut self, j: usize, generated: u32, now: f64) -> Admit {
        let r = &self.describe.trace.requests[j];
        let keys = self.seq.request(j);
        let len = r.input_length as u64 + generated as u64;
        let blocks = len.div_ceil(self.bs);
        if generated == 0 && blocks > self.pool.cache.capacity() {
            return Admit::Never;
        }
        // a first admission looks up and hashes its prompt's keys; a preempted request also
        // the answer blocks it had computed
        let known = if generated == 0 {
            self.seq.prompt_blocks[j] as usize
        } else {
            keys.len()
        };
        let max_hit = (len.saturating_sub(1) / self.bs) as usize;
        let hits = self.pool.leading_hits(&keys[..known], max_hit);
        let evictable = self.pool.evictable_among(&keys[..hits]);
        let new = blocks - hits as u64;
        // LMCache's lookup comes before vLLM's allocation check; a request that does not fit
        // keeps its lookup (and pins) until it is admitted (`vllm_v1_adapter.py`)
        let local = hits as u64 * self.bs;
        let external = match self.lm.as_deref_mut() {
            Some(lm) => {
                lm.at(now);
                lm.matched(j, len, local).min(len - local)
            }
            None => 0,
        };
        if new + evictable > self.pool.free_blocks() {
            return Admit::NoRoom;
        }
        // it leaves the waiting queue before its allocation evicts (as `Scheduler::schedule`):
        // blocks past its hit run are of no use to it
        self.withdraw(j);
        let mut slots = Vec::with_capacity(keys.len().max(blocks as usize) + 1);
        let d = &self.describe;
        let access = |k: ObjId, depth: usize, t: u64| d.access(j, k, depth, t);
        self.pool.touch(&keys[..hits], &mut slots, &access);
        self.pool.allocate(new as usize, &mut slots);
        let hashed = ((len / self.bs) as usize).min(known);
        self.pool
            .cache_blocks(&mut slots, keys, hits, hashed, &access);
        if let Some(lm) = self.lm.as_deref_mut() {
            lm.admitted(j, local, external);
            if self.config.pinning {
                // LMCache stores after the step's forward pass: a request admitted in the same
                // step (same stamp) does not see them (`vllm_v1_adapter.py:1104-1259`). When
                // the log has per-token times the prefill's last step ended when its first
                // token was sampled: the stores are timed there (LMCache's multi-process
                // eviction loop runs on that clock; `Lmcache::at`)
                let first_token = self
                    .output_times(j)
                    .and_then(|t| t.first().copied())
                    .filter(|&t| generated == 0 && t > now);
                self.pending_stores.push(PendingStore {
                    at: first_token.unwrap_or(now),
                    step_end: first_token.is_some(),
                    req: j,
                    computed: local + external,
                    len,
                });
            } else {
                let budget = self.config.engine.max_num_batched_tokens as u64;
                lm.store_prefill(j, local + external, len, budget);
            }
        }
        let prefill = len - local - external;
        if self.hits[j].is_none() {
            let (cpu_hit_tokens, disk_hit_tokens) =
                self.lm.as_deref().map_or((0, 0), |lm| lm.first(j));
            let hits = RequestHits {
                gpu_hit_tokens: local,
                cpu_hit_tokens,
                disk_hit_tokens,
                admitted_s: now,
                preemptions: 0,
                rejected: false,
            };
            let late = now - r.timestamp;
            self.finish[j] = match r.finish_time {
                Some(f) => f.max(now),
                None => match self.load_cost {
                    // the load comes before its prefill
                    Some(c) => {
                        let load = c.seconds(cpu_hit_tokens + disk_hit_tokens);
                        self.config.timing.finish_time(r, hits.total()) + late + load
                    }
                    None => self.config.timing.finish_time(r, hits.total()) + late,
                },
            };
            self.hits[j] = Some(hits);
        }
        let run = Running {
            req: j,
            slots,
            start: now,
            finish: if self.config.pinning {
                self.finish[j].max(now)
            } else {
                now
            },
            generated,
            hashed,
            stalled: false,
            one_step_prefill: false,
        };
        if !self.config.pinning {
            let finished = Some(self.end(run));
            return Admit::Admitted { prefill, finished };
        }
        self.in_use += run.slots.len() as u64;
        self.totals.max_in_use = self.totals.max_in_use.max(self.in_use);
        self.events.push(Event {
            time: run.finish,
            kind: EventKind::Finish,
            req: j,
            epoch: self.epoch[j],
        });
        self.running.push(run);
        self.plan_grow(self.running.len() - 1);
        Admit::Admitted {
            prefill,
            finished: None,
        }
    }

    /// When each output token was sampled, when the log says (vLLM's streaming-delta lines).
    fn output_times(&self, j: usize) -> Option<&[f64]> {
        let r = &self.describe.trace.requests[j];
        r.output_times
            .as_deref()
            .filter(|t| t.len() == r.output_length as usize)
    }

    /// The end of the step in flight at `now`, when the running requests' per-token times
    /// tell it: every decoding request samples one token per step, and a request whose whole
    /// prompt was scheduled in one step samples its first token at that step's end, so the
    /// step ends when the last of them has sampled its next token. None when no running
    /// request tells (then a request is admitted at its arrival): none runs, or each is in a
    /// prefill longer than one step.
    fn step_end_after(&self, now: f64) -> Option<f64> {
        let mut end: Option<f64> = None;
        for run in &self.running {
            let Some(times) = self.output_times(run.req) else {
                continue;
            };
            let Some(&first) = times.first() else {
                continue;
            };
            // a token sampled at `now` ends the step in flight: the next `schedule()` sees a
            // request that arrived by then
            if first >= now {
                if run.one_step_prefill && run.start <= now {
                    end = Some(end.map_or(first, |e: f64| e.max(first)));
                }
                continue;
            }
            let next = times.partition_point(|&t| t < now);
            if let Some(&t) = times.get(next) {
                end = Some(end.map_or(t, |e: f64| e.max(t)));
            }
        }
        end
    }

    /// Plan the running request's next block. Its first position `pos` holds output token
    /// `i = pos - prompt`, whose KV is computed in the step that starts when token `i` is
    /// sampled; the block is allocated then (`allocate_slots`). That is the token's logged time
    /// when the log has one per token (streaming deltas); otherwise the tokens still to sample
    /// are spread evenly over this admission..finish span. With per-token times the block being
    /// filled is hashed at the start of the step that computes its last token
    /// (`cache_blocks(min(computed + new, num_tokens))`), which comes one step earlier.
    fn plan_grow(&mut self, i: usize) {
        let run = &self.running[i];
        let (p, o) = (self.prompt(run.req), self.output(run.req) as u64);
        let pos = run.slots.len() as u64 * self.bs;
        let last = self.final_tokens(run.req);
        if run.stalled {
            return;
        }
        let g = run.generated as u64;
        let time = match self.output_times(run.req) {
            Some(times) => {
                let grow = (pos < last).then(|| pos - p);
                // block `hashed` is full once the sequence holds `(hashed + 1) * bs` tokens
                let full_at = (run.hashed as u64 + 1) * self.bs;
                let hash = (run.hashed < run.slots.len() && full_at <= last && full_at > p)
                    .then(|| full_at - 1 - p);
                let Some(k) = [grow, hash].into_iter().flatten().min() else {
                    return;
                };
                times[k as usize].clamp(run.start, run.finish)
            }
            None => {
                if pos >= last {
                    return;
                }
                // token i is the (i - g + 1)-th sampled since this admission
                let steps = (pos + 1).saturating_sub(p + g) as f64;
                run.start + (run.finish - run.start) * steps / (o - g) as f64
            }
        };
        self.events.push(Event {
            time,
            kind: EventKind::Grow,
            req: run.req,
            epoch: self.epoch[run.req],
        });
    }

    /// Output tokens the running request has sampled by `now`, per [`plan_grow`]'s pace.
    fn sampled_by(&self, run: &Running, now: f64) -> u32 {
        let (o, g) = (self.output(run.req), run.generated);
        if let Some(times) = self.output_times(run.req) {
            let done = times.partition_point(|&t| t <= now) as u32;
            return done.max(g).min(o.saturating_sub(1));
        }
        let span = run.finish - run.start;
        let done = if span > 0.0 {
            ((now - run.start) / span * (o - g) as f64).floor() as u32
        } else {
            o
        };
        (g + done).min(o.saturating_sub(1))
    }

    /// Remove the running request `j` (it finished) from the running list.
    fn take_running(&mut self, j: usize) -> Running {
        let i = self
            .running
            .iter()
            .position(|r| r.req == j)
            .expect("running");
        self.running.remove(i)
    }

    /// A step starts at `now` for the running request `j`: its full blocks are hashed and,
    /// when its next token needs one, a block is allocated; false if that preempted.
    fn grow(&mut self, j: usize, now: f64) -> bool {
        let Some(mut i) = self.running.iter().position(|r| r.req == j) else {
            return true;
        };
        let keys = self.seq.request(j);
        let run = &self.running[i];
        // the sequence this step computes up to, and the blocks that takes
        let (full, need) = match self.output_times(j) {
            Some(times) => {
                let sampled =
                    (times.partition_point(|&t| t <= now) as u64).max(run.generated as u64);
                let n = self.prompt(j) + sampled;
                ((n / self.bs) as usize, n.div_ceil(self.bs) as usize)
            }
            None => (run.slots.len(), run.slots.len() + 1),
        };
        // `allocate_slots` hashes every full block computed so far
        let full = full.min(run.slots.len()).min(keys.len());
        let from = run.hashed;
        if full > from {
            let d = &self.describe;
            let access = |k: ObjId, depth: usize, t: u64| d.access(j, k, depth, t);
            self.pool
                .cache_blocks(&mut self.running[i].slots, keys, from, full, &access);
            self.running[i].hashed = full;
        }
        if need <= self.running[i].slots.len() {
            self.plan_grow(i);
            return true;
        }
        // no free block: preempt the last running request until one is (vLLM's
        // `schedule()`, `self.running.pop()`), the request itself included
        let mut preempted = false;
        while self.pool.free_blocks() == 0 {
            if self.running.len() == 1 {
                // alone and the pool is full: vLLM would never have admitted it
                self.running[i].stalled = true;
                return true;
            }
            let last = self.running.len() - 1;
            self.preempt(now);
            preempted = true;
            if last == i {
                return false;
            }
            i = self
                .running
                .iter()
                .position(|r| r.req == j)
                .expect("running");
        }
        self.pool.allocate(1, &mut self.running[i].slots);
        self.in_use += 1;
        self.totals.max_in_use = self.totals.max_in_use.max(self.in_use);
        self.plan_grow(i);
        !preempted
    }

    /// Preempt the last running request: its blocks are freed (hashed ones stay cached), it
    /// goes back to the front of the waiting queue and is recomputed when admitted again
    /// (`_preempt_request`).
    fn preempt(&mut self, now: f64) {
        let mut run = self.running.pop().expect("a running request");
        let j = run.req;
        // never more tokens than its blocks hold (float rounding of the pace): it computed all
        // but the last sampled token, so it holds at most `room + 1` sampled tokens (that many
        // when it is preempted for the block its last token needs)
        let room = (run.slots.len() as u64 * self.bs).saturating_sub(self.prompt(j));
        let sampled = self.sampled_by(&run, now).min(room as u32 + 1);
        let keys = self.seq.request(j);
        let computed = self.prompt(j) + sampled.saturating_sub(1) as u64;
        let full = ((computed / self.bs) as usize)
            .min(run.slots.len())
            .min(keys.len());
        if full > run.hashed {
            let d = &self.describe;
            let access = |k: ObjId, depth: usize, t: u64| d.access(j, k, depth, t);
            self.pool
                .cache_blocks(&mut run.slots, keys, run.hashed, full, &access);
        }
        self.pool.cache.policy.on_time(now);
        self.pool.free(&run.slots);
        self.in_use -= run.slots.len() as u64;
        if let Some(lm) = self.lm.as_deref_mut() {
            lm.at(now);
            lm.released(j);
        }
        self.epoch[j] += 1;
        self.preemptions[j] += 1;
        self.totals.preemptions += 1;
        self.waiting.push_front((j, sampled));
        self.announce(j, sampled);
        self.head_waits_for_room = false;
    }

    /// A request finishes: its blocks up to its whole sequence (as far as the pool allows, if
    /// it could not grow) are hashed and freed tail first.
    fn end(&mut self, run: Running) -> Served {
        let (j, finish) = (run.req, run.finish);
        let slots = self.hash_final(run);
        self.pool.cache.policy.on_time(finish);
        let output = self.describe.trace.requests[j].output_length;
        self.pool.cache.policy.on_finish(j as u32, output);
        self.pool.free(&slots);
        if let Some(lm) = self.lm.as_deref_mut() {
            lm.at(finish);
            lm.released(j);
        }
        self.served(j, finish)
    }

    /// A finishing request's blocks, allocated up to its whole sequence as far as the pool
    /// allows (if it could not grow) and hashed.
    fn hash_final(&mut self, run: Running) -> Vec<Slot> {
        let j = run.req;
        let keys = self.seq.request(j);
        let mut slots = run.slots;
        let end = self.final_tokens(j).div_ceil(self.bs);
        let extra = end
            .saturating_sub(slots.len() as u64)
            .min(self.pool.free_blocks());
        self.pool.allocate(extra as usize, &mut slots);
        let upto = keys.len().min(slots.len());
        let d = &self.describe;
        let access = |k: ObjId, depth: usize, t: u64| d.access(j, k, depth, t);
        self.pool
            .cache_blocks(&mut slots, keys, run.hashed, upto, &access);
        slots
    }

    fn served(&self, j: usize, finish: f64) -> Served {
        let mut hits = self.hits[j].expect("admitted");
        hits.preemptions = self.preemptions[j];
        Served {
            req: j,
            hits,
            finish_s: finish,
        }
    }

    /// vLLM keeps a finished request's blocks until its connector reports the request's KV
    /// sent: `_free_request` skips `_free_blocks` when `request_finished` returns true
    /// (`vllm/v1/core/sched/scheduler.py:2723-2742`), which LMCache's multi-process connector
    /// does whenever it stores (`kv_both`; `lmcache_mp_connector.py:1578-1580`, its
    /// `_can_store`); the in-process one returns false (`vllm_v1_adapter.py:1939`). Only with
    /// pinning (without it nothing overlaps).
    fn delays_free(&self) -> bool {
        self.config.pinning
            && self.config.cpu.is_some()
            && self.config.engine.lmcache_mode == crate::config::LmcacheMode::Mp
    }

    /// When vLLM frees the blocks of request `j`, finished at `finish` (its last token's step,
    /// step N, ended then): its `Finished sending KV transfer` line when the log has one
    /// (`Trace::kv_sent_s`), else the end of the next step, as follows. The connector's worker reports the request's stores done from the
    /// next step's `get_finished(scheduler_output.finished_req_ids)` (its prompt's stores have
    /// long completed), and the scheduler frees the blocks in that step's `update_from_output`
    /// (`_update_from_kv_xfer_finished`, `scheduler.py:3209-3235`, which logs `Finished sending
    /// KV transfer for request ...` at DEBUG): the end of step N + 1, when the last of the
    /// other running requests has sampled its token of that step. One step's lines are logged
    /// together, so a request's token of step N is the one nearest the finish (before or just
    /// after it), and its next one is step N + 1's. A request in a prefill tells only when no
    /// decoding one does and its prompt took one step (as for an arrival, [`step_end_after`]):
    /// its admission in the log is less sure than a decode's tokens. When no running request
    /// tells (none runs, or the log has no per-token times), step N + 1 runs no forward pass
    /// (`kv_connector_no_forward`) and ends at once: the blocks are freed at the finish.
    fn kv_sent_at(&self, j: usize, finish: f64) -> f64 {
        let trace = self.describe.trace;
        if let Some(&t) = trace.kv_sent_s.get(&trace.requests[j].id) {
            return t.max(finish);
        }
        // (from decoding requests, from prefills)
        let (mut end, mut prefill_end): (Option<f64>, Option<f64>) = (None, None);
        for run in &self.running {
            let Some(times) = self.output_times(run.req) else {
                continue;
            };
            // its tokens around the finish: the last before (or its admission, for a prefill
            // of one step) and the first after
            let k = times.partition_point(|&t| t <= finish);
            let Some(&after) = times.get(k) else {
                continue;
            };
            let before = match k.checked_sub(1) {
                Some(b) => times[b],
                None if run.one_step_prefill && run.start < finish => run.start,
                None => continue,
            };
            // the nearer one was sampled in step N (one step's lines are logged together)
            let next = if after - finish < finish - before {
                match times.get(k + 1) {
                    Some(&t) => t,
                    None => continue,
                }
            } else {
                after
            };
            let e = if k > 0 { &mut end } else { &mut prefill_end };
            *e = Some(e.map_or(next, |e: f64| e.max(next)));
        }
        end.or(prefill_end).map_or(finish, |e| e.max(finish))
    }

    /// One `schedule()` call's admissions at `now`: waiting requests FCFS while the step's
    /// token budget lasts (each running request decodes one token of it) and fewer than
    /// `max_num_seqs` run; the first that does not fit stops them.
    fn admit_waiting(&mut self, now: f64, serve: &mut dyn FnMut(Served)) {
        self.flush_stores(now);
        self.head_waits_for_room = false;
        let engine = &self.config.engine;
        let max_seqs = engine.max_num_seqs.max(1) as usize;
        let mut budget =
            (engine.max_num_batched_tokens.max(1) as u64).saturating_sub(self.running.len() as u64);
        while budget > 0 && self.running.len() < max_seqs {
            let Some(&(j, generated)) = self.waiting.front() else {
                break;
            };
            match self.admit(j, generated, now) {
                Admit::Admitted { prefill, finished } => {
                    // withdrawn by `admit`
                    self.waiting.pop_front();
                    if finished.is_none() {
                        let run = self.running.last_mut().expect("just admitted");
                        run.one_step_prefill = prefill <= budget;
                    }
                    budget = budget.saturating_sub(prefill);
                    if let Some(s) = finished {
                        serve(s);
                    }
                }
                Admit::NoRoom => {
                    self.head_waits_for_room = true;
                    break;
                }
                Admit::Never => {
                    self.waiting.pop_front();
                    self.withdraw(j);
                    self.totals.rejections += 1;
                    serve(Served::rejected(j));
                }
            }
        }
    }

    /// Run every event before `now` (those at `now` see a request that arrives then).
    pub(crate) fn run_until(&mut self, now: f64, serve: &mut dyn FnMut(Served)) {
        while let Some(t) = self.events.peek().map(|e| e.time).filter(|&t| t < now) {
            self.instant(t, serve);
        }
    }

    /// The time of the next event ([`instant`](TraceTier::instant)), if any.
    pub(crate) fn next_time(&self) -> Option<f64> {
        self.events.peek().map(|e| e.time)
    }

    /// Run the events of instant `t`, the earliest planned ([`next_time`](TraceTier::next_time)).
    pub(crate) fn instant(&mut self, t: f64, serve: &mut dyn FnMut(Served)) {
        self.flush_stores(t);
        // Every event of this instant at once: finishes, then the running requests' block
        // allocations, then admissions (the heap orders kinds so). vLLM frees finished
        // requests at a step's end; the next `schedule()` allocates for running requests
        // first and admits only if it preempted nobody. (A log with fine stamps gives a
        // step's lines one instant; see the vLLM log reader.)
        let (mut freed, mut admit, mut preempted) = (false, false, false);
        while self.events.peek().is_some_and(|e| e.time == t) {
            let e = self.events.pop().expect("peeked");
            if e.kind == EventKind::Admit {
                admit = true;
                continue;
            }
            if e.epoch != self.epoch[e.req] {
                continue;
            }
            match e.kind {
                EventKind::Grow => {
                    // without per-token times a block allocation marks a step boundary;
                    // with them the step's end is an `Admit` event
                    let timed = self.output_times(e.req).is_some();
                    if !self.grow(e.req, t) {
                        preempted = true;
                    } else if !timed {
                        admit = true;
                    }
                }
                EventKind::Finish if self.delays_free() => {
                    let run = self.take_running(e.req);
                    let (j, finish, held) = (run.req, run.finish, run.slots.len());
                    let slots = self.hash_final(run);
                    // blocks taken at the finish (a request that could not grow) are held too
                    self.in_use += (slots.len() - held) as u64;
                    self.totals.max_in_use = self.totals.max_in_use.max(self.in_use);
                    if let Some(lm) = self.lm.as_deref_mut() {
                        lm.at(finish);
                        lm.released(j);
                    }
                    let release = self.kv_sent_at(j, finish);
                    self.held.push((release, slots));
                    self.events.push(Event {
                        time: release,
                        kind: EventKind::Release,
                        req: j,
                        epoch: self.epoch[j],
                    });
                    serve(self.served(j, finish));
                    // a step's end: the next `schedule()` runs with one request fewer
                    admit = true;
                }
                EventKind::Finish => {
                    let run = self.take_running(e.req);
                    self.in_use -= run.slots.len() as u64;
                    let served = self.end(run);
                    serve(served);
                    freed = true;
                }
                EventKind::Release => {
                    // every send of this instant, in finish order (vLLM frees them in one
                    // pass, `_update_from_kv_xfer_finished`); the other events find none
                    let (due, later): (Vec<_>, Vec<_>) =
                        self.held.drain(..).partition(|h| h.0 <= t);
                    self.held = later;
                    if !due.is_empty() {
                        self.pool.cache.policy.on_time(t);
                    }
                    for (_, slots) in due {
                        self.in_use -= slots.len() as u64;
                        self.pool.free(&slots);
                        freed = true;
                    }
                }
                EventKind::Admit => unreachable!("handled above"),
            }
        }
        // a finish freed blocks; otherwise a head that did not fit still does not
        let retry = freed || (admit && !self.head_waits_for_room);
        if retry && !preempted && !self.waiting.is_empty() {
            self.admit_waiting(t, serve);
        }
    }
}

impl<'a, 'b> TraceTier<'a, 'b> {
    pub(crate) fn new(
        config: &'a SimConfig,
        seq: &'a SequenceBlocks,
        describe: Describe<'a>,
        lm: Option<&'b mut Lmcache<'a>>,
        usable: u64,
    ) -> Self {
        let bs = seq.blocks.block_size as u64;
        let n = describe.trace.requests.len();
        TraceTier {
            config,
            seq,
            describe,
            lm,
            pool: gpu_pool(&config.gpu, usable),
            running: Vec::new(),
            events: BinaryHeap::new(),
            waiting: VecDeque::new(),
            head_waits_for_room: false,
            hits: vec![None; n],
            finish: vec![f64::NAN; n],
            epoch: vec![0; n],
            preemptions: vec![0; n],
            totals: TierTotals::default(),
            in_use: 0,
            bs,
            pending_stores: Vec::new(),
            load_cost: None,
            held: Vec::new(),
            wanted: vec![0; n],
        }
    }

    /// Request `j`, which sampled `generated` tokens before, joins the waiting queue: the pool
    /// is told the blocks it will look up (the prompt's, and the answer's it had computed), as
    /// far as [`admit`](TraceTier::admit)'s lookup goes (`max_hit`: all but the last token; a
    /// block-aligned prompt's last block is never hit).
    fn announce(&mut self, j: usize, generated: u32) {
        let keys = self.seq.request(j);
        let known = if generated == 0 {
            self.seq.prompt_blocks[j] as usize
        } else {
            keys.len()
        };
        let looked_up = (self.prompt(j) + generated as u64).saturating_sub(1) / self.bs;
        let known = (looked_up as usize).min(known).min(keys.len());
        self.wanted[j] = self.pool.want(&keys[..known], j as u64) as u32;
    }

    /// Request `j` left the waiting queue.
    fn withdraw(&mut self, j: usize) {
        let known = std::mem::take(&mut self.wanted[j]) as usize;
        if known > 0 {
            self.pool.unwant(&self.seq.request(j)[..known], j as u64);
        }
    }

    /// Request `i` (an index into the whole trace) arrives.
    pub(crate) fn arrive(&mut self, i: usize, serve: &mut dyn FnMut(Served)) {
        let timestamp = self.describe.trace.requests[i].timestamp;
        self.run_until(timestamp, serve);
        self.waiting.push_back((i, 0));
        self.announce(i, 0);
        match self.step_end_after(timestamp) {
            // a step is in flight: the request waits for its end
            Some(end) => {
                self.totals.queued += 1;
                self.events.push(Event {
                    time: end,
                    kind: EventKind::Admit,
                    req: i,
                    epoch: 0,
                });
            }
            // a step ends (a request finishes) as it arrives: it joins the next `schedule()`
            None if self.events.peek().is_some_and(|e| e.time <= timestamp) => {
                self.events.push(Event {
                    time: timestamp,
                    kind: EventKind::Admit,
                    req: i,
                    epoch: 0,
                });
            }
            None => {
                self.admit_waiting(timestamp, serve);
                if self.waiting.back() == Some(&(i, 0)) {
                    self.totals.queued += 1;
                }
            }
        }
    }

    /// Tokens of request `i`'s prompt the pool holds now: its leading cached blocks, at most
    /// `num_tokens - 1` (what a lookup at this instant would hit).
    pub(crate) fn cached_prefix_tokens(&self, i: usize) -> u64 {
        let len = self.prompt(i);
        let known = self.seq.prompt_blocks[i] as usize;
        let keys = &self.seq.request(i)[..known.min(self.seq.request(i).len())];
        let max_hit = (len.saturating_sub(1) / self.bs) as usize;
        self.pool.leading_hits(keys, max_hit) as u64 * self.bs
    }

    /// Run to the end: every admitted request finishes, every store is done.
    pub(crate) fn close(mut self, serve: &mut dyn FnMut(Served)) -> TierTotals {
        self.run_until(f64::INFINITY, serve);
        self.flush_stores(f64::INFINITY);
        if let Some(lm) = self.lm.as_deref_mut() {
            lm.settle();
        }
        self.totals.evictions = self.pool.cache.evictions;
        self.totals.judge = self.pool.cache.policy.judge();
        self.totals
    }
}

/// The `vllm` schedule's state: vLLM's scheduler in virtual time, stepped by [`run`] or,
/// one replica each, by the cluster driver (`crate::cluster`).
pub(crate) struct VllmTier<'a, 'b> {
    config: &'a SimConfig,
    sched: Scheduler<AnyPolicy>,
    view: SeqView<'a>,
    lm: Option<&'b mut Lmcache<'a>>,
    totals: TierTotals,
    admitted_at: Vec<f64>,
    /// The virtual clock: the start of the next step (or, with a step in flight, its end).
    now: f64,
    /// A step scheduled whose end (`now`) has not been run yet: only when the cluster steps
    /// replicas instant by instant ([`instant`](VllmTier::instant)).
    in_flight: Option<StepPlan>,
    /// Loads from LMCache take this long (a shared tier), else they are free.
    load_cost: Option<LoadCost>,
}

impl<'a, 'b> VllmTier<'a, 'b> {
    pub(crate) fn new(
        config: &'a SimConfig,
        seq: &'a SequenceBlocks,
        describe: Describe<'a>,
        lm: Option<&'b mut Lmcache<'a>>,
        usable: u64,
    ) -> Self {
        let n = describe.trace.requests.len();
        let mut sched = Scheduler::new(
            SchedulerConfig {
                block_size: seq.blocks.block_size,
                max_num_batched_tokens: config.engine.max_num_batched_tokens.max(1),
                max_num_seqs: config.engine.max_num_seqs.max(1),
                ..Default::default()
            },
            gpu_pool(&config.gpu, usable),
        );
        // LMCache's multi-process connector: blocks freed when the stores are reported done
        sched.delay_free_until_sent(
            config.cpu.is_some() && config.engine.lmcache_mode == crate::config::LmcacheMode::Mp,
        );
        VllmTier {
            config,
            sched,
            view: SeqView { seq, describe },
            lm,
            totals: TierTotals::default(),
            admitted_at: vec![f64::NAN; n],
            now: f64::NEG_INFINITY,
            in_flight: None,
            load_cost: None,
        }
    }

    /// Run steps that start before `t` (a request arriving at `t` joins the first step
    /// starting at or after it).
    pub(crate) fn run_until(&mut self, t: f64, serve: &mut dyn FnMut(Served)) {
        self.finish_in_flight(serve);
        while self.sched.has_unfinished() && self.now < t {
            self.step(serve);
        }
    }

    /// Request `i` (an index into the whole trace) arrives.
    pub(crate) fn arrive(&mut self, i: usize, serve: &mut dyn FnMut(Served)) {
        let r = &self.view.describe.trace.requests[i];
        self.run_until(r.timestamp, serve);
        // idle until it arrives
        self.now = self.now.max(r.timestamp);
        let whole = r.input_length as u64 + r.output_length.saturating_sub(1) as u64;
        if r.input_length == 0 || !self.sched.fits_ever(whole) {
            self.totals.rejections += 1;
            serve(Served::rejected(i));
        } else {
            self.sched
                .add_request(i, r.input_length as u64, r.output_length);
        }
    }

    /// Tokens of request `i`'s prompt the pool holds now (see [`TraceTier`]'s).
    pub(crate) fn cached_prefix_tokens(&self, i: usize) -> u64 {
        let seq = self.view.seq;
        let bs = seq.blocks.block_size as u64;
        let len = self.view.describe.trace.requests[i].input_length as u64;
        let keys = seq.request(i);
        let keys = &keys[..(seq.prompt_blocks[i] as usize).min(keys.len())];
        let max_hit = (len.saturating_sub(1) / bs) as usize;
        self.sched.pool.leading_hits(keys, max_hit) as u64 * bs
    }

    /// One `schedule()` + forward step + `update()`.
    fn step(&mut self, serve: &mut dyn FnMut(Served)) {
        if let Some(plan) = self.begin(serve) {
            self.end(plan, serve);
        }
    }

    /// The time of the next instant: a step's start, or the end of the step in flight.
    pub(crate) fn next_time(&self) -> Option<f64> {
        (self.in_flight.is_some() || self.sched.has_unfinished()).then_some(self.now)
    }

    /// Run the next instant ([`next_time`](VllmTier::next_time)): start a step (its lookups and
    /// loads), or end the one in flight (its stores, its finishes). A fleet with one LMCache
    /// steps its replicas so, in time order.
    pub(crate) fn instant(&mut self, serve: &mut dyn FnMut(Served)) {
        match self.in_flight.take() {
            Some(plan) => self.end(plan, serve),
            None => self.in_flight = self.begin(serve),
        }
    }

    /// The end of the step in flight, if one is.
    pub(crate) fn in_flight_end(&self) -> Option<f64> {
        self.in_flight.as_ref().map(|_| self.now)
    }

    /// End the step in flight, if one is.
    pub(crate) fn finish_in_flight(&mut self, serve: &mut dyn FnMut(Served)) {
        if let Some(plan) = self.in_flight.take() {
            self.end(plan, serve);
        }
    }

    /// `schedule()` at `now` and the clock moved to the step's end; None when nothing was
    /// scheduled.
    #[inline(always)]
    fn begin(&mut self, serve: &mut dyn FnMut(Served)) -> Option<StepPlan> {
        let reqs = &self.view.describe.trace.requests;
        let mut none = inferencelab_engine::NoConnector;
        let conn: &mut dyn KvConnector = match self.lm.as_deref_mut() {
            Some(l) => {
                l.at(self.now);
                l
            }
            None => &mut none,
        };
        let (plan, load_s) = match self.load_cost {
            None => (self.sched.schedule(&self.view, conn), 0.0),
            Some(cost) => {
                let mut timed = TimedLoads {
                    inner: conn,
                    cost,
                    seconds: 0.0,
                };
                let plan = self.sched.schedule(&self.view, &mut timed);
                (plan, timed.seconds)
            }
        };
        if plan.scheduled.is_empty() {
            // nothing running and the head cannot fit: it never will
            if self.sched.num_running() == 0 {
                if let Some(r) = self.sched.drop_head(&self.view) {
                    self.totals.rejections += 1;
                    serve(Served::rejected(r.req));
                }
            }
            return None;
        }
        for &req in &plan.admitted {
            if self.admitted_at[req].is_nan() {
                self.admitted_at[req] = self.now;
                if self.now > reqs[req].timestamp {
                    self.totals.queued += 1;
                }
            }
        }
        self.totals.max_in_use = self.totals.max_in_use.max(self.sched.blocks_in_use());
        let (prefill, decode) = plan.work();
        let timing = &self.config.timing;
        self.now += prefill as f64 / timing.prefill_tokens_per_s
            + if decode {
                timing.decode_ms_per_token / 1000.0
            } else {
                0.0
            };
        if self.load_cost.is_some() {
            // LMCache loads before the forward pass (synchronously, vLLM's default)
            self.now += load_s;
        }
        Some(plan)
    }

    /// The step's end (`now`): `update()`, stores, finishes.
    #[inline(always)]
    fn end(&mut self, plan: StepPlan, serve: &mut dyn FnMut(Served)) {
        let mut none = inferencelab_engine::NoConnector;
        let conn: &mut dyn KvConnector = match self.lm.as_deref_mut() {
            Some(l) => {
                l.at(self.now);
                l
            }
            None => &mut none,
        };
        // finished requests free their blocks at the step's end (learned policies' clock)
        self.sched.pool.cache.policy.on_time(self.now);
        for done in self.sched.update(&plan, conn) {
            let (cpu, disk) = self
                .lm
                .as_deref_mut()
                .map_or((0, 0), |l| l.take_first(done.req));
            serve(Served {
                req: done.req,
                hits: RequestHits {
                    gpu_hit_tokens: done.gpu_hit_tokens,
                    cpu_hit_tokens: cpu,
                    disk_hit_tokens: disk,
                    admitted_s: self.admitted_at[done.req],
                    preemptions: done.num_preemptions,
                    rejected: false,
                },
                finish_s: self.now,
            });
        }
    }

    /// Run to the end: every request finishes (or is refused).
    pub(crate) fn close(mut self, serve: &mut dyn FnMut(Served)) -> TierTotals {
        self.finish_in_flight(serve);
        while self.sched.has_unfinished() {
            self.step(serve);
        }
        if let Some(lm) = self.lm.as_deref_mut() {
            lm.settle();
        }
        self.totals.evictions = self.sched.pool.cache.evictions;
        self.totals.judge = self.sched.pool.cache.policy.judge();
        self.totals.preemptions = self.sched.num_preemptions;
        self.totals
    }
}

/// A connector that times the loads it is asked for ([`LoadCost`]): one retrieve per admission
/// with external tokens.
struct TimedLoads<'c> {
    inner: &'c mut dyn KvConnector,
    cost: LoadCost,
    seconds: f64,
}

impl KvConnector for TimedLoads<'_> {
    fn matched(&mut self, req: usize, num_tokens: u64, local_hit_tokens: u64) -> u64 {
        self.inner.matched(req, num_tokens, local_hit_tokens)
    }
    fn admitted(&mut self, req: usize, local_hit_tokens: u64, external_tokens: u64) {
        self.seconds += self.cost.seconds(external_tokens);
        self.inner.admitted(req, local_hit_tokens, external_tokens);
    }
    fn computed(&mut self, req: usize, before: u64, after: u64) {
        self.inner.computed(req, before, after);
    }
    fn released(&mut self, req: usize) {
        self.inner.released(req);
    }
}

/// One server's engine under its schedule (`trace` or `vllm`): run to the end by [`run`] or, one
/// replica each, stepped by the cluster driver (`crate::cluster`).
pub(crate) enum EngineTier<'a, 'b> {
    Trace(TraceTier<'a, 'b>),
    Vllm(VllmTier<'a, 'b>),
}

impl<'a, 'b> EngineTier<'a, 'b> {
    /// `schedule` is the effective one (`Auto` resolved): `Vllm`, else the trace's.
    pub(crate) fn new(
        schedule: Schedule,
        config: &'a SimConfig,
        seq: &'a SequenceBlocks,
        describe: Describe<'a>,
        lm: Option<&'b mut Lmcache<'a>>,
        usable: u64,
    ) -> Self {
        match schedule {
            Schedule::Vllm => EngineTier::Vllm(VllmTier::new(config, seq, describe, lm, usable)),
            _ => EngineTier::Trace(TraceTier::new(config, seq, describe, lm, usable)),
        }
    }

    pub(crate) fn run_until(&mut self, t: f64, serve: &mut dyn FnMut(Served)) {
        match self {
            EngineTier::Trace(x) => x.run_until(t, serve),
            EngineTier::Vllm(x) => x.run_until(t, serve),
        }
    }

    pub(crate) fn arrive(&mut self, i: usize, serve: &mut dyn FnMut(Served)) {
        match self {
            EngineTier::Trace(x) => x.arrive(i, serve),
            EngineTier::Vllm(x) => x.arrive(i, serve),
        }
    }

    pub(crate) fn cached_prefix_tokens(&self, i: usize) -> u64 {
        match self {
            EngineTier::Trace(x) => x.cached_prefix_tokens(i),
            EngineTier::Vllm(x) => x.cached_prefix_tokens(i),
        }
    }

    pub(crate) fn close(self, serve: &mut dyn FnMut(Served)) -> TierTotals {
        match self {
            EngineTier::Trace(x) => x.close(serve),
            EngineTier::Vllm(x) => x.close(serve),
        }
    }

    /// When request `i` was first admitted (its first schedule), if it has been.
    pub(crate) fn admitted_s(&self, i: usize) -> Option<f64> {
        match self {
            EngineTier::Trace(x) => x.hits[i].map(|h| h.admitted_s),
            EngineTier::Vllm(x) => Some(x.admitted_at[i]).filter(|t| !t.is_nan()),
        }
    }

    /// Give the engine an LMCache tier to use until [`take_lm`](EngineTier::take_lm): a fleet
    /// with one LMCache lends it to the replica it steps. An engine holds its tier for its life
    /// otherwise (a single server, a replica with its own).
    pub(crate) fn lend_lm(&mut self, lm: Option<&'b mut Lmcache<'a>>) {
        match self {
            EngineTier::Trace(x) => x.lm = lm,
            EngineTier::Vllm(x) => x.lm = lm,
        }
    }

    /// The LMCache tier lent by [`lend_lm`](EngineTier::lend_lm), back.
    pub(crate) fn take_lm(&mut self) -> Option<&'b mut Lmcache<'a>> {
        match self {
            EngineTier::Trace(x) => x.lm.take(),
            EngineTier::Vllm(x) => x.lm.take(),
        }
    }

    /// Loads from LMCache take time ([`LoadCost`]): a shared tier's network transfers.
    pub(crate) fn charge_loads(&mut self, cost: LoadCost) {
        match self {
            EngineTier::Trace(x) => x.load_cost = Some(cost),
            EngineTier::Vllm(x) => x.load_cost = Some(cost),
        }
    }

    /// When the engine next does anything by itself (an event, a step's start or end).
    pub(crate) fn next_time(&self) -> Option<f64> {
        match self {
            EngineTier::Trace(x) => x.next_time(),
            EngineTier::Vllm(x) => x.next_time(),
        }
    }

    /// Run that instant ([`next_time`](EngineTier::next_time)).
    pub(crate) fn instant(&mut self, serve: &mut dyn FnMut(Served)) {
        match self {
            EngineTier::Trace(x) => {
                if let Some(t) = x.next_time() {
                    x.instant(t, serve);
                }
            }
            EngineTier::Vllm(x) => x.instant(serve),
        }
    }

    /// The end of a step in flight (the `vllm` schedule stepped instant by instant).
    pub(crate) fn in_flight_end(&self) -> Option<f64> {
        match self {
            EngineTier::Trace(_) => None,
            EngineTier::Vllm(x) => x.in_flight_end(),
        }
    }

    /// The engine holds back LMCache stores ([`flush_stores`](EngineTier::flush_stores)).
    pub(crate) fn holds_stores(&self) -> bool {
        match self {
            EngineTier::Trace(x) => !x.pending_stores.is_empty(),
            EngineTier::Vllm(_) => false,
        }
    }

    /// LMCache stores due by `now` that the engine holds back (the `trace` schedule's prefill
    /// stores), run now: a shared tier must hold them before another replica looks it up.
    pub(crate) fn flush_stores(&mut self, now: f64) {
        if let EngineTier::Trace(x) = self {
            x.flush_stores(now);
        }
    }
}

/// One server's whole trace under `schedule`: every request arrives in order, then the engine
/// runs to the end.
pub(crate) fn run<'a>(
    schedule: Schedule,
    config: &'a SimConfig,
    seq: &'a SequenceBlocks,
    describe: Describe<'a>,
    lm: Option<&mut Lmcache<'a>>,
    usable: u64,
    mut serve: impl FnMut(Served),
) -> TierTotals {
    let n = describe.trace.requests.len();
    let mut t = EngineTier::new(schedule, config, seq, describe, lm, usable);
    for i in 0..n {
        t.arrive(i, &mut serve);
    }
    t.close(&mut serve)
}

#[cfg(test)]
mod tests {
    use inferencelab_cache::PolicyConfig;
    use inferencelab_trace::{Content, Request, Trace};

    use crate::config::{LmcacheMode, Schedule, SimConfig, TierConfig};
    use crate::driver::{run_observed, Prepared, RequestHits};
    use crate::result::ResultRow as Row;

    /// Requests `(arrival, finish, prompt tokens, output tokens, prompt block ids)`.
    fn trace(reqs: &[(f64, f64, u32, u32, &[u64])]) -> Trace {
        Trace {
            requests: reqs
                .iter()
                .enumerate()
                .map(|(i, &(t, f, input_length, output_length, ids))| Request {
                    id: format!("r{i}"),
                    timestamp: t,
                    finish_time: Some(f),
                    conversation: None,
                    turn: 0,
                    input_length,
                    output_length,
                    kind: None,
                    content: Content::HashIds(ids.to_vec()),
                    output_tokens: None,
                    output_times: None,
                })
                .collect(),
            block_size: Some(16),
            partial_last_block: false,
            ..Default::default()
        }
    }

    /// `gpu_blocks` is vLLM's `num_gpu_blocks`: one less is usable.
    fn config(gpu_blocks: u64) -> SimConfig {
        let mut c = SimConfig {
            ..SimConfig::gpu_only(gpu_blocks, PolicyConfig::Lru)
        };
        c.engine.schedule = Schedule::Trace;
        c
    }

    /// Each request's outcome by index, and the run's totals.
    fn run(t: &Trace, c: &SimConfig) -> (Vec<RequestHits>, Row) {
        // LMCache chunks of 2 blocks when there is a CPU tier
        let p = Prepared::new(t, 16, c.cpu.as_ref().map(|_| 32)).unwrap();
        let mut out = vec![RequestHits::default(); t.requests.len()];
        let row = run_observed(&p, c, |i, h| out[i] = h).unwrap();
        (out, row)
    }

    #[test]
    fn a_waiting_request_wants_only_the_blocks_its_lookup_can_hit() {
        // 8 usable blocks of 16 tokens, the trace schedule. r0 caches [1, 2], r1 [3, 4]. r2
        // runs from 3.5 to 20 with 4 blocks and grows 2 more (at 4 and 12), evicting 2 cached
        // blocks while r3 (head, 5 new blocks: no room), r4 and r5 wait. r4's prompt is
        // exactly [1, 2] (32 tokens): a lookup covers at most num_tokens - 1 tokens, so r4 can
        // hit block 1 only and nobody wants block 2; r5 (48 tokens) will hit [3, 4]. The
        // victims are block 2, then the latest request's deepest block, 4: r5 still hits
        // block 3. (Wanting block 2 for r4 made both victims r5's.)
        let t = trace(&[
            (0.0, 1.0, 32, 1, &[1, 2]),
            (2.0, 3.0, 32, 1, &[3, 4]),
            (3.5, 20.0, 64, 33, &[9, 10, 11, 12]),
            (3.6, 30.0, 80, 1, &[20, 21, 22, 23, 24]),
            (3.7, 31.0, 32, 1, &[1, 2]),
            (3.8, 32.0, 48, 1, &[3, 4, 7]),
        ]);
        let mut c = config(9);
        c.gpu.policy = PolicyConfig::ConversationAware(Default::default());
        let (hits, _) = run(&t, &c);
        let waited: Vec<bool> = hits
            .iter()
            .zip(&t.requests)
            .map(|(h, r)| h.admitted_s > r.timestamp)
            .collect();
        assert_eq!(waited, [false, false, false, true, true, true]);
        assert_eq!((hits[4].gpu_hit_tokens, hits[5].gpu_hit_tokens), (16, 16));
    }

    #[test]
    fn an_admitted_request_wants_nothing_while_it_allocates() {
        // 9 usable blocks of 16 tokens, the trace schedule. r0 caches [1, 2, 3], r1 [5, 6];
        // r2 holds the other 4 blocks until 10. r3 (7 blocks: [8, 2, 3, ...], block 8 never
        // cached) and r4 (will hit [5, 6]) wait for room. At 10 r3 is admitted: its lookup
        // hits nothing (8 is missing), so [2, 3] are of no use to it, and its 7 new blocks
        // take the 7 blocks nobody waiting wants: [1, 2, 3] and r2's. r4 keeps [5, 6], as
        // under vLLM's schedule (`Scheduler::schedule` withdraws a request before its
        // allocation). (Withdrawn after it, r3 still wanted [2, 3] and r4's went instead.)
        let t = trace(&[
            (0.0, 1.0, 48, 1, &[1, 2, 3]),
            (2.0, 3.0, 32, 1, &[5, 6]),
            (3.5, 10.0, 64, 1, &[9, 10, 11, 12]),
            (4.0, 20.0, 97, 1, &[8, 2, 3, 13, 14, 15]),
            (4.1, 25.0, 33, 1, &[5, 6]),
        ]);
        let mut c = config(10);
        c.gpu.policy = PolicyConfig::ConversationAware(Default::default());
        let (hits, _) = run(&t, &c);
        let admitted: Vec<f64> = hits.iter().map(|h| h.admitted_s).collect();
        assert_eq!(admitted, [0.0, 2.0, 3.5, 10.0, 20.0]);
        assert_eq!((hits[3].gpu_hit_tokens, hits[4].gpu_hit_tokens), (0, 32));
    }

    #[test]
    fn lmcache_mp_holds_a_finished_requests_blocks_until_the_next_step_ends() {
        // 6 usable blocks of 16 tokens, per-token times. r0 decodes a token every 0.1 s; r1
        // (admitted at r0's step end 0.1) samples its 2 tokens at 0.9 and 1.0 and finishes at
        // 1.0 with 3 blocks (33 tokens), r0 then holds 2 (26 tokens). r2 (64 tokens, 4
        // blocks) arrives at 0.2 and waits for room.
        //   inprocess / no LMCache: r1's blocks are freed at 1.0, r2 is admitted at 1.0
        //   mp: r1's KV send is reported done at the end of the next step, when r0 samples its
        //       token of 1.1 (r0's 1.0 token came with r1's last one): r2 is admitted at 1.1
        let tenths: Vec<f64> = (1..=20).map(|k| k as f64 / 10.0).collect();
        let mut t = trace(&[
            (0.0, 2.0, 16, 20, &[3]),
            (0.05, 1.0, 32, 2, &[1, 2]),
            (0.2, 1.3, 64, 1, &[5, 6, 7, 8]),
        ]);
        t.requests[0].output_times = Some(tenths);
        t.requests[1].output_times = Some(vec![0.9, 1.0]);
        t.requests[2].output_times = Some(vec![1.3]);
        let mut c = config(7);
        let admitted =
            |c: &SimConfig| -> Vec<f64> { run(&t, c).0.iter().map(|h| h.admitted_s).collect() };
        assert_eq!(admitted(&c), vec![0.0, 0.1, 1.0]);
        c.cpu = Some(TierConfig {
            capacity: 100,
            policy: PolicyConfig::Lru,
        });
        assert_eq!(admitted(&c), vec![0.0, 0.1, 1.0]);
        c.engine.lmcache_mode = LmcacheMode::Mp;
        assert_eq!(admitted(&c), vec![0.0, 0.1, 1.1]);
        // the log's `Finished sending KV transfer` line for r1, when it has one
        let mut logged = t.clone();
        logged.kv_sent_s.insert("r1".into(), 1.25);
        assert_eq!(run(&logged, &c).0[2].admitted_s, 1.25);
        // without per-token times nothing tells when the next step ends: freed at the finish
        let mut untimed = t.clone();
        for r in &mut untimed.requests {
            r.output_times = None;
        }
        let (hits, _) = run(&untimed, &c);
        assert_eq!(hits[2].admitted_s, 1.0);
    }

    #[test]
    fn decode_blocks_are_taken_as_the_answer_is_generated() {
        // 6 usable blocks. r0: 48-token prompt, 49 output tokens from t=0 to t=10: it computes
        // 48 + 48 tokens = 6 blocks; its decode blocks start at output tokens 0, 16, 32, taken
        // when those are sampled (the 49 spread evenly): t = 10/49, 170/49, 330/49.
        //   t=2   r0 holds 3 + 1 blocks: r2 (1 block) fits
        //   t=8   r0 holds 6 blocks: r1 (2 blocks) waits for r0's finish at t=10
        // (with answer blocks taken at the finish, r1 would run at t=8)
        let t = trace(&[
            (0.0, 10.0, 48, 49, &[1, 2, 3]),
            (2.0, 3.0, 16, 1, &[9]),
            (8.0, 9.0, 32, 1, &[7, 8]),
        ]);
        let (hits, row) = run(&t, &config(7));
        let admitted: Vec<f64> = hits.iter().map(|h| h.admitted_s).collect();
        assert_eq!(admitted, vec![0.0, 2.0, 10.0]);
        assert_eq!(row.queued_requests, 1);
        // the row's queueing: r2 waited 10 - 8 = 2 s; delays 0, 0, 2: median 0, p90 0.8 * 2
        assert_eq!(row.queue_delay_p50_s, 0.0);
        assert!((row.queue_delay_p90_s - 1.6).abs() < 1e-9, "{row:?}");
        assert_eq!(row.max_pinned_blocks, 6);
        assert_eq!(row.preemptions, 0);
    }

    #[test]
    fn a_decode_block_the_pool_cannot_give_preempts_the_last_admitted_request() {
        // 6 usable blocks; r0 and r1: 32-token prompts, 33 output tokens over 10 s, so 4 blocks
        // each at the end; decode blocks at output tokens 0 and 16 (t0 + 10/33, t0 + 170/33).
        //   t=0      r0 [1 2]            free 4
        //   t=0.30   r0 [1 2 d]          free 3
        //   t=1      r1 [3 4]            free 1
        //   t=1.30   r1 [3 4 d]          free 0
        //   t=5.15   r0 needs a block: r1 (last admitted) is preempted, 13 tokens sampled; its
        //            raw block is reused first, [3 4] stay cached; r1 needs 45 tokens = 3
        //            blocks again and waits
        //   t=10     r0 finishes; r1 is admitted again (its hits: those at t=1, none)
        //   t=12     r2 [3 4 5] hits r1's recomputed prompt
        let t = trace(&[
            (0.0, 10.0, 32, 33, &[1, 2]),
            (1.0, 11.0, 32, 33, &[3, 4]),
            (12.0, 13.0, 48, 1, &[3, 4, 5]),
        ]);
        let (hits, row) = run(&t, &config(7));
        assert_eq!(row.preemptions, 1);
        assert_eq!(
            hits.iter().map(|h| h.preemptions).collect::<Vec<_>>(),
            vec![0, 1, 0]
        );
        assert_eq!(hits[1].admitted_s, 1.0);
        assert_eq!(hits[1].gpu_hit_tokens, 0);
        assert_eq!(hits[2].gpu_hit_tokens, 32);
        assert_eq!(row.max_pinned_blocks, 6);
    }

    #[test]
    fn admissions_stop_when_the_step_token_budget_or_max_num_seqs_is_spent() {
        // 4 usable blocks, all held by r0 until t=5; r1 and r2 wait. At t=5 r1's 32-token
        // prefill spends a 32-token budget: r2 (1 block, free) is admitted at the next step,
        // r1's first decode block at t = 5 + 4/17
        let t = trace(&[
            (0.0, 5.0, 64, 1, &[1, 2, 3, 4]),
            (1.0, 9.0, 32, 17, &[5, 6]),
            (2.0, 10.0, 16, 1, &[7]),
        ]);
        let mut c = config(5);
        let admitted =
            |c: &SimConfig| -> Vec<f64> { run(&t, c).0.iter().map(|h| h.admitted_s).collect() };
        assert_eq!(admitted(&c), vec![0.0, 5.0, 5.0]);
        c.engine.max_num_batched_tokens = 32;
        assert_eq!(admitted(&c), vec![0.0, 5.0, 5.0 + 4.0 / 17.0]);
        // one running request at most: r2 waits for r1's finish
        c.engine.max_num_batched_tokens = 8192;
        c.engine.max_num_seqs = 1;
        assert_eq!(admitted(&c), vec![0.0, 5.0, 9.0]);
    }

    #[test]
    fn without_pinning_every_request_finishes_before_the_next() {
        // r0's 64 tokens (prompt 48 + 17 outputs - 1) fill 4 blocks when it finishes; r1
        // arriving before that finish still hits all of r0's prompt
        let t = trace(&[
            (0.0, 10.0, 48, 17, &[1, 2, 3]),
            (1.0, 2.0, 64, 1, &[1, 2, 3, 4]),
        ]);
        let mut c = config(5);
        c.pinning = false;
        let (hits, row) = run(&t, &c);
        assert_eq!(hits[1].gpu_hit_tokens, 48);
        assert_eq!(hits[1].admitted_s, 1.0);
        assert_eq!(row.queued_requests, 0);
    }
}
