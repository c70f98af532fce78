//! A small histogram-based gradient-boosting trainer for regression trees (L2 loss), written
//! after LightGBM (Ke et al., NeurIPS'17): features are binned once into at most `max_bins`
//! quantile bins, trees grow leaf-wise (the leaf with the largest gain splits next) up to
//! `num_leaves`, missing values (NaN) go the side that gains more (LightGBM's
//! `missing_type=NaN` with a learned default direction), and the output is a LightGBM text
//! model (`inferencelab_cache::learned::gbdt::Model`) that Python `lightgbm` loads too.
//!
//! Deviations from LightGBM: no GOSS/EFB, no categorical features, no feature or row bagging,
//! thresholds are midpoints between neighbouring bin values (LightGBM takes bin upper bounds),
//! so models are close to but not identical with LightGBM's on the same data.

use inferencelab_cache::learned::gbdt::{Model, Output, Tree};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Training parameters (names as LightGBM's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoostParams {
    pub num_iterations: usize,
    pub num_leaves: usize,
    pub learning_rate: f64,
    pub min_data_in_leaf: usize,
    pub lambda_l2: f64,
    pub max_bin: usize,
    /// Per feature: `Some(1)` the prediction may only grow with it, `Some(-1)` only shrink,
    /// `Some(0)` free, `None` never split on (LightGBM's `monotone_constraints`, "basic"
    /// method: children's outputs are bounded by the midpoint of a constrained split). Empty =
    /// all free.
    pub monotone: Vec<Option<i8>>,
}

impl Default for BoostParams {
    /// Small enough to predict one block reference in well under a microsecond.
    fn default() -> Self {
        BoostParams {
            num_iterations: 40,
            num_leaves: 16,
            learning_rate: 0.15,
            min_data_in_leaf: 50,
            lambda_l2: 1.0,
            max_bin: 63,
            monotone: Vec::new(),
        }
    }
}

/// Per feature: the bin upper bounds (split thresholds); bin `b` holds `(ub[b-1], ub[b]]`, the
/// last bin is unbounded, and NaN has its own bin (`NAN_BIN`).
struct Bins {
    thresholds: Vec<Vec<f64>>,
}

const NAN_BIN: u8 = u8::MAX;

impl Bins {
    fn fit(rows: &[Vec<f64>], num_features: usize, max_bin: usize) -> Bins {
        let thresholds = (0..num_features)
            .into_par_iter()
            .map(|f| {
                let mut v: Vec<f64> = rows.iter().map(|r| r[f]).filter(|x| !x.is_nan()).collect();
                v.sort_by(f64::total_cmp);
                v.dedup();
                if v.len() <= 1 {
                    return Vec::new();
                }
                // quantiles of the distinct values, then midpoints between neighbours
                let want = (max_bin - 1).min(v.len() - 1);
                let mut cuts: Vec<f64> = (1..=want)
                    .map(|q| {
                        let j = q * v.len() / (want + 1);
                        let j = j.clamp(1, v.len() - 1);
                        (v[j - 1] + v[j]) / 2.0
                    })
                    .collect();
                cuts.dedup();
                cuts
            })
            .collect();
        Bins { thresholds }
    }

    fn bin(&self, f: usize, x: f64) -> u8 {
        if x.is_nan() {
            return NAN_BIN;
        }
        self.thresholds[f].partition_point(|&t| t < x) as u8
    }
}

#[derive(Clone, Copy, Default)]
struct Stat {
    g: f64,
    h: f64,
    n: usize,
}

impl Stat {
    fn add(&mut self, o: &Stat) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }
    fn sub(&self, o: &Stat) -> Stat {
        Stat {
            g: self.g - o.g,
            h: self.h - o.h,
            n: self.n - o.n,
        }
    }
    fn score(&self, l2: f64) -> f64 {
        self.g * self.g / (self.h + l2)
    }
}

#[derive(Clone, Copy)]
struct Split {
    gain: f64,
    feature: usize,
    bin: usize,
    nan_left: bool,
    left: Stat,
    right: Stat,
}

struct Leaf {
    rows: Vec<u32>,
    stat: Stat,
    /// bounds on the leaf's output from monotone splits above it
    lo: f64,
    hi: f64,
    /// node slot in the parent that points to this leaf: (node, is_left), None for the root
    parent: Option<(usize, bool)>,
    split: Option<Split>,
}

/// Train an L2 regression model on `rows` (NaN = missing) and `labels`.
pub fn train(
    rows: &[Vec<f64>],
    labels: &[f64],
    feature_names: &[String],
    params: &BoostParams,
) -> Model {
    let n = rows.len();
    let nf = feature_names.len();
    let bins = Bins::fit(rows, nf, params.max_bin.clamp(2, 255));
    // column-major binned data
    let binned: Vec<Vec<u8>> = (0..nf)
        .into_par_iter()
        .map(|f| rows.iter().map(|r| bins.bin(f, r[f])).collect())
        .collect();
    let mean = if n > 0 {
        labels.iter().sum::<f64>() / n as f64
    } else {
        0.0
    };
    let mut pred = vec![mean; n];
    let mut trees = Vec::with_capacity(params.num_iterations);
    for it in 0..params.num_iterations.max(1) {
        let grad: Vec<f64> = pred.iter().zip(labels).map(|(p, y)| p - y).collect();
        let (mut tree, leaf_rows) = grow_tree(&binned, &bins, &grad, params);
        for (rows_of_leaf, v) in leaf_rows.iter().zip(&tree.leaf_value) {
            for &r in rows_of_leaf {
                pred[r as usize] += v;
            }
        }
        if it == 0 {
            // LightGBM's boost_from_average: the first tree carries the initial score
            for v in &mut tree.leaf_value {
                *v += mean;
            }
            for v in &mut tree.internal_value {
                *v += mean;
            }
        }
        trees.push(tree);
    }
    Model {
        trees,
        objective: "regression".into(),
        output: Output::Identity,
        max_feature_idx: nf.saturating_sub(1),
        feature_names: feature_names.to_vec(),
        average_output: false,
    }
}

fn best_split(
    binned: &[Vec<u8>],
    grad: &[f64],
    rows: &[u32],
    total: Stat,
    params: &BoostParams,
    nbins: &[usize],
    (lo, hi): (f64, f64),
) -> Option<Split> {
    let l2 = params.lambda_l2;
    let out = |s: &Stat| (-s.g / (s.h + l2)).clamp(lo, hi);
    let min = params.min_data_in_leaf.max(1);
    let parent = total.score(l2);
    (0..binned.len())
        .into_par_iter()
        .filter_map(|f| {
            let nb = nbins[f];
            let mono = params.monotone.get(f).copied().unwrap_or(Some(0));
            if nb < 2 || mono.is_none() {
                return None;
            }
            let mono = mono.unwrap_or(0);
            let mut hist = vec![Stat::default(); nb];
            let mut nan = Stat::default();
            let col = &binned[f];
            for &r in rows {
                let b = col[r as usize];
                let s = if b == NAN_BIN {
                    &mut nan
                } else {
                    &mut hist[b as usize]
                };
                s.g += grad[r as usize];
                s.h += 1.0;
                s.n += 1;
            }
            let mut best: Option<Split> = None;
            let mut left = Stat::default();
            for (b, h) in hist.iter().enumerate().take(nb - 1) {
                left.add(h);
                for nan_left in [false, true] {
                    if nan.n == 0 && nan_left {
                        continue;
                    }
                    let mut l = left;
                    if nan_left {
                        l.add(&nan);
                    }
                    let r = total.sub(&l);
                    if l.n < min || r.n < min {
                        continue;
                    }
                    // x <= threshold goes left: increasing needs left <= right
                    if (mono > 0 && out(&l) > out(&r)) || (mono < 0 && out(&l) < out(&r)) {
                        continue;
                    }
                    let gain = l.score(l2) + r.score(l2) - parent;
                    if gain > 1e-12 && best.is_none_or(|s| gain > s.gain) {
                        best = Some(Split {
                            gain,
                            feature: f,
                            bin: b,
                            nan_left,
                            left: l,
                            right: r,
                        });
                    }
                }
            }
            best
        })
        .reduce_with(|a, b| {
            if b.gain > a.gain || (b.gain == a.gain && b.feature < a.feature) {
                b
            } else {
                a
            }
        })
}

/// Grow one tree on the gradients; returns it with the rows of each leaf.
fn grow_tree(
    binned: &[Vec<u8>],
    bins: &Bins,
    grad: &[f64],
    params: &BoostParams,
) -> (Tree, Vec<Vec<u32>>) {
    let n = grad.len();
    let nbins: Vec<usize> = bins.thresholds.iter().map(|t| t.len() + 1).collect();
    let all: Vec<u32> = (0..n as u32).collect();
    let total = Stat {
        g: grad.iter().sum(),
        h: n as f64,
        n,
    };
    let raw = |s: &Stat| -s.g / (s.h + params.lambda_l2);
    let leaf_out = |s: &Stat, lo: f64, hi: f64| params.learning_rate * raw(s).clamp(lo, hi);
    let inf = f64::INFINITY;
    let mut leaves = vec![Leaf {
        split: best_split(binned, grad, &all, total, params, &nbins, (-inf, inf)),
        rows: all,
        stat: total,
        lo: -inf,
        hi: inf,
        parent: None,
    }];
    let mut t = Tree::leaf(leaf_out(&total, -inf, inf));
    t.leaf_weight = vec![total.h];
    t.leaf_count = vec![total.n as u64];
    while leaves.len() < params.num_leaves.max(2) {
        // the leaf with the largest gain splits next
        let Some((li, split)) = leaves
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.split.map(|s| (i, s)))
            .max_by(|a, b| a.1.gain.total_cmp(&b.1.gain).then(b.0.cmp(&a.0)))
        else {
            break;
        };
        let node = t.split_feature.len();
        let leaf = std::mem::replace(
            &mut leaves[li],
            Leaf {
                rows: Vec::new(),
                stat: Stat::default(),
                lo: 0.0,
                hi: 0.0,
                parent: None,
                split: None,
            },
        );
        let col = &binned[split.feature];
        let (lrows, rrows): (Vec<u32>, Vec<u32>) = leaf.rows.iter().partition(|&&r| {
            let b = col[r as usize];
            if b == NAN_BIN {
                split.nan_left
            } else {
                (b as usize) <= split.bin
            }
        });
        let new_leaf = leaves.len();
        // rewire the parent's pointer from leaf `li` to the new node
        if let Some((p, is_left)) = leaf.parent {
            if is_left {
                t.left_child[p] = node as i32;
            } else {
                t.right_child[p] = node as i32;
            }
        }
        t.split_feature.push(split.feature as u32);
        t.threshold.push(bins.thresholds[split.feature][split.bin]);
        // missing_type NaN (8) plus the learned default direction (2 = left)
        t.decision_type.push(8 | if split.nan_left { 2 } else { 0 });
        t.left_child.push(!(li as i32));
        t.right_child.push(!(new_leaf as i32));
        t.split_gain.push(split.gain);
        t.internal_value
            .push(leaf_out(&leaf.stat, leaf.lo, leaf.hi));
        t.internal_weight.push(leaf.stat.h);
        t.internal_count.push(leaf.stat.n as u64);
        // children of a monotone split are bounded by the midpoint of their outputs
        let (mut l_b, mut r_b) = ((leaf.lo, leaf.hi), (leaf.lo, leaf.hi));
        let mono = params
            .monotone
            .get(split.feature)
            .copied()
            .flatten()
            .unwrap_or(0);
        if mono != 0 {
            let (ol, or) = (
                raw(&split.left).clamp(leaf.lo, leaf.hi),
                raw(&split.right).clamp(leaf.lo, leaf.hi),
            );
            let mid = (ol + or) / 2.0;
            if mono > 0 {
                l_b.1 = mid;
                r_b.0 = mid;
            } else {
                l_b.0 = mid;
                r_b.1 = mid;
            }
        }
        let l_split = best_split(binned, grad, &lrows, split.left, params, &nbins, l_b);
        let r_split = best_split(binned, grad, &rrows, split.right, params, &nbins, r_b);
        leaves[li] = Leaf {
            rows: lrows,
            stat: split.left,
            lo: l_b.0,
            hi: l_b.1,
            parent: Some((node, true)),
            split: l_split,
        };
        leaves.push(Leaf {
            rows: rrows,
            stat: split.right,
            lo: r_b.0,
            hi: r_b.1,
            parent: Some((node, false)),
            split: r_split,
        });
    }
    t.leaf_value = leaves
        .iter()
        .map(|l| leaf_out(&l.stat, l.lo, l.hi))
        .collect();
    t.leaf_weight = leaves.iter().map(|l| l.stat.h).collect();
    t.leaf_count = leaves.iter().map(|l| l.stat.n as u64).collect();
    t.shrinkage = params.learning_rate;
    (t, leaves.into_iter().map(|l| l.rows).collect())
}
