//! LightGBM's text model format: parser, pure-Rust predictor and writer.
//!
//! Reads any model Python `lightgbm` saves with `booster.save_model(path)` (format `v3`/`v4`):
//! the header (`objective=`, `max_feature_idx=`, `feature_names=`, `average_output`) and the
//! `Tree=` blocks (`num_leaves`, `split_feature`, `threshold`, `decision_type`, `left_child`,
//! `right_child`, `leaf_value`, `cat_boundaries`, `cat_threshold`, `shrinkage`), and predicts
//! exactly as LightGBM's C++ does (`include/LightGBM/tree.h`: `NumericalDecision`,
//! `CategoricalDecision`, `GetLeaf`; `src/objective/*`: `ConvertOutput`). A test checks our
//! predictions against Python LightGBM's on a checked-in fixture to 1e-9.
//!
//! Deviations: linear trees (`is_linear=1`) and multiclass models (`num_class > 1`) are refused
//! with a message; every other objective's output transform is applied as LightGBM does
//! (identity for regression objectives, sigmoid for binary/cross-entropy, exp for
//! poisson/gamma/tweedie).

use std::path::Path;

/// An error reading a model file: which line and why.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Parse {
        path: String,
        line: usize,
        msg: String,
    },
}

// decision_type bits (LightGBM tree.h)
const CATEGORICAL_MASK: u8 = 1;
const DEFAULT_LEFT_MASK: u8 = 2;
const MISSING_ZERO: u8 = 1;
const MISSING_NAN: u8 = 2;
const ZERO_THRESHOLD: f64 = 1e-35;

/// One regression tree, flattened. Children `>= 0` are nodes, `< 0` are leaves `!child`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    pub split_feature: Vec<u32>,
    pub threshold: Vec<f64>,
    pub decision_type: Vec<u8>,
    pub left_child: Vec<i32>,
    pub right_child: Vec<i32>,
    pub leaf_value: Vec<f64>,
    /// Categorical splits: `threshold` is an index into `cat_boundaries`, which delimits words
    /// of `cat_threshold` (a bitset of the categories that go left).
    pub cat_boundaries: Vec<u32>,
    pub cat_threshold: Vec<u32>,
    pub shrinkage: f64,
    // statistics written back by `to_text` (LightGBM needs them to load the model)
    pub split_gain: Vec<f64>,
    pub leaf_weight: Vec<f64>,
    pub leaf_count: Vec<u64>,
    pub internal_value: Vec<f64>,
    pub internal_weight: Vec<f64>,
    pub internal_count: Vec<u64>,
}

impl Tree {
    /// A tree that is a single leaf.
    pub fn leaf(value: f64) -> Self {
        Tree {
            split_feature: vec![],
            threshold: vec![],
            decision_type: vec![],
            left_child: vec![],
            right_child: vec![],
            leaf_value: vec![value],
            cat_boundaries: vec![],
            cat_threshold: vec![],
            shrinkage: 1.0,
            split_gain: vec![],
            leaf_weight: vec![0.0],
            leaf_count: vec![0],
            internal_value: vec![],
            internal_weight: vec![],
            internal_count: vec![],
        }
    }

    pub fn num_leaves(&self) -> usize {
        self.leaf_value.len()
    }

    #[inline]
    fn decide(&self, node: usize, x: &[f64]) -> i32 {
        let mut v = x
            .get(self.split_feature[node] as usize)
            .copied()
            .unwrap_or(f64::NAN);
        let dt = self.decision_type[node];
        if dt & CATEGORICAL_MASK != 0 {
            if v.is_nan() || v < 0.0 {
                return self.right_child[node];
            }
            let cat = v as i64 as usize;
            let idx = self.threshold[node] as usize;
            let (lo, hi) = (
                self.cat_boundaries[idx] as usize,
                self.cat_boundaries[idx + 1] as usize,
            );
            let word = cat / 32;
            if word < hi - lo && (self.cat_threshold[lo + word] >> (cat % 32)) & 1 == 1 {
                return self.left_child[node];
            }
            return self.right_child[node];
        }
        let missing = (dt >> 2) & 3;
        if v.is_nan() && missing != MISSING_NAN {
            v = 0.0;
        }
        if (missing == MISSING_ZERO && (-ZERO_THRESHOLD..=ZERO_THRESHOLD).contains(&v))
            || (missing == MISSING_NAN && v.is_nan())
        {
            return if dt & DEFAULT_LEFT_MASK != 0 {
                self.left_child[node]
            } else {
                self.right_child[node]
            };
        }
        if v <= self.threshold[node] {
            self.left_child[node]
        } else {
            self.right_child[node]
        }
    }

    /// The leaf `x` falls into.
    #[inline]
    pub fn leaf_index(&self, x: &[f64]) -> usize {
        if self.leaf_value.len() <= 1 {
            return 0;
        }
        let mut node = 0i32;
        while node >= 0 {
            node = self.decide(node as usize, x);
        }
        !node as usize
    }

    #[inline]
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.leaf_value[self.leaf_index(x)]
    }
}

/// A node of [`FlatModel`]: one split, its children as global indices (`>= 0` a node, `< 0`
/// the leaf `!child`, at most [`FLAT_SLOW`] a node decided by [`Tree::decide`]).
#[derive(Debug, Clone, Copy)]
struct FlatNode {
    threshold: f64,
    /// index into the prediction's values (`FlatModel::predict`): the feature's value as given
    /// (a split whose missing values go right: a NaN fails `v <= threshold`), with NaN as -inf
    /// (missing values go left), or with NaN as 0 (a split without missing values)
    value: u32,
    /// left, right
    children: [i32; 2],
}

/// Features a [`FlatModel`] reads directly (beyond, it predicts through [`Model::predict`]).
const FLAT_MAX_FEATURES: usize = 16;
/// Children at most this are nodes decided by [`Tree::decide`] (categorical splits and
/// missing-as-zero): `FLAT_SLOW - child` indexes `FlatModel::slow`.
const FLAT_SLOW: i32 = i32::MIN / 2;

/// A [`Model`]'s trees flattened for prediction: every tree's nodes in one array of structs (a
/// split's threshold, value index and children together, where [`Tree`] keeps six vectors),
/// every leaf value in another, and a numerical split decided by one comparison, `v <=
/// threshold`, on one of three versions of the feature computed once per prediction (as given,
/// NaN as -inf, NaN as 0: `Tree::decide`'s three missing-value rules). [`FlatModel::predict`]
/// gives exactly [`Model::predict`]'s number, bit for bit: the same decisions, the leaves summed
/// in the same order. Built once per policy (and per model switch of an online schedule).
#[derive(Debug, Clone)]
pub struct FlatModel {
    nodes: Vec<FlatNode>,
    leaves: Vec<f64>,
    /// per tree: its root (a node, or `!leaf` for a tree that is one leaf)
    roots: Vec<i32>,
    /// features read: the prediction's values are these three times (module docs)
    features: usize,
    /// nodes decided by [`Tree::decide`]: (tree, node within the tree)
    slow: Vec<(u32, u32)>,
    /// per tree: where its nodes and leaves start (to translate [`Tree::decide`]'s children)
    offsets: Vec<(i32, i32)>,
    /// predict through the model (a feature index beyond [`FLAT_MAX_FEATURES`], a NaN
    /// threshold, an empty tree, more nodes than the encoding holds)
    fallback: bool,
    model: std::sync::Arc<Model>,
}

impl FlatModel {
    pub fn new(model: std::sync::Arc<Model>) -> Self {
        let features = model
            .trees
            .iter()
            .flat_map(|t| t.split_feature.iter())
            .map(|&f| f as usize + 1)
            .max()
            .unwrap_or(0);
        let mut f = FlatModel {
            nodes: Vec::new(),
            leaves: Vec::new(),
            roots: Vec::new(),
            features,
            slow: Vec::new(),
            offsets: Vec::new(),
            fallback: features > FLAT_MAX_FEATURES
                || model
                    .trees
                    .iter()
                    .any(|t| t.leaf_value.is_empty() || t.threshold.iter().any(|x| x.is_nan()))
                || model
                    .trees
                    .iter()
                    .map(|t| t.leaf_value.len() + t.split_feature.len())
                    .sum::<usize>()
                    >= 1 << 29,
            model: model.clone(),
        };
        if f.fallback {
            return f;
        }
        for (ti, t) in model.trees.iter().enumerate() {
            let (no, lo) = (f.nodes.len() as i32, f.leaves.len() as i32);
            f.offsets.push((no, lo));
            let global = |c: i32| if c >= 0 { no + c } else { !(lo + !c) };
            // `Tree::leaf_index`: a tree of one leaf is its leaf 0
            f.roots.push(if t.leaf_value.len() <= 1 { !lo } else { no });
            f.leaves.extend_from_slice(&t.leaf_value);
            if t.leaf_value.len() <= 1 {
                continue;
            }
            for node in 0..t.split_feature.len() {
                let dt = t.decision_type[node];
                let missing = (dt >> 2) & 3;
                let slow = dt & CATEGORICAL_MASK != 0 || missing == MISSING_ZERO;
                if slow {
                    f.slow.push((ti as u32, node as u32));
                }
                let feature = t.split_feature[node] as usize;
                let value = match (missing, dt & DEFAULT_LEFT_MASK != 0) {
                    (MISSING_NAN, false) => feature,
                    (MISSING_NAN, true) => features + feature,
                    _ => 2 * features + feature,
                };
                let slow_child = FLAT_SLOW - (f.slow.len() as i32 - 1);
                f.nodes.push(FlatNode {
                    threshold: t.threshold[node],
                    value: value as u32,
                    children: if slow {
                        [slow_child, slow_child]
                    } else {
                        [global(t.left_child[node]), global(t.right_child[node])]
                    },
                });
            }
        }
        f
    }

    /// The model it was built from.
    pub fn model(&self) -> &std::sync::Arc<Model> {
        &self.model
    }

    #[cold]
    fn decide_slow(&self, i: usize, x: &[f64]) -> i32 {
        let (t, node) = self.slow[i];
        let (no, lo) = self.offsets[t as usize];
        let c = self.model.trees[t as usize].decide(node as usize, x);
        if c >= 0 {
            no + c
        } else {
            !(lo + !c)
        }
    }

    /// [`Model::predict`], bit for bit.
    #[inline]
    pub fn predict(&self, x: &[f64]) -> f64 {
        if self.fallback {
            return self.model.predict(x);
        }
        // each feature (NaN when missing) as given, with NaN as -inf, with NaN as 0
        let mut values = [0.0f64; 4 * FLAT_MAX_FEATURES]; // 3 used, 4 for a cheap index
        let n = self.features;
        for i in 0..n {
            let v = x.get(i).copied().unwrap_or(f64::NAN);
            let nan = v.is_nan();
            values[i] = v;
            values[n + i] = if nan { f64::NEG_INFINITY } else { v };
            values[2 * n + i] = if nan { 0.0 } else { v };
        }
        let mut s = 0.0;
        let mut rest = &self.roots[..];
        if self.slow.is_empty() && !self.nodes.is_empty() {
            // four trees at a time, in lockstep: four independent chains of loads and
            // comparisons instead of one (a finished tree idles on node 0 until the others end)
            let mut chunks = self.roots.chunks_exact(4);
            for c in &mut chunks {
                let mut n = [c[0], c[1], c[2], c[3]];
                loop {
                    let mut live = false;
                    for k in &mut n {
                        let here = *k >= 0;
                        let nd = &self.nodes[if here { *k as usize } else { 0 }];
                        let v = values[nd.value as usize % values.len()];
                        let next = if v <= nd.threshold {
                            nd.children[0]
                        } else {
                            nd.children[1]
                        };
                        *k = if here { next } else { *k };
                        live |= here;
                    }
                    if !live {
                        break;
                    }
                }
                for k in n {
                    s += self.leaves[!k as usize];
                }
            }
            rest = chunks.remainder();
        }
        for &root in rest {
            let mut node = root;
            loop {
                while node >= 0 {
                    let nd = &self.nodes[node as usize];
                    let v = values[nd.value as usize % values.len()];
                    node = if v <= nd.threshold {
                        nd.children[0]
                    } else {
                        nd.children[1]
                    };
                }
                if node > FLAT_SLOW {
                    break;
                }
                node = self.decide_slow((FLAT_SLOW - node) as usize, x);
            }
            s += self.leaves[!node as usize];
        }
        let m = &*self.model;
        if m.average_output && !m.trees.is_empty() {
            s /= m.trees.len() as f64;
        }
        match m.output {
            Output::Identity => s,
            Output::Sigmoid(k) => 1.0 / (1.0 + (-k * s).exp()),
            Output::Logistic => 1.0 / (1.0 + (-s).exp()),
            Output::Exp => s.exp(),
        }
    }
}

/// How LightGBM turns the raw score into the prediction (`ConvertOutput`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Output {
    Identity,
    /// binary: `1 / (1 + exp(-sigmoid * raw))`
    Sigmoid(f64),
    /// cross_entropy (xentropy): `1 / (1 + exp(-raw))`
    Logistic,
    /// poisson, gamma, tweedie: `exp(raw)`
    Exp,
}

/// A LightGBM model (one output).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub trees: Vec<Tree>,
    /// The objective line as written (e.g. `regression`, `binary sigmoid:1`).
    pub objective: String,
    pub output: Output,
    pub max_feature_idx: usize,
    pub feature_names: Vec<String>,
    /// Random-forest mode: the prediction is the mean of the trees, not the sum.
    pub average_output: bool,
}

impl Model {
    /// Load a text model file.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Model::parse(&text).map_err(|(line, msg)| ModelError::Parse {
            path: path.display().to_string(),
            line,
            msg,
        })
    }

    /// Parse a text model; the error is `(1-based line, reason)`.
    pub fn parse(text: &str) -> Result<Model, (usize, String)> {
        let mut objective = String::from("regression");
        let mut max_feature_idx = 0usize;
        let mut feature_names = Vec::new();
        let mut average_output = false;
        let mut num_class = 1usize;
        let mut trees = Vec::new();
        let mut lines = text.lines().enumerate().peekable();
        let mut saw_header = false;
        while let Some((i, line)) = lines.next() {
            let line = line.trim();
            if i == 0 && line == "tree" {
                saw_header = true;
                continue;
            }
            if line == "end of trees" {
                break;
            }
            if let Some(rest) = line.strip_prefix("Tree=") {
                let _: usize = rest
                    .parse()
                    .map_err(|_| (i + 1, format!("bad tree index '{rest}'")))?;
                // collect the block's key=value lines up to the blank line
                let mut kv: Vec<(usize, &str, &str)> = Vec::new();
                while let Some(&(j, l)) = lines.peek() {
                    let l = l.trim();
                    if l.is_empty() {
                        break;
                    }
                    lines.next();
                    if let Some((k, v)) = l.split_once('=') {
                        kv.push((j + 1, k, v));
                    }
                }
                trees.push(parse_tree(i + 1, &kv)?);
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                match k {
                    "objective" => objective = v.to_string(),
                    "max_feature_idx" => {
                        max_feature_idx = v
                            .parse()
                            .map_err(|_| (i + 1, format!("bad max_feature_idx '{v}'")))?
                    }
                    "feature_names" => {
                        feature_names = v.split(' ').map(str::to_string).collect();
                    }
                    "num_class" => {
                        num_class = v
                            .parse()
                            .map_err(|_| (i + 1, format!("bad num_class '{v}'")))?
                    }
                    _ => {}
                }
            } else if line == "average_output" {
                average_output = true;
            }
        }
        if !saw_header {
            return Err((
                1,
                "not a LightGBM text model (the first line must be 'tree'); save it with \
                 booster.save_model(path)"
                    .into(),
            ));
        }
        if num_class != 1 {
            return Err((
                1,
                format!("multiclass models (num_class={num_class}) are not supported"),
            ));
        }
        let output = output_of(&objective);
        Ok(Model {
            trees,
            objective,
            output,
            max_feature_idx,
            feature_names,
            average_output,
        })
    }

    /// The raw score: the sum (or the mean, for random forests) of the trees' outputs.
    #[inline]
    pub fn predict_raw(&self, x: &[f64]) -> f64 {
        let mut s = 0.0;
        for t in &self.trees {
            s += t.predict(x);
        }
        if self.average_output && !self.trees.is_empty() {
            s /= self.trees.len() as f64;
        }
        s
    }

    /// The prediction as Python's `booster.predict(X)` returns it.
    #[inline]
    pub fn predict(&self, x: &[f64]) -> f64 {
        let raw = self.predict_raw(x);
        match self.output {
            Output::Identity => raw,
            Output::Sigmoid(s) => 1.0 / (1.0 + (-s * raw).exp()),
            Output::Logistic => 1.0 / (1.0 + (-raw).exp()),
            Output::Exp => raw.exp(),
        }
    }

    pub fn num_features(&self) -> usize {
        self.max_feature_idx + 1
    }

    /// Write the model in LightGBM's text format (loadable by `lightgbm.Booster(model_file=)`).
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let nf = self.num_features();
        let names: Vec<String> = if self.feature_names.len() == nf {
            self.feature_names.clone()
        } else {
            (0..nf).map(|i| format!("Column_{i}")).collect()
        };
        let blocks: Vec<String> = self
            .trees
            .iter()
            .enumerate()
            .map(|(i, t)| tree_text(i, t))
            .collect();
        let mut s = String::new();
        s.push_str("tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n");
        let _ = writeln!(s, "max_feature_idx={}", self.max_feature_idx);
        let _ = writeln!(s, "objective={}", self.objective);
        if self.average_output {
            s.push_str("average_output\n");
        }
        let _ = writeln!(s, "feature_names={}", names.join(" "));
        let infos: Vec<&str> = (0..nf).map(|_| "none").collect();
        let _ = writeln!(s, "feature_infos={}", infos.join(" "));
        let sizes: Vec<String> = blocks.iter().map(|b| b.len().to_string()).collect();
        let _ = writeln!(s, "tree_sizes={}", sizes.join(" "));
        s.push('\n');
        for b in &blocks {
            s.push_str(b);
        }
        s.push_str("end of trees\n\nparameters:\nend of parameters\n\npandas_categorical:null\n");
        s
    }
}

fn output_of(objective: &str) -> Output {
    let mut parts = objective.split(' ');
    let name = parts.next().unwrap_or("");
    match name {
        "binary" => {
            let sigmoid = parts
                .find_map(|p| p.strip_prefix("sigmoid:"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1.0);
            Output::Sigmoid(sigmoid)
        }
        "cross_entropy" | "xentropy" => Output::Logistic,
        "poisson" | "gamma" | "tweedie" => Output::Exp,
        _ => Output::Identity,
    }
}

fn parse_list<T: std::str::FromStr>(
    line: usize,
    key: &str,
    v: &str,
) -> Result<Vec<T>, (usize, String)> {
    if v.is_empty() {
        return Ok(Vec::new());
    }
    v.split(' ')
        .map(|x| {
            x.parse::<T>()
                .map_err(|_| (line, format!("{key}: cannot parse '{x}'")))
        })
        .collect()
}

fn parse_tree(start: usize, kv: &[(usize, &str, &str)]) -> Result<Tree, (usize, String)> {
    let get = |k: &str| {
        kv.iter()
            .find(|(_, key, _)| *key == k)
            .map(|&(l, _, v)| (l, v))
    };
    let list_f64 = |k: &str| -> Result<Vec<f64>, (usize, String)> {
        match get(k) {
            Some((l, v)) => parse_list(l, k, v),
            None => Ok(Vec::new()),
        }
    };
    let list_u64 = |k: &str| -> Result<Vec<u64>, (usize, String)> {
        match get(k) {
            Some((l, v)) => {
                parse_list::<f64>(l, k, v).map(|x| x.into_iter().map(|c| c as u64).collect())
            }
            None => Ok(Vec::new()),
        }
    };
    let (nl_line, nl) = get("num_leaves").ok_or((start, "tree without num_leaves".to_string()))?;
    let num_leaves: usize = nl
        .parse()
        .map_err(|_| (nl_line, format!("bad num_leaves '{nl}'")))?;
    if let Some((l, v)) = get("is_linear") {
        if v != "0" {
            return Err((
                l,
                "linear trees (linear_tree=true) are not supported".into(),
            ));
        }
    }
    let leaf_value = list_f64("leaf_value")?;
    if leaf_value.len() != num_leaves {
        return Err((
            start,
            format!(
                "num_leaves={num_leaves} but {} leaf values",
                leaf_value.len()
            ),
        ));
    }
    let shrinkage = match get("shrinkage") {
        Some((l, v)) => v.parse().map_err(|_| (l, format!("bad shrinkage '{v}'")))?,
        None => 1.0,
    };
    let mut t = Tree {
        leaf_value,
        shrinkage,
        leaf_weight: list_f64("leaf_weight")?,
        leaf_count: list_u64("leaf_count")?,
        ..Tree::leaf(0.0)
    };
    if num_leaves > 1 {
        let n = num_leaves - 1;
        let need =
            |k: &str| get(k).ok_or((start, format!("tree with {num_leaves} leaves has no {k}")));
        let (l, v) = need("split_feature")?;
        t.split_feature = parse_list(l, "split_feature", v)?;
        let (l, v) = need("threshold")?;
        t.threshold = parse_list(l, "threshold", v)?;
        let (l, v) = need("decision_type")?;
        t.decision_type = parse_list(l, "decision_type", v)?;
        let (l, v) = need("left_child")?;
        t.left_child = parse_list(l, "left_child", v)?;
        let (l, v) = need("right_child")?;
        t.right_child = parse_list(l, "right_child", v)?;
        t.cat_boundaries = match get("cat_boundaries") {
            Some((l, v)) => parse_list(l, "cat_boundaries", v)?,
            None => Vec::new(),
        };
        t.cat_threshold = match get("cat_threshold") {
            Some((l, v)) => parse_list(l, "cat_threshold", v)?,
            None => Vec::new(),
        };
        t.split_gain = list_f64("split_gain")?;
        t.internal_value = list_f64("internal_value")?;
        t.internal_weight = list_f64("internal_weight")?;
        t.internal_count = list_u64("internal_count")?;
        for (k, len) in [
            ("split_feature", t.split_feature.len()),
            ("threshold", t.threshold.len()),
            ("decision_type", t.decision_type.len()),
            ("left_child", t.left_child.len()),
            ("right_child", t.right_child.len()),
        ] {
            if len != n {
                return Err((start, format!("{k} has {len} values, expected {n}")));
            }
        }
        for node in 0..n {
            for c in [t.left_child[node], t.right_child[node]] {
                let ok = if c >= 0 {
                    (c as usize) < n
                } else {
                    (!c as usize) < num_leaves
                };
                if !ok {
                    return Err((start, format!("node {node} has an out-of-range child {c}")));
                }
            }
            if t.decision_type[node] & CATEGORICAL_MASK != 0 {
                let idx = t.threshold[node] as usize;
                if idx + 1 >= t.cat_boundaries.len()
                    || t.cat_boundaries[idx + 1] as usize > t.cat_threshold.len()
                {
                    return Err((
                        start,
                        format!("node {node}: categorical split out of range"),
                    ));
                }
            }
        }
    }
    Ok(t)
}

/// Shortest round-trip text of a double (LightGBM reads plain and exponent notation).
fn num(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 || (1e-6..1e15).contains(&a) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

fn join<T>(v: &[T], f: impl Fn(&T) -> String) -> String {
    v.iter().map(f).collect::<Vec<_>>().join(" ")
}

fn tree_text(i: usize, t: &Tree) -> String {
    let mut s = format!("Tree={i}\nnum_leaves={}\nnum_cat=0\n", t.num_leaves());
    if t.num_leaves() > 1 {
        let n = t.num_leaves() - 1;
        let or_zero = |v: &[f64]| -> Vec<f64> {
            if v.len() == n {
                v.to_vec()
            } else {
                vec![0.0; n]
            }
        };
        let or_zero_u = |v: &[u64]| -> Vec<u64> {
            if v.len() == n {
                v.to_vec()
            } else {
                vec![0; n]
            }
        };
        s += &format!(
            "split_feature={}\n",
            join(&t.split_feature, |x| x.to_string())
        );
        s += &format!(
            "split_gain={}\n",
            join(&or_zero(&t.split_gain), |&x| num(x))
        );
        s += &format!("threshold={}\n", join(&t.threshold, |&x| num(x)));
        s += &format!(
            "decision_type={}\n",
            join(&t.decision_type, |x| x.to_string())
        );
        s += &format!("left_child={}\n", join(&t.left_child, |x| x.to_string()));
        s += &format!("right_child={}\n", join(&t.right_child, |x| x.to_string()));
        s += &format!("leaf_value={}\n", join(&t.leaf_value, |&x| num(x)));
        let lw = if t.leaf_weight.len() == t.num_leaves() {
            t.leaf_weight.clone()
        } else {
            vec![0.0; t.num_leaves()]
        };
        let lc = if t.leaf_count.len() == t.num_leaves() {
            t.leaf_count.clone()
        } else {
            vec![0; t.num_leaves()]
        };
        s += &format!("leaf_weight={}\n", join(&lw, |&x| num(x)));
        s += &format!("leaf_count={}\n", join(&lc, |x| x.to_string()));
        s += &format!(
            "internal_value={}\n",
            join(&or_zero(&t.internal_value), |&x| num(x))
        );
        s += &format!(
            "internal_weight={}\n",
            join(&or_zero(&t.internal_weight), |&x| num(x))
        );
        s += &format!(
            "internal_count={}\n",
            join(&or_zero_u(&t.internal_count), |x| x.to_string())
        );
    } else {
        s += &format!("leaf_value={}\n", num(t.leaf_value[0]));
    }
    s += &format!("is_linear=0\nshrinkage={}\n\n\n", num(t.shrinkage));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n\
max_feature_idx=1\nobjective=regression\nfeature_names=a b\nfeature_infos=[0:1] [0:1]\ntree_sizes=1 1\n\n\
Tree=0\nnum_leaves=3\nnum_cat=0\nsplit_feature=0 1\nsplit_gain=1 1\nthreshold=0.5 2.5\n\
decision_type=2 8\nleft_child=1 -1\nright_child=-2 -3\nleaf_value=1 2 3\nleaf_weight=1 1 1\n\
leaf_count=1 1 1\ninternal_value=0 0\ninternal_weight=0 0\ninternal_count=3 2\nis_linear=0\nshrinkage=1\n\n\n\
Tree=1\nnum_leaves=1\nnum_cat=0\nsplit_feature=\nsplit_gain=\nthreshold=\ndecision_type=\nleft_child=\n\
right_child=\nleaf_value=0.25\nleaf_weight=\nleaf_count=\ninternal_value=\ninternal_weight=\ninternal_count=\n\
is_linear=0\nshrinkage=1\n\n\nend of trees\n";

    #[test]
    fn numerical_splits_and_missing_values() {
        let m = Model::parse(TINY).unwrap();
        assert_eq!(m.trees.len(), 2);
        //            node0: a <= 0.5 ? node1 : leaf1 (default left, missing None)
        //           /      \
        //   node1: b <= 2.5   leaf1 = 2     (node1: missing NaN, default right)
        //     /        \
        // leaf0 = 1   leaf2 = 3
        assert_eq!(m.predict(&[0.0, 0.0]), 1.25);
        assert_eq!(m.predict(&[0.0, 3.0]), 3.25);
        assert_eq!(m.predict(&[1.0, 0.0]), 2.25);
        // a = NaN with missing None is treated as 0.0 -> left
        assert_eq!(m.predict(&[f64::NAN, 0.0]), 1.25);
        // b = NaN with missing NaN goes the default way (right)
        assert_eq!(m.predict(&[0.0, f64::NAN]), 3.25);
    }

    #[test]
    fn the_flat_model_predicts_bit_for_bit() {
        let m = std::sync::Arc::new(Model::parse(TINY).unwrap());
        let flat = FlatModel::new(m.clone());
        let values = [f64::NAN, -1.0, -1e-36, 0.0, 1e-36, 0.5, 0.7, 2.5, 3.0];
        for a in values {
            for b in values {
                let x = [a, b];
                assert_eq!(flat.predict(&x).to_bits(), m.predict(&x).to_bits(), "{x:?}");
            }
        }
        // a missing feature (beyond x) counts as NaN in both
        assert_eq!(flat.predict(&[0.0]).to_bits(), m.predict(&[0.0]).to_bits());
        // missing-as-zero splits and a categorical split (categories 1 and 33 go left)
        let mut m = (*m).clone();
        m.trees[0].decision_type = vec![2 | 1 << 2, 1];
        m.trees[0].threshold = vec![0.5, 0.0];
        m.trees[0].cat_boundaries = vec![0, 2];
        m.trees[0].cat_threshold = vec![1 << 1, 1 << 1];
        let t = m.trees[0].clone();
        m.trees.push(Tree {
            decision_type: vec![1 << 2, 8],
            ..t
        });
        let m = std::sync::Arc::new(m);
        let flat = FlatModel::new(m.clone());
        let values = [
            f64::NAN,
            -1.0,
            -1e-36,
            0.0,
            1e-36,
            0.5,
            1.0,
            2.0,
            33.0,
            34.0,
        ];
        for a in values {
            for b in values {
                let x = [a, b];
                assert_eq!(flat.predict(&x).to_bits(), m.predict(&x).to_bits(), "{x:?}");
            }
        }
        // the fixture models of Python LightGBM on their rows, and on rows with holes
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lightgbm");
        let rows = std::fs::read_to_string(dir.join("rows.csv")).unwrap();
        for file in ["model_regression.txt", "model_binary.txt"] {
            let m = std::sync::Arc::new(Model::load(&dir.join(file)).unwrap());
            let flat = FlatModel::new(m.clone());
            for (i, line) in rows.lines().skip(1).enumerate() {
                let mut x: Vec<f64> = line
                    .split(',')
                    .map(|v| v.parse().unwrap_or(f64::NAN))
                    .collect();
                for _ in 0..2 {
                    assert_eq!(
                        flat.predict(&x).to_bits(),
                        m.predict(&x).to_bits(),
                        "{file} {x:?}"
                    );
                    let n = x.len();
                    x[i % n] = f64::NAN;
                    x[(i * 7 + 3) % n] = 0.0;
                }
            }
        }
    }

    #[test]
    fn text_round_trip() {
        let m = Model::parse(TINY).unwrap();
        let again = Model::parse(&m.to_text()).unwrap();
        assert_eq!(again.trees[0].threshold, m.trees[0].threshold);
        for x in [[0.0, 0.0], [0.0, 3.0], [1.0, 0.0]] {
            assert_eq!(again.predict(&x), m.predict(&x));
        }
    }

    #[test]
    fn errors_name_the_line() {
        let bad = TINY.replace("leaf_value=1 2 3", "leaf_value=1 x 3");
        let (line, msg) = Model::parse(&bad).unwrap_err();
        assert_eq!(line, 21);
        assert!(msg.contains("leaf_value"), "{msg}");
        assert!(Model::parse("hello").unwrap_err().1.contains("save_model"));
    }
}
