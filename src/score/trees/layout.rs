//! The trees laid out for the cache: every tree's nodes in one array, breadth first from
//! its root, 16 bytes each, children by index; leaves point at their weights.

use std::collections::HashMap;

use super::Unsupported;

/// How a node compares its feature with its threshold (`LEAF` ends a walk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Leaf,
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
}

impl Mode {
    fn parse(text: &str) -> Result<Self, Unsupported> {
        Ok(match text {
            "LEAF" => Self::Leaf,
            "BRANCH_LEQ" => Self::Leq,
            "BRANCH_LT" => Self::Lt,
            "BRANCH_GTE" => Self::Gte,
            "BRANCH_GT" => Self::Gt,
            "BRANCH_EQ" => Self::Eq,
            "BRANCH_NEQ" => Self::Neq,
            other => return Err(Unsupported(format!("a node mode {other:?}"))),
        })
    }
}

/// One node: a split, or (`mode == Leaf`) a leaf whose weights are
/// `weights[children[0]..children[1]]`.
#[derive(Debug, Clone, Copy)]
pub struct FlatNode {
    pub threshold: f32,
    pub feature: u32,
    /// The true child's index, then the false child's (or a leaf's weight range).
    pub children: [u32; 2],
    pub mode: Mode,
    /// Whether NaN goes to the true child (`nodes_missing_value_tracks_true`).
    pub missing_true: bool,
}

impl FlatNode {
    /// Which child a value leads to, as ONNX Runtime decides it: the comparison, or NaN
    /// where the node tracks missing values to its true child.
    #[inline(always)]
    pub fn next(&self, v: f32) -> u32 {
        let t = self.threshold;
        let goes_true = match self.mode {
            Mode::Leq => v <= t,
            Mode::Lt => v < t,
            Mode::Gte => v >= t,
            Mode::Gt => v > t,
            Mode::Eq => v == t,
            Mode::Neq => v != t,
            Mode::Leaf => false,
        } || (self.missing_true && v.is_nan());
        self.children[usize::from(!goes_true)]
    }
}

/// The ensemble's trees, in ONNX Runtime's order.
#[derive(Debug)]
pub struct Forest {
    pub nodes: Vec<FlatNode>,
    pub roots: Vec<u32>,
    /// Leaf weights: (target or class id, value), in the attributes' order.
    pub weights: Vec<(u32, f32)>,
    /// The largest feature index read, plus one.
    pub n_features: usize,
    /// Whether every node compares with `<=` and tracks no missing value to its true side.
    pub all_leq: bool,
    /// The comparison every split makes, when they all make the same one (`<=` for LightGBM
    /// and scikit-learn, `<` for XGBoost): then [`Forest::leaves`] walks branch-free.
    pub shared: Option<Mode>,
    /// Each tree's depth (its longest path from the root), by tree.
    pub depths: Vec<u32>,
    /// The nodes again, for the branch-free walk: a leaf leads to itself.
    steps: Vec<Step>,
    /// When every leaf holds exactly one weight, for the same target or class: that id. Then
    /// [`Forest::leaf_value`] reads a leaf's weight straight from the walk's nodes.
    pub one_weight: Option<u32>,
}

/// A node for the branch-free walk: 16 bytes, the missing-value flag in the feature's top bit.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Step {
    threshold: f32,
    /// The feature index, with [`MISSING_TRUE`] set where NaN goes to the true child.
    feature: u32,
    children: [u32; 2],
}

const MISSING_TRUE: u32 = 1 << 31;
/// Marks a leaf in the branch-free walk (whose threshold slot holds its one weight, if it
/// has exactly one).
const LEAF: u32 = 1 << 30;

/// Rows walked side by side down each tree: their walks are independent, so the CPU overlaps
/// them instead of waiting on one row's chain of loads.
pub const BLOCK: usize = 16;

/// The node attributes of a `TreeEnsemble*` node, by name.
pub struct NodeAttributes<'a> {
    pub tree_ids: &'a [i64],
    pub node_ids: &'a [i64],
    pub features: &'a [i64],
    pub modes: &'a [String],
    pub values: &'a [f32],
    pub trues: &'a [i64],
    pub falses: &'a [i64],
    pub missing_true: &'a [i64],
}

/// Leaf weights by name: `class_*` or `target_*`.
pub struct WeightAttributes<'a> {
    pub tree_ids: &'a [i64],
    pub node_ids: &'a [i64],
    pub ids: &'a [i64],
    pub weights: &'a [f32],
}

fn unsupported(why: impl Into<String>) -> Unsupported {
    Unsupported(why.into())
}

impl Forest {
    pub fn build(n: &NodeAttributes, w: &WeightAttributes) -> Result<Self, Unsupported> {
        let count = n.tree_ids.len();
        let lens = [
            n.node_ids.len(),
            n.features.len(),
            n.modes.len(),
            n.values.len(),
            n.trues.len(),
            n.falses.len(),
        ];
        if count == 0 || lens.iter().any(|&l| l != count) {
            return Err(unsupported("node attributes of different lengths"));
        }
        if !n.missing_true.is_empty() && n.missing_true.len() != count {
            return Err(unsupported(
                "nodes_missing_value_tracks_true of another length",
            ));
        }
        let index: HashMap<(i64, i64), usize> = (0..count)
            .map(|i| ((n.tree_ids[i], n.node_ids[i]), i))
            .collect();
        if index.len() != count {
            return Err(unsupported("a (tree, node) id given twice"));
        }
        let leaf_weights = group_weights(w, &index, count)?;
        // ONNX Runtime: each run of equal tree ids is a tree, rooted at its first node.
        let starts: Vec<usize> = (0..count)
            .filter(|&i| i == 0 || n.tree_ids[i] != n.tree_ids[i - 1])
            .collect();
        let mut seen_trees = std::collections::HashSet::new();
        let mut forest = Forest {
            nodes: Vec::with_capacity(count),
            roots: Vec::with_capacity(starts.len()),
            weights: Vec::with_capacity(w.ids.len()),
            n_features: 0,
            all_leq: true,
            shared: None,
            depths: Vec::with_capacity(starts.len()),
            steps: Vec::new(),
            one_weight: None,
        };
        for &start in &starts {
            if !seen_trees.insert(n.tree_ids[start]) {
                return Err(unsupported("a tree's nodes are not together"));
            }
            let root = forest.add_tree(n, &index, &leaf_weights, start)?;
            forest.roots.push(root);
        }
        forest.prepare_walk()?;
        Ok(forest)
    }

    /// The branch-free layout: the shared comparison, each tree's depth, leaves as loops.
    fn prepare_walk(&mut self) -> Result<(), Unsupported> {
        let mut modes = self
            .nodes
            .iter()
            .map(|n| n.mode)
            .filter(|&m| m != Mode::Leaf);
        let first = modes.next();
        self.shared = first
            .filter(|&m| matches!(m, Mode::Leq | Mode::Lt))
            .filter(|&m| modes.all(|other| other == m));
        if self.n_features >= LEAF as usize {
            return Err(unsupported("too many features"));
        }
        let leaves = self.nodes.iter().filter(|n| n.mode == Mode::Leaf);
        let ids: Vec<Option<u32>> = leaves
            .map(|l| match self.weights_of(l) {
                [(id, _)] => Some(*id),
                _ => None,
            })
            .collect();
        self.one_weight = match ids.first() {
            Some(Some(first)) if ids.iter().all(|id| *id == Some(*first)) => Some(*first),
            _ => None,
        };
        self.steps = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match n.mode {
                Mode::Leaf => Step {
                    threshold: self.weights_of(n).first().map_or(0.0, |w| w.1),
                    feature: LEAF,
                    children: [i as u32; 2],
                },
                _ => Step {
                    threshold: n.threshold,
                    feature: n.feature | if n.missing_true { MISSING_TRUE } else { 0 },
                    children: n.children,
                },
            })
            .collect();
        let mut depth = vec![0u32; self.nodes.len()];
        // Breadth-first order within a tree: a parent comes before its children.
        for i in 0..self.nodes.len() {
            if self.nodes[i].mode != Mode::Leaf {
                for c in self.nodes[i].children {
                    depth[c as usize] = depth[c as usize].max(depth[i] + 1);
                }
            }
        }
        let ends: Vec<usize> = (1..self.roots.len())
            .map(|t| self.roots[t] as usize)
            .chain([self.nodes.len()])
            .collect();
        self.depths = self
            .roots
            .iter()
            .zip(ends)
            .map(|(&r, end)| depth[r as usize..end].iter().copied().max().unwrap_or(0))
            .collect();
        Ok(())
    }

    /// The leaves `BLOCK` rows (`rows[k]` its features) reach in tree `t`, walking every row
    /// a step at a time without a branch (a leaf leads to itself) until all are at leaves.
    /// Only for forests with a [`Forest::shared`] comparison.
    #[inline(always)]
    pub fn leaves<const LEQ: bool>(&self, t: usize, rows: &[&[f32]; BLOCK], at: &mut [u32; BLOCK]) {
        *at = [self.roots[t]; BLOCK];
        for _ in 0..self.depths[t] {
            let mut all_leaves = LEAF;
            for k in 0..BLOCK {
                let s = &self.steps[at[k] as usize];
                all_leaves &= s.feature;
                let v = rows[k][(s.feature & !(MISSING_TRUE | LEAF)) as usize];
                let goes = if LEQ {
                    v <= s.threshold
                } else {
                    v < s.threshold
                };
                let goes = goes | ((s.feature & MISSING_TRUE != 0) & v.is_nan());
                at[k] = s.children[usize::from(!goes)];
            }
            if all_leaves != 0 {
                break;
            }
        }
    }

    /// The one weight of the leaf at node `at` (for [`Forest::one_weight`] forests).
    #[inline(always)]
    pub fn leaf_value(&self, at: u32) -> f32 {
        self.steps[at as usize].threshold
    }

    /// Lays out one tree breadth first from `root`; returns the root's index.
    fn add_tree(
        &mut self,
        n: &NodeAttributes,
        index: &HashMap<(i64, i64), usize>,
        leaf_weights: &[Vec<(u32, f32)>],
        root: usize,
    ) -> Result<u32, Unsupported> {
        let base = self.nodes.len();
        let mut placed: HashMap<usize, u32> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([root]);
        placed.insert(root, as_u32(base)?);
        let mut order = Vec::new();
        while let Some(i) = queue.pop_front() {
            order.push(i);
            if Mode::parse(&n.modes[i])? == Mode::Leaf {
                continue;
            }
            for child in [n.trues[i], n.falses[i]] {
                let &c = index
                    .get(&(n.tree_ids[i], child))
                    .ok_or_else(|| unsupported("a branch to a node that does not exist"))?;
                // Converters write trees, not graphs; a node with two parents would make the
                // depths (and the branch-free walk) wrong.
                if placed.contains_key(&c) {
                    return Err(unsupported("a node with two parents"));
                }
                // Breadth first: a node's index is its place in the queue's order.
                placed.insert(c, as_u32(base + placed.len())?);
                queue.push_back(c);
            }
        }
        for &i in &order {
            let node = self.flat_node(n, index, leaf_weights, &placed, i)?;
            self.nodes.push(node);
        }
        as_u32(base)
    }

    fn flat_node(
        &mut self,
        n: &NodeAttributes,
        index: &HashMap<(i64, i64), usize>,
        leaf_weights: &[Vec<(u32, f32)>],
        placed: &HashMap<usize, u32>,
        i: usize,
    ) -> Result<FlatNode, Unsupported> {
        let mode = Mode::parse(&n.modes[i])?;
        if mode == Mode::Leaf {
            let start = as_u32(self.weights.len())?;
            self.weights.extend_from_slice(&leaf_weights[i]);
            let end = as_u32(self.weights.len())?;
            return Ok(FlatNode {
                threshold: 0.0,
                feature: 0,
                children: [start, end],
                mode,
                missing_true: false,
            });
        }
        if !leaf_weights[i].is_empty() {
            return Err(unsupported("weights on a node that is not a leaf"));
        }
        let feature =
            usize::try_from(n.features[i]).map_err(|_| unsupported("a negative feature id"))?;
        self.n_features = self.n_features.max(feature + 1);
        let missing_true = n.missing_true.get(i).is_some_and(|&m| m != 0);
        self.all_leq &= mode == Mode::Leq && !missing_true;
        let child = |id: i64| placed[&index[&(n.tree_ids[i], id)]];
        Ok(FlatNode {
            threshold: n.values[i],
            feature: as_u32(feature)?,
            children: [child(n.trues[i]), child(n.falses[i])],
            mode,
            missing_true,
        })
    }

    /// The leaf a row's features lead to from `root`.
    #[inline(always)]
    pub fn leaf(&self, root: u32, row: &[f32]) -> &FlatNode {
        let mut node = &self.nodes[root as usize];
        while node.mode != Mode::Leaf {
            node = &self.nodes[node.next(row[node.feature as usize]) as usize];
        }
        node
    }

    /// A leaf's weights.
    #[inline(always)]
    pub fn weights_of(&self, leaf: &FlatNode) -> &[(u32, f32)] {
        &self.weights[leaf.children[0] as usize..leaf.children[1] as usize]
    }
}

fn as_u32(n: usize) -> Result<u32, Unsupported> {
    u32::try_from(n).map_err(|_| unsupported("more than 2^32 nodes"))
}

/// Each node's weights, in the attributes' order.
fn group_weights(
    w: &WeightAttributes,
    index: &HashMap<(i64, i64), usize>,
    count: usize,
) -> Result<Vec<Vec<(u32, f32)>>, Unsupported> {
    let lens = [w.node_ids.len(), w.ids.len(), w.weights.len()];
    if lens.iter().any(|&l| l != w.tree_ids.len()) {
        return Err(unsupported("weight attributes of different lengths"));
    }
    let mut out = vec![Vec::new(); count];
    for k in 0..w.tree_ids.len() {
        let &node = index
            .get(&(w.tree_ids[k], w.node_ids[k]))
            .ok_or_else(|| unsupported("a weight on a node that does not exist"))?;
        let id =
            u32::try_from(w.ids[k]).map_err(|_| unsupported("a negative class or target id"))?;
        out[node].push((id, w.weights[k]));
    }
    Ok(out)
}
