//! LMCache 0.5.6's local storage as its engine drives it (DESIGN.md section 4; paths under
//! `lmcache/`): a CPU backend (`v1/storage_backend/local_cpu_backend.py`) and an optional local
//! disk behind it, over prefix-chained chunks of `chunk_size` tokens (full chunks only).
//!
//! - Lookup (`v1/cache_engine.py:1255-1276`, `local_cpu_backend.py:127-142`): the leading run of
//!   chunks in the CPU, then the leading run of the remaining chunks on disk
//!   (`storage_manager.py:972-1010`, never back to the CPU). The CPU run is pinned until loaded
//!   and refreshed last chunk first, so a reused prefix's head ends most recent, and so is the
//!   disk run (`touch_cache`); LRU/LFU/MRU see only those runs. Hit tokens = run x chunk, minus one when that is the whole prompt.
//! - Retrieve: masks `floor(gpu_hit / chunk) * chunk` tokens and loads whole chunks from
//!   there; a CPU retrieve refreshes nothing; disk chunks retrieved are refreshed on disk again
//!   (`local_disk_backend.py:504`, after the lookup's refresh) and promoted to the CPU.
//! - Store (`cache_engine.py:485-526`, `local_cpu_backend.py:685-745`): from the chunk the
//!   LMCache hit ends in, a slot is allocated for every chunk before any is put; each
//!   allocation evicts one unpinned entry; when nothing is evictable the store stops, so the
//!   request's *first* chunks are kept. A chunk already resident still takes a slot (and may
//!   evict) and is then dropped without a refresh (`local_cpu_backend.py:164-165`). The disk is
//!   written through for every chunk put; a chunk already on disk is refreshed there instead.
//! - Policies: LRU (default), LFU, FIFO, MRU are LMCache's; the others are ours, for
//!   exploration.

use inferencelab_cache::{Access, BlockCache, EntryId, EvictionPolicy, ObjId, Outcome};

use crate::lmcache_mp::{LmcacheMode, LoggedLoop, MpCounters, LOOP_PERIOD_S, LOOP_PHASE_S};
use crate::pool::MakeAccess;

/// What one lookup found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// Leading chunks in the CPU.
    pub cpu_chunks: usize,
    /// Leading chunks on disk after the CPU run.
    pub disk_chunks: usize,
    /// The CPU entries pinned by the lookup, until the retrieve.
    pinned: Vec<EntryId>,
}

impl Lookup {
    pub fn chunks(&self) -> usize {
        self.cpu_chunks + self.disk_chunks
    }

    /// A CPU run of `cpu_chunks`, nothing pinned.
    pub(crate) fn from_run(cpu_chunks: usize) -> Lookup {
        Lookup {
            cpu_chunks,
            disk_chunks: 0,
            pinned: Vec::new(),
        }
    }
}

/// What a retrieve moved, in tokens, attributed to the tier each token came from (only the
/// tokens past the GPU hit count as hits), and the tokens actually copied (whole chunks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retrieved {
    pub cpu_hit_tokens: u64,
    pub disk_hit_tokens: u64,
    pub loaded_tokens: u64,
}

/// LMCache's CPU (and disk) storage.
pub struct LmcacheTier<P> {
    pub chunk_size: u64,
    pub cpu: BlockCache<P>,
    pub disk: Option<BlockCache<P>>,
    pub clock: u64,
}

impl<P: EvictionPolicy> LmcacheTier<P> {
    pub fn new(chunk_size: u32, cpu: BlockCache<P>, disk: Option<BlockCache<P>>) -> Self {
        assert!(chunk_size > 0, "chunk size must be positive");
        LmcacheTier {
            chunk_size: chunk_size as u64,
            cpu,
            disk,
            clock: 0,
        }
    }

    /// Look up a request's full chunks `keys`.
    pub fn lookup(&mut self, keys: &[ObjId], access: MakeAccess<'_>) -> Lookup {
        self.lookup_pinning(keys, access, true)
    }

    /// [`lookup`](LmcacheTier::lookup); without `pin` the run is refreshed but not pinned, for a
    /// caller that retrieves before anything else touches the tier (the pins would be released
    /// before they could matter, and every policy's order ends the same).
    fn lookup_pinning(&mut self, keys: &[ObjId], access: MakeAccess<'_>, pin: bool) -> Lookup {
        let cpu_chunks = keys.iter().take_while(|&&k| self.cpu.contains(k)).count();
        let disk_chunks = self.disk.as_ref().map_or(0, |d| {
            keys[cpu_chunks..]
                .iter()
                .take_while(|&&k| d.contains(k))
                .count()
        });
        let mut pinned = Vec::with_capacity(if pin { cpu_chunks } else { 0 });
        for d in (0..cpu_chunks).rev() {
            self.clock += 1;
            if let Outcome::Hit(e) = self.cpu.access(&access(keys[d], d, self.clock), pin) {
                if pin {
                    pinned.push(e);
                }
            }
        }
        // the disk's `touch_cache` refreshes its run the same way, last chunk first
        // (`local_disk_backend.py:226-241`)
        if let Some(disk) = self.disk.as_mut() {
            for d in (cpu_chunks..cpu_chunks + disk_chunks).rev() {
                self.clock += 1;
                disk.access(&access(keys[d], d, self.clock), false);
            }
        }
        Lookup {
            cpu_chunks,
            disk_chunks,
            pinned,
        }
    }

    /// LMCache's hit tokens for a prompt of `prompt_tokens`: the run, minus one when it covers
    /// the whole prompt (vLLM recomputes the last token).
    pub fn hit_tokens(&self, lookup: &Lookup, prompt_tokens: u64) -> u64 {
        let t = lookup.chunks() as u64 * self.chunk_size;
        if t >= prompt_tokens {
            prompt_tokens.saturating_sub(1)
        } else {
            t
        }
    }

    /// Release the lookup's pins without loading (the request went away).
    pub fn unpin(&mut self, lookup: &mut Lookup) {
        for e in lookup.pinned.drain(..) {
            self.cpu.unpin(e, self.clock);
        }
    }

    /// Load what the lookup found past `gpu_hit_tokens` (vLLM's own hit); `hit_tokens` is
    /// [`hit_tokens`](LmcacheTier::hit_tokens).
    pub fn retrieve(
        &mut self,
        keys: &[ObjId],
        mut lookup: Lookup,
        gpu_hit_tokens: u64,
        hit_tokens: u64,
        access: MakeAccess<'_>,
    ) -> Retrieved {
        self.unpin(&mut lookup);
        let c = self.chunk_size;
        let mut out = Retrieved::default();
        if hit_tokens <= gpu_hit_tokens {
            return out;
        }
        let first = (gpu_hit_tokens / c) as usize;
        let last = lookup.chunks();
        out.loaded_tokens = (last - first) as u64 * c;
        let mut pos = gpu_hit_tokens;
        while pos < hit_tokens {
            let j = (pos / c) as usize;
            let end = ((j as u64 + 1) * c).min(hit_tokens);
            if j < lookup.cpu_chunks {
                out.cpu_hit_tokens += end - pos;
            } else {
                out.disk_hit_tokens += end - pos;
            }
            pos = end;
        }
        // disk chunks loaded: refreshed on disk, promoted to the CPU
        if let Some(disk) = self.disk.as_mut() {
            let from = first.max(lookup.cpu_chunks);
            for (d, &k) in keys.iter().enumerate().take(last).skip(from) {
                self.clock += 1;
                let a = access(k, d, self.clock);
                disk.access(&a, false);
                self.cpu.access(&a, false);
            }
        }
        out
    }

    /// Store chunks `keys[from..to]` (head first). Returns the chunks newly put in the CPU.
    pub fn store(&mut self, keys: &[ObjId], from: usize, to: usize, access: MakeAccess<'_>) -> u64 {
        if from >= to {
            return 0;
        }
        // allocate a slot for every chunk first; stop at the first that cannot get one
        let mut allocated = 0;
        for _ in from..to {
            if !self.cpu.reserve() {
                break;
            }
            allocated += 1;
        }
        // then put them: every slot is given back before the puts (each put takes at most the
        // slot just given back, so none of them evicts, as when each is given back in turn)
        for _ in 0..allocated {
            self.cpu.unreserve();
        }
        let mut stored = 0;
        for (d, &k) in keys.iter().enumerate().take(from + allocated).skip(from) {
            self.clock += 1;
            let a = access(k, d, self.clock);
            if !self.cpu.contains(k) {
                self.cpu.access(&a, false);
                stored += 1;
            }
            // a chunk already on disk is refreshed, not written (`local_disk_backend.py:347-355`)
            if let Some(disk) = self.disk.as_mut() {
                disk.access(&a, false);
            }
        }
        stored
    }
}

/// A request's LMCache state while vLLM schedules it.
#[derive(Debug, Clone, Default)]
pub struct RequestState {
    /// The lookup of the current admission attempt, until it is loaded.
    pub lookup: Option<Lookup>,
    pub hit_tokens: u64,
    /// Prompt tokens whose chunks were stored or skipped (`skip_leading_tokens`), aligned to a
    /// chunk.
    pub saved_tokens: u64,
    /// What the first admission loaded.
    pub first: Option<Retrieved>,
    pub lookups: u32,
    /// Chunks this request newly put in the CPU.
    pub stored_chunks: u64,
    /// Multi-process mode: the prompt's chunks, touched when the request ends.
    mp_keys: Vec<ObjId>,
}

/// Where a connector finds a request's chunks.
pub trait ChunkSource {
    /// The request's full prompt chunks, head first.
    fn chunks(&self, req: usize) -> &[ObjId];
    fn prompt_tokens(&self, req: usize) -> u64;
    /// How a chunk reference of `req` is described to the policy.
    fn access(&self, req: usize, obj: ObjId, depth: usize, clock: u64) -> Access;
}

/// LMCache's counters (its Prometheus `lmcache:*` series).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub lookups: u64,
    pub requested_tokens: u64,
    pub hit_tokens: u64,
    pub retrieves: u64,
    /// Tokens copied by retrieves (whole chunks).
    pub loaded_tokens: u64,
    pub stores: u64,
    /// Tokens of chunks newly put in the CPU.
    pub stored_tokens: u64,
    /// First lookups only: chunks asked for and chunks found.
    pub chunk_refs: u64,
    pub hit_chunks: u64,
}

impl Counters {
    /// A lookup of `chunks` chunks found `lookup` (`first`: the request's first lookup).
    fn looked_up(
        &mut self,
        chunks: usize,
        lookup: &Lookup,
        num_tokens: u64,
        hit_tokens: u64,
        first: bool,
    ) {
        if first {
            self.chunk_refs += chunks as u64;
            self.hit_chunks += lookup.chunks() as u64;
        }
        self.lookups += 1;
        self.requested_tokens += num_tokens;
        self.hit_tokens += hit_tokens;
    }

    fn retrieved(&mut self, got: &Retrieved) {
        if got.loaded_tokens > 0 {
            self.retrieves += 1;
            self.loaded_tokens += got.loaded_tokens;
        }
    }

    /// One store that newly put `tokens` tokens' chunks.
    fn stored(&mut self, tokens: u64) {
        self.stores += 1;
        self.stored_tokens += tokens;
    }
}

/// The computed-token counts after each forward step of a prefill that runs from `computed`
/// tokens to `len` in steps of at most `budget` tokens (vLLM's token budget), ending at `len`;
/// at least one step.
pub fn prefill_steps(computed: u64, len: u64, budget: u64) -> impl Iterator<Item = u64> {
    let budget = budget.max(1);
    let mut done = Some(computed);
    std::iter::from_fn(move || {
        let d = done?;
        let next = (d + budget).min(len);
        done = (next < len).then_some(next);
        Some(next)
    })
}

/// LMCache as vLLM's KV connector (`integration/vllm/vllm_v1_adapter.py`): one lookup per
/// admission attempt, kept (and pinned) until the request is admitted, then the load; stores as
/// the request's prompt chunks are computed, from the chunk its LMCache hit ends in
/// (`skip_leading_tokens`); again after a preemption.
pub struct Connector<P> {
    pub tier: LmcacheTier<P>,
    states: rustc_hash::FxHashMap<usize, RequestState>,
    pub counters: Counters,
    /// In-process (the default) or multi-process rules ([`crate::lmcache_mp`]).
    pub mode: LmcacheMode,
    /// The multi-process L1's counters (zero in-process).
    pub mp: MpCounters,
    /// Multi-process mode: when the eviction loop ticks next, in the caller's seconds (`None`
    /// until the first [`advance_to`](Connector::advance_to)).
    mp_next_tick_s: Option<f64>,
    /// Multi-process mode: the loop's ticks from LMCache's own log instead of the assumed
    /// phase and period ([`with_logged_loop`](Connector::with_logged_loop)).
    mp_loop: Option<LoggedLoop>,
    /// With [`mp_loop`](Connector::mp_loop): the number of the loop's next tick.
    mp_next_k: Option<i64>,
}

impl<P: EvictionPolicy> Connector<P> {
    pub fn new(tier: LmcacheTier<P>) -> Self {
        Connector {
            tier,
            states: Default::default(),
            counters: Counters::default(),
            mode: LmcacheMode::InProcess,
            mp: MpCounters::default(),
            mp_next_tick_s: None,
            mp_loop: None,
            mp_next_k: None,
        }
    }

    /// Multi-process mode: LMCache's eviction loop ticks when its log says
    /// ([`LoggedLoop`]) instead of [`LOOP_PERIOD_S`] apart from [`LOOP_PHASE_S`] after the
    /// first event. `None`: the assumed clock.
    pub fn with_logged_loop(mut self, ticks: Option<LoggedLoop>) -> Self {
        self.mp_loop = ticks;
        self
    }

    /// The clock reached `now_s` (seconds, any origin, never going back): in multi-process mode
    /// LMCache's eviction loop runs the ticks due at or before it ([`crate::lmcache_mp`]: one
    /// every [`LOOP_PERIOD_S`], the first [`LOOP_PHASE_S`] after the first call). A caller
    /// calls it before every event it passes to the connector. In-process mode: nothing.
    pub fn advance_to(&mut self, now_s: f64) {
        let LmcacheMode::Mp(eviction) = self.mode else {
            return;
        };
        if let Some(ticks) = &self.mp_loop {
            // the loop's ticks before the first event found an empty L1
            let k = self
                .mp_next_k
                .get_or_insert_with(|| ticks.first_after(now_s));
            while ticks.time(*k) <= now_s {
                if self.tier.evict_tick_mp(eviction) {
                    self.mp.eviction_passes += 1;
                    *k += 1;
                } else {
                    // below the watermark nothing changes until the next event
                    *k = ticks.first_after(now_s);
                }
            }
            return;
        }
        let next = self.mp_next_tick_s.get_or_insert(now_s + LOOP_PHASE_S);
        while *next <= now_s {
            if self.tier.evict_tick_mp(eviction) {
                self.mp.eviction_passes += 1;
                *next += LOOP_PERIOD_S;
            } else {
                // below the watermark nothing changes until the next event: skip to the
                // first tick after `now_s`
                *next += ((now_s - *next) / LOOP_PERIOD_S).floor() * LOOP_PERIOD_S + LOOP_PERIOD_S;
            }
        }
    }

    /// The run is over: the eviction loop ticks until L1 is below the watermark, as LMCache's
    /// does while the server idles (multi-process mode; nothing in-process).
    pub fn settle(&mut self) {
        let LmcacheMode::Mp(eviction) = self.mode else {
            return;
        };
        loop {
            let held = self.tier.cpu.len();
            if !self.tier.evict_tick_mp(eviction) || self.tier.cpu.len() == held {
                break;
            }
            self.mp.eviction_passes += 1;
            if let Some(t) = self.mp_next_tick_s.as_mut() {
                *t += LOOP_PERIOD_S;
            }
            if let Some(k) = self.mp_next_k.as_mut() {
                *k += 1;
            }
        }
    }

    /// The same connector under `mode`'s rules.
    pub fn with_mode(mut self, mode: LmcacheMode) -> Self {
        self.mode = mode;
        self
    }

    /// `get_num_new_matched_tokens`: LMCache's hit beyond vLLM's local hit.
    pub fn matched(
        &mut self,
        src: &dyn ChunkSource,
        req: usize,
        num_tokens: u64,
        local_hit_tokens: u64,
    ) -> u64 {
        let st = self.states.entry(req).or_default();
        if st.lookup.is_none() {
            let keys = src.chunks(req);
            let lookup = match self.mode {
                LmcacheMode::InProcess => {
                    let access = |k: ObjId, d: usize, t: u64| src.access(req, k, d, t);
                    self.tier.lookup(keys, &access)
                }
                LmcacheMode::Mp(_) => {
                    if st.mp_keys.is_empty() {
                        st.mp_keys = keys.to_vec();
                    }
                    let l = self.tier.lookup_mp(keys);
                    self.mp.lookup_requested_tokens += keys.len() as u64 * self.tier.chunk_size;
                    self.mp.lookup_hit_tokens += l.chunks() as u64 * self.tier.chunk_size;
                    l
                }
            };
            st.hit_tokens = self.tier.hit_tokens(&lookup, num_tokens);
            self.counters.looked_up(
                keys.len(),
                &lookup,
                num_tokens,
                st.hit_tokens,
                st.lookups == 0,
            );
            st.lookups += 1;
            st.lookup = Some(lookup);
        }
        st.hit_tokens.saturating_sub(local_hit_tokens)
    }

    /// A request served alone, start to end, before anything else touches the tier (the
    /// abstract prefix model): the lookup, the load past `local_hit_tokens`, and the prefill's
    /// stores every `budget` tokens, as [`matched`](Connector::matched),
    /// [`admitted`](Connector::admitted) and [`computed`](Connector::computed) would do them,
    /// without keeping a state. Returns what the load got.
    pub fn serve_alone(
        &mut self,
        src: &dyn ChunkSource,
        req: usize,
        num_tokens: u64,
        local_hit_tokens: u64,
        budget: u64,
    ) -> Retrieved {
        if let LmcacheMode::Mp(_) = self.mode {
            self.matched(src, req, num_tokens, local_hit_tokens);
            self.admitted(src, req, local_hit_tokens);
            let from = self.states[&req].hit_tokens.max(local_hit_tokens);
            for done in prefill_steps(from, num_tokens, budget) {
                self.computed(src, req, done);
            }
            return self.forget(req).and_then(|s| s.first).unwrap_or_default();
        }
        let keys = src.chunks(req);
        let access = |k: ObjId, d: usize, t: u64| src.access(req, k, d, t);
        let lookup = self.tier.lookup_pinning(keys, &access, false);
        let hit_tokens = self.tier.hit_tokens(&lookup, num_tokens);
        self.counters
            .looked_up(keys.len(), &lookup, num_tokens, hit_tokens, true);
        let got = self
            .tier
            .retrieve(keys, lookup, local_hit_tokens, hit_tokens, &access);
        self.counters.retrieved(&got);
        let chunk = self.tier.chunk_size;
        let prompt = src.prompt_tokens(req);
        let mut saved = hit_tokens / chunk * chunk;
        let from = local_hit_tokens.max(hit_tokens);
        for done in prefill_steps(from, num_tokens, budget) {
            let to = ((done.min(prompt) / chunk) as usize).min(keys.len());
            let first = (saved / chunk) as usize;
            if to > first {
                let stored = self.tier.store(keys, first, to, &access);
                saved = to as u64 * chunk;
                self.counters.stored(stored * chunk);
            }
        }
        got
    }

    /// The request was admitted: load what its lookup found past vLLM's hit.
    pub fn admitted(&mut self, src: &dyn ChunkSource, req: usize, local_hit_tokens: u64) {
        let Some(st) = self.states.get_mut(&req) else {
            return;
        };
        let Some(lookup) = st.lookup.take() else {
            return;
        };
        let keys = src.chunks(req);
        let access = |k: ObjId, d: usize, t: u64| src.access(req, k, d, t);
        let got = match self.mode {
            LmcacheMode::InProcess => {
                self.tier
                    .retrieve(keys, lookup, local_hit_tokens, st.hit_tokens, &access)
            }
            LmcacheMode::Mp(_) => {
                let got = self
                    .tier
                    .retrieve_mp(lookup, local_hit_tokens, st.hit_tokens);
                self.mp.l1_read_chunks += got.loaded_tokens / self.tier.chunk_size;
                got
            }
        };
        self.counters.retrieved(&got);
        st.first.get_or_insert(got);
        st.saved_tokens = st.hit_tokens / self.tier.chunk_size * self.tier.chunk_size;
    }

    /// After a forward pass: store the prompt chunks `after` computed tokens complete. Returns
    /// the chunks newly put in the CPU.
    pub fn computed(&mut self, src: &dyn ChunkSource, req: usize, after: u64) -> u64 {
        let c = self.tier.chunk_size;
        let Some(st) = self.states.get_mut(&req) else {
            return 0;
        };
        let keys = src.chunks(req);
        let to = ((after.min(src.prompt_tokens(req)) / c) as usize).min(keys.len());
        let from = (st.saved_tokens / c) as usize;
        if to <= from {
            return 0;
        }
        let access = |k: ObjId, d: usize, t: u64| src.access(req, k, d, t);
        let stored = match self.mode {
            LmcacheMode::InProcess => self.tier.store(keys, from, to, &access),
            LmcacheMode::Mp(_) => {
                // the connector counts the chunks as stored when it schedules the store,
                // written or not; no eviction here: the loop's ticks (`advance_to`) do it
                st.saved_tokens = to as u64 * c;
                let stored = match self.tier.store_mp(keys, from, to, &access) {
                    Some(n) => n,
                    None => {
                        self.mp.refused_stores += 1;
                        self.mp.refused_chunks += (to - from) as u64;
                        0
                    }
                };
                self.mp.l1_write_chunks += stored;
                stored
            }
        };
        st.saved_tokens = to as u64 * c;
        st.stored_chunks += stored;
        self.counters.stored(stored * c);
        stored
    }

    /// The request left vLLM (finished, preempted, aborted): a pending lookup's pins go.
    pub fn released(&mut self, req: usize) {
        let Some(st) = self.states.get_mut(&req) else {
            return;
        };
        if let Some(mut l) = st.lookup.take() {
            self.tier.unpin(&mut l);
        }
        if let LmcacheMode::Mp(_) = self.mode {
            // `end_session` touches the request's chunks still in L1 (plain references: the
            // multi-process L1's policies need no request features). A preemption touches
            // them too here; in LMCache only the request's end does.
            let keys = std::mem::take(&mut st.mp_keys);
            self.tier.touch_mp(&keys, &|k, _, t| Access::at(k, t));
        }
    }

    pub fn state(&self, req: usize) -> Option<&RequestState> {
        self.states.get(&req)
    }

    /// Forget a request (its pins released).
    pub fn forget(&mut self, req: usize) -> Option<RequestState> {
        self.released(req);
        self.states.remove(&req)
    }
}

/// A connector bound to where its requests' chunks are: what the scheduler calls.
pub struct Bound<'a, P> {
    pub conn: &'a mut Connector<P>,
    pub src: &'a dyn ChunkSource,
}

impl<P: EvictionPolicy> crate::vllm::KvConnector for Bound<'_, P> {
    fn matched(&mut self, req: usize, num_tokens: u64, local_hit_tokens: u64) -> u64 {
        self.conn
            .matched(self.src, req, num_tokens, local_hit_tokens)
    }
    fn admitted(&mut self, req: usize, local_hit_tokens: u64, _external: u64) {
        self.conn.admitted(self.src, req, local_hit_tokens);
    }
    fn computed(&mut self, req: usize, _before: u64, after: u64) {
        self.conn.computed(self.src, req, after);
    }
    fn released(&mut self, req: usize) {
        self.conn.released(req);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferencelab_cache::{AnyPolicy, PolicyConfig};

    fn tier(cpu: u64, disk: Option<u64>, policy: PolicyConfig) -> LmcacheTier<AnyPolicy> {
        LmcacheTier::new(
            4,
            BlockCache::new(cpu, policy.build(cpu)),
            disk.map(|d| BlockCache::new(d, PolicyConfig::Lru.build(d))),
        )
    }

    fn acc(k: ObjId, _d: usize, t: u64) -> Access {
        Access::at(k, t)
    }

    #[test]
    fn prefill_steps_follow_the_token_budget() {
        let steps = |c, l, b| prefill_steps(c, l, b).collect::<Vec<_>>();
        assert_eq!(steps(0, 10, 4), [4, 8, 10]);
        assert_eq!(steps(3, 10, 7), [10]);
        // a prompt already computed still runs one step (vLLM recomputes its last token)
        assert_eq!(steps(10, 10, 4), [10]);
        assert_eq!(steps(0, 3, 0), [1, 2, 3]);
    }

    #[test]
    fn a_store_longer_than_the_tier_keeps_the_first_chunks() {
        // 3 slots; a prompt of 5 chunks: slots for chunks 0,1,2, then nothing is evictable (the
        // allocated slots are not entries yet): the store stops and keeps the head
        let mut t = tier(3, None, PolicyConfig::Lru);
        assert_eq!(t.store(&[10, 11, 12, 13, 14], 0, 5, &acc), 3);
        assert!(t.cpu.contains(10) && t.cpu.contains(12) && !t.cpu.contains(13));
        // the same prompt again hits its head: 3 chunks = 12 tokens
        let l = t.lookup(&[10, 11, 12, 13, 14], &acc);
        assert_eq!(t.hit_tokens(&l, 20), 12);
        t.cpu.validate().unwrap();
    }

    #[test]
    fn lookup_refreshes_the_run_head_last_and_resident_chunks_still_take_a_slot() {
        // 4 slots: store A = [1,2] then B = [5,6]; look up A (refresh 2 then 1: 1 most recent).
        // Storing [1,2,3] from chunk 0 allocates 3 slots: evicts 5, 6 (LRU), then 2 (the least
        // recent of A's run); 1 and 2 are resident... 2 was evicted, so it is put back, 1 is
        // dropped without a refresh, 3 is put.
        let mut t = tier(4, None, PolicyConfig::Lru);
        t.store(&[1, 2], 0, 2, &acc);
        t.store(&[5, 6], 0, 2, &acc);
        let mut l = t.lookup(&[1, 2, 3], &acc);
        assert_eq!(l.cpu_chunks, 2);
        t.unpin(&mut l);
        assert_eq!(t.store(&[1, 2, 3], 0, 3, &acc), 2);
        assert!(!t.cpu.contains(5) && !t.cpu.contains(6));
        assert!(t.cpu.contains(1) && t.cpu.contains(2) && t.cpu.contains(3));
        assert_eq!(t.cpu.evictions, 3);
        t.cpu.validate().unwrap();
    }

    #[test]
    fn disk_serves_past_the_cpu_run_and_is_promoted_when_loaded() {
        // CPU holds 1 chunk, disk 10 (write-through). [1,2] stored: CPU keeps 1 (the store
        // stops after one slot), disk has both. Lookup: CPU run [1], disk run [2].
        let mut t = tier(1, Some(10), PolicyConfig::Lru);
        t.store(&[1, 2], 0, 2, &acc);
        assert!(t.cpu.contains(1) && !t.cpu.contains(2));
        assert!(t.disk.as_ref().unwrap().contains(1));
        let l = t.lookup(&[1, 2], &acc);
        assert_eq!((l.cpu_chunks, l.disk_chunks), (1, 0));
        // disk only got what was put: the store stopped at one chunk
        assert!(!t.disk.as_ref().unwrap().contains(2));
        let mut t = tier(2, Some(10), PolicyConfig::Lru);
        t.store(&[1, 2], 0, 2, &acc);
        t.store(&[7, 8], 0, 2, &acc);
        let l = t.lookup(&[1, 2, 9], &acc);
        assert_eq!((l.cpu_chunks, l.disk_chunks), (0, 2));
        let hit = t.hit_tokens(&l, 12);
        let r = t.retrieve(&[1, 2, 9], l, 0, hit, &acc);
        assert_eq!(r.disk_hit_tokens, 8);
        assert_eq!(r.loaded_tokens, 8);
        assert!(t.cpu.contains(1) && t.cpu.contains(2));
    }

    #[test]
    fn disk_recency_follows_lookups_and_stores() {
        // CPU 1 chunk, disk 3 (LRU). Store [1], [2], [3]: disk 1, 2, 3 (least recent first)
        let mut t = tier(1, Some(3), PolicyConfig::Lru);
        for k in [1, 2, 3] {
            t.store(&[k], 0, 1, &acc);
        }
        // storing 1 again refreshes it on disk: 2, 3, 1
        t.store(&[1], 0, 1, &acc);
        // a lookup whose disk run is [3] refreshes it: 2, 1, 3
        let mut l = t.lookup(&[3], &acc);
        assert_eq!((l.cpu_chunks, l.disk_chunks), (0, 1));
        t.unpin(&mut l);
        let on_disk = |t: &LmcacheTier<AnyPolicy>, k| t.disk.as_ref().unwrap().contains(k);
        // 4 evicts 2 (without the store's refresh: 1)
        t.store(&[4], 0, 1, &acc);
        assert!(!on_disk(&t, 2) && on_disk(&t, 1));
        // 5 evicts 1 (without the lookup's refresh: 3)
        t.store(&[5], 0, 1, &acc);
        assert!(!on_disk(&t, 1) && on_disk(&t, 3));
    }

    /// Requests of `chunks[r]` chunks of 4 tokens each, prompt = the chunks' tokens.
    struct Prompts(Vec<Vec<ObjId>>);
    impl ChunkSource for Prompts {
        fn chunks(&self, req: usize) -> &[ObjId] {
            &self.0[req]
        }
        fn prompt_tokens(&self, req: usize) -> u64 {
            self.0[req].len() as u64 * 4
        }
        fn access(&self, _req: usize, obj: ObjId, _depth: usize, clock: u64) -> Access {
            Access::at(obj, clock)
        }
    }

    /// One request served at `t`: lookup, load, its prefill's store, its end.
    fn serve_at(c: &mut Connector<AnyPolicy>, src: &Prompts, req: usize, t: f64) {
        c.advance_to(t);
        let n = src.prompt_tokens(req);
        c.matched(src, req, n, 0);
        c.admitted(src, req, 0);
        c.computed(src, req, n);
        c.forget(req);
    }

    #[test]
    fn the_multi_process_loop_evicts_once_a_second_not_at_each_store() {
        use crate::lmcache_mp::MpEviction;
        // L1 of 10 chunks, watermark 0.8, ratio 0.2; ticks at 0.5, 1.5, 2.5, ... s
        let mut c = Connector::new(tier(10, None, PolicyConfig::Lru))
            .with_mode(LmcacheMode::Mp(MpEviction::default()));
        let src = Prompts(vec![
            vec![1, 2, 3, 4],
            vec![5, 6, 7, 8],
            vec![9, 10, 11],
            vec![1, 2, 3, 4],
            vec![12, 13],
        ]);
        // three stores inside the first half second: 4 + 4 written (8 of 10 = 0.8), then 3
        // more do not fit in the 2 free slots: refused whole, nothing written
        serve_at(&mut c, &src, 0, 0.0);
        serve_at(&mut c, &src, 1, 0.1);
        serve_at(&mut c, &src, 2, 0.2);
        assert_eq!(c.mp.l1_write_chunks, 8);
        assert_eq!((c.mp.refused_stores, c.mp.refused_chunks), (1, 3));
        assert_eq!(c.tier.cpu.evictions, 0);
        // the tick at 0.5 s (before an event at 1.0 s) evicts int(8 x 0.2) = 1 key, the least
        // recent: the first request's end touched 4,3,2,1 then the second's 8,7,6,5, so 4 goes.
        // Its lookup still finds [1,2,3] (3 chunks): the store writes 4 again (8 of 10)
        serve_at(&mut c, &src, 3, 1.0);
        assert_eq!(c.tier.cpu.evictions, 1);
        assert_eq!(c.mp.eviction_passes, 1);
        assert_eq!(c.mp.lookup_hit_tokens, 12);
        assert_eq!((c.mp.l1_write_chunks, c.tier.cpu.len()), (9, 8));
        // one tick per second: by 3.0 s the tick at 1.5 (8 held: evicts 1) and the one at 2.5
        // (7 held = 0.7, below the watermark: nothing) have run
        c.advance_to(3.0);
        assert_eq!((c.tier.cpu.evictions, c.mp.eviction_passes), (2, 2));
        assert_eq!(c.tier.cpu.len(), 7);
        // an idle hour below the watermark changes nothing
        c.advance_to(3600.0);
        assert_eq!(c.mp.eviction_passes, 2);
        // 2 more chunks: 9 held; the run's end settles L1 below the watermark: 9 -> 8 (0.8,
        // still at the watermark) -> 7
        serve_at(&mut c, &src, 4, 3600.2);
        assert_eq!(c.tier.cpu.len(), 9);
        c.settle();
        assert_eq!((c.tier.cpu.len(), c.mp.eviction_passes), (7, 4));
        c.tier.cpu.validate().unwrap();
    }

    #[test]
    fn a_logged_loop_ticks_at_the_logged_times_and_between_them() {
        use crate::lmcache_mp::{LoggedLoop, MpEviction};
        let src = Prompts(vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9, 10]]);
        // L1 of 10 chunks: 8 held after two requests (0.8); the logged ticks at 0.05 and 2.07
        // (an unlogged one at 1.06 between them)
        let run = |ticks: Option<LoggedLoop>, then: f64| {
            let mut c = Connector::new(tier(10, None, PolicyConfig::Lru))
                .with_mode(LmcacheMode::Mp(MpEviction::default()))
                .with_logged_loop(ticks);
            serve_at(&mut c, &src, 0, 0.0);
            serve_at(&mut c, &src, 1, 0.01);
            serve_at(&mut c, &src, 2, 0.45);
            c.advance_to(then);
            (c.tier.cpu.evictions, c.tier.cpu.len())
        };
        let logged = || LoggedLoop::new(&[0.05, 2.07]);
        // the assumed loop ticks at 0.5 s: the store at 0.45 s finds 8 held, 2 free: 10 held
        assert_eq!(run(None, 0.45), (0, 10));
        // the logged one ticked at 0.05 s: int(8 x 0.2) = 1 evicted before the store
        assert_eq!(run(logged(), 0.45), (1, 9));
        // the unlogged tick at 1.06 s finds 9 held (0.9): one more; the one at 2.07 8 (0.8): one
        assert_eq!(run(logged(), 1.2), (2, 8));
        assert_eq!(run(logged(), 2.07), (3, 7));
        // the first event's time: ticks before it are not run (L1 was empty)
        let mut c = Connector::new(tier(10, None, PolicyConfig::Lru))
            .with_mode(LmcacheMode::Mp(MpEviction::default()))
            .with_logged_loop(logged());
        c.advance_to(50.0);
        assert_eq!(c.mp.eviction_passes, 0);
    }
}
