//! `TreeEnsemble` (ai.onnx.ml opset 5), read as the `TreeEnsembleRegressor` ONNX Runtime
//! turns it into before it scores it, so that the rest of the evaluator (and its proof) is
//! the one for the older operators.
//!
//! The newer operator lists branches and leaves apart (`nodes_*` and `leaf_*`, each child
//! named by index with a flag saying which list), keeps thresholds and weights in tensors,
//! numbers its enums, drops base values and adds `BRANCH_MEMBER` (a set of values, NaN
//! between sets in `membership_values`). ONNX Runtime (`TreeEnsembleAttributesV5::
//! convert_to_v3`) walks each tree depth first, true child first, and writes a set of fewer
//! than 31 integers in 0..=30 as `BRANCH_EQ` comparisons, one per member; here each of them
//! leads to its own copy of the set's true side, so that the result is still a tree. Other
//! sets ONNX Runtime tests by the value truncated to an integer, which this evaluator
//! refuses. A root whose two children are one leaf scores that leaf's weight, as an ordinary
//! split does. Post-transforms are numbered in ONNX Runtime's enum order (`0 NONE,
//! 1 LOGISTIC, 2 SOFTMAX, 3 SOFTMAX_ZERO, 4 PROBIT`; the ONNX spec swaps 1 and 2), which the
//! tests prove.

use std::collections::HashMap;

use super::Unsupported;
use crate::score::tree_order::{Node, TensorAttr};

const FLOAT: i64 = 1;
const UINT8: i64 = 2;
const MODES: [&str; 6] = [
    "BRANCH_LEQ",
    "BRANCH_LT",
    "BRANCH_GTE",
    "BRANCH_GT",
    "BRANCH_EQ",
    "BRANCH_NEQ",
];
const MEMBER: i64 = 6;

fn unsupported(why: impl Into<String>) -> Unsupported {
    Unsupported(why.into())
}

/// The opset-5 attributes, checked for length.
struct V5<'a> {
    features: &'a [i64],
    modes: Vec<i64>,
    splits: Vec<f32>,
    trues: &'a [i64],
    true_leaf: &'a [i64],
    falses: &'a [i64],
    false_leaf: &'a [i64],
    missing: &'a [i64],
    leaf_targets: &'a [i64],
    leaf_weights: Vec<f32>,
    /// Each node's set (empty unless it is a `BRANCH_MEMBER`).
    sets: Vec<Vec<f32>>,
}

/// The opset-3 attributes being written.
#[derive(Default)]
struct V3 {
    tree_ids: Vec<i64>,
    node_ids: Vec<i64>,
    features: Vec<i64>,
    modes: Vec<String>,
    values: Vec<f32>,
    trues: Vec<i64>,
    falses: Vec<i64>,
    missing: Vec<i64>,
    target_trees: Vec<i64>,
    target_nodes: Vec<i64>,
    target_ids: Vec<i64>,
    target_weights: Vec<f32>,
    /// Whether `nodes_missing_value_tracks_true` is given (leaves then list a 0 in it).
    tracks_missing: bool,
}

/// The `TreeEnsembleRegressor` ONNX Runtime scores for a `TreeEnsemble` node.
pub(super) fn to_v3(node: &Node) -> Result<Node, Unsupported> {
    let ints = |k: &str| node.ints.get(k).map(Vec::as_slice).unwrap_or_default();
    let one = |k: &str, default: i64| ints(k).first().copied().unwrap_or(default);
    let v5 = read(node, &ints)?;
    let n_targets = one("n_targets", 0);
    if n_targets <= 0 || v5.leaf_targets.iter().any(|&t| t < 0 || t >= n_targets) {
        return Err(unsupported("leaf_targetids outside 0..n_targets"));
    }
    let post = match one("post_transform", 0) {
        0 => "NONE",
        1 => "LOGISTIC",
        2 => "SOFTMAX",
        3 => "SOFTMAX_ZERO",
        4 => "PROBIT",
        other => return Err(unsupported(format!("post_transform {other}"))),
    };
    let aggregate = match one("aggregate_function", 1) {
        0 => "AVERAGE",
        1 => "SUM",
        2 => "MIN",
        3 => "MAX",
        other => return Err(unsupported(format!("aggregate_function {other}"))),
    };
    let roots = ints("tree_roots");
    if roots.is_empty() {
        return Err(unsupported("no tree_roots"));
    }
    let mut out = V3 {
        tracks_missing: !v5.missing.is_empty(),
        ..V3::default()
    };
    for (tree, &root) in roots.iter().enumerate() {
        v5.tree(&mut out, tree as i64, root)?;
    }
    Ok(out.into_node(node, n_targets, post, aggregate))
}

fn tensor<'a>(
    node: &'a Node,
    name: &str,
    dtype: i64,
) -> Result<Option<&'a TensorAttr>, Unsupported> {
    match node.tensors.get(name) {
        None => Ok(None),
        Some(t) if t.external => Err(unsupported(format!("{name} is stored outside the file"))),
        Some(t) if t.dtype != dtype => Err(unsupported(format!(
            "{name} of ONNX type {} (float32 inputs only)",
            t.dtype
        ))),
        Some(t) => Ok(Some(t)),
    }
}

fn read<'a>(node: &'a Node, ints: &dyn Fn(&str) -> &'a [i64]) -> Result<V5<'a>, Unsupported> {
    let floats = |name: &str| -> Result<Vec<f32>, Unsupported> {
        Ok(tensor(node, name, FLOAT)?
            .map(|t| t.floats.clone())
            .unwrap_or_default())
    };
    let modes = tensor(node, "nodes_modes", UINT8)?
        .map(|t| t.ints.clone())
        .unwrap_or_default();
    let v5 = V5 {
        features: ints("nodes_featureids"),
        splits: floats("nodes_splits")?,
        trues: ints("nodes_truenodeids"),
        true_leaf: ints("nodes_trueleafs"),
        falses: ints("nodes_falsenodeids"),
        false_leaf: ints("nodes_falseleafs"),
        missing: ints("nodes_missing_value_tracks_true"),
        leaf_targets: ints("leaf_targetids"),
        leaf_weights: floats("leaf_weights")?,
        sets: sets(&modes, &floats("membership_values")?),
        modes,
    };
    let n = v5.features.len();
    let lens = [
        v5.modes.len(),
        v5.splits.len(),
        v5.trues.len(),
        v5.true_leaf.len(),
        v5.falses.len(),
        v5.false_leaf.len(),
    ];
    if lens.iter().any(|&l| l != n) || !(v5.missing.is_empty() || v5.missing.len() == n) {
        return Err(unsupported("nodes_* attributes of different lengths"));
    }
    if v5.leaf_targets.len() != v5.leaf_weights.len() {
        return Err(unsupported(
            "leaf_targetids and leaf_weights of different lengths",
        ));
    }
    if v5.modes.iter().any(|&m| !(0..=MEMBER).contains(&m)) {
        return Err(unsupported(
            "a node mode other than BRANCH_* or BRANCH_MEMBER",
        ));
    }
    Ok(v5)
}

/// Each node's membership set: the values up to the next NaN, taken in node order by the
/// `BRANCH_MEMBER` nodes only.
fn sets(modes: &[i64], values: &[f32]) -> Vec<Vec<f32>> {
    let mut rest = values.iter();
    modes
        .iter()
        .map(|&m| {
            if m != MEMBER {
                return Vec::new();
            }
            rest.by_ref().take_while(|v| !v.is_nan()).copied().collect()
        })
        .collect()
}

/// A node to write: its index in `nodes_*` or `leaf_*`, which member of its set it tests
/// (0 for other branches), and the node whose false child it is (its index in the output).
struct Frame {
    index: usize,
    is_leaf: bool,
    member: usize,
    false_of: Option<usize>,
}

/// The most nodes a model may have once its sets are written out as comparisons (each
/// member copies the subtree its set leads to): past it, ONNX Runtime scores the model.
const MAX_NODES: usize = 1 << 22;

impl V5<'_> {
    fn index(&self, i: i64, is_leaf: bool) -> Result<usize, Unsupported> {
        let len = if is_leaf {
            self.leaf_weights.len()
        } else {
            self.features.len()
        };
        usize::try_from(i)
            .ok()
            .filter(|&i| i < len)
            .ok_or_else(|| unsupported(format!("a child index {i} out of range")))
    }

    /// Writes one tree, depth first, true child first. A set of `k` members becomes `k`
    /// `BRANCH_EQ` nodes, each the false child of the one before, each leading to its own
    /// copy of the set's true subtree: a tree still, where ONNX Runtime's chain shares it.
    fn tree(&self, out: &mut V3, tree: i64, root: i64) -> Result<(), Unsupported> {
        let mut stack = vec![Frame {
            index: self.index(root, false)?,
            is_leaf: false,
            member: 0,
            false_of: None,
        }];
        let mut id = 0;
        while let Some(frame) = stack.pop() {
            if out.trues.len() >= MAX_NODES {
                return Err(unsupported(format!(
                    "more than {MAX_NODES} nodes once its sets are written out, or a tree that loops"
                )));
            }
            let at = out.trues.len();
            if let Some(parent) = frame.false_of {
                out.falses[parent] = id;
            }
            let i = frame.index;
            if frame.is_leaf {
                out.leaf(tree, id, self.leaf_targets[i], self.leaf_weights[i]);
                id += 1;
                continue;
            }
            let (mode, value, last_member) = self.split(i, frame.member)?;
            out.node(
                tree,
                id,
                self.features[i],
                mode,
                value,
                self.missing.get(i).copied(),
            );
            out.trues.push(id + 1);
            out.falses.push(-1);
            id += 1;
            let (t, f) = (self.true_leaf[i] != 0, self.false_leaf[i] != 0);
            stack.push(if last_member {
                Frame {
                    index: self.index(self.falses[i], f)?,
                    is_leaf: f,
                    member: 0,
                    false_of: Some(at),
                }
            } else {
                Frame {
                    index: i,
                    is_leaf: false,
                    member: frame.member + 1,
                    false_of: Some(at),
                }
            });
            stack.push(Frame {
                index: self.index(self.trues[i], t)?,
                is_leaf: t,
                member: 0,
                false_of: None,
            });
        }
        Ok(())
    }

    /// Branch `i`'s comparison (for a set, with its `member`th value) and whether it is the
    /// last comparison the branch makes.
    fn split(&self, i: usize, member: usize) -> Result<(&'static str, f32, bool), Unsupported> {
        if self.modes[i] != MEMBER {
            return Ok((MODES[self.modes[i] as usize], self.splits[i], true));
        }
        let set = &self.sets[i];
        // ONNX Runtime compares a value with each member of a small set of integers as
        // `BRANCH_EQ` does; others it tests by the value truncated to an integer, which is
        // not followed here; and it refuses fractions when it loads the model.
        let small = set.len() < 31
            && set
                .iter()
                .all(|&v| (0.0..=30.0).contains(&v) && v.fract() == 0.0);
        if set.is_empty() || !small {
            return Err(unsupported(
                "a BRANCH_MEMBER set that is empty, of 31 values or more, or outside 0..=30",
            ));
        }
        Ok(("BRANCH_EQ", set[member], member + 1 == set.len()))
    }
}

impl V3 {
    /// A node's attributes but its children.
    fn node(
        &mut self,
        tree: i64,
        id: i64,
        feature: i64,
        mode: &str,
        value: f32,
        missing: Option<i64>,
    ) {
        self.tree_ids.push(tree);
        self.node_ids.push(id);
        self.features.push(feature);
        self.modes.push(mode.to_string());
        self.values.push(value);
        if let Some(m) = missing {
            self.missing.push(m);
        }
    }

    fn leaf(&mut self, tree: i64, id: i64, target: i64, weight: f32) {
        self.node(tree, id, 0, "LEAF", 0.0, self.tracks_missing.then_some(0));
        self.trues.push(0);
        self.falses.push(0);
        self.target_trees.push(tree);
        self.target_nodes.push(id);
        self.target_ids.push(target);
        self.target_weights.push(weight);
    }

    fn into_node(self, v5: &Node, n_targets: i64, post: &str, aggregate: &str) -> Node {
        let ints: HashMap<String, Vec<i64>> = [
            ("nodes_treeids", self.tree_ids),
            ("nodes_nodeids", self.node_ids),
            ("nodes_featureids", self.features),
            ("nodes_truenodeids", self.trues),
            ("nodes_falsenodeids", self.falses),
            ("nodes_missing_value_tracks_true", self.missing),
            ("target_treeids", self.target_trees),
            ("target_nodeids", self.target_nodes),
            ("target_ids", self.target_ids),
            ("n_targets", vec![n_targets]),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let floats = [
            ("nodes_values".to_string(), self.values),
            ("target_weights".to_string(), self.target_weights),
        ]
        .into_iter()
        .collect();
        let strings = [
            ("nodes_modes".to_string(), self.modes),
            ("post_transform".to_string(), vec![post.to_string()]),
            (
                "aggregate_function".to_string(),
                vec![aggregate.to_string()],
            ),
        ]
        .into_iter()
        .collect();
        Node {
            op_type: "TreeEnsembleRegressor".into(),
            domain: v5.domain.clone(),
            inputs: v5.inputs.clone(),
            outputs: v5.outputs.clone(),
            ints,
            floats,
            strings,
            tensors: HashMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dtype: i64, floats: Vec<f32>, ints: Vec<i64>) -> TensorAttr {
        TensorAttr {
            dtype,
            floats,
            ints,
            external: false,
        }
    }

    /// Two branches on feature 0 and three leaves, with `trues`/`falses` as given.
    fn two_branches(trues: Vec<i64>, true_leaf: Vec<i64>) -> Node {
        let mut n = Node::default();
        for (k, v) in [
            ("n_targets", vec![1]),
            ("nodes_featureids", vec![0, 0]),
            ("nodes_truenodeids", trues),
            ("nodes_trueleafs", true_leaf),
            ("nodes_falsenodeids", vec![1, 2]),
            ("nodes_falseleafs", vec![1, 1]),
            ("leaf_targetids", vec![0, 0, 0]),
            ("tree_roots", vec![0]),
        ] {
            n.ints.insert(k.into(), v);
        }
        n.tensors
            .insert("nodes_modes".into(), tensor(UINT8, vec![], vec![6, 0]));
        n.tensors
            .insert("nodes_splits".into(), tensor(FLOAT, vec![0.5, 1.5], vec![]));
        n.tensors.insert(
            "membership_values".into(),
            tensor(FLOAT, vec![1.0, 4.0, f32::NAN], vec![]),
        );
        n.tensors.insert(
            "leaf_weights".into(),
            tensor(FLOAT, vec![1.0, 2.0, 4.0], vec![]),
        );
        n
    }

    #[test]
    fn a_set_becomes_comparisons_each_with_its_own_copy_of_the_true_side() {
        // Branch 0: x in {1, 4} -> branch 1 (x <= 1.5 ? leaf 0 : leaf 2), else leaf 1.
        let v3 = to_v3(&two_branches(vec![1, 0], vec![0, 1])).unwrap();
        let modes: Vec<&str> = v3.strings["nodes_modes"]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            modes,
            [
                "BRANCH_EQ",
                "BRANCH_LEQ",
                "LEAF",
                "LEAF",
                "BRANCH_EQ",
                "BRANCH_LEQ",
                "LEAF",
                "LEAF",
                "LEAF"
            ]
        );
        assert_eq!(v3.floats["nodes_values"][..5], [1.0, 1.5, 0.0, 0.0, 4.0]);
        assert_eq!(v3.ints["nodes_truenodeids"][0], 1);
        assert_eq!(v3.ints["nodes_falsenodeids"][0], 4);
        assert_eq!(v3.ints["nodes_falsenodeids"][4], 8);
        assert_eq!(v3.floats["target_weights"], [1.0, 4.0, 1.0, 4.0, 2.0]);
    }

    #[test]
    fn a_tree_that_loops_is_refused_not_followed_forever() {
        // Branch 1's true child is branch 0 again.
        let mut n = two_branches(vec![1, 0], vec![0, 0]);
        n.tensors
            .insert("nodes_modes".into(), tensor(UINT8, vec![], vec![0, 0]));
        let err = to_v3(&n).unwrap_err();
        assert!(err.0.contains("loops"), "{err}");
    }

    #[test]
    fn big_sets_and_fractions_are_left_to_onnx_runtime() {
        for set in [
            vec![31.0],
            vec![-1.0],
            vec![2.5],
            (0..31).map(|v| v as f32).collect(),
        ] {
            let mut n = two_branches(vec![1, 0], vec![0, 1]);
            let mut values = set.clone();
            values.push(f32::NAN);
            n.tensors
                .insert("membership_values".into(), tensor(FLOAT, values, vec![]));
            let err = to_v3(&n).unwrap_err();
            assert!(err.0.contains("BRANCH_MEMBER"), "{set:?}: {err}");
        }
    }
}
