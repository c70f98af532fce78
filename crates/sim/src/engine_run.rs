//! The GPU tier with vLLM's engine rules (DESIGN.md section 3) and LMCache's tier with its
//! engine's rules (section 4), under one of two schedules (`docs/semantics.md`):
//!
//! - `trace`: a request is admitted when it arrives, or, when the pool cannot hold its prompt,
//!   at the first finish that makes room (FCFS); it holds its prompt's blocks (the partial tail
//!   too) until its finish (logged, else the time model's), when its answer blocks are
//!   allocated and hashed and everything is freed tail first. Decode blocks are therefore
//!   allocated at the finish, not token by token. Without pinning every request finishes
//!   before the next arrives.
//! - `vllm`: the trace is replayed through `inferencelab_engine::vllm::Scheduler` in virtual
//!   time; a step takes `prefill tokens / prefill_tokens_per_s`, plus `decode_ms_per_token` when
//!   it decodes.
//!
//! In both, the LMCache lookup happens at admission (once per admission attempt, kept until
//! the request is admitted), the load right after, and stores as prompt chunks are computed.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use inferencelab_cache::{Access, AnyPolicy, BlockCache, EvictionPolicy, ObjId, NEVER};
use inferencelab_engine::lmcache::{LmcacheTier, RequestState};
use inferencelab_engine::pool::{KvPool, Slot};
use inferencelab_engine::vllm::{KvConnector, Scheduler, SchedulerConfig, Sequences};
use inferencelab_trace::{BlockedTrace, SequenceBlocks, Trace};

use crate::config::{SimConfig, TierConfig};
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

/// LMCache as vLLM's KV connector: per-request lookups, loads and stores.
pub(crate) struct Lmcache<'a> {
    pub tier: LmcacheTier<AnyPolicy>,
    describe: Describe<'a>,
    state: Vec<RequestState>,
    pub chunk_refs: u64,
    pub cpu_hit_chunks: u64,
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
            tier,
            describe: Describe {
                trace: prepared.trace,
                kinds: prepared.kinds(),
                blocks: chunks,
                oracle,
            },
            state: vec![RequestState::default(); prepared.trace.requests.len()],
            chunk_refs: 0,
            cpu_hit_chunks: 0,
        })
    }

    /// What the request's first admission loaded.
    pub fn first(&self, req: usize) -> (u64, u64) {
        self.state[req]
            .first
            .map_or((0, 0), |r| (r.cpu_hit_tokens, r.disk_hit_tokens))
    }
}

impl KvConnector for Lmcache<'_> {
    fn matched(&mut self, req: usize, num_tokens: u64, local_hit_tokens: u64) -> u64 {
        let st = &mut self.state[req];
        if st.lookup.is_none() {
            let keys = self.describe.blocks.request(req);
            let d = &self.describe;
            let access = |k: ObjId, depth: usize, t: u64| d.access(req, k, depth, t);
            let lookup = self.tier.lookup(keys, &access);
            st.hit_tokens = self.tier.hit_tokens(&lookup, num_tokens);
            if st.lookups == 0 {
                self.chunk_refs += keys.len() as u64;
                self.cpu_hit_chunks += lookup.chunks() as u64;
            }
            st.lookups += 1;
            st.lookup = Some(lookup);
        }
        st.hit_tokens.saturating_sub(local_hit_tokens)
    }

    fn admitted(&mut self, req: usize, local_hit_tokens: u64, _external: u64) {
        let st = &mut self.state[req];
        let Some(lookup) = st.lookup.take() else {
            return;
        };
        let keys = self.describe.blocks.request(req);
        let d = &self.describe;
        let access = |k: ObjId, depth: usize, t: u64| d.access(req, k, depth, t);
        let got = self
            .tier
            .retrieve(keys, lookup, local_hit_tokens, st.hit_tokens, &access);
        st.first.get_or_insert(got);
        st.saved_tokens = st.hit_tokens / self.tier.chunk_size * self.tier.chunk_size;
    }

    fn computed(&mut self, req: usize, _before: u64, after: u64) {
        let c = self.tier.chunk_size;
        let keys = self.describe.blocks.request(req);
        let prompt = self.describe.trace.requests[req].input_length as u64;
        let st = &mut self.state[req];
        let to = (after.min(prompt) / c) as usize;
        let from = (st.saved_tokens / c) as usize;
        if to > from {
            let d = &self.describe;
            let access = |k: ObjId, depth: usize, t: u64| d.access(req, k, depth, t);
            self.tier.store(keys, from, to.min(keys.len()), &access);
            st.saved_tokens = to as u64 * c;
        }
    }

    fn released(&mut self, req: usize) {
        if let Some(mut l) = self.state[req].lookup.take() {
            self.tier.unpin(&mut l);
        }
    }
}

/// What the GPU-tier replay reports per request.
pub(crate) struct Served {
    pub req: usize,
    pub hits: RequestHits,
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
        }
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
}

struct Held {
    finish: f64,
    seq: u64,
    req: usize,
    slots: Vec<Slot>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    // min-heap on (finish, seq)
    fn cmp(&self, o: &Self) -> Ordering {
        o.finish.total_cmp(&self.finish).then(o.seq.cmp(&self.seq))
    }
}

enum Admit {
    Served(Served),
    NoRoom,
    Never,
}

/// The `trace` schedule's state.
struct TraceTier<'a, 'b> {
    config: &'a SimConfig,
    seq: &'a SequenceBlocks,
    describe: Describe<'a>,
    lm: Option<&'b mut Lmcache<'a>>,
    pool: KvPool<AnyPolicy>,
    held: BinaryHeap<Held>,
    waiting: VecDeque<usize>,
    totals: TierTotals,
    in_use: u64,
    bs: u64,
}

impl TraceTier<'_, '_> {
    /// Admit request `j` at `now` if the pool can hold its prompt.
    fn admit(&mut self, j: usize, now: f64) -> Admit {
        let r = &self.describe.trace.requests[j];
        let keys = self.seq.request(j);
        let len = r.input_length as u64;
        let blocks = len.div_ceil(self.bs);
        if blocks > self.pool.cache.capacity() {
            return Admit::Never;
        }
        let p = self.seq.prompt_blocks[j] as usize;
        let max_hit = (len.saturating_sub(1) / self.bs) as usize;
        let hits = self.pool.leading_hits(&keys[..p], max_hit);
        let evictable = self.pool.evictable_among(&keys[..hits]);
        let new = blocks - hits as u64;
        if new + evictable > self.pool.free_blocks() {
            return Admit::NoRoom;
        }
        let mut slots = Vec::with_capacity(keys.len().max(blocks as usize));
        let d = &self.describe;
        let access = |k: ObjId, depth: usize, t: u64| d.access(j, k, depth, t);
        self.pool.touch(&keys[..hits], &mut slots, &access);
        self.pool.allocate(new as usize, &mut slots);
        self.pool.cache_blocks(&mut slots, keys, hits, p, &access);
        let gpu_hit_tokens = hits as u64 * self.bs;
        let (mut cpu_hit_tokens, mut disk_hit_tokens) = (0, 0);
        if let Some(lm) = self.lm.as_deref_mut() {
            lm.matched(j, len, gpu_hit_tokens);
            lm.admitted(j, gpu_hit_tokens, 0);
            lm.computed(j, 0, len);
            (cpu_hit_tokens, disk_hit_tokens) = lm.first(j);
        }
        let hits = RequestHits {
            gpu_hit_tokens,
            cpu_hit_tokens,
            disk_hit_tokens,
            admitted_s: now,
            preemptions: 0,
            rejected: false,
        };
        if self.config.pinning {
            let late = now - r.timestamp;
            let finish = match r.finish_time {
                Some(f) => f.max(now),
                None => self.config.timing.finish_time(r, hits.total()) + late,
            };
            self.in_use += slots.len() as u64;
            self.totals.max_in_use = self.totals.max_in_use.max(self.in_use);
            self.held.push(Held {
                finish,
                seq: j as u64,
                req: j,
                slots,
            });
        } else {
            self.finish(Held {
                finish: now,
                seq: j as u64,
                req: j,
                slots,
            });
        }
        Admit::Served(Served { req: j, hits })
    }

    /// Grow a finished request to its whole sequence (as far as the pool allows), hash its
    /// answer blocks, free everything tail first.
    fn finish(&mut self, h: Held) {
        let r = &self.describe.trace.requests[h.req];
        let keys = self.seq.request(h.req);
        let mut slots = h.slots;
        if self.config.pinning {
            self.in_use -= slots.len() as u64;
        }
        let end =
            (r.input_length as u64 + r.output_length.saturating_sub(1) as u64).div_ceil(self.bs);
        let extra = end
            .saturating_sub(slots.len() as u64)
            .min(self.pool.free_blocks());
        self.pool.allocate(extra as usize, &mut slots);
        let p = self.seq.prompt_blocks[h.req] as usize;
        let upto = keys.len().min(slots.len());
        let d = &self.describe;
        let access = |k: ObjId, depth: usize, t: u64| d.access(h.req, k, depth, t);
        self.pool.cache_blocks(&mut slots, keys, p, upto, &access);
        self.pool.cache.policy.on_time(h.finish);
        self.pool.free(&slots);
    }

    fn admit_waiting(&mut self, now: f64, serve: &mut dyn FnMut(Served)) {
        while let Some(&j) = self.waiting.front() {
            match self.admit(j, now) {
                Admit::Served(s) => {
                    self.waiting.pop_front();
                    serve(s);
                }
                Admit::NoRoom => break,
                Admit::Never => {
                    self.waiting.pop_front();
                    self.totals.rejections += 1;
                    serve(Served::rejected(j));
                }
            }
        }
    }

    fn finish_until(&mut self, now: f64, serve: &mut dyn FnMut(Served)) {
        while self.held.peek().is_some_and(|h| h.finish <= now) {
            let h = self.held.pop().expect("peeked");
            let t = h.finish;
            self.finish(h);
            self.admit_waiting(t, serve);
        }
    }
}

/// The `trace` schedule.
pub(crate) fn run_trace<'a>(
    config: &'a SimConfig,
    seq: &'a SequenceBlocks,
    describe: Describe<'a>,
    lm: Option<&mut Lmcache<'a>>,
    usable: u64,
    mut serve: impl FnMut(Served),
) -> TierTotals {
    let bs = seq.blocks.block_size as u64;
    let mut t = TraceTier {
        config,
        seq,
        describe,
        lm,
        pool: gpu_pool(&config.gpu, usable),
        held: BinaryHeap::new(),
        waiting: VecDeque::new(),
        totals: TierTotals::default(),
        in_use: 0,
        bs,
    };
    for (i, r) in t.describe.trace.requests.iter().enumerate() {
        t.finish_until(r.timestamp, &mut serve);
        t.waiting.push_back(i);
        t.admit_waiting(r.timestamp, &mut serve);
        if t.waiting.back() == Some(&i) {
            t.totals.queued += 1;
        }
    }
    t.finish_until(f64::INFINITY, &mut serve);
    t.totals.evictions = t.pool.cache.evictions;
    t.totals
}

/// The `vllm` schedule: vLLM's scheduler in virtual time.
pub(crate) fn run_vllm<'a>(
    config: &'a SimConfig,
    seq: &'a SequenceBlocks,
    describe: Describe<'a>,
    mut lm: Option<&mut Lmcache<'a>>,
    usable: u64,
    mut serve: impl FnMut(Served),
) -> TierTotals {
    let trace = describe.trace;
    let reqs = &trace.requests;
    let bs = seq.blocks.block_size;
    let mut sched = Scheduler::new(
        SchedulerConfig {
            block_size: bs,
            max_num_batched_tokens: config.engine.max_num_batched_tokens.max(1),
            max_num_seqs: config.engine.max_num_seqs.max(1),
            ..Default::default()
        },
        gpu_pool(&config.gpu, usable),
    );
    let view = SeqView { seq, describe };
    let mut none = inferencelab_engine::NoConnector;
    let mut totals = TierTotals::default();
    let mut admitted_at: Vec<f64> = vec![f64::NAN; reqs.len()];
    let mut now = reqs.first().map_or(0.0, |r| r.timestamp);
    let mut next = 0;
    let tps = config.timing.prefill_tokens_per_s;
    let decode_s = config.timing.decode_ms_per_token / 1000.0;
    loop {
        while next < reqs.len() && reqs[next].timestamp <= now {
            let r = &reqs[next];
            let whole = r.input_length as u64 + r.output_length.saturating_sub(1) as u64;
            if r.input_length == 0 || !sched.fits_ever(whole) {
                totals.rejections += 1;
                serve(Served::rejected(next));
            } else {
                sched.add_request(next, r.input_length as u64, r.output_length);
            }
            next += 1;
        }
        if !sched.has_unfinished() {
            if next >= reqs.len() {
                break;
            }
            now = reqs[next].timestamp;
            continue;
        }
        let conn: &mut dyn KvConnector = match lm.as_deref_mut() {
            Some(l) => l,
            None => &mut none,
        };
        let plan = sched.schedule(&view, conn);
        if plan.scheduled.is_empty() {
            // nothing running and the head cannot fit: it never will
            if sched.num_running() == 0 {
                if let Some(r) = sched.drop_head() {
                    totals.rejections += 1;
                    serve(Served::rejected(r.req));
                }
            }
            continue;
        }
        for &req in &plan.admitted {
            if admitted_at[req].is_nan() {
                admitted_at[req] = now;
                if now > reqs[req].timestamp {
                    totals.queued += 1;
                }
            }
        }
        totals.max_in_use = totals.max_in_use.max(sched.blocks_in_use());
        let (prefill, decode) = plan.work();
        now += prefill as f64 / tps + if decode { decode_s } else { 0.0 };
        let conn: &mut dyn KvConnector = match lm.as_deref_mut() {
            Some(l) => l,
            None => &mut none,
        };
        // finished requests free their blocks at the step's end (learned policies' clock)
        sched.pool.cache.policy.on_time(now);
        for done in sched.update(&plan, conn) {
            let (cpu, disk) = lm.as_deref().map_or((0, 0), |l| l.first(done.req));
            serve(Served {
                req: done.req,
                hits: RequestHits {
                    gpu_hit_tokens: done.gpu_hit_tokens,
                    cpu_hit_tokens: cpu,
                    disk_hit_tokens: disk,
                    admitted_s: admitted_at[done.req],
                    preemptions: done.num_preemptions,
                    rejected: false,
                },
            });
        }
    }
    totals.evictions = sched.pool.cache.evictions;
    totals.preemptions = sched.num_preemptions;
    totals
}
