//! QuickScorer's layout (Lucchese et al., SIGIR 2015), run over blocks of rows as in its
//! vectorised form: for forests whose trees have at most 64 leaves (LightGBM's default is 31).
//!
//! Each tree keeps a 64-bit word per row, one bit per leaf numbered left to right (the true
//! side first), all set at the start. A split whose comparison is false removes the leaves of
//! its true side from its tree's word; the row's leaf is then the lowest bit left, the leaf
//! the walk from the root would reach. The splits are grouped by feature and sorted by
//! threshold, so the false ones for a value are a prefix of its feature's list (`threshold <
//! value` for `<=` splits, `threshold <= value` for `<`): a block of rows applies that prefix
//! with no branch per node, and the compiler turns the 16 rows into vector instructions.

use super::Unsupported;
use super::layout::{BLOCK, Forest, Mode};

/// The most leaves a tree may have for this layout: one bit each in a `u64`.
const MAX_LEAVES: usize = 64;

/// One split in a feature's list: the leaves of its true side cleared, and its tree.
#[derive(Debug, Clone, Copy)]
struct Clear {
    mask: u64,
    tree: u32,
}

/// The forest as bit masks by feature.
#[derive(Debug)]
pub struct BitForest {
    /// By feature: the thresholds of the splits on it, ascending.
    thresholds: Vec<Vec<f32>>,
    /// By feature, in the same order: what each split clears when its comparison is false.
    clears: Vec<Vec<Clear>>,
    /// By feature: the splits a NaN sends to their false side (those that do not track
    /// missing values to their true side).
    nan_clears: Vec<Vec<Clear>>,
    /// By tree, then leaf bit: the leaf's index in [`Forest::nodes`].
    leaves: Vec<u32>,
    /// The same leaves' first weights (for [`Forest::one_weight`] forests).
    values: Vec<f32>,
    /// `<` splits (XGBoost) rather than `<=`.
    lt: bool,
}

/// Each tree's word for each row of a block.
pub type Words = Vec<[u64; BLOCK]>;

impl BitForest {
    /// The layout, for a forest whose splits all compare with one of `<=` or `<`, against
    /// thresholds that are numbers, in trees of at most 64 leaves.
    pub fn build(forest: &Forest) -> Result<Self, Unsupported> {
        let lt = match forest.shared {
            Some(Mode::Leq) => false,
            Some(Mode::Lt) => true,
            _ => return Err(Unsupported("splits of several kinds".into())),
        };
        let n_features = forest.n_features;
        let mut bits = BitForest {
            thresholds: vec![Vec::new(); n_features],
            clears: vec![Vec::new(); n_features],
            nan_clears: vec![Vec::new(); n_features],
            leaves: vec![0; forest.roots.len() * MAX_LEAVES],
            values: vec![0.0; forest.roots.len() * MAX_LEAVES],
            lt,
        };
        let mut splits: Vec<Vec<(f32, Clear)>> = vec![Vec::new(); n_features];
        for (t, &root) in forest.roots.iter().enumerate() {
            let mut next_leaf = 0;
            bits.add_subtree(forest, t, root, &mut next_leaf, &mut splits)?;
        }
        for (f, mut list) in splits.into_iter().enumerate() {
            // No NaN threshold (refused above), so the order is the comparisons' order.
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
            bits.thresholds[f] = list.iter().map(|s| s.0).collect();
            bits.clears[f] = list.iter().map(|s| s.1).collect();
        }
        Ok(bits)
    }

    /// Numbers the leaves under `node` from `next_leaf` on, true side first, and lists its
    /// splits; returns the leaf bits it spans.
    fn add_subtree(
        &mut self,
        forest: &Forest,
        tree: usize,
        node: u32,
        next_leaf: &mut usize,
        splits: &mut [Vec<(f32, Clear)>],
    ) -> Result<std::ops::Range<usize>, Unsupported> {
        let n = &forest.nodes[node as usize];
        if n.mode == Mode::Leaf {
            let bit = *next_leaf;
            if bit >= MAX_LEAVES {
                return Err(Unsupported(format!(
                    "a tree of more than {MAX_LEAVES} leaves"
                )));
            }
            *next_leaf += 1;
            self.leaves[tree * MAX_LEAVES + bit] = node;
            self.values[tree * MAX_LEAVES + bit] =
                forest.weights_of(n).first().map_or(0.0, |w| w.1);
            return Ok(bit..bit + 1);
        }
        if n.threshold.is_nan() {
            return Err(Unsupported("a NaN threshold".into()));
        }
        let true_side = self.add_subtree(forest, tree, n.children[0], next_leaf, splits)?;
        let false_side = self.add_subtree(forest, tree, n.children[1], next_leaf, splits)?;
        // The true side's bits: `true_side.end` is at most 64, hence the u128.
        let span = ((1u128 << true_side.end) - (1u128 << true_side.start)) as u64;
        let clear = Clear {
            mask: !span,
            tree: tree as u32,
        };
        splits[n.feature as usize].push((n.threshold, clear));
        if !n.missing_true {
            self.nan_clears[n.feature as usize].push(clear);
        }
        Ok(true_side.start..false_side.end)
    }

    /// Each tree's word for `BLOCK` rows (`rows[k]` its features) into `words`, which
    /// holds one entry per tree, all bits set (as [`BitForest::words`] makes them and
    /// [`BitForest::take_bits`] leaves them: resetting them in a pass of their own cost 5%
    /// of a run's instructions).
    #[inline(always)]
    pub fn walk(&self, rows: &[&[f32]; BLOCK], words: &mut Words) {
        for (f, (thresholds, clears)) in self.thresholds.iter().zip(&self.clears).enumerate() {
            let v: [f32; BLOCK] = std::array::from_fn(|k| rows[k][f]);
            if self.lt {
                clear_prefix(thresholds, clears, v, |t, v| t <= v, words);
            } else {
                clear_prefix(thresholds, clears, v, |t, v| t < v, words);
            }
        }
        // A NaN compares false with every threshold, so the loop above cleared nothing for
        // it; the splits that send NaN to their false side clear here.
        for (k, row) in rows.iter().enumerate() {
            for (f, &v) in row[..self.thresholds.len()].iter().enumerate() {
                if v.is_nan() {
                    for c in &self.nan_clears[f] {
                        words[c.tree as usize][k] &= c.mask;
                    }
                }
            }
        }
    }

    /// Scratch words for [`BitForest::walk`]: one per tree, all bits set.
    pub fn words(&self) -> Words {
        vec![[u64::MAX; BLOCK]; self.leaves.len() / MAX_LEAVES]
    }

    /// The leaf bit each row of the block reached in tree `t` (for [`BitForest::leaf`] and
    /// [`BitForest::value`]); sets the tree's words again for the next block.
    #[inline(always)]
    pub fn take_bits(&self, words: &mut Words, t: usize) -> [u32; BLOCK] {
        let bits = words[t].map(u64::trailing_zeros);
        words[t] = [u64::MAX; BLOCK];
        bits
    }

    /// The leaf (its index in [`Forest::nodes`]) at bit `bit` of tree `t`.
    #[inline(always)]
    pub fn leaf(&self, t: usize, bit: u32) -> u32 {
        self.leaves[t * MAX_LEAVES + bit as usize]
    }

    /// That leaf's first weight.
    #[inline(always)]
    pub fn value(&self, t: usize, bit: u32) -> f32 {
        self.values[t * MAX_LEAVES + bit as usize]
    }
}

/// Applies one feature's splits (`thresholds` ascending, `clears` in the same order) that
/// are false for some row of the block: the longest of the rows' prefixes, each row masked by
/// its own comparison.
#[inline(always)]
fn clear_prefix(
    thresholds: &[f32],
    clears: &[Clear],
    v: [f32; BLOCK],
    is_false: impl Fn(f32, f32) -> bool + Copy,
    words: &mut Words,
) {
    let n = v
        .iter()
        .map(|&v| thresholds.partition_point(|&t| is_false(t, v)))
        .max()
        .unwrap_or(0);
    // The mask and the values are copied out first: read through references inside the
    // loop, they might alias the words for all the compiler knows, and it would not
    // vectorise the 16 rows (measured: 4x slower).
    for (&t, &Clear { mask, tree }) in thresholds[..n].iter().zip(&clears[..n]) {
        let w = &mut words[tree as usize];
        for k in 0..BLOCK {
            w[k] &= if is_false(t, v[k]) { mask } else { u64::MAX };
        }
    }
}
