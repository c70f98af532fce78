//! `conversation_aware`: Belady's rule with a rule-based estimate of each block's next use.
//!
//! When a block is touched at trace time `t`, its next use is predicted at `t + G` and the
//! evictable block predicted farthest in the future goes first; blocks whose prediction has
//! passed (idle conversations) decay and are compared with it (`learned::order`). `G` is
//!
//! ```text
//! G = scale * g_ref * (1 + uses)^-w_uses * sharing^-w_sharing * (1 + depth)^w_depth * p^-w_p
//! ```
//!
//! - `g_ref`, the reference gap: the smaller of the available estimates of when the block is
//!   needed again: its conversation's next turn (the EWMA of the conversation's inter-request
//!   gaps: think time plus response time; the typical gap of all conversations before its
//!   second request), the block's last reuse gap (blocks used at least twice), and the typical
//!   gap to the next use of blocks with as many uses, learned online (a per-category reuse
//!   model as in the Alibaba study; `reuse_model_for_conversations: false` keeps it for blocks
//!   without a conversation). A block with none uses the typical reuse gap so far.
//!   Conversations are the trace's ids or, with `infer_conversations`, inferred online.
//! - `p`, the probability that this reuse happens at all, learned online from what has been
//!   seen: the share of conversations with as many requests that had another (traces with
//!   conversations), or the share of blocks with as many uses that got another (without).
//!   Dividing by `p` ranks by expected cost, as hit-density policies do.
//! - `hit_density` (opt-in) replaces `p^-w_p` by LHD's expected cost per hit in a cache whose
//!   eviction horizon `T` is measured online (`learned::horizon`): `G + T (1 - p) / (p (1 -
//!   e^(-T/G)))`, and `idle_in_horizons` (opt-in) divides it by `1 + T / (overdue_factor *
//!   g_typ)`, so that in a large cache the idle time (is the block dead?) outweighs when it
//!   would come back (`ScorerConfig` has the derivations; issue 17, docs/policies.md).
//! - `uses`, `sharing` (conversations touching the block) and `depth` shift the estimate: a
//!   block used often or shared widely is needed sooner, a deep block later (a child is useless
//!   without its parent, as in the Belady annotation of `docs/semantics.md`); among equal
//!   predictions the deeper block goes first.
//!
//! `scale = 0` gives exactly LRU (every block is overdue at once and overdue blocks leave in
//! LRU order), so LRU is one point of the space `inferencelab sweep` searches. Defaults and the
//! reasoning behind them: `docs/policies.md`. Sources: Belady (1966); LRB (Song et al., NSDI'20)
//! for "approximate Belady by a predicted next use"; the Alibaba KV-cache study (Wang et al.,
//! USENIX ATC'25) for per-workload reuse probabilities and position in the prompt; LHD
//! (Beckmann et al., NSDI'18) for ranking by hits per unit of space-time.
//!
//! - With `use_output_length`, when a request finishes (`EvictionPolicy::on_finish`, before its
//!   unpins) the length of its answer is known: `p` becomes the continuation rate of its turn
//!   and answer class, learned online, and its blocks are re-predicted at their unpin.
//!
//! Request types are used only with `use_request_type` (off by default); whether the
//! conversation's last answer has finished is known through the pins (a running request's
//! blocks are never candidates) and `on_time` (idle times start at the finish).

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::learned::chunked::Chunked;
use crate::learned::features::{Snapshot, Tracker};
use crate::learned::horizon::Horizon;
use crate::learned::order::{NextUseOrder, Ranking};
use crate::policy::api::{Access, EntryId, ObjId};

/// The scorer's weights and switches (`--scorer-config FILE`, YAML). Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScorerConfig {
    /// Multiplies every predicted gap; 0 = LRU.
    pub scale: f64,
    /// Use the conversation's inter-request gap as a reuse estimate.
    pub use_conversation: bool,
    /// Use the block's last reuse gap (blocks used at least twice) when it is shorter.
    pub use_block_gap: bool,
    /// Traces with request types (WEKA, Bailian): a conversation without its own gap history
    /// takes the typical gap after a request of this type, and the continuation probability is
    /// that of requests of this type (a per-category reuse model, as in Alibaba's ATC'25 study).
    pub use_request_type: bool,
    /// Use the typical gap to the next use of blocks with as many uses (learned online) when it
    /// is shorter; for a block of a conversation only with `reuse_model_for_conversations`.
    pub use_reuse_model: bool,
    /// Let the typical reuse gap of blocks with as many uses compete with a conversation's own
    /// gap (the smaller wins; the default). Off: a block of a conversation is predicted from
    /// its conversation's next turn and its own last gap, the population's typical gap is only
    /// the fallback of blocks without either (issue 17's diagnosis: on Mooncake it is a few
    /// seconds, reuses inside bursts, and makes every prediction LRU's; docs/policies.md for
    /// why it is not the default).
    pub reuse_model_for_conversations: bool,
    /// Exponent of `1 / (1 + uses)`.
    pub w_uses: f64,
    /// Exponent of `1 / sharing`.
    pub w_sharing: f64,
    /// Exponent of `1 + depth`.
    pub w_depth: f64,
    /// Exponent of `1 / p` (the learned continuation / reuse probability).
    pub w_probability: f64,
    /// How fast overdue blocks decay: effective next use = now + factor * idle time (with
    /// `ranking: expected_wait`, the weight of the idle time in `G + factor * idle`).
    pub overdue_factor: f64,
    /// `next_use` (farthest predicted next use first) or `expected_wait` (largest
    /// `G + overdue_factor * idle` first): `learned::order`.
    pub ranking: Ranking,
    /// Keep LRU as a second expert and let whichever has been right more often lately choose
    /// the victim where they disagree (`learned::order`, "LRU as a second expert"); false =
    /// the prediction alone.
    pub adaptive: bool,
    /// References without a conversation id (vLLM logs, Mooncake): infer each request's
    /// conversation from its blocks by the rule of `--infer-conversations` (the request joins
    /// the conversation of the deepest block it repeats when the repeated run covers at least
    /// half of that conversation's latest prompt), once the request's blocks have all been
    /// seen, and revise their predictions when the request finishes (its unpin; without pins
    /// the predictions stay those made without a conversation). On by default since issue 17's
    /// third session (docs/policies.md, "Predictions by turn, served time").
    pub infer_conversations: bool,
    /// A block of a conversation is predicted from the typical gap that followed requests of
    /// its conversation's turn (learned online per turn; issue 17's diagnosis: on Mooncake later
    /// turns come back much sooner), not from its own last reuse gap nor the population's
    /// typical reuse gap (reuses inside bursts, which make every prediction overdue). Off by
    /// default: it lost on the logs' validation parts (docs/policies.md, "Predictions by turn,
    /// served time").
    pub gap_by_turn: bool,
    /// A reference happens when the engine serves it, not when its request arrived: its time
    /// is the later of the two (the latest time the policy was told, `on_time`), for the
    /// statistics and the predictions alike. Under a backlog (the protocol's Mooncake cells:
    /// admitted a median 900-3,500 s after arrival) predictions made from arrival times have all
    /// passed when the engine evicts, so the order is LRU's whatever they say. On by default.
    pub served_time: bool,
    /// When a request finishes, the length of its answer is known: the probability that its
    /// conversation goes on is then the share of finished requests of its turn and answer class
    /// (up to 16, 64, 256, 1,024 tokens, more) that were followed, learned online, and its
    /// blocks' predictions are revised at their unpin (conversations inferred or given by the
    /// trace; with pins: without them nothing is revised). A request that is answered in a few
    /// tokens is often followed when a long answer is not (issue 17's diagnosis on Mooncake).
    pub use_output_length: bool,
    /// Rank by expected cost per hit with the cache's horizon (LHD's hit density, Beckmann et
    /// al. NSDI'18) instead of `p^-w_probability`: `G' = G + T (1 - p) / (p (1 - e^(-T/G)))`,
    /// `T` the cache's eviction horizon measured online (`learned::horizon`: how long LRU would
    /// keep a block here). A reuse `G` away is worth its block's space only if it happens at
    /// all (`p`) and before the block would be evicted anyway: in a small cache (`T << G`)
    /// this is `G / p`, in a large one (`T >> G`) `G + T (1 - p) / p`, where whether the block
    /// comes back weighs more than when. Off by default (docs/policies.md, issue 17).
    pub hit_density: bool,
    /// With `hit_density`: divide the cost per hit by `1 + T / (overdue_factor * g_typ)` (`T`
    /// the horizon, `g_typ` the typical gap: all conversations' inter-request gap, or all
    /// blocks' reuse gap), so that the idle time weighs against it as in the cache at hand.
    /// The cost per hit of a block idle for `a` grows with `a` twice: its remaining wait, if it
    /// comes back, by `overdue_factor * a` (the heavy tail of `expected_wait`), and the odds
    /// that it is dead, times `T`, by about `T a / g` (like `1 + a / g` for a heavy tail);
    /// linearised around a typical block (odds 1, gap `g_typ`), a second of idle costs
    /// `overdue_factor + T / g_typ`, so the cost is divided by that over `overdue_factor`, the
    /// weight the order gives the idle time. In a small cache (`T << g_typ`) the cost ranks
    /// as it is; in a large one the idle time (is the block dead?) dominates, as in LRU. Off
    /// by default.
    pub idle_in_horizons: bool,
    /// Blocks that requests waiting to be admitted will look up are kept until every other
    /// evictable block is gone, the one the latest waiting request wants going first
    /// (`learned::order`, `set_wanted`): the engine knows them, since vLLM hashes a request's
    /// prompt blocks when it arrives. Nothing changes while nobody waits. On by default.
    pub waiting_queue: bool,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        ScorerConfig {
            scale: 1.0,
            use_conversation: true,
            use_block_gap: true,
            use_request_type: false,
            use_reuse_model: true,
            reuse_model_for_conversations: true,
            w_uses: 0.0,
            w_sharing: 0.0,
            w_depth: 0.0,
            w_probability: 2.0,
            overdue_factor: 0.3,
            ranking: Ranking::ExpectedWait,
            adaptive: true,
            infer_conversations: true,
            gap_by_turn: false,
            served_time: true,
            use_output_length: true,
            hit_density: false,
            idle_in_horizons: false,
            waiting_queue: true,
        }
    }
}

impl ScorerConfig {
    /// The predicted gap (seconds) until the next use of the block described by `s`.
    ///
    /// Every term is prefix-monotone: along a request's chain a child never gets an earlier
    /// prediction than its parent (a child is used only with its parent, so it has no more uses,
    /// no more sharing, and its previous use is no later), so evicting the farthest prediction
    /// never leaves a cached child without its parent.
    #[inline]
    pub fn predicted_gap(&self, s: &Snapshot) -> f64 {
        self.predicted_gap_within(s, 0.0, f64::NAN)
    }

    /// [`predicted_gap`](ScorerConfig::predicted_gap) in a cache whose eviction horizon is
    /// `horizon` seconds (read only with `hit_density`; 0 when unknown) and where the typical
    /// gap is `typical_gap` ([`ScorerConfig::typical_gap`]; read only with `idle_in_horizons`).
    #[inline]
    pub fn predicted_gap_within(&self, s: &Snapshot, horizon: f64, typical_gap: f64) -> f64 {
        if self.scale == 0.0 {
            return 0.0;
        }
        let mut g = self.scale * self.reference_gap(s, &mut |_, x| x.exp_m1());
        if self.w_uses != 0.0 {
            g *= (1.0 + s.uses as f64).powf(-self.w_uses);
        }
        if self.w_sharing != 0.0 {
            g *= (s.sharing.max(1) as f64).powf(-self.w_sharing);
        }
        if self.w_depth != 0.0 {
            g *= (1.0 + s.depth as f64).powf(self.w_depth);
        }
        if self.hit_density {
            return self.per_hit(g, self.probability(s), horizon, typical_gap);
        }
        g * self.probability_term(s, &mut |p, w| p.powf(w))
    }

    /// `hit_density`'s prediction from the gap `g` and the probability `p`.
    #[inline]
    fn per_hit(&self, g: f64, p: f64, horizon: f64, typical_gap: f64) -> f64 {
        let c = g + hit_density_cost(g, p, horizon);
        if self.idle_in_horizons && typical_gap > 0.0 && self.overdue_factor > 0.0 {
            c / (1.0 + horizon / (self.overdue_factor * typical_gap))
        } else {
            c
        }
    }

    /// `g_typ` of `idle_in_horizons`: all conversations' typical inter-request gap, or before
    /// any (or without conversations) all blocks' typical reuse gap (NaN before any reuse).
    pub fn typical_gap(s: &Snapshot) -> f64 {
        if s.log_conv_gap_prior.is_finite() {
            s.log_conv_gap_prior.exp_m1()
        } else {
            s.log_reuse_gap_prior.exp_m1()
        }
    }

    /// `g_ref`: the smallest enabled estimate of the time to the next use (at least 1 ms).
    /// `exp_m1(site, x)` is `x.exp_m1()` (the policy remembers each site's last result).
    #[inline]
    fn reference_gap(&self, s: &Snapshot, exp_m1: &mut impl FnMut(usize, f64) -> f64) -> f64 {
        let conv = self.use_conversation && s.conv_requests > 0;
        let mut g_ref = f64::INFINITY;
        if conv && self.gap_by_turn && s.log_turn_gap.is_finite() {
            return exp_m1(0, s.log_turn_gap).max(1e-3);
        }
        if conv {
            let g = if s.conv_gap_ewma.is_finite() {
                s.conv_gap_ewma
            } else if self.use_request_type && s.log_kind_gap.is_finite() {
                exp_m1(0, s.log_kind_gap)
            } else {
                exp_m1(1, s.log_conv_gap_prior)
            };
            if g.is_finite() {
                g_ref = g;
            }
        }
        if self.use_block_gap && s.uses >= 2 && s.gaps[0] < g_ref {
            g_ref = s.gaps[0];
        }
        if self.use_reuse_model
            && (!conv || self.reuse_model_for_conversations)
            && s.log_reuse_gap_by_uses.is_finite()
        {
            let g = exp_m1(2, s.log_reuse_gap_by_uses);
            if g < g_ref {
                g_ref = g;
            }
        }
        if !g_ref.is_finite() {
            g_ref = if s.log_reuse_gap_prior.is_finite() {
                exp_m1(3, s.log_reuse_gap_prior)
            } else {
                1.0
            };
        }
        g_ref.max(1e-3)
    }

    /// `p^-w_probability`; `powf(p, w)` is `p.powf(w)` (the policy remembers its last result).
    #[inline]
    fn probability_term(&self, s: &Snapshot, powf: &mut impl FnMut(f64, f64) -> f64) -> f64 {
        if self.w_probability == 0.0 {
            return 1.0;
        }
        powf(self.probability(s), -self.w_probability)
    }

    /// `p`, the probability that the block's next use happens (in `[1e-6, 1]`).
    #[inline]
    fn probability(&self, s: &Snapshot) -> f64 {
        let conv = self.use_conversation && s.conv_requests > 0;
        let p = if !conv {
            s.p_reuse
        } else if self.use_request_type && s.p_kind.is_finite() {
            s.p_kind
        } else {
            s.p_continue
        };
        p.clamp(1e-6, 1.0)
    }

    /// Check ranges (a message names the field).
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("scale", self.scale),
            ("overdue_factor", self.overdue_factor),
        ] {
            if v.is_nan() || v < 0.0 || v.is_infinite() {
                return Err(format!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        for (name, v) in [
            ("w_uses", self.w_uses),
            ("w_sharing", self.w_sharing),
            ("w_depth", self.w_depth),
            ("w_probability", self.w_probability),
        ] {
            if !v.is_finite() {
                return Err(format!("{name} must be finite, got {v}"));
            }
        }
        Ok(())
    }
}

/// The expected extra cost per hit of a block predicted to be used again `g` seconds from now
/// with probability `p`, in a cache that keeps a block `t` seconds after its last use (LHD's
/// hit density, Beckmann et al. NSDI'18, with an exponential wait of mean `g`): the block
/// occupies its space `p g (1 - e^(-t/g)) + (1 - p) t` seconds on average for `p (1 - e^(-t/g))`
/// hits, i.e. `g + t (1 - p) / (p (1 - e^(-t/g)))` per hit; this returns the second term. It
/// grows with `g` and `t` and falls with `p`, so it keeps a prediction prefix-monotone (a child
/// has no shorter `g` and no larger `p` than its parent, and both are priced with one `t`). At
/// `t = 0` it is its limit `g (1 - p) / p`, which makes the whole `g / p`.
#[inline]
pub fn hit_density_cost(g: f64, p: f64, t: f64) -> f64 {
    let odds = (1.0 - p) / p;
    if t <= 0.0 || g <= 0.0 {
        return odds * g.max(0.0);
    }
    // 1 - e^(-t/g), accurate for small t/g
    let reached = -(-t / g).exp_m1();
    odds * t / reached
}

/// `(1 + x)^w` for small integers `x` (uses, sharing, depth), computed once per policy: four
/// `powf` per reference cost a third of the policy's speed with every weight on.
#[derive(Debug, Clone)]
struct PowTable {
    w: f64,
    table: Vec<f64>,
}

impl PowTable {
    const LEN: usize = 4096;

    /// `(1 + x)^w` for `x` in `0..LEN`, or nothing when `w` is 0.
    fn new(w: f64) -> Self {
        let table = if w == 0.0 {
            Vec::new()
        } else {
            (0..Self::LEN).map(|x| (1.0 + x as f64).powf(w)).collect()
        };
        PowTable { w, table }
    }

    #[inline]
    fn get(&self, x: u32) -> f64 {
        if self.w == 0.0 {
            return 1.0;
        }
        match self.table.get(x as usize) {
            Some(&v) => v,
            None => (1.0 + x as f64).powf(self.w),
        }
    }
}

/// The last argument and result of a function of one `f64` (consecutive references often ask
/// the same: a request's blocks share their conversation's continuation probability). The
/// same function on the same bits: the same result.
#[derive(Debug, Clone, Copy)]
struct Memo {
    x: u64,
    y: f64,
}

impl Memo {
    fn new(f: impl Fn(f64) -> f64) -> Self {
        Memo { x: 0, y: f(0.0) }
    }

    #[inline]
    fn get(&mut self, x: f64, f: impl Fn(f64) -> f64) -> f64 {
        if x.to_bits() != self.x {
            self.x = x.to_bits();
            self.y = f(x);
        }
        self.y
    }
}

#[derive(Debug, Clone)]
pub struct ConversationAware {
    config: ScorerConfig,
    /// `exp_m1` at each site of `reference_gap`, and `p^-w_probability`
    exp_m1_memo: [Memo; 4],
    pow_memo: Memo,
    stats: Tracker,
    order: NextUseOrder,
    uses_pow: PowTable,
    sharing_pow: PowTable,
    depth_pow: PowTable,
    inferred: Box<Inferred>,
    /// With `hit_density`: the cache's eviction horizon (`learned::horizon`), the value the
    /// current request's predictions use (read when a request starts, so a request's blocks are
    /// priced with one horizon: prefix-monotone), the typical gap then (`idle_in_horizons`),
    /// that request, and the most blocks held.
    horizon: Option<Box<Horizon>>,
    horizon_now: f64,
    typical_gap_now: f64,
    horizon_request: u32,
    most_resident: usize,
    waiting_queue: bool,
}

const NO_CONV: u32 = u32::MAX;
/// Inferred conversation ids are passed to the tracker from here on (the driver's ids are
/// dense from 0, and a trace has either ids or none).
const INFERRED_BASE: u64 = 1 << 62;

/// Requests whose conversation is still to be inferred (running ones): beyond this many, the
/// oldest is settled with the blocks seen so far (only without pins, where no unpin settles
/// them; vLLM runs at most 256 requests at once by default).
const MAX_PENDING: usize = 1024;
/// Touch lists kept for reuse.
const SPARE_LISTS: usize = 64;
/// Only lists of at most this many touches are kept: a list keeps the capacity of the longest
/// request it held, and a thousand pending requests in reused lists held several times the
/// memory of their touches (each run faults its memory in again).
const SPARE_CAPACITY: usize = 32;

/// A request whose blocks are being seen.
#[derive(Debug, Clone, Default)]
struct Pending {
    timestamp: f64,
    kind: u32,
    /// its conversation when the trace gives it (`u64::MAX`: to be inferred)
    conversation: u64,
    /// the tokens it generated, once it finished
    output: Option<u32>,
    /// the snapshot of its first touch (taken without a conversation)
    first: Option<Snapshot>,
    /// its touches
    touches: Vec<Touch>,
    /// its deepest block seen before it (depth, conversation)
    deepest_seen: Option<(u32, u32)>,
    /// its number of blocks (the deepest depth touched, plus one)
    blocks: u32,
}

/// A touch of a pending request: its entry and object, and the fields of its snapshot that a
/// prediction reads and the conversation does not set (a third of a snapshot: a thousand
/// requests may be pending, each with its blocks).
#[derive(Debug, Clone, Copy)]
struct Touch {
    entry: EntryId,
    obj: ObjId,
    depth: u32,
    uses: u32,
    sharing: u32,
    timestamp: f64,
    gap1: f64,
    p_reuse: f64,
    log_reuse_gap_prior: f64,
    log_reuse_gap_by_uses: f64,
}

impl Touch {
    fn new(entry: EntryId, obj: ObjId, s: &Snapshot) -> Self {
        Touch {
            entry,
            obj,
            depth: s.depth,
            uses: s.uses,
            sharing: s.sharing,
            timestamp: s.timestamp,
            gap1: s.gaps[0],
            p_reuse: s.p_reuse,
            log_reuse_gap_prior: s.log_reuse_gap_prior,
            log_reuse_gap_by_uses: s.log_reuse_gap_by_uses,
        }
    }

    /// `c` (a snapshot with the conversation's fields) with this touch's own fields: what
    /// [`ScorerConfig::predicted_gap`] reads of the touch's snapshot with the conversation's
    /// fields (the test `settled_touches_predict_as_their_snapshots`).
    fn with_conversation_of(&self, c: &Snapshot) -> Snapshot {
        let mut s = *c;
        s.depth = self.depth;
        s.uses = self.uses;
        s.sharing = self.sharing;
        s.timestamp = self.timestamp;
        s.gaps[0] = self.gap1;
        s.p_reuse = self.p_reuse;
        s.log_reuse_gap_prior = self.log_reuse_gap_prior;
        s.log_reuse_gap_by_uses = self.log_reuse_gap_by_uses;
        s
    }
}

/// Online conversation inference for references without a conversation id
/// (`ScorerConfig::infer_conversations`): causal, from the request's own blocks and the past.
#[derive(Debug, Clone)]
struct Inferred {
    /// per object: the inferred conversation of the latest settled request that referenced it
    obj_conv: Chunked<u32>,
    /// per conversation: blocks of its latest request
    conv_len: Vec<u32>,
    /// requests not settled yet (the engine interleaves the blocks of running requests)
    pending: FxHashMap<u32, Pending>,
    /// the ids of the pending requests, smallest first (and of some settled since, skipped):
    /// the oldest one without scanning `pending`
    pending_ids: BinaryHeap<Reverse<u32>>,
    /// touch lists of settled requests, emptied, for new ones (no regrowing per request)
    spare: Vec<Vec<Touch>>,
    /// per entry: the latest request that touched it, and the next use predicted with that
    /// request's conversation once settled (NaN: none), taken at the unpin
    entry_request: Vec<u32>,
    revised: Vec<f64>,
}

impl Default for Inferred {
    fn default() -> Self {
        Inferred {
            obj_conv: Chunked::new(NO_CONV),
            conv_len: Vec::new(),
            // its most (settled beyond), reserved: growing rehashes, copying every entry
            pending: FxHashMap::with_capacity_and_hasher(MAX_PENDING + 1, Default::default()),
            pending_ids: BinaryHeap::new(),
            spare: Vec::new(),
            entry_request: Vec::new(),
            revised: Vec::new(),
        }
    }
}

impl ConversationAware {
    pub fn new(config: &ScorerConfig) -> Self {
        let w = -config.w_probability;
        ConversationAware {
            config: config.clone(),
            exp_m1_memo: [Memo::new(f64::exp_m1); 4],
            pow_memo: Memo::new(|p| p.powf(w)),
            stats: Tracker::without_counters(),
            // scale 0 is exactly LRU under `next_use` (every entry overdue at once, then LRU
            // order); under `expected_wait` equal idle times would tie, so it takes `next_use`
            order: NextUseOrder::with_ranking(
                config.overdue_factor,
                if config.scale == 0.0 {
                    Ranking::NextUse
                } else {
                    config.ranking
                },
            )
            .adaptive(config.adaptive),
            uses_pow: PowTable::new(-config.w_uses),
            // sharing^-w = (1 + (sharing - 1))^-w
            sharing_pow: PowTable::new(-config.w_sharing),
            depth_pow: PowTable::new(config.w_depth),
            inferred: Box::default(),
            horizon: config.hit_density.then(Box::default),
            horizon_now: 0.0,
            typical_gap_now: f64::NAN,
            horizon_request: u32::MAX,
            most_resident: 0,
            waiting_queue: config.waiting_queue,
        }
    }

    /// [`ScorerConfig::predicted_gap`] with the integer powers looked up and the last
    /// `exp_m1` and `powf` remembered (the same numbers).
    #[inline]
    fn predicted_gap(&mut self, s: &Snapshot) -> f64 {
        let c = &self.config;
        if c.scale == 0.0 {
            return 0.0;
        }
        let memo = &mut self.exp_m1_memo;
        let pow_memo = &mut self.pow_memo;
        let w = c.w_probability;
        let g = c.scale
            * c.reference_gap(s, &mut |site, x| memo[site].get(x, f64::exp_m1))
            * self.uses_pow.get(s.uses)
            * self.sharing_pow.get(s.sharing.max(1) - 1)
            * self.depth_pow.get(s.depth);
        if c.hit_density {
            return c.per_hit(g, c.probability(s), self.horizon_now, self.typical_gap_now);
        }
        g * c.probability_term(s, &mut |p, _| pow_memo.get(p, |p| p.powf(-w)))
    }

    /// The predicted next use (trace seconds) of a tracked entry.
    pub fn predicted_next_use(&self, e: EntryId) -> f64 {
        self.order.next_use(e)
    }

    #[inline]
    fn touch(&mut self, e: EntryId, a: &Access) {
        let served;
        let a = if self.config.served_time && self.stats.now > a.timestamp {
            served = Access {
                timestamp: self.stats.now,
                ..*a
            };
            &served
        } else {
            a
        };
        let s = self.stats.observe(a);
        if let Some(h) = &mut self.horizon {
            if a.request != self.horizon_request {
                self.horizon_request = a.request;
                self.horizon_now = h.age(a.timestamp);
                self.typical_gap_now = ScorerConfig::typical_gap(&s);
            }
            self.most_resident = self.most_resident.max(self.order.resident());
            h.reference(a.obj, a.timestamp, self.most_resident);
        }
        let next = a.timestamp + self.predicted_gap(&s);
        self.order.touch(e, next, a.timestamp, a.depth);
        // requests are followed until they finish: to infer their conversation, or to revise
        // their blocks' predictions with their answer's length
        let follow = if a.conversation == u64::MAX {
            self.config.infer_conversations
        } else {
            self.config.use_output_length && self.config.use_conversation
        };
        if !follow {
            return;
        }
        let inf = &mut self.inferred;
        let i = e as usize;
        if inf.revised.len() <= i {
            inf.revised.resize(i + 1, f64::NAN);
            inf.entry_request.resize(i + 1, u32::MAX);
        }
        inf.revised[i] = f64::NAN;
        inf.entry_request[i] = a.request;
        let conv = inf.obj_conv.get(a.obj as usize);
        let p = match inf.pending.entry(a.request) {
            Entry::Occupied(p) => p.into_mut(),
            Entry::Vacant(v) => {
                inf.pending_ids.push(Reverse(a.request));
                v.insert(Pending {
                    timestamp: a.timestamp,
                    kind: a.kind,
                    conversation: a.conversation,
                    touches: inf.spare.pop().unwrap_or_default(),
                    ..Default::default()
                })
            }
        };
        if conv != NO_CONV && p.deepest_seen.is_none_or(|(d, _)| a.depth >= d) {
            p.deepest_seen = Some((a.depth, conv));
        }
        p.blocks = p.blocks.max(a.depth + 1);
        if p.first.is_none() {
            p.first = Some(s);
        }
        p.touches.push(Touch::new(e, a.obj, &s));
        if inf.pending.len() > MAX_PENDING {
            // the smallest pending id (every pending id is in `pending_ids`)
            let oldest = loop {
                let Reverse(r) = inf.pending_ids.pop().expect("pending ids are listed");
                if inf.pending.contains_key(&r) {
                    break r;
                }
            };
            self.settle(oldest);
        } else if inf.pending_ids.len() > 2 * MAX_PENDING {
            // drop the ids settled by their unpins
            let pending = &inf.pending;
            inf.pending_ids.retain(|Reverse(r)| pending.contains_key(r));
        }
    }

    /// Request `request` is complete (its blocks are being unpinned): infer its conversation,
    /// record it, and revise the predictions of the blocks it touched last (taken at their
    /// unpin).
    fn settle(&mut self, request: u32) {
        let inf = &mut self.inferred;
        let Some(p) = inf.pending.remove(&request) else {
            return;
        };
        let given = p.conversation != u64::MAX;
        let output = p.output.filter(|_| self.config.use_output_length);
        if given && output.is_none() {
            // the conversation was known at the touch and nothing was learned since
            self.recycle(p.touches);
            return;
        }
        let conv = if given {
            NO_CONV
        } else {
            let conv = match p.deepest_seen {
                Some((d, c)) if 2 * (d + 1) >= inf.conv_len[c as usize] => c,
                _ => {
                    inf.conv_len.push(0);
                    (inf.conv_len.len() - 1) as u32
                }
            };
            inf.conv_len[conv as usize] = p.blocks;
            conv
        };
        let a = Access {
            timestamp: p.timestamp,
            request,
            conversation: if given {
                p.conversation
            } else {
                INFERRED_BASE + conv as u64
            },
            kind: p.kind,
            ..Access::at(0, 0)
        };
        // one request of the conversation: its state, then the fields of every block's snapshot
        let Some(mut c) = p.first else {
            return;
        };
        self.stats.observe_conversation(&a, &mut c);
        if let Some(out) = output {
            // its answer's class, then the conversation's fields again (the same request:
            // nothing is recorded twice)
            self.stats.finished(a.conversation, request, out);
            self.stats.observe_conversation(&a, &mut c);
        }
        for t in &p.touches {
            let o = t.obj as usize;
            let inf = &mut self.inferred;
            if !given {
                *inf.obj_conv.get_mut(o) = conv;
            }
            if inf.entry_request[t.entry as usize] != request {
                // a later request touched it since: its prediction is that request's
                continue;
            }
            let s = t.with_conversation_of(&c);
            let next = s.timestamp + self.predicted_gap(&s);
            self.inferred.revised[t.entry as usize] = next;
        }
        self.recycle(p.touches);
    }

    /// Keep a settled request's touch list for a new request (module constants).
    #[inline]
    fn recycle(&mut self, mut touches: Vec<Touch>) {
        if self.inferred.spare.len() < SPARE_LISTS && touches.capacity() <= SPARE_CAPACITY {
            touches.clear();
            self.inferred.spare.push(touches);
        }
    }

    /// Request `request` finished after `output_tokens` tokens (before its blocks' unpins,
    /// which settle it).
    #[inline]
    fn finished(&mut self, request: u32, output_tokens: u32) {
        if !self.config.use_output_length {
            return;
        }
        if let Some(p) = self.inferred.pending.get_mut(&request) {
            p.output = Some(output_tokens);
        }
    }

    /// The prediction revised since the touch (an inferred conversation), if any: the request
    /// that touched `e` last is settled first.
    #[inline]
    fn revised_next_use(&mut self, e: EntryId) -> Option<f64> {
        let r = *self.inferred.entry_request.get(e as usize)?;
        if self.inferred.pending.contains_key(&r) {
            self.settle(r);
        }
        let next = std::mem::replace(&mut self.inferred.revised[e as usize], f64::NAN);
        (!next.is_nan()).then_some(next)
    }
}

crate::learned::predicted_next_use_policy!(ConversationAware);

impl super::Registered for ConversationAware {
    type Config = ScorerConfig;
    fn build(config: &Self::Config, _capacity: u64) -> Self {
        ConversationAware::new(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A settled touch predicts as its own snapshot with the conversation's fields (the old
    /// way, which kept whole snapshots): `Touch` keeps every field a prediction reads.
    #[test]
    fn settled_touches_predict_as_their_snapshots() {
        let mut tracker = Tracker::without_counters();
        let mut snaps = Vec::new();
        for i in 0..3_000u32 {
            let a = Access {
                timestamp: i as f64 * 0.7,
                request: i / 5,
                conversation: if i % 4 == 0 { u64::MAX } else { (i % 7) as u64 },
                kind: i % 3,
                depth: (i * 11) % 50,
                ..Access::at(i % 97, i as u64)
            };
            snaps.push(tracker.observe(&a));
        }
        let mut configs = Vec::new();
        for bits in 0..64u32 {
            let on = |k: u32| bits & (1 << k) != 0;
            configs.push(ScorerConfig {
                use_conversation: on(0),
                use_block_gap: on(1),
                use_request_type: on(2),
                use_reuse_model: on(3),
                reuse_model_for_conversations: on(4),
                gap_by_turn: on(5),
                w_uses: 0.7,
                w_sharing: 0.3,
                w_depth: 0.2,
                w_probability: 1.5,
                ..Default::default()
            });
        }
        for (i, s) in snaps.iter().enumerate() {
            // the conversation's fields from a snapshot of a conversation, the rest from `s`
            let c = snaps[(i * 7 + 1) % snaps.len()];
            let c = if c.conv_requests > 0 { c } else { snaps[1] };
            let mut old = *s;
            old.conv_requests = c.conv_requests;
            old.conv_gap_ewma = c.conv_gap_ewma;
            old.conv_since_prev = c.conv_since_prev;
            old.p_continue = c.p_continue;
            old.log_conv_gap_prior = c.log_conv_gap_prior;
            old.log_kind_gap = c.log_kind_gap;
            old.p_kind = c.p_kind;
            old.log_turn_gap = c.log_turn_gap;
            let new = Touch::new(0, 0, s).with_conversation_of(&c);
            for config in &configs {
                let (a, b) = (config.predicted_gap(&old), config.predicted_gap(&new));
                assert_eq!(a.to_bits(), b.to_bits(), "snapshot {i}: {a} vs {b}");
            }
            assert_eq!(old.timestamp, new.timestamp);
        }
    }

    /// The hit-density cost has its limits and keeps predictions prefix-monotone: a child (no
    /// shorter `g`, no larger `p`, the same horizon) never costs less than its parent.
    #[test]
    fn hit_density_cost_is_monotone_and_has_its_limits() {
        let (g, p) = (40.0, 0.8);
        // a small cache: G / p in all
        let small = g + hit_density_cost(g, p, 0.0);
        assert!((small - g / p).abs() < 1e-9, "{small}");
        assert!((g + hit_density_cost(g, p, 1e-6) - g / p).abs() < 1e-6);
        // a large one: G + T (1 - p) / p
        let t = 1e6;
        assert!((hit_density_cost(g, p, t) / (t * 0.25) - 1.0).abs() < 1e-9);
        // a certain reuse costs only its wait
        assert_eq!(hit_density_cost(g, 1.0, 300.0), 0.0);
        let gs = [0.0, 0.5, 3.0, 20.0, 90.0, 400.0, 5000.0];
        let ps = [1e-6, 0.1, 0.5, 0.64, 0.9, 1.0];
        let ts = [0.0, 1.0, 30.0, 120.0, 1e4];
        for &t in &ts {
            for (i, &g1) in gs.iter().enumerate() {
                for &g2 in &gs[i..] {
                    for (j, &p1) in ps.iter().enumerate() {
                        for &p2 in &ps[..=j] {
                            let parent = g1 + hit_density_cost(g1, p1, t);
                            let child = g2 + hit_density_cost(g2, p2, t);
                            assert!(
                                child >= parent,
                                "t {t}: parent (g {g1}, p {p1}) {parent} > child (g {g2}, p {p2}) {child}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// With `hit_density` (and without, for reference) the policy prices a request's blocks
    /// with one horizon, so a chain's predicted next uses never fall with depth (conversations growing their prompts behind
    /// a shared system prompt, the cache full, the horizon moving between requests).
    #[test]
    fn hit_density_predictions_are_prefix_monotone() {
        use crate::policy::api::EvictionPolicy;
        for (hd, idle) in [(false, false), (true, false), (true, true)] {
            let config = ScorerConfig {
                hit_density: hd,
                idle_in_horizons: idle,
                use_reuse_model: false,
                adaptive: false,
                ..Default::default()
            };
            let mut p = ConversationAware::new(&config);
            let mut resident = std::collections::HashSet::new();
            let mut x = 99u64;
            let mut next_obj = 100u32;
            let mut prompts: Vec<Vec<u32>> = (0..12).map(|_| Vec::new()).collect();
            let mut t = 0.0;
            let mut horizons = Vec::new();
            for r in 0..600u32 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let c = ((x >> 33) % 12) as usize;
                t += ((x >> 20) % 7) as f64;
                if prompts[c].is_empty() || (x >> 40) % 5 == 0 {
                    // a new conversation: one of two system prompts, then its question
                    let system = ((x >> 45) % 2) as u32 * 3;
                    prompts[c] = vec![system, system + 1, system + 2];
                }
                for _ in 0..1 + (x >> 50) % 3 {
                    prompts[c].push(next_obj);
                    next_obj += 1;
                }
                let blocks = prompts[c].clone();
                for (d, &b) in blocks.iter().enumerate() {
                    let a = Access {
                        timestamp: t,
                        request: r,
                        conversation: c as u64,
                        depth: d as u32,
                        ..Access::at(b, r as u64)
                    };
                    if resident.insert(b) {
                        p.on_insert(b, &a);
                    } else {
                        p.on_hit(b, &a);
                    }
                }
                let next: Vec<f64> = blocks.iter().map(|&b| p.predicted_next_use(b)).collect();
                // (the first requests are not checked: before any conversation has had a second
                // request there is no conversation gap, and a new block falls back to the
                // typical reuse gap, which can be shorter than its parent's own last gap)
                for w in next.windows(2).filter(|_| r >= 50) {
                    assert!(w[1] >= w[0], "hd {hd} request {r}: {next:?}");
                }
                horizons.push(p.horizon_now);
                // a cache of 60 blocks
                while resident.len() > 60 {
                    let e = p.evict(crate::policy::api::Pins(&[])).unwrap();
                    resident.remove(&e);
                }
            }
            // with `hit_density` the horizon was measured, and it moved
            let last = *horizons.last().unwrap();
            let moved = last > 0.0 && horizons.iter().any(|&h| h != last);
            assert_eq!(moved, hd, "{horizons:?}");
        }
    }

    /// `idle_in_horizons` divides the cost per hit by `1 + T / (overdue_factor * g_typ)`: the
    /// cost as it is in a cache without a horizon, and LRU's order (every prediction to 0) as
    /// the horizon grows.
    #[test]
    fn idle_in_horizons_scales_the_cost_by_the_horizon() {
        let mut tracker = Tracker::without_counters();
        let mut s = tracker.observe(&Access {
            timestamp: 0.0,
            conversation: 3,
            ..Access::at(1, 0)
        });
        for (i, t) in [(1u32, 40.0), (2, 70.0)] {
            s = tracker.observe(&Access {
                timestamp: t,
                request: i,
                conversation: 3,
                ..Access::at(1, i as u64)
            });
        }
        let hd = ScorerConfig {
            hit_density: true,
            ..Default::default()
        };
        let idle = ScorerConfig {
            idle_in_horizons: true,
            ..hd.clone()
        };
        let g_typ = ScorerConfig::typical_gap(&s);
        assert!(g_typ > 0.0);
        // no horizon: the cost per hit as it is
        assert_eq!(
            idle.predicted_gap_within(&s, 0.0, g_typ),
            hd.predicted_gap_within(&s, 0.0, g_typ)
        );
        for t in [1.0, 30.0, 600.0] {
            let want = hd.predicted_gap_within(&s, t, g_typ) / (1.0 + t / (0.3 * g_typ));
            let got = idle.predicted_gap_within(&s, t, g_typ);
            assert!((got - want).abs() <= 1e-12 * want, "{t}: {got} vs {want}");
        }
        // the larger the horizon, the less the prediction weighs against the idle time
        let far = idle.predicted_gap_within(&s, 1e7, g_typ);
        assert!(far < 0.01 * hd.predicted_gap_within(&s, 1e7, g_typ), "{far}");
    }

    #[test]
    fn table_lookup_equals_the_definition() {
        let config = ScorerConfig {
            scale: 0.7,
            w_uses: 1.3,
            w_sharing: 0.6,
            w_depth: 0.2,
            w_probability: 0.9,
            ..Default::default()
        };
        let mut policy = ConversationAware::new(&config);
        let mut tracker = Tracker::without_counters();
        // depths beyond the table, shared blocks, conversations and none
        for i in 0..20_000u32 {
            let a = Access {
                timestamp: i as f64 * 0.37,
                request: i / 7,
                conversation: if i % 3 == 0 { u64::MAX } else { (i % 5) as u64 },
                depth: (i * 13) % 5000,
                ..Access::at(i % 911, i as u64)
            };
            let s = tracker.observe(&a);
            let (fast, slow) = (policy.predicted_gap(&s), config.predicted_gap(&s));
            // the same number, bit for bit (tables of `powf`, remembered `exp_m1` and `powf`)
            assert_eq!(fast.to_bits(), slow.to_bits(), "{fast} vs {slow}");
        }
    }

    /// Without ids, the conversations inferred from the blocks give, once a request's blocks
    /// are unpinned, the predictions the same trace gets with its conversation ids; before the
    /// unpin (and with `infer_conversations: false`) they are the predictions without.
    #[test]
    fn inferred_conversations_give_the_predictions_of_the_ids() {
        use crate::policy::api::EvictionPolicy;
        // conversation 0 grows its prompt turn by turn; conversation 1 is one request; blocks
        // are their own entry ids
        // conversation 2 repeats conversation 0's turns later (its turns have a typical gap)
        let requests: [(f64, u64, &[u32]); 8] = [
            (0.0, 0, &[1, 2]),
            (5.0, 1, &[9]),
            (10.0, 0, &[1, 2, 3]),
            (30.0, 0, &[1, 2, 3, 4]),
            (34.0, 0, &[1, 2, 3, 4, 5]),
            (40.0, 2, &[11, 12]),
            (47.0, 2, &[11, 12, 13]),
            (60.0, 2, &[11, 12, 13, 14]),
        ];
        let run = |ids: bool, infer: bool| {
            let config = ScorerConfig {
                infer_conversations: infer,
                ..Default::default()
            };
            let mut p = ConversationAware::new(&config);
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for (i, &(t, conv, blocks)) in requests.iter().enumerate() {
                for (d, &b) in blocks.iter().enumerate() {
                    let a = Access {
                        timestamp: t,
                        request: i as u32,
                        conversation: if ids { conv } else { u64::MAX },
                        depth: d as u32,
                        ..Access::at(b, i as u64)
                    };
                    if seen.insert(b) {
                        p.on_insert(b, &a);
                    } else {
                        p.on_hit(b, &a);
                    }
                    p.on_pin(b);
                }
                let before: Vec<f64> = blocks.iter().map(|&b| p.predicted_next_use(b)).collect();
                p.on_time(t + 1.0);
                for &b in blocks.iter().rev() {
                    p.on_unpin(b, 0);
                }
                let after: Vec<f64> = blocks.iter().map(|&b| p.predicted_next_use(b)).collect();
                out.push((before, after));
            }
            out
        };
        let with_ids = run(true, true);
        let inferred = run(false, true);
        let without = run(false, false);
        for (k, ((w, i), n)) in with_ids.iter().zip(&inferred).zip(&without).enumerate() {
            assert_eq!(w.1, i.1, "request {k}: after the unpin, as with the ids");
            assert_eq!(i.0, n.0, "request {k}: before it, as without conversations");
            assert_eq!(n.0, n.1, "request {k}: no inference, no revision");
        }
        // the conversation made a difference (its gap, not the blocks' typical reuse gap)
        assert_ne!(with_ids[3].1, without[3].1);
    }

    #[test]
    fn gap_by_turn_predicts_the_gap_after_requests_of_the_turn() {
        let mut tracker = Tracker::without_counters();
        let a = |obj: u32, t: f64, request: u32, conversation: u64| Access {
            timestamp: t,
            request,
            conversation,
            ..Access::at(obj, request as u64)
        };
        // conversation 1: its first request is followed after 100 s, its second after 2 s
        for (obj, t, req) in [(1, 0.0, 0), (2, 100.0, 1), (3, 102.0, 2)] {
            tracker.observe(&a(obj, t, req, 1));
        }
        let by_turn = ScorerConfig {
            gap_by_turn: true,
            w_probability: 0.0,
            ..Default::default()
        };
        // conversation 2's first and second requests: the gaps that followed those turns
        let first = tracker.observe(&a(4, 200.0, 3, 2));
        assert!((by_turn.predicted_gap(&first) - 100.0).abs() < 1e-9);
        let second = tracker.observe(&a(5, 300.0, 4, 2));
        assert!((by_turn.predicted_gap(&second) - 2.0).abs() < 1e-9);
        // a turn no conversation has gone past yet: the conversation's own gap, as without
        let third = tracker.observe(&a(6, 301.0, 5, 2));
        let without = ScorerConfig {
            gap_by_turn: false,
            ..by_turn.clone()
        };
        assert_eq!(by_turn.predicted_gap(&third), without.predicted_gap(&third));
    }

    #[test]
    fn served_time_counts_a_reference_from_the_engine_s_clock() {
        use crate::policy::api::EvictionPolicy;
        let run = |served_time: bool| {
            let mut p = ConversationAware::new(&ScorerConfig {
                served_time,
                ..Default::default()
            });
            // the engine is at 50 s when it serves a request that arrived at 10 s
            p.on_time(50.0);
            let a = Access {
                timestamp: 10.0,
                ..Access::at(7, 0)
            };
            p.on_insert(0, &a);
            p.predicted_next_use(0)
        };
        let (arrival, served) = (run(false), run(true));
        assert!(arrival < 50.0, "predicted from the arrival: {arrival}");
        assert!(
            (served - 50.0 - (arrival - 10.0)).abs() < 1e-9,
            "{served} vs {arrival}"
        );
    }

    #[test]
    fn request_types_give_new_conversations_their_type_s_gap() {
        let mut tracker = Tracker::without_counters();
        let a = |obj: u32, t: f64, request: u32, conversation: u64, kind: u32| Access {
            timestamp: t,
            request,
            conversation,
            kind,
            ..Access::at(obj, request as u64)
        };
        // after a type-0 request conversations come back in 100 s, after a type-1 one in 2 s
        for (obj, t, req, conv, kind) in [(1, 0.0, 0, 1, 0), (2, 100.0, 1, 1, 0)] {
            tracker.observe(&a(obj, t, req, conv, kind));
        }
        for (obj, t, req, conv, kind) in [(3, 101.0, 2, 2, 1), (4, 103.0, 3, 2, 1)] {
            tracker.observe(&a(obj, t, req, conv, kind));
        }
        // a new conversation's first request, of type 1
        let s = tracker.observe(&a(5, 110.0, 4, 3, 1));
        let only_conversation = ScorerConfig {
            use_block_gap: false,
            use_reuse_model: false,
            // the type's gap, not the turn's
            gap_by_turn: false,
            w_probability: 0.0,
            ..Default::default()
        };
        let typed = ScorerConfig {
            use_request_type: true,
            ..only_conversation.clone()
        };
        assert!((typed.predicted_gap(&s) - 2.0).abs() < 1e-9);
        // untyped: the typical gap of all conversations, exp(mean(ln 101, ln 3)) - 1
        let all = ((101f64.ln() + 3f64.ln()) / 2.0).exp() - 1.0;
        assert!((only_conversation.predicted_gap(&s) - all).abs() < 1e-9);
        // the probability term: type 1's continuation rate (1 of 2 requests followed)
        let p = ScorerConfig {
            w_probability: 1.0,
            ..typed
        };
        assert!((p.predicted_gap(&s) - 2.0 / ((1.0 + 1.0) / (3.0 + 2.0))).abs() < 1e-9);
    }

    /// With ids and pins: a finished request's answer length revises its blocks' predictions
    /// at their unpin (long answers were never followed here, so they are predicted later);
    /// without the finish, or with the switch off, nothing is revised.
    #[test]
    fn answers_revise_predictions_at_the_unpin() {
        use crate::policy::api::EvictionPolicy;
        use crate::{BlockCache, Outcome};
        let run = |use_output_length: bool, finish_last: bool| {
            let config = ScorerConfig {
                use_output_length,
                adaptive: false,
                ..Default::default()
            };
            let mut cache = BlockCache::new(10_000, ConversationAware::new(&config));
            let mut request = 0u32;
            let mut clock = 0u64;
            let mut serve = |cache: &mut BlockCache<ConversationAware>,
                             conv: u64,
                             t: f64,
                             output: Option<u32>| {
                // two blocks of its own, pinned while it runs, then its finish and unpins
                let mut entries = Vec::new();
                for depth in 0..2u32 {
                    clock += 1;
                    let a = Access {
                        timestamp: t,
                        request,
                        conversation: conv,
                        depth,
                        ..Access::at(conv as u32 * 4 + depth + request % 2 * 2, clock)
                    };
                    match cache.access(&a, true) {
                        Outcome::Inserted(e) | Outcome::Hit(e) => entries.push(e),
                        other => panic!("{other:?}"),
                    }
                }
                cache.policy.on_time(t + 1.0);
                if let Some(out) = output {
                    cache.policy.on_finish(request, out);
                }
                for &e in entries.iter().rev() {
                    cache.unpin(e, clock);
                }
                request += 1;
                entries
            };
            for c in 0..60u64 {
                let t = c as f64 * 100.0;
                let short = c % 2 == 0;
                serve(&mut cache, c, t, Some(if short { 5 } else { 500 }));
                if short {
                    serve(&mut cache, c, t + 10.0, Some(500));
                }
            }
            let out = finish_last.then_some(700);
            let last = serve(&mut cache, 1_000, 9_000.0, out);
            cache.validate().unwrap();
            last.iter()
                .map(|&e| cache.policy.predicted_next_use(e))
                .collect::<Vec<_>>()
        };
        let off = run(false, true);
        assert_eq!(run(true, false), off, "nothing is revised without the finish");
        assert_eq!(run(false, false), off);
        let on = run(true, true);
        for (a, b) in on.iter().zip(&off) {
            assert!(a > b, "a long answer is predicted later: {on:?} vs {off:?}");
        }
    }
}
