//! Training rows for the `lightgbm` policy: one row per block reference (a block touched by a
//! request), with exactly the features the policy computes when it touches the block
//! (`inferencelab_cache::learned::features`), labelled with `ln(1 + seconds until the block's
//! next use)`.
//!
//! Why rows at reference time (LRB samples at eviction time): our policy predicts once per
//! touch, so the rows are drawn from the very distribution the model is queried on; LRB predicts
//! for random candidates at eviction time, so it must train on features as they look then.
//! Features do not depend on the cache (only on the reference stream), so one export serves
//! every capacity.
//!
//! No peeking across the split: rows come from the requests before `until` and labels only look
//! at those requests; a block not used again before `until` is labelled as "never"
//! (`ln(1 + 2 * window)`), like LRB's out-of-window objects.

use std::io::Write;

use inferencelab_cache::learned::features::{Tracker, FEATURE_NAMES, NUM_FEATURES};
use inferencelab_cache::Access;
use inferencelab_trace::rng::SplitMix64;
use inferencelab_trace::{BlockedTrace, Trace};

/// Feature rows and labels.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub rows: Vec<[f64; NUM_FEATURES]>,
    pub labels: Vec<f64>,
    /// The request each row comes from.
    pub requests: Vec<u32>,
}

/// Rows come from the first part of the window only, so that every row's label can look
/// ahead at least the rest of the window: a row near the window's end would be labelled "never"
/// only because its reuse falls after the end (right censoring).
pub const ROW_SHARE: f64 = 0.5;

/// Rows of the requests before trace time `until`, at most `max_rows` (a seeded uniform sample).
pub fn build(
    trace: &Trace,
    blocks: &BlockedTrace,
    until: f64,
    max_rows: usize,
    seed: u64,
) -> Dataset {
    let t0 = trace.requests.first().map_or(0.0, |r| r.timestamp);
    let rows_until = t0 + ROW_SHARE * (until - t0);
    build_window(trace, blocks, t0, rows_until, until, max_rows, seed)
}

/// Rows of the references in `[rows_from, rows_until)`, labelled by looking at the requests
/// before `until` only (a block not used again before `until` is "never":
/// `ln(1 + 2 * (window length))`); features from the whole history before them.
pub fn build_window(
    trace: &Trace,
    blocks: &BlockedTrace,
    rows_from: f64,
    rows_until: f64,
    until: f64,
    max_rows: usize,
    seed: u64,
) -> Dataset {
    let reqs = &trace.requests;
    let n_req = reqs.iter().take_while(|r| r.timestamp < until).count();
    let t0 = reqs.first().map_or(0.0, |r| r.timestamp);
    let t_end = reqs[..n_req].last().map_or(t0, |r| r.timestamp);
    let never = (2.0 * (t_end - rows_from.max(t0))).max(1.0).ln_1p();
    // next use of each reference within the window: scan backwards
    let end = blocks.offsets[n_req];
    let mut next_req = vec![u32::MAX; blocks.num_objects as usize];
    let mut label = vec![never; end];
    for i in (0..n_req).rev() {
        let (a, b) = (blocks.offsets[i], blocks.offsets[i + 1]);
        for (slot, &k) in label[a..b].iter_mut().zip(&blocks.keys[a..b]) {
            let nr = next_req[k as usize];
            if nr != u32::MAX {
                *slot = (reqs[nr as usize].timestamp - reqs[i].timestamp)
                    .max(0.0)
                    .ln_1p();
            }
        }
        for pos in a..b {
            next_req[blocks.keys[pos] as usize] = i as u32;
        }
    }
    let mut tracker = Tracker::default();
    let mut out = Dataset::default();
    let mut rng = SplitMix64::new(seed);
    let mut seen = 0usize;
    let mut clock = 0u64;
    let kinds = trace.kind_ids();
    for (i, r) in reqs[..n_req].iter().enumerate() {
        let sample = r.timestamp >= rows_from && r.timestamp < rows_until;
        for (d, pos) in (blocks.offsets[i]..blocks.offsets[i + 1]).enumerate() {
            clock += 1;
            let a = Access {
                obj: blocks.keys[pos],
                time: clock,
                timestamp: r.timestamp,
                request: i as u32,
                conversation: r.conversation.unwrap_or(u64::MAX),
                turn: r.turn,
                kind: kinds[i],
                depth: d as u32,
                next_use: inferencelab_cache::NEVER,
            };
            let s = tracker.observe(&a);
            if !sample {
                continue;
            }
            // reservoir sampling keeps a uniform sample of every reference
            seen += 1;
            let slot = if out.rows.len() < max_rows {
                out.rows.push([0.0; NUM_FEATURES]);
                out.labels.push(0.0);
                out.requests.push(0);
                Some(out.rows.len() - 1)
            } else {
                let j = rng.below(seen as u64) as usize;
                (j < max_rows).then_some(j)
            };
            if let Some(j) = slot {
                out.rows[j] = s.features();
                out.labels[j] = label[pos];
                out.requests[j] = i as u32;
            }
        }
    }
    out
}

/// Write `rows` as CSV: a header of `label` and the feature names, empty cells for missing.
pub fn write_csv(data: &Dataset, w: &mut dyn Write) -> std::io::Result<()> {
    write!(w, "label")?;
    for n in FEATURE_NAMES {
        write!(w, ",{n}")?;
    }
    writeln!(w)?;
    for (row, label) in data.rows.iter().zip(&data.labels) {
        write!(w, "{label}")?;
        for v in row {
            if v.is_nan() {
                write!(w, ",")?;
            } else {
                write!(w, ",{v}")?;
            }
        }
        writeln!(w)?;
    }
    Ok(())
}
