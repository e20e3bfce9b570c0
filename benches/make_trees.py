"""Two more tree ensembles for the benchmark's workload: xgb.onnx (XGBoost) and rf.onnx (random forest).

    /tmp/peers/bin/python benches/make_trees.py /tmp/w

Needs, beside ../shared/bench/requirements.txt (the versions sample_data/requirements.txt pins):
    xgboost==3.2.0   (not in ../shared/bench/requirements.txt: /tmp/peers/bin/pip install xgboost==3.2.0)
    scikit-learn==1.9.1 skl2onnx==1.20.0 onnxmltools==1.16.0 onnxruntime==1.31.1 onnx numpy

Written beside gbdt.onnx and mlp.onnx of ../shared/bench/make_workload.py, in the same style:
trained on the same 50,000-row sample (make(50_000, 1), the same generator and seed), over the
28 features f00..f27, input tensor `features` [N, 28] float32 like gbdt.onnx, outputs `label` and
`probabilities` tensors (no ZipMap), ai.onnx.ml opset 1..3 TreeEnsembleClassifier like gbdt.onnx.

- xgb.onnx: XGBClassifier, 200 trees, max_depth 8 (onnxmltools' xgboost converter): deeper
  trees than gbdt.onnx's 31-leaf LightGBM, so more node visits per row.
- rf.onnx: RandomForestClassifier, 100 trees, max_depth 12 (skl2onnx, zipmap off). Unlimited
  leaves on 50k rows make a much bigger file (min_samples_leaf=20 already gives 7 MB);
  min_samples_leaf=50 keeps it at 3.5 MB (91k nodes) while every tree still reaches depth 12.
Note for an evaluator: xgb.onnx splits with BRANCH_LT and carries base_values and
post_transform LOGISTIC; rf.onnx splits with BRANCH_LEQ, post_transform NONE, one weight per
leaf (class_id 0, the tree's class-1 probability / 100): ONNX Runtime's binary case sums them
into p1 and sets p0 = 1 - p1. Neither has nodes_missing_value_tracks_true set.

Each model is checked with onnxruntime against the training library's own predict_proba on
20,000 held-out rows (float32, as the scorer sends them); the script prints the max difference
and fails if it is above 1e-4.
Deterministic: fixed seeds, n_jobs=1 and fixed graph names, so each run writes the same bytes.
"""
import os
import sys

import numpy as np

F = 28
TOL = 1e-4


def make(n, seed):
    # The same generator as ../shared/bench/make_workload.py (keep the two in step).
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, F))
    w = np.linspace(-1, 1, F)
    logit = X @ w + 0.5 * X[:, 0] * X[:, 1] - 0.3 * X[:, 2] ** 2
    y = (logit + r.normal(scale=0.5, size=n) > 0).astype(np.int64)
    return X, y


def tree_stats(path):
    """(trees, max depth, nodes) of the TreeEnsembleClassifier in an ONNX file."""
    import onnx
    m = onnx.load(path)
    node = next(n for n in m.graph.node if n.op_type == "TreeEnsembleClassifier")
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    tids, nids = a["nodes_treeids"], a["nodes_nodeids"]
    true, false, modes = a["nodes_truenodeids"], a["nodes_falsenodeids"], a["nodes_modes"]
    trees = {}
    for i, (t, n) in enumerate(zip(tids, nids)):
        trees.setdefault(t, {})[n] = i
    deepest = 0
    for t, idx in trees.items():
        # depth = edges on the longest root-to-leaf path; node 0 is the root in both converters
        stack = [(0, 0)]
        while stack:
            n, d = stack.pop()
            i = idx[n]
            if modes[i] in (b"LEAF", "LEAF"):
                deepest = max(deepest, d)
            else:
                stack += [(true[i], d + 1), (false[i], d + 1)]
    return len(trees), deepest, len(tids)


def check(name, path, proba):
    """Scores X with onnxruntime; returns the max |ORT - library| over both classes' probabilities."""
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ins, outs = [i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()]
    assert ins == ["features"], f"{name}: inputs {ins}"
    assert outs == ["label", "probabilities"], f"{name}: outputs {outs}"
    label, p = s.run(None, {"features": XH})
    diff = float(np.abs(p - proba).max())
    flips = int((label != proba.argmax(1)).sum())
    trees, depth, nodes = tree_stats(path)
    print(f"{name}: {os.path.getsize(path) / 1e6:.2f} MB, {trees} trees, max depth {depth}, {nodes:,} nodes; "
          f"ORT vs {LIB[name]} predict_proba on {len(XH):,} held-out rows: max |diff| {diff:.2e}, "
          f"labels differing {flips}")
    if diff > TOL:
        sys.exit(f"{name}: ONNX predictions differ from the library's by {diff} (> {TOL})")


out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/w"
os.makedirs(out, exist_ok=True)
Xt, yt = make(50_000, 1)
Xt = Xt.astype(np.float32)
XH = make(20_000, 3)[0].astype(np.float32)
LIB = {"xgb": "xgboost", "rf": "scikit-learn"}

from onnxmltools import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType as SkFloatTensorType
from sklearn.ensemble import RandomForestClassifier
import xgboost as xgb

bst = xgb.XGBClassifier(n_estimators=200, max_depth=8, learning_rate=0.1, tree_method="hist",
                        random_state=0, n_jobs=1).fit(Xt, yt)
# onnxmltools' XGBoost classifier converter emits label and probabilities tensors (no ZipMap).
onx = convert_xgboost(bst, initial_types=[("features", FloatTensorType([None, F]))], target_opset=15)
onx.graph.name = "xgb"  # the converters name the graph with a fresh uuid: fixed, the file is the same byte for byte
open(f"{out}/xgb.onnx", "wb").write(onx.SerializeToString())
check("xgb", f"{out}/xgb.onnx", bst.predict_proba(XH))

rf = RandomForestClassifier(n_estimators=100, max_depth=12, min_samples_leaf=50, random_state=0,
                            n_jobs=1).fit(Xt, yt)
onx = convert_sklearn(rf, initial_types=[("features", SkFloatTensorType([None, F]))],
                      options={id(rf): {"zipmap": False}}, target_opset={"": 15, "ai.onnx.ml": 3})
onx.graph.name = "rf"
open(f"{out}/rf.onnx", "wb").write(onx.SerializeToString())
check("rf", f"{out}/rf.onnx", rf.predict_proba(XH))
