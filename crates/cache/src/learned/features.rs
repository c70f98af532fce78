//! Online statistics of a tier's reference stream, shared by `conversation_aware` and
//! `lightgbm` (and by `train`, which must compute exactly the features the policy sees):
//! per-object (block) history, per-conversation state, and global rates learned from what has
//! been seen so far. Everything here is a function of past references only: no look-ahead.
//!
//! Per object (LRB, Song et al., NSDI'20, section 4: "deltas" and "EDCs"): the last four
//! inter-use gaps, exponentially decayed counters at four half-lives, an EWMA of the gaps, the
//! number of uses and the age. We add what LRB's CDN objects do not have: the block's depth in
//! the prefix chain, how many conversations share it, and the state of the conversation that
//! touched it (requests so far, its usual inter-turn gap, the time since its previous turn, and
//! the probability that a conversation with that many turns goes on, learned online).
//!
//! A "use" is one request referencing the object: repeats inside a request are not reuses.
//! Times are trace seconds (`Access::timestamp`).

use rustc_hash::FxHashMap;

use super::chunked::Chunked;
use crate::policy::api::Access;

/// Number of features of [`Snapshot::features`].
pub const NUM_FEATURES: usize = 15;

/// Feature names, in order (CSV header and LightGBM `feature_names`). Only per-object and
/// per-conversation quantities: the global rates and priors drift with the workload, and trees
/// do not extrapolate, so a model trained on one part of a trace would meet them out of range
/// on the next (`conversation_aware` uses them, through its tuned weights).
pub const FEATURE_NAMES: [&str; NUM_FEATURES] = [
    "depth",
    "uses",
    "gap1",
    "gap2",
    "gap3",
    "gap4",
    "gap_ewma",
    "edc_10s",
    "edc_100s",
    "edc_1000s",
    "edc_10000s",
    "sharing",
    "conv_requests",
    "conv_gap_ewma",
    "conv_since_prev",
];

/// `gap1` of a first use: "never used before" ranks as the longest gap, so that a child block
/// (never used more recently than its parent) never gets a shorter `gap1` than its parent.
pub const FIRST_USE_GAP: f64 = 1e9;

/// The direction in which the predicted time to next use may move with each feature so that
/// predictions are *prefix-monotone* (a child block never predicted to be needed before its
/// parent: it has no more uses, no more sharing, a no-later previous use, a larger depth, and
/// the same conversation): +1 non-decreasing, -1 non-increasing, 0 free (constant along a
/// request's chain), `None` not used by `inferencelab train` (no monotone relation).
pub const PREFIX_MONOTONE: [Option<i8>; NUM_FEATURES] = [
    Some(1),  // depth
    Some(-1), // uses
    Some(1),  // gap1
    None,     // gap2
    None,     // gap3
    None,     // gap4
    None,     // gap_ewma
    Some(-1), // edc_10s
    Some(-1), // edc_100s
    Some(-1), // edc_1000s
    Some(-1), // edc_10000s
    Some(-1), // sharing
    Some(0),  // conv_requests
    Some(0),  // conv_gap_ewma
    Some(0),  // conv_since_prev
];

/// Half-lives (seconds) of the decayed counters.
const EDC_HALF_LIFE: [f64; 4] = [10.0, 100.0, 1_000.0, 10_000.0];
/// Weight of the newest gap in the per-object and per-conversation EWMAs.
const EWMA_NEW: f64 = 0.5;
/// Weight of the newest gap in the global (log-space) priors.
const PRIOR_NEW: f64 = 0.02;
/// `1 / n >= PRIOR_NEW` up to this `n` (checked by a test).
const PLAIN_MEAN_UNTIL: u64 = 50;
/// Use counts and turn counts are bucketed up to this for the continuation rates.
const MAX_BUCKET: usize = 63;
const NONE: u32 = u32::MAX;
/// Turns are bucketed up to this for the per-turn gap (later turns share the last bucket).
const TURN_BUCKETS: usize = 16;
/// Classes of the length of a request's answer (tokens generated): up to 16, 64, 256, 1,024,
/// more ([`output_class`]). A priori: factors of four from a one-line answer.
pub const OUTPUT_CLASSES: usize = 5;
const NO_CLASS: u8 = u8::MAX;
/// Weight, in requests, of the turn's continuation rate as the prior of a class's own rate: a
/// class seen a few times is mostly its turn's rate, one seen a hundred times mostly its own.
/// (4, 16 and 64 were compared on the protocol's validation parts: the same within noise.)
const CLASS_PRIOR_REQUESTS: f64 = 16.0;

/// The class of an answer of `tokens` tokens ([`OUTPUT_CLASSES`]).
#[inline]
pub fn output_class(tokens: u32) -> u8 {
    match tokens {
        0..=16 => 0,
        17..=64 => 1,
        65..=256 => 2,
        257..=1024 => 3,
        _ => 4,
    }
}

#[inline]
fn turn_bucket(requests: u32) -> usize {
    (requests as usize).min(TURN_BUCKETS - 1)
}

#[derive(Debug, Clone, Copy)]
struct ObjState {
    first: f64,
    last: f64,
    /// newest first; NaN when missing
    gaps: [f32; 4],
    gap_ewma: f32,
    edc: [f32; 4],
    uses: u32,
    last_request: u32,
    last_conv: u32,
    sharing: u32,
}

impl Default for ObjState {
    fn default() -> Self {
        ObjState {
            first: f64::NAN,
            last: f64::NAN,
            gaps: [f32::NAN; 4],
            gap_ewma: f32::NAN,
            edc: [0.0; 4],
            uses: 0,
            last_request: NONE,
            last_conv: NONE,
            sharing: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ConvState {
    last_request: u32,
    last_ts: f64,
    prev_ts: f64,
    requests: u32,
    gap_ewma: f64,
    /// the type of its latest request
    last_kind: u32,
    /// the answer class of its latest request, once it finished ([`Tracker::finished`])
    last_class: u8,
}

/// A running mean of `ln(1 + x)`, reported back as `exp(mean) - 1` (robust to heavy tails).
#[derive(Debug, Clone, Copy)]
struct LogPrior {
    mean: f64,
    n: u64,
}

impl LogPrior {
    fn new() -> Self {
        LogPrior { mean: 0.0, n: 0 }
    }
    fn add_log(&mut self, l: f64) {
        self.n += 1;
        // a plain mean for the first observations, then an EWMA (the workload drifts); past
        // `PLAIN_MEAN_UNTIL` the larger is always `PRIOR_NEW` (no division)
        let w = if self.n > PLAIN_MEAN_UNTIL {
            PRIOR_NEW
        } else {
            (1.0 / self.n as f64).max(PRIOR_NEW)
        };
        self.mean += w * (l - self.mean);
    }
    /// `ln(1 + typical value)`, NaN before any observation (the caller converts only what it
    /// uses: `exp_m1` per reference is measurable at 5 M references/s).
    fn log_value(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.mean
        }
    }
}

/// What is known about one reference when it happens (after updating with it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub timestamp: f64,
    pub depth: u32,
    /// Uses of the object so far, this one included.
    pub uses: u32,
    /// Gaps between the last uses, newest first (NaN when missing).
    pub gaps: [f64; 4],
    /// Seconds since the first use.
    pub age: f64,
    /// EWMA of the object's reuse gaps (NaN before its second use).
    pub gap_ewma: f64,
    pub edc: [f64; 4],
    /// Times the object was touched by a different conversation than the previous time (the
    /// number of conversations sharing it when they do not interleave).
    pub sharing: u32,
    /// Learned online: the share of objects with `uses` uses that got one more.
    pub p_reuse: f64,
    /// Requests of the conversation so far (0: the trace has no conversations).
    pub conv_requests: u32,
    /// EWMA of the conversation's inter-request gaps (NaN before its second request).
    pub conv_gap_ewma: f64,
    /// Seconds since the conversation's previous request (NaN for its first).
    pub conv_since_prev: f64,
    /// Learned online: the share of conversations with `conv_requests` requests that had
    /// another (NaN without conversations).
    pub p_continue: f64,
    /// `ln(1 + typical inter-request gap of conversations so far)` (NaN before any).
    pub log_conv_gap_prior: f64,
    /// `ln(1 + typical reuse gap of objects so far)` (NaN before any).
    pub log_reuse_gap_prior: f64,
    /// `ln(1 + typical gap to the next use of objects with `uses` uses so far)` (NaN before
    /// any).
    pub log_reuse_gap_by_uses: f64,
    /// `ln(1 + typical gap from a request of this request's type to its conversation's next
    /// request)` (NaN without a type, conversations or any observation).
    pub log_kind_gap: f64,
    /// Learned online: the share of requests of this type whose conversation had another (NaN
    /// without a type or conversations).
    pub p_kind: f64,
    /// `ln(1 + typical gap from a conversation's `conv_requests`-th request to its next)`,
    /// learned online per turn (NaN without conversations or before any such gap).
    pub log_turn_gap: f64,
}

impl Snapshot {
    /// The feature vector, in the order of [`FEATURE_NAMES`] (missing values are NaN, which
    /// LightGBM handles as missing).
    pub fn features(&self) -> [f64; NUM_FEATURES] {
        let conv = self.conv_requests > 0;
        let nan_unless = |ok: bool, x: f64| if ok { x } else { f64::NAN };
        [
            self.depth as f64,
            self.uses as f64,
            if self.gaps[0].is_nan() {
                FIRST_USE_GAP
            } else {
                self.gaps[0]
            },
            self.gaps[1],
            self.gaps[2],
            self.gaps[3],
            self.gap_ewma,
            self.edc[0],
            self.edc[1],
            self.edc[2],
            self.edc[3],
            self.sharing as f64,
            nan_unless(conv, self.conv_requests as f64),
            self.conv_gap_ewma,
            self.conv_since_prev,
        ]
    }
}

/// The online statistics of one tier.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// per object id (chunked: growing never copies)
    objs: Chunked<ObjState>,
    convs: Vec<ConvState>,
    conv_index: FxHashMap<u64, u32>,
    /// the last conversation looked up (consecutive references share it)
    conv_cache: (u64, u32),
    /// objects that reached `k` uses
    use_reach: [u64; MAX_BUCKET + 2],
    /// conversations that reached `k` requests
    conv_reach: [u64; MAX_BUCKET + 2],
    conv_gap_prior: LogPrior,
    reuse_gap_prior: LogPrior,
    /// typical gap to the next use of an object with `k` uses (a per-category reuse model)
    gap_by_uses: [LogPrior; MAX_BUCKET + 2],
    /// per request type: typical gap to the conversation's next request, requests seen, and
    /// requests followed by another of their conversation (Alibaba's per-category reuse model)
    kind_gap: Vec<LogPrior>,
    kind_requests: Vec<u64>,
    kind_continued: Vec<u64>,
    /// typical gap from a conversation's `k`-th request to its next (per turn)
    turn_gap: [LogPrior; TURN_BUCKETS],
    /// per turn and answer class: finished requests, and those followed by another of their
    /// conversation ([`Tracker::finished`])
    class_requests: [[u64; OUTPUT_CLASSES]; TURN_BUCKETS],
    class_continued: [[u64; OUTPUT_CLASSES]; TURN_BUCKETS],
    /// keep the decayed counters (`lightgbm` reads them, `conversation_aware` does not)
    pub with_counters: bool,
    /// latest trace time seen
    pub now: f64,
    /// the last reuse gap's bits and its `ln_1p` (a request's blocks last used by the same
    /// request share their gap)
    last_ln_1p: (u64, f64),
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            objs: Chunked::new(ObjState::default()),
            convs: Vec::new(),
            conv_index: FxHashMap::default(),
            conv_cache: (u64::MAX, NONE),
            use_reach: [0; MAX_BUCKET + 2],
            conv_reach: [0; MAX_BUCKET + 2],
            conv_gap_prior: LogPrior::new(),
            reuse_gap_prior: LogPrior::new(),
            gap_by_uses: [LogPrior::new(); MAX_BUCKET + 2],
            kind_gap: Vec::new(),
            kind_requests: Vec::new(),
            kind_continued: Vec::new(),
            turn_gap: [LogPrior::new(); TURN_BUCKETS],
            class_requests: [[0; OUTPUT_CLASSES]; TURN_BUCKETS],
            class_continued: [[0; OUTPUT_CLASSES]; TURN_BUCKETS],
            with_counters: true,
            now: 0.0,
            last_ln_1p: (0.0f64.to_bits(), 0.0f64.ln_1p()),
        }
    }
}

#[inline]
fn rate(reach: &[u64], k: usize) -> f64 {
    let k = k.min(MAX_BUCKET);
    (reach[k + 1] as f64 + 1.0) / (reach[k] as f64 + 2.0)
}

impl Tracker {
    /// A tracker that skips the decayed counters (four `exp2` per reuse).
    pub fn without_counters() -> Self {
        Tracker {
            with_counters: false,
            ..Default::default()
        }
    }

    /// Record the reference `a` and return what is known about it.
    #[inline]
    pub fn observe(&mut self, a: &Access) -> Snapshot {
        let t = a.timestamp;
        if t > self.now {
            self.now = t;
        }
        let conv = self.conversation(a);
        let o = a.obj as usize;
        let s = self.objs.get_mut(o);
        if s.last_request != a.request {
            // a new use of the object
            if s.uses == 0 {
                s.first = t;
                s.edc = [1.0; 4];
            } else {
                let gap = (t - s.last).max(0.0);
                s.gaps = [gap as f32, s.gaps[0], s.gaps[1], s.gaps[2]];
                s.gap_ewma = if s.uses == 1 {
                    gap as f32
                } else {
                    s.gap_ewma + EWMA_NEW as f32 * (gap as f32 - s.gap_ewma)
                };
                if self.with_counters {
                    for (c, h) in s.edc.iter_mut().zip(EDC_HALF_LIFE) {
                        *c = 1.0 + *c * (-gap / h).exp2() as f32;
                    }
                }
                let l = if gap.to_bits() == self.last_ln_1p.0 {
                    self.last_ln_1p.1
                } else {
                    let l = gap.ln_1p();
                    self.last_ln_1p = (gap.to_bits(), l);
                    l
                };
                self.reuse_gap_prior.add_log(l);
                self.gap_by_uses[(s.uses as usize).min(MAX_BUCKET + 1)].add_log(l);
            }
            s.uses += 1;
            s.last = t;
            s.last_request = a.request;
            if conv != NONE && conv != s.last_conv {
                s.sharing += 1;
                s.last_conv = conv;
            }
            let k = (s.uses as usize).min(MAX_BUCKET + 1);
            self.use_reach[k] += 1;
        }
        let s = *s;
        let mut snap = Snapshot {
            timestamp: t,
            depth: a.depth,
            uses: s.uses,
            gaps: s.gaps.map(|g| g as f64),
            age: t - s.first,
            gap_ewma: s.gap_ewma as f64,
            edc: s.edc.map(|c| c as f64),
            sharing: s.sharing.max(1),
            p_reuse: rate(&self.use_reach, s.uses as usize),
            conv_requests: 0,
            conv_gap_ewma: f64::NAN,
            conv_since_prev: f64::NAN,
            p_continue: f64::NAN,
            log_conv_gap_prior: f64::NAN,
            log_reuse_gap_prior: self.reuse_gap_prior.log_value(),
            log_reuse_gap_by_uses: self.gap_by_uses[(s.uses as usize).min(MAX_BUCKET + 1)]
                .log_value(),
            log_kind_gap: f64::NAN,
            p_kind: f64::NAN,
            log_turn_gap: f64::NAN,
        };
        self.conversation_fields(conv, a.kind, &mut snap);
        snap
    }

    /// Fill the conversation fields of `s` from conversation `conv` (dense index or NONE)
    /// and the request type `kind`.
    #[inline]
    fn conversation_fields(&self, conv: u32, kind: u32, s: &mut Snapshot) {
        let (log_kind_gap, p_kind) = match self.kind_requests.get(kind as usize) {
            Some(&n) if conv != NONE => {
                let k = kind as usize;
                (
                    self.kind_gap[k].log_value(),
                    (self.kind_continued[k] as f64 + 1.0) / (n as f64 + 2.0),
                )
            }
            _ => (f64::NAN, f64::NAN),
        };
        let (conv_requests, conv_gap_ewma, conv_since_prev, p_continue) = if conv == NONE {
            (0, f64::NAN, f64::NAN, f64::NAN)
        } else {
            let c = &self.convs[conv as usize];
            (
                c.requests,
                if c.requests >= 2 {
                    c.gap_ewma
                } else {
                    f64::NAN
                },
                if c.requests >= 2 {
                    c.last_ts - c.prev_ts
                } else {
                    f64::NAN
                },
                self.continuation(c),
            )
        };
        s.log_kind_gap = log_kind_gap;
        s.p_kind = p_kind;
        s.conv_requests = conv_requests;
        s.conv_gap_ewma = conv_gap_ewma;
        s.conv_since_prev = conv_since_prev;
        s.p_continue = p_continue;
        s.log_conv_gap_prior = self.conv_gap_prior.log_value();
        s.log_turn_gap = if conv_requests == 0 {
            f64::NAN
        } else {
            self.turn_gap[(conv_requests as usize).min(TURN_BUCKETS - 1)].log_value()
        };
    }

    /// The probability that conversation `c` goes on after its latest request: the share of
    /// conversations with as many requests that had another, or, once that request finished,
    /// the share of finished requests of its turn and answer class that were followed (with the
    /// turn's rate as a prior worth [`CLASS_PRIOR_REQUESTS`] requests).
    #[inline]
    fn continuation(&self, c: &ConvState) -> f64 {
        let p = rate(&self.conv_reach, c.requests as usize);
        if c.last_class == NO_CLASS {
            return p;
        }
        let (t, k) = (turn_bucket(c.requests), c.last_class as usize);
        let (n, f) = (self.class_requests[t][k], self.class_continued[t][k]);
        (f as f64 + CLASS_PRIOR_REQUESTS * p) / (n as f64 + CLASS_PRIOR_REQUESTS)
    }

    /// Request `request` of conversation `conversation` finished after generating
    /// `output_tokens` tokens: its answer class is known from now on (the continuation rate of
    /// its conversation is its turn and class's). Nothing when the conversation is unknown or
    /// has had another request since.
    pub fn finished(&mut self, conversation: u64, request: u32, output_tokens: u32) {
        let Some(&idx) = self.conv_index.get(&conversation) else {
            return;
        };
        let c = &mut self.convs[idx as usize];
        if c.last_request != request || c.last_class != NO_CLASS {
            return;
        }
        let k = output_class(output_tokens);
        c.last_class = k;
        self.class_requests[turn_bucket(c.requests)][k as usize] += 1;
    }

    /// Record request `a.request` of conversation `a.conversation` (not `u64::MAX`) and fill
    /// the conversation fields of `s`, a snapshot taken when the conversation was not known
    /// yet (`conversation_aware` infers conversations once it has seen a request's blocks).
    pub fn observe_conversation(&mut self, a: &Access, s: &mut Snapshot) {
        if a.timestamp > self.now {
            self.now = a.timestamp;
        }
        let conv = self.conversation(a);
        self.conversation_fields(conv, a.kind, s);
    }

    /// The dense index of `a`'s conversation (updated with `a`'s request), or NONE.
    #[inline]
    fn conversation(&mut self, a: &Access) -> u32 {
        if a.conversation == u64::MAX {
            return NONE;
        }
        let idx = if self.conv_cache.0 == a.conversation {
            self.conv_cache.1
        } else {
            let next = self.convs.len() as u32;
            let idx = *self.conv_index.entry(a.conversation).or_insert(next);
            if idx == next {
                self.convs.push(ConvState {
                    last_request: NONE,
                    last_ts: f64::NAN,
                    prev_ts: f64::NAN,
                    requests: 0,
                    gap_ewma: f64::NAN,
                    last_kind: NONE,
                    last_class: NO_CLASS,
                });
            }
            self.conv_cache = (a.conversation, idx);
            idx
        };
        let c = &mut self.convs[idx as usize];
        if c.last_request != a.request {
            if c.requests >= 1 && c.last_kind != NONE {
                // the previous request's type: its conversation went on, after this gap
                let k = c.last_kind as usize;
                self.kind_continued[k] += 1;
                self.kind_gap[k].add_log((a.timestamp - c.last_ts).max(0.0).ln_1p());
            }
            if c.requests >= 1 && c.last_class != NO_CLASS {
                // the previous request's answer class: its conversation went on
                self.class_continued[turn_bucket(c.requests)][c.last_class as usize] += 1;
            }
            c.last_class = NO_CLASS;
            c.last_kind = a.kind;
            if a.kind != NONE {
                let k = a.kind as usize;
                if self.kind_requests.len() <= k {
                    self.kind_requests.resize(k + 1, 0);
                    self.kind_continued.resize(k + 1, 0);
                    self.kind_gap.resize(k + 1, LogPrior::new());
                }
                self.kind_requests[k] += 1;
            }
            if c.requests >= 1 {
                let gap = (a.timestamp - c.last_ts).max(0.0);
                c.gap_ewma = if c.requests == 1 {
                    gap
                } else {
                    c.gap_ewma + EWMA_NEW * (gap - c.gap_ewma)
                };
                self.conv_gap_prior.add_log(gap.ln_1p());
                // the gap that followed the conversation's `requests`-th request
                self.turn_gap[(c.requests as usize).min(TURN_BUCKETS - 1)].add_log(gap.ln_1p());
            }
            c.prev_ts = c.last_ts;
            c.last_ts = a.timestamp;
            c.last_request = a.request;
            c.requests += 1;
            self.conv_reach[(c.requests as usize).min(MAX_BUCKET + 1)] += 1;
        }
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(obj: u32, t: f64, request: u32, conversation: u64, depth: u32) -> Access {
        Access {
            timestamp: t,
            request,
            conversation,
            depth,
            ..Access::at(obj, request as u64)
        }
    }

    #[test]
    fn the_plain_mean_ends_where_the_prior_weight_takes_over() {
        // past `PLAIN_MEAN_UNTIL`, `add_log`'s weight without the division is the same number
        // (1 / n only falls further)
        for n in PLAIN_MEAN_UNTIL + 1..=100_000 {
            let w = (1.0 / n as f64).max(PRIOR_NEW);
            assert_eq!(w.to_bits(), PRIOR_NEW.to_bits(), "{n}");
        }
        assert!(1.0 / PLAIN_MEAN_UNTIL as f64 >= PRIOR_NEW);
    }

    #[test]
    fn gaps_counts_and_conversation_state() {
        let mut tr = Tracker::default();
        // conversation 7: requests 0 (t=0), 1 (t=10), 2 (t=30), each touching block 1
        let s0 = tr.observe(&acc(1, 0.0, 0, 7, 0));
        assert_eq!((s0.uses, s0.conv_requests), (1, 1));
        assert!(s0.gaps[0].is_nan() && s0.conv_gap_ewma.is_nan());
        // a repeat inside the same request is not a reuse
        assert_eq!(tr.observe(&acc(1, 0.0, 0, 7, 0)).uses, 1);
        let s1 = tr.observe(&acc(1, 10.0, 1, 7, 0));
        assert_eq!(s1.uses, 2);
        assert_eq!(s1.gaps[0], 10.0);
        assert_eq!(s1.conv_gap_ewma, 10.0);
        assert_eq!(s1.conv_since_prev, 10.0);
        let s2 = tr.observe(&acc(1, 30.0, 2, 7, 0));
        assert_eq!(s2.gaps[..2], [20.0, 10.0]);
        assert_eq!(s2.conv_gap_ewma, 15.0);
        assert_eq!(s2.sharing, 1);
        assert_eq!(s2.age, 30.0);
        // another conversation touching the block makes it shared
        let s3 = tr.observe(&acc(1, 31.0, 3, 8, 0));
        assert_eq!(s3.sharing, 2);
        assert_eq!(s3.conv_requests, 1);
        // decayed counter at 10 s half-life: 1 + (1 + (1 + 2^-1) 2^-2) 2^-0.1
        let want = 1.0 + (1.0 + 1.5 * 0.25) * 2f64.powf(-0.1);
        assert!((s3.edc[0] - want).abs() < 1e-5, "{} vs {want}", s3.edc[0]);
    }
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    fn acc(obj: u32, t: f64, request: u32, conversation: u64, kind: u32) -> Access {
        Access {
            timestamp: t,
            request,
            conversation,
            kind,
            ..Access::at(obj, request as u64)
        }
    }

    #[test]
    fn request_types_learn_their_gap_and_continuation_rate() {
        let mut tr = Tracker::default();
        // conversation 1: a type-0 request at 0 s followed at 30 s by a type-1 request;
        // conversation 2: a type-0 request at 40 s, never followed
        assert!(tr.observe(&acc(1, 0.0, 0, 1, 0)).log_kind_gap.is_nan());
        let s = tr.observe(&acc(2, 30.0, 1, 1, 1));
        assert!(
            s.log_kind_gap.is_nan(),
            "no type-1 request was followed yet"
        );
        // type 1: 1 request (this one), none followed yet: (0 + 1) / (1 + 2)
        assert_eq!(s.p_kind, 1.0 / 3.0);
        let s = tr.observe(&acc(3, 40.0, 2, 2, 0));
        // type 0: 2 requests, 1 followed, after a 30 s gap: (1 + 1) / (2 + 2)
        assert_eq!(s.p_kind, 0.5);
        assert!((s.log_kind_gap - 30f64.ln_1p()).abs() < 1e-12);
        // without a type, or without a conversation: unknown
        let s = tr.observe(&acc(4, 50.0, 3, 3, u32::MAX));
        assert!(s.log_kind_gap.is_nan() && s.p_kind.is_nan());
        let s = tr.observe(&acc(5, 60.0, 4, u64::MAX, 0));
        assert!(s.log_kind_gap.is_nan() && s.p_kind.is_nan());
    }
}

#[cfg(test)]
mod answer_class_tests {
    use super::*;

    fn acc(obj: u32, t: f64, request: u32, conversation: u64) -> Access {
        Access {
            timestamp: t,
            request,
            conversation,
            ..Access::at(obj, request as u64)
        }
    }

    #[test]
    fn answer_classes_learn_their_own_continuation_rate() {
        assert_eq!(
            [0, 16, 17, 64, 65, 256, 257, 1024, 1025, u32::MAX].map(output_class),
            [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        );
        let mut tr = Tracker::default();
        // 40 conversations: a first request answered in 5 tokens is followed (at +10 s) by a
        // second that is never followed; one answered in 500 tokens is not followed
        let mut request = 0u32;
        for c in 0..40u64 {
            let t = c as f64 * 100.0;
            let short = c % 2 == 0;
            tr.observe(&acc(c as u32, t, request, c));
            tr.finished(c, request, if short { 5 } else { 500 });
            request += 1;
            if short {
                tr.observe(&acc(c as u32, t + 10.0, request, c));
                tr.finished(c, request, 500);
                request += 1;
            }
        }
        // a new conversation's first request: before it finishes, the turn's rate (20 of 41
        // first requests were followed)
        let s = tr.observe(&acc(1_000, 5_000.0, request, 1_000));
        let turn_rate = (20.0 + 1.0) / (41.0 + 2.0);
        assert_eq!(s.p_continue, turn_rate);
        // finished with a short answer: 20 of 20 such were followed (prior: the turn's rate)
        let mut s = s;
        tr.finished(1_000, request, 3);
        tr.observe_conversation(&acc(1_000, 5_000.0, request, 1_000), &mut s);
        let short_rate = (20.0 + CLASS_PRIOR_REQUESTS * turn_rate) / (21.0 + CLASS_PRIOR_REQUESTS);
        assert!(
            (s.p_continue - short_rate).abs() < 1e-12,
            "{}",
            s.p_continue
        );
        // a second finish of the same request, or a finish of another, changes nothing
        tr.finished(1_000, request, 900);
        tr.finished(1_000, request + 7, 900);
        tr.observe_conversation(&acc(1_000, 5_000.0, request, 1_000), &mut s);
        assert!((s.p_continue - short_rate).abs() < 1e-12);
        // a long answer: 0 of 20 + 20 (the short ones' second requests, also long) followed
        let s2 = tr.observe(&acc(2_000, 5_001.0, request + 1, 2_000));
        let mut s2 = s2;
        tr.finished(2_000, request + 1, 600);
        tr.observe_conversation(&acc(2_000, 5_001.0, request + 1, 2_000), &mut s2);
        assert!(
            s2.p_continue < 0.25 && s.p_continue > 0.7,
            "{} {}",
            s2.p_continue,
            s.p_continue
        );
        // conversation 1_000's next request: the short class's count of followed requests grows
        let before = tr.class_continued[1][0];
        tr.observe(&acc(1_000, 5_010.0, request + 2, 1_000));
        assert_eq!(tr.class_continued[1][0], before + 1);
        // unknown conversations are ignored
        tr.finished(u64::MAX - 1, 0, 1);
    }
}
