//! Scoring rows with the laid-out trees, and finishing each row's scores the way ONNX
//! Runtime's `TreeAggregator*` classes and `write_scores` (`ml_common.h`) do: a score is a
//! float32 with a "has a score" flag, read as 0 where it has none; trees are summed in their
//! order; base values, labels and post-transforms follow the same branches.

use super::Unsupported;
use super::bitvec::{BitForest, Words};
use super::gather::Packed;
use super::layout::{BLOCK, FlatNode, Forest, Mode, NodeAttributes, WeightAttributes};

/// Rows scored together: the node walk takes each tree through all of a chunk's blocks
/// before the next tree (256 rows keep a tree's nodes in L1 across its blocks, and the
/// scores of a chunk in a few KiB).
const CHUNK: usize = 16 * BLOCK;
use crate::score::tree_order::Node;

/// One graph output's values.
#[derive(Debug, Clone, PartialEq)]
pub enum NativeOutput {
    /// One per row (class labels).
    Int64(Vec<i64>),
    /// One per row (string class labels).
    Strings(Vec<String>),
    /// Row-major `[rows, per_row]`.
    Float32 { values: Vec<f32>, per_row: usize },
}

/// Every graph output, by name, in the graph's order.
pub type Outputs = Vec<(String, NativeOutput)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Post {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
}

#[derive(Debug)]
enum Labels {
    Int(Vec<i64>),
    Text(Vec<String>),
}

/// What a classifier adds to the scores: its labels and ONNX Runtime's two binary flags.
#[derive(Debug)]
struct Classifier {
    labels: Labels,
    /// Two classes, and every weight for one class id.
    binary_case: bool,
    /// Every class weight >= 0 (probabilities, not margins).
    all_positive: bool,
}

/// A chunk's whole blocks of rows: each block's rows, and the same rows as one row-major
/// slice of `stride` values a row (which the AVX2 walk gathers from).
struct Rows<'a> {
    blocks: &'a [[&'a [f32]; BLOCK]],
    x: &'a [f32],
    stride: usize,
}

impl Rows<'_> {
    fn len(&self) -> usize {
        self.blocks.len() * BLOCK
    }
}

/// A `TreeEnsembleClassifier` or `TreeEnsembleRegressor`, ready to score.
#[derive(Debug)]
pub(super) struct Ensemble {
    forest: Forest,
    /// The bit-vector layout, where every tree has at most 64 leaves; otherwise the forest
    /// is walked node by node.
    bits: Option<BitForest>,
    classifier: Option<Classifier>,
    /// Targets, or classes.
    n_out: usize,
    aggregate: Aggregate,
    post: Post,
    base: Vec<f32>,
    /// The nodes for the AVX2 walk (`gather.rs`): where the CPU has AVX2 and the forest fits
    /// them, unless [`Ensemble::set_gathers`] turned it off.
    packed: Option<Packed>,
}

fn unsupported(why: impl Into<String>) -> Unsupported {
    Unsupported(why.into())
}

/// A score as ONNX Runtime keeps it: the value and whether any tree gave one.
#[derive(Debug, Clone, Copy, Default)]
struct Score {
    value: f32,
    has: bool,
}

impl Score {
    /// `ScoreValue::operator float`: 0 where no tree gave a score.
    fn get(self) -> f32 {
        if self.has { self.value } else { 0.0 }
    }
}

impl Ensemble {
    pub fn new(node: &Node) -> Result<Self, Unsupported> {
        fn get<'a, T>(map: &'a std::collections::HashMap<String, Vec<T>>, k: &str) -> &'a [T] {
            map.get(k).map(Vec::as_slice).unwrap_or_default()
        }
        let ints = |k: &str| get(&node.ints, k);
        let floats = |k: &str| get(&node.floats, k);
        let strings = |k: &str| get(&node.strings, k);
        let one = |k: &str| strings(k).first().map(String::as_str);
        // Double thresholds or weights (`*_as_tensor`, opset 3) are not read; hit rates
        // change nothing.
        if let Some(name) = node
            .tensors
            .keys()
            .find(|k| !k.starts_with("nodes_hitrates"))
        {
            return Err(unsupported(format!("{name} is not read")));
        }
        let nodes = NodeAttributes {
            tree_ids: ints("nodes_treeids"),
            node_ids: ints("nodes_nodeids"),
            features: ints("nodes_featureids"),
            modes: strings("nodes_modes"),
            values: floats("nodes_values"),
            trues: ints("nodes_truenodeids"),
            falses: ints("nodes_falsenodeids"),
            missing_true: ints("nodes_missing_value_tracks_true"),
        };
        let is_classifier = node.op_type == "TreeEnsembleClassifier";
        let prefix = if is_classifier { "class" } else { "target" };
        let weights = WeightAttributes {
            tree_ids: ints(&format!("{prefix}_treeids")),
            node_ids: ints(&format!("{prefix}_nodeids")),
            ids: ints(&format!("{prefix}_ids")),
            weights: floats(&format!("{prefix}_weights")),
        };
        let forest = Forest::build(&nodes, &weights)?;
        let post = match one("post_transform").unwrap_or("NONE") {
            "NONE" => Post::None,
            "LOGISTIC" => Post::Logistic,
            "SOFTMAX" => Post::Softmax,
            "SOFTMAX_ZERO" => Post::SoftmaxZero,
            // Its NaN results carry another sign bit than ONNX Runtime's, and a binary model's
            // second column is left unwritten there: scored by ONNX Runtime.
            "PROBIT" => return Err(unsupported("post_transform PROBIT")),
            other => return Err(unsupported(format!("post_transform {other:?}"))),
        };
        let aggregate = match one("aggregate_function").unwrap_or("SUM") {
            "SUM" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            other => return Err(unsupported(format!("aggregate_function {other:?}"))),
        };
        let classifier = is_classifier
            .then(|| classifier(node, weights.ids, weights.weights))
            .transpose()?;
        let n_out = match &classifier {
            Some(c) => match &c.labels {
                Labels::Int(l) => l.len(),
                Labels::Text(l) => l.len(),
            },
            None => usize::try_from(ints("n_targets").first().copied().unwrap_or(1))
                .map_err(|_| unsupported("n_targets < 0"))?,
        };
        let bits = BitForest::build(&forest).ok();
        let mut ensemble = Self {
            forest,
            bits,
            classifier,
            n_out,
            aggregate,
            post,
            base: floats("base_values").to_vec(),
            packed: None,
        };
        ensemble.set_gathers(true);
        ensemble.check()?;
        Ok(ensemble)
    }

    /// Refuses what ONNX Runtime leaves undefined or computes along paths not copied here.
    fn check(&self) -> Result<(), Unsupported> {
        if self.n_out == 0 {
            return Err(unsupported("no targets or classes"));
        }
        if self
            .forest
            .weights
            .iter()
            .any(|&(id, _)| id as usize >= self.n_out)
        {
            return Err(unsupported("a weight for a class or target out of range"));
        }
        let leaves = || self.forest.nodes.iter().filter(|n| n.mode == Mode::Leaf);
        if let Some(c) = &self.classifier {
            if self.n_out == 1 {
                return Err(unsupported("a classifier with one class"));
            }
            if self.aggregate != Aggregate::Sum {
                return Err(unsupported("a classifier aggregating by other than SUM"));
            }
            // Without a class that has a score, ONNX Runtime's top class is undefined.
            if self.n_out > 2 && leaves().any(|l| l.children[0] == l.children[1]) {
                return Err(unsupported("a leaf without weights in a multi-class model"));
            }
            // ONNX Runtime then writes one probability of two.
            if self.n_out == 2 && !c.binary_case && self.base.len() == 1 {
                return Err(unsupported(
                    "two classes weighted apart with one base value",
                ));
            }
            if self.n_out == 2 && !c.binary_case && matches!(c.labels, Labels::Text(_)) {
                return Err(unsupported("two string classes weighted apart"));
            }
        } else if self.n_out == 1 && leaves().any(|l| l.children[1] - l.children[0] != 1) {
            // ONNX Runtime reads one weight per leaf here (the first of several).
            return Err(unsupported(
                "a single-target leaf without exactly one weight",
            ));
        }
        Ok(())
    }

    pub fn n_features(&self) -> usize {
        self.forest.n_features
    }

    /// Lets the node walk use AVX2 gathers where the CPU has them (`on`), or keeps it to
    /// the scalar walk; both reach the same leaves.
    pub fn set_gathers(&mut self, on: bool) {
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        self.packed = (on && avx2 && self.bits.is_none() && self.forest.shared.is_some())
            .then(|| Packed::build(&self.forest))
            .flatten();
    }

    pub fn n_trees(&self) -> usize {
        self.forest.roots.len()
    }

    /// How the trees are evaluated, for the log and the tests.
    pub fn layout(&self) -> &'static str {
        match (&self.bits, self.forest.shared) {
            (Some(_), _) => "bit vectors",
            (None, Some(_)) if self.packed.is_some() => "node walk by blocks, AVX2 gathers",
            (None, Some(_)) => "node walk by blocks",
            (None, None) => "node walk by row",
        }
    }

    /// The ensemble's outputs over `rows` rows: label and scores for a classifier, `Y` for a
    /// regressor. Compiled twice: with AVX2 where the CPU has it (the blocks of rows become
    /// 256-bit instructions, twice as fast on the bit-vector layout) and without. The
    /// arithmetic is the same float32 adds either way: only integer and comparison
    /// instructions differ, and Rust never fuses a multiply and an add on its own.
    pub fn predict(&self, x: &[f32], rows: usize) -> Vec<NativeOutput> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.predict_avx2(x, rows) };
        }
        self.predict_rows(x, rows)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn predict_avx2(&self, x: &[f32], rows: usize) -> Vec<NativeOutput> {
        self.predict_rows(x, rows)
    }

    #[inline(always)]
    fn predict_rows(&self, x: &[f32], rows: usize) -> Vec<NativeOutput> {
        let stride = x.len().checked_div(rows).unwrap_or(0);
        let n = self.n_out;
        let mut scores = vec![0.0f32; rows * n];
        let mut labels = Vec::with_capacity(if self.classifier.is_some() { rows } else { 0 });
        let mut acc = vec![Score::default(); CHUNK * n];
        let mut words: Words = self.bits.as_ref().map_or_else(Vec::new, BitForest::words);
        let mut blocks: Vec<[&[f32]; BLOCK]> = Vec::with_capacity(CHUNK / BLOCK);
        let row = |r: usize| &x[r * stride..(r + 1) * stride];
        let mut r = 0;
        while r < rows {
            let chunk = CHUNK.min(rows - r);
            acc.iter_mut().for_each(|s| *s = Score::default());
            // Whole blocks go side by side where the forest allows; the rest row by row.
            let whole = if self.forest.shared.is_some() {
                chunk / BLOCK * BLOCK
            } else {
                0
            };
            blocks.clear();
            blocks.extend((r..r + whole).step_by(BLOCK).map(|b| {
                let block: [&[f32]; BLOCK] = std::array::from_fn(|k| row(b + k));
                block
            }));
            match self.forest.shared {
                Some(mode) if !blocks.is_empty() => {
                    let rows = Rows {
                        blocks: &blocks,
                        x: &x[r * stride..(r + whole) * stride],
                        stride,
                    };
                    self.accumulate_blocks(mode == Mode::Leq, &rows, &mut words, &mut acc)
                }
                _ => {}
            }
            for k in whole..chunk {
                self.accumulate(row(r + k), &mut acc[k * n..(k + 1) * n]);
            }
            for k in 0..chunk {
                let acc = &mut acc[k * n..(k + 1) * n];
                let out = &mut scores[(r + k) * n..(r + k + 1) * n];
                match &self.classifier {
                    Some(c) => labels.push(self.finish_class(c, acc, out)),
                    None => self.finish_regression(acc, out),
                }
            }
            r += chunk;
        }
        let scores = NativeOutput::Float32 {
            values: scores,
            per_row: self.n_out,
        };
        match &self.classifier {
            Some(Classifier {
                labels: Labels::Text(names),
                ..
            }) => {
                let names = labels.iter().map(|&i| names[i as usize].clone()).collect();
                vec![NativeOutput::Strings(names), scores]
            }
            Some(_) => vec![NativeOutput::Int64(labels), scores],
            None => vec![scores],
        }
    }

    /// Every tree's leaf weights for one row, in the trees' order.
    fn accumulate(&self, row: &[f32], acc: &mut [Score]) {
        let f = &self.forest;
        for &root in &f.roots {
            self.add_leaf(f.leaf(root, row), acc);
        }
    }

    /// The same for blocks of `BLOCK` rows walked side by side (`acc` holds each row's
    /// scores in turn, the blocks' rows in order; `words` is the bit-vector layout's
    /// scratch); each row still adds its trees in their order.
    #[inline(always)]
    fn accumulate_blocks(&self, leq: bool, rows: &Rows, words: &mut Words, acc: &mut [Score]) {
        let n = self.n_out;
        match &self.bits {
            Some(bits) => {
                for (rows, acc) in rows.blocks.iter().zip(acc.chunks_mut(BLOCK * n)) {
                    bits.walk(rows, words);
                    self.accumulate_bits(bits, words, acc);
                }
            }
            #[cfg(target_arch = "x86_64")]
            None if self.packed.as_ref().is_some_and(|p| p.fits(rows.stride)) => {
                // SAFETY: `packed` is built only where the CPU has AVX2, from this forest; the
                // rows fit it (checked just above), and `x` holds every row.
                unsafe {
                    if leq {
                        self.accumulate_gathers::<true>(rows, acc)
                    } else {
                        self.accumulate_gathers::<false>(rows, acc)
                    }
                }
            }
            None if leq => self.accumulate_walk::<true>(rows.blocks, acc),
            None => self.accumulate_walk::<false>(rows.blocks, acc),
        }
    }

    /// [`Ensemble::accumulate_walk`] with the AVX2 walk (`gather.rs`): each tree takes a
    /// whole chunk's rows at once.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2, `self.packed` is `Some` and fits `rows.stride`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn accumulate_gathers<const LEQ: bool>(&self, rows: &Rows, acc: &mut [Score]) {
        let f = &self.forest;
        let Some(packed) = &self.packed else {
            return self.accumulate_walk::<LEQ>(rows.blocks, acc);
        };
        let walk = |t: usize, at: &mut [u32]| {
            // SAFETY: the caller's contract; `rows.x` holds `at.len()` rows, and the roots
            // and depths are the forest's the nodes were packed from.
            unsafe { packed.leaves::<LEQ>(f.roots[t], f.depths[t], rows.x, rows.stride, at) }
        };
        self.accumulate_leaves(rows.len(), walk, acc);
    }

    /// One block's leaves from the bit-vector words, into `acc`.
    #[inline(always)]
    fn accumulate_bits(&self, bits: &BitForest, words: &mut Words, acc: &mut [Score]) {
        let f = &self.forest;
        let n = self.n_out;
        if let (Some(id), Aggregate::Sum | Aggregate::Average) = (f.one_weight, self.aggregate) {
            // One weight per leaf, one target: a plain float32 sum per row, from 0 in the
            // trees' order, as ONNX Runtime adds them.
            let mut sums = [0.0f32; BLOCK];
            for t in 0..f.roots.len() {
                let leaf_bits = bits.take_bits(words, t);
                for (sum, bit) in sums.iter_mut().zip(leaf_bits) {
                    *sum += bits.value(t, bit);
                }
            }
            self.put_sums(id, &sums, acc);
            return;
        }
        for t in 0..f.roots.len() {
            let at = bits.take_bits(words, t).map(|bit| bits.leaf(t, bit));
            for (k, &leaf) in at.iter().enumerate() {
                self.add_leaf(&f.nodes[leaf as usize], &mut acc[k * n..(k + 1) * n]);
            }
        }
    }

    /// The node walk over blocks, tree by tree: each tree is walked for every block before
    /// the next, so its nodes are read from the core's own cache after the first block
    /// (the whole forest is often bigger than the L2 cache, and a walk waiting on L3 at
    /// every step was what held it back).
    #[inline(always)]
    fn accumulate_walk<const LEQ: bool>(&self, blocks: &[[&[f32]; BLOCK]], acc: &mut [Score]) {
        let f = &self.forest;
        let walk = |t: usize, at: &mut [u32]| {
            let (at, _) = at.as_chunks_mut::<BLOCK>();
            for (rows, at) in blocks.iter().zip(at) {
                f.leaves::<LEQ>(t, rows, at);
            }
        };
        self.accumulate_leaves(blocks.len() * BLOCK, walk, acc);
    }

    /// Every tree's leaves for a chunk's `len` rows into their scores (`acc`), tree by tree
    /// in the trees' order: `walk(t, at)` puts the leaf each row reaches in tree `t` into
    /// `at` (the scalar walk or the AVX2 one).
    #[inline(always)]
    fn accumulate_leaves(
        &self,
        len: usize,
        mut walk: impl FnMut(usize, &mut [u32]),
        acc: &mut [Score],
    ) {
        let f = &self.forest;
        let n = self.n_out;
        let mut at = [0u32; CHUNK];
        let at = &mut at[..len];
        if let (Some(id), Aggregate::Sum | Aggregate::Average) = (f.one_weight, self.aggregate) {
            // One weight per leaf, one target: a plain float32 sum per row, from 0 in the
            // trees' order, as ONNX Runtime adds them.
            let mut sums = [0.0f32; CHUNK];
            for t in 0..f.roots.len() {
                walk(t, at);
                for (sum, &leaf) in sums.iter_mut().zip(at.iter()) {
                    *sum += f.leaf_value(leaf);
                }
            }
            for (sums, acc) in sums[..len].chunks(BLOCK).zip(acc.chunks_mut(BLOCK * n)) {
                self.put_sums(id, sums, acc);
            }
            return;
        }
        for t in 0..f.roots.len() {
            walk(t, at);
            for (k, &leaf) in at.iter().enumerate() {
                self.add_leaf(&f.nodes[leaf as usize], &mut acc[k * n..(k + 1) * n]);
            }
        }
    }

    /// A block's plain sums as its rows' scores for class or target `id`.
    #[inline(always)]
    fn put_sums(&self, id: u32, sums: &[f32], acc: &mut [Score]) {
        let n = self.n_out;
        for (k, &sum) in sums.iter().enumerate() {
            acc[k * n + id as usize] = Score {
                value: sum,
                has: !self.forest.roots.is_empty(),
            };
        }
    }

    /// A leaf's weights into a row's scores, as the aggregate function adds them.
    #[inline(always)]
    fn add_leaf(&self, leaf: &FlatNode, acc: &mut [Score]) {
        for &(id, w) in self.forest.weights_of(leaf) {
            let s = &mut acc[id as usize];
            s.value = match self.aggregate {
                Aggregate::Sum | Aggregate::Average => s.value + w,
                // ONNX Runtime takes the new weight only when it compares below (above):
                // a NaN weight never replaces a score.
                Aggregate::Min if !s.has || w < s.value => w,
                Aggregate::Max if !s.has || w > s.value => w,
                Aggregate::Min | Aggregate::Max => s.value,
            };
            s.has = true;
        }
    }

    /// `TreeAggregator{Sum,Average,Min,Max}::FinalizeScores{1,}` then `write_scores`.
    fn finish_regression(&self, acc: &mut [Score], out: &mut [f32]) {
        let n_trees = self.n_trees() as f32;
        if self.n_out == 1 {
            // The one-target path: its score counts as given even where no tree gave one.
            let origin = if self.base.len() == 1 {
                self.base[0]
            } else {
                0.0
            };
            let s = acc[0];
            let v = match self.aggregate {
                Aggregate::Sum => s.value + origin,
                Aggregate::Average => s.value / n_trees + origin,
                Aggregate::Min | Aggregate::Max if s.has => s.value + origin,
                Aggregate::Min | Aggregate::Max => origin,
            };
            // Only PROBIT applies on this path, and PROBIT is refused (see `new`).
            out[0] = v;
            return;
        }
        let use_base = self.base.len() == self.n_out;
        for (j, s) in acc.iter_mut().enumerate() {
            let base = if use_base { self.base[j] } else { 0.0 };
            match self.aggregate {
                Aggregate::Sum if use_base => s.value += base,
                Aggregate::Sum => {}
                // Without base values ONNX Runtime adds nothing (not 0, which turns -0 to +0).
                Aggregate::Average if use_base => s.value = s.value / n_trees + base,
                Aggregate::Average => s.value /= n_trees,
                Aggregate::Min | Aggregate::Max => {
                    s.value = base + s.get();
                }
            }
        }
        write_scores(acc, self.post, out, None);
    }

    /// `TreeAggregatorClassifier::FinalizeScores`; returns the label's index (or the label
    /// itself for int labels).
    fn finish_class(&self, c: &Classifier, acc: &mut [Score], out: &mut [f32]) -> i64 {
        if self.n_out > 2 {
            for (k, &b) in self.base.iter().enumerate().take(self.n_out) {
                let s = &mut acc[k];
                s.value = if s.has { s.value + b } else { b };
                s.has = true;
            }
            let top = top_class(acc);
            write_scores(acc, self.post, out, None);
            return c.label(top);
        }
        let mut second = None;
        let mut len = 2;
        match self.base.len() {
            2 if acc[1].has => {
                acc[1].value = self.base[1] + acc[0].value;
                acc[0].value = -acc[1].value;
            }
            2 => {
                acc[1].value += self.base[1];
                acc[0].value += self.base[0];
            }
            1 => {
                acc[0].value += self.base[0];
                if !acc[1].has {
                    len = 1;
                }
            }
            0 => {
                second = Some(3);
                if !acc[1].has {
                    len = 1;
                }
            }
            // More base values than classes: ONNX Runtime adds none of them here.
            _ => {}
        }
        let label = c.binary_label(&acc[..len], &mut second);
        write_scores(&mut acc[..len], self.post, out, second);
        label
    }
}

impl Classifier {
    fn label(&self, index: usize) -> i64 {
        match &self.labels {
            Labels::Int(l) => l[index],
            Labels::Text(_) => index as i64,
        }
    }

    /// `_set_score_binary`: the label, and how the second probability is written.
    fn binary_label(&self, classes: &[Score], second: &mut Option<u8>) -> i64 {
        let (s0, s1) = (classes[0], classes.get(1).copied().filter(|s| s.has));
        let pos = match s1 {
            Some(s) => s.value,
            None if s0.has => s0.value,
            None => 0.0,
        };
        if !self.binary_case {
            // ONNX Runtime's positive and negative labels here are 1 and 0, whatever the
            // class labels.
            return i64::from(pos > 0.0);
        }
        let (positive, code) = if self.all_positive {
            (pos > 0.5, if pos > 0.5 { 0 } else { 1 })
        } else {
            (pos > 0.0, if pos > 0.0 { 2 } else { 3 })
        };
        *second = Some(code);
        self.label(usize::from(positive))
    }
}

/// `get_max_weight`: the first class with the highest score among those that have one.
fn top_class(acc: &[Score]) -> usize {
    let mut best: Option<(usize, f32)> = None;
    for (k, s) in acc.iter().enumerate() {
        if s.has && best.is_none_or(|(_, w)| s.value > w) {
            best = Some((k, s.value));
        }
    }
    // `check` refuses models where a row could have no class with a score.
    best.map_or(0, |(k, _)| k)
}

fn classifier(node: &Node, ids: &[i64], weights: &[f32]) -> Result<Classifier, Unsupported> {
    let labels = match (
        node.ints.get("classlabels_int64s"),
        node.strings.get("classlabels_strings"),
    ) {
        (Some(l), None) if !l.is_empty() => Labels::Int(l.clone()),
        (None, Some(l)) if !l.is_empty() => Labels::Text(l.clone()),
        _ => return Err(unsupported("class labels missing, or both int and string")),
    };
    let n = match &labels {
        Labels::Int(l) => l.len(),
        Labels::Text(l) => l.len(),
    };
    let distinct: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
    Ok(Classifier {
        labels,
        binary_case: n == 2 && distinct.len() == 1,
        all_positive: weights.iter().all(|&w| w >= 0.0),
    })
}

/// `write_scores`: the post-transform over a row's scores into `out`. `second` is
/// `add_second_class` for a binary row that kept one score.
fn write_scores(acc: &mut [Score], post: Post, out: &mut [f32], second: Option<u8>) {
    if acc.len() >= 2 {
        match post {
            Post::Logistic => acc
                .iter()
                .zip(out)
                .for_each(|(s, o)| *o = logistic(s.get())),
            Post::Softmax => softmax(acc, out),
            Post::SoftmaxZero => softmax_zero(acc, out),
            Post::None => acc.iter().zip(out).for_each(|(s, o)| *o = s.get()),
        }
        return;
    }
    let v = acc[0].get();
    match second {
        // Measured against ONNX Runtime 1.31 (tests/trees.rs): the logistic applies here too.
        Some(0 | 1) => {
            let v = if post == Post::Logistic {
                logistic(v)
            } else {
                v
            };
            out[0] = 1.0 - v;
            out[1] = v;
        }
        Some(_) if post == Post::Logistic => {
            out[0] = logistic(-v);
            out[1] = logistic(v);
        }
        Some(_) => {
            out[0] = -v;
            out[1] = v;
        }
        None => out[0] = v,
    }
}

/// `ComputeLogistic`.
fn logistic(v: f32) -> f32 {
    let e = 1.0 / (1.0 + (-v.abs()).exp());
    if v < 0.0 { 1.0 - e } else { e }
}

/// `ComputeSoftmax`.
fn softmax(acc: &[Score], out: &mut [f32]) {
    let mut max = -f32::MAX;
    for s in acc {
        if s.get() > max {
            max = s.get();
        }
    }
    let mut sum = 0.0f32;
    for (s, o) in acc.iter().zip(out.iter_mut()) {
        *o = (s.get() - max).exp();
        sum += *o;
    }
    out.iter_mut().for_each(|o| *o /= sum);
}

/// `ComputeSoftmaxZero`: scores of (nearly) zero stay (nearly) zero.
fn softmax_zero(acc: &[Score], out: &mut [f32]) {
    let mut max = -f32::MAX;
    for s in acc {
        if s.get() > max {
            max = s.get();
        }
    }
    let exp_neg_max = (-max).exp();
    let mut sum = 0.0f32;
    for (s, o) in acc.iter().zip(out.iter_mut()) {
        let v = s.get();
        // ONNX Runtime's test, kept as written (a NaN is neither).
        #[allow(clippy::manual_range_contains)]
        let away_from_zero = v > 0.000_000_1 || v < -0.000_000_1;
        if away_from_zero {
            *o = (v - max).exp();
            sum += *o;
        } else {
            *o = v * exp_neg_max;
        }
    }
    out.iter_mut().for_each(|o| *o /= sum);
}
