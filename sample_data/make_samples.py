"""Make the sample models, data and expected outputs in sample_data/.

    python3 -m venv /tmp/gen && /tmp/gen/bin/pip install -r sample_data/requirements.txt
    /tmp/gen/bin/python sample_data/make_samples.py

The expected outputs (`expected.parquet` beside each data set) come from onnxruntime's own
Python API on the same rows and the same feature arithmetic the job spec asks for, so the
integration tests compare batchscore against an independent oracle, never against an earlier
batchscore run. Everything is seeded: rerunning the script gives the same files.
"""

import gzip
import io
import os
import sys
from decimal import Decimal

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20261127)


def save_model(onx, path):
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())


def session(path):
    # One intra-op thread, as each batchscore worker's session: ONNX Runtime's tree ensembles
    # sum in a thread-dependent order, which moves probabilities by about one float32 ulp.
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def write_parquet(table, path, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, **kw)


# --------------------------------------------------------------------------------------------
# churn: LightGBM classifier, hive-partitioned Parquet with nulls, SQL feature expressions
# --------------------------------------------------------------------------------------------
def make_churn():
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    d = os.path.join(HERE, "churn")
    n = 3000
    tenure = rng.integers(0, 72, n).astype(np.int32)
    cents = rng.integers(1500, 12000, n)
    monthly = [Decimal(int(c)) / Decimal(100) for c in cents]
    total = tenure * (cents / 100.0) + rng.normal(0, 20, n)
    total_null = rng.random(n) < 0.05
    calls = rng.poisson(1.5, n).astype(np.int64)
    senior = rng.random(n) < 0.2
    region = rng.choice(["eu", "us", "apac"], n)
    customer_id = np.arange(100000, 100000 + n, dtype=np.int64)

    # Features exactly as the job computes them (see jobs/churn.toml), nulls filled with 0.
    def features(idx):
        t = np.where(total_null[idx], 0.0, total[idx])
        return np.stack(
            [
                tenure[idx].astype(np.float32),
                (cents[idx] / 100.0).astype(np.float32),
                t.astype(np.float32),
                np.log(1.0 + calls[idx].astype(np.float64)).astype(np.float32),
                senior[idx].astype(np.float32),
            ],
            axis=1,
        )

    X = features(np.arange(n))
    logit = -0.04 * X[:, 0] + 0.02 * X[:, 1] + 0.6 * X[:, 3] + 0.5 * X[:, 4] - 0.5
    y = (logit + rng.normal(0, 0.7, n) > 0).astype(np.int64)
    gbm = lgb.LGBMClassifier(n_estimators=60, num_leaves=15, verbose=-1, random_state=0)
    gbm.fit(X, y)
    onx = convert_lightgbm(
        gbm, initial_types=[("features", FloatTensorType([None, 5]))], zipmap=False, target_opset=15
    )
    model_path = os.path.join(d, "churn_lgbm.onnx")
    os.makedirs(d, exist_ok=True)
    save_model(onx, model_path)

    # Hive-partitioned layout: churn/data/region=eu/part-0.parquet, two files per region.
    for r in ["eu", "us", "apac"]:
        idx = np.nonzero(region == r)[0]
        halves = np.array_split(idx, 2)
        for i, part in enumerate(halves):
            t = pa.table(
                {
                    "customer_id": pa.array(customer_id[part]),
                    "tenure": pa.array(tenure[part]),
                    "monthly_charges": pa.array([monthly[j] for j in part], type=pa.decimal128(8, 2)),
                    "total_charges": pa.array(total[part], mask=total_null[part]),
                    "support_calls": pa.array(calls[part]),
                    "is_senior": pa.array(senior[part]),
                }
            )
            write_parquet(t, os.path.join(d, "data", f"region={r}", f"part-{i}.parquet"), row_group_size=400)

    # The job keeps every region but apac (its `query`).
    keep = np.nonzero(region != "apac")[0]
    label, probs = session(model_path).run(None, {"features": features(keep)})
    exp = pa.table(
        {
            "customer_id": pa.array(customer_id[keep]),
            "region": pa.array(region[keep]),
            "churn_probability": pa.array(probs[:, 1].astype(np.float32)),
            "churn_label": pa.array(label.astype(np.int64)),
        }
    )
    write_parquet(exp, os.path.join(d, "expected.parquet"))

    # A parity check for `batchscore models register --reference`: the first 500 rows as the
    # data files hold them, and LightGBM's own predictions on them (the training library, in
    # float64, not onnxruntime).
    first = np.arange(500)
    sample = pa.table(
        {
            "customer_id": pa.array(customer_id[first]),
            "tenure": pa.array(tenure[first]),
            "monthly_charges": pa.array([monthly[j] for j in first], type=pa.decimal128(8, 2)),
            "total_charges": pa.array(total[first], mask=total_null[first]),
            "support_calls": pa.array(calls[first]),
            "is_senior": pa.array(senior[first]),
        }
    )
    write_parquet(sample, os.path.join(d, "parity", "sample.parquet"))
    reference = pa.table(
        {
            "churn_probability": pa.array(gbm.predict_proba(features(first))[:, 1]),
            "churn_label": pa.array(gbm.predict(features(first)).astype(np.int64)),
        }
    )
    write_parquet(reference, os.path.join(d, "parity", "reference.parquet"))

    # A challenger for `[[challengers]]`: another LightGBM model over the same five features
    # (fewer, shallower trees fitted to every other row; it draws nothing from the shared
    # generator), and onnxruntime's outputs of it on the rows the job scores.
    half = np.arange(0, n, 2)
    small = lgb.LGBMClassifier(n_estimators=25, num_leaves=7, learning_rate=0.2, verbose=-1, random_state=1)
    small.fit(X[half], y[half])
    onx = convert_lightgbm(
        small, initial_types=[("features", FloatTensorType([None, 5]))], zipmap=False, target_opset=15
    )
    onx.graph.name = "churn_challenger"  # the converter names graphs by a random uuid
    challenger_path = os.path.join(d, "challenger_lgbm.onnx")
    save_model(onx, challenger_path)
    c_label, c_probs = session(challenger_path).run(None, {"features": features(keep)})
    challenger = pa.table(
        {
            "customer_id": pa.array(customer_id[keep]),
            "churn_probability": pa.array(c_probs[:, 1].astype(np.float32)),
            "churn_label": pa.array(c_label.astype(np.int64)),
        }
    )
    write_parquet(challenger, os.path.join(d, "challenger_expected.parquet"))


# --------------------------------------------------------------------------------------------
# plans: scikit-learn pipeline with string categoricals, one ONNX input per column, ZipMap out
# --------------------------------------------------------------------------------------------
def make_plans():
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    import pandas as pd

    d = os.path.join(HERE, "plans")
    os.makedirs(d, exist_ok=True)
    n = 2000
    plan = rng.choice(["basic", "plus", "pro", "family"], n)
    country = rng.choice(["de", "fr", "uk", "es", "it"], n)
    age = rng.integers(18, 90, n).astype(np.int64)
    usage = rng.gamma(2.0, 10.0, n)
    score = (plan == "pro") * 1.0 + (country == "uk") * 0.5 - age / 60.0 + usage / 30.0
    # Three string classes, so the ZipMap output is a map<string, float> of three entries.
    cls = np.where(score > 0.6, "upgrade", np.where(score < -0.2, "leave", "stay"))
    df = pd.DataFrame({"plan": plan, "country": country, "age": age, "usage": usage.astype(np.float32)})
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "country"]),
                        ("num", StandardScaler(), ["age", "usage"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )
    pipe.fit(df, cls)
    initial = [
        ("plan", StringTensorType([None, 1])),
        ("country", StringTensorType([None, 1])),
        ("age", Int64TensorType([None, 1])),
        ("usage", FloatTensorType([None, 1])),
    ]
    onx = to_onnx(pipe, initial_types=initial, target_opset={"": 17, "ai.onnx.ml": 3})
    model_path = os.path.join(d, "plans_pipeline.onnx")
    save_model(onx, model_path)

    account = np.array([f"acct-{i:05d}" for i in range(n)])
    # Stored types differ from the model's on purpose: age as int32 (model: int64), usage as
    # float64 (model: float32). batchscore casts; the oracle gets the same cast values.
    t = pa.table(
        {
            "account": pa.array(account),
            "plan": pa.array(plan),
            "country": pa.array(country),
            "age": pa.array(age.astype(np.int32)),
            "usage": pa.array(usage.astype(np.float32).astype(np.float64)),
        }
    )
    write_parquet(t, os.path.join(d, "accounts.parquet"), row_group_size=500)

    sess = session(model_path)
    label, probs = sess.run(
        None,
        {
            "plan": plan.reshape(-1, 1),
            "country": country.reshape(-1, 1),
            "age": age.reshape(-1, 1),
            "usage": usage.astype(np.float32).reshape(-1, 1),
        },
    )
    classes = sorted(probs[0].keys())
    exp = pa.table(
        {
            "account": pa.array(account),
            "output_label": pa.array([str(x) for x in label]),
            "output_probability": pa.array(
                [[float(np.float32(p[c])) for c in classes] for p in probs], type=pa.list_(pa.float32())
            ),
            "p_upgrade": pa.array([np.float32(p["upgrade"]) for p in probs], type=pa.float32()),
        }
    )
    write_parquet(exp, os.path.join(d, "expected.parquet"))
    with open(os.path.join(d, "classes.txt"), "w") as f:
        f.write("\n".join(classes) + "\n")


# --------------------------------------------------------------------------------------------
# houses: regression with a float64 input, from a gzip CSV
# --------------------------------------------------------------------------------------------
def make_houses():
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    d = os.path.join(HERE, "houses")
    os.makedirs(d, exist_ok=True)
    n = 1500
    rooms = rng.integers(1, 9, n)
    area = rng.normal(95.0, 30.0, n).round(2)
    year = rng.integers(1900, 2026, n)
    dist = rng.gamma(2.0, 3.0, n).round(3)
    X = np.stack([rooms, area, year, dist], axis=1).astype(np.float64)
    price = 1000 * (40 * rooms + 2.5 * area + 0.3 * (year - 1900) - 6 * dist) + rng.normal(0, 5000, n)
    pipe = Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=1.0))]).fit(X, price)
    onx = to_onnx(pipe, initial_types=[("X", DoubleTensorType([None, 4]))], target_opset=17)
    model_path = os.path.join(d, "price_ridge.onnx")
    save_model(onx, model_path)

    house_id = np.array([f"h{i:04d}" for i in range(n)])
    t = pa.table(
        {"house_id": house_id, "rooms": rooms, "area_m2": area, "built": year, "km_to_center": dist}
    )
    buf = io.BytesIO()
    pcsv.write_csv(t, buf)
    with gzip.GzipFile(os.path.join(d, "houses.csv.gz"), "wb", mtime=0) as f:
        f.write(buf.getvalue())

    (pred,) = session(model_path).run(None, {"X": X})
    exp = pa.table({"house_id": house_id, "price": pa.array(pred[:, 0].astype(np.float64))})
    write_parquet(exp, os.path.join(d, "expected.parquet"))


# --------------------------------------------------------------------------------------------
# xgb: XGBoost classifier on Parquet
# --------------------------------------------------------------------------------------------
def make_xgb():
    import xgboost as xgb
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    d = os.path.join(HERE, "fraud")
    os.makedirs(d, exist_ok=True)
    n = 2500
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = ((X[:, 0] * X[:, 1] + X[:, 2] - 0.5 * X[:, 3]) > 0.3).astype(np.int64)
    m = xgb.XGBClassifier(n_estimators=40, max_depth=4, random_state=0).fit(X, y)
    onx = convert_xgboost(m, initial_types=[("input", FloatTensorType([None, 6]))], target_opset=15)
    model_path = os.path.join(d, "fraud_xgb.onnx")
    save_model(onx, model_path)
    txn = np.arange(n, dtype=np.int64) * 7 + 3
    cols = {"txn_id": pa.array(txn)}
    for j in range(6):
        cols[f"x{j}"] = pa.array(X[:, j])
    write_parquet(pa.table(cols), os.path.join(d, "transactions.parquet"), row_group_size=700)
    sess = session(model_path)
    outs = sess.run(None, {"input": X})
    names = [o.name for o in sess.get_outputs()]
    probs = outs[names.index("probabilities")]
    label = outs[names.index("label")]
    if isinstance(probs, list):  # ZipMap
        probs = np.array([[p[0], p[1]] for p in probs], dtype=np.float32)
    exp = pa.table(
        {"txn_id": pa.array(txn), "fraud_probability": pa.array(probs[:, 1].astype(np.float32)),
         "fraud_label": pa.array(label.astype(np.int64))}
    )
    write_parquet(exp, os.path.join(d, "expected.parquet"))


# --------------------------------------------------------------------------------------------
# synthetic graphs: int64/int32 rank-1 inputs, bool and int32 outputs, a fixed batch dimension
# --------------------------------------------------------------------------------------------
def make_synthetic():
    d = os.path.join(HERE, "synthetic")
    os.makedirs(d, exist_ok=True)

    # y = 0.5 * float(a) + float(b); big = y > 10; bucket = int32(a mod 5)
    g = helper.make_graph(
        [
            helper.make_node("Cast", ["a"], ["af"], to=TensorProto.DOUBLE),
            helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.DOUBLE),
            helper.make_node("Mul", ["af", "half"], ["ah"]),
            helper.make_node("Add", ["ah", "bf"], ["y"]),
            helper.make_node("Greater", ["y", "ten"], ["big"]),
            helper.make_node("Mod", ["a", "five"], ["m"]),
            helper.make_node("Cast", ["m"], ["bucket"], to=TensorProto.INT32),
        ],
        "rank1",
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("b", TensorProto.INT32, ["N"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N"]),
            helper.make_tensor_value_info("big", TensorProto.BOOL, ["N"]),
            helper.make_tensor_value_info("bucket", TensorProto.INT32, ["N"]),
        ],
        [
            helper.make_tensor("half", TensorProto.DOUBLE, [], [0.5]),
            helper.make_tensor("ten", TensorProto.DOUBLE, [], [10.0]),
            helper.make_tensor("five", TensorProto.INT64, [], [5]),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="batchscore-samples")
    m.ir_version = 8
    onnx.checker.check_model(m)
    save_model(m, os.path.join(d, "rank1_int.onnx"))

    # Fixed batch dimension [1, 4]: scores = softmax(x @ W + c), label = argmax.
    W = rng.normal(size=(4, 3)).astype(np.float32)
    c = rng.normal(size=(3,)).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "c"], ["z"]),
            helper.make_node("Softmax", ["z"], ["scores"], axis=1),
            helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
        ],
        "fixed_batch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, [1]),
        ],
        [helper.numpy_helper.from_array(W, "W") if hasattr(helper, "numpy_helper") else onnx.numpy_helper.from_array(W, "W"),
         onnx.numpy_helper.from_array(c, "c")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="batchscore-samples")
    m.ir_version = 8
    m.metadata_props.append(onnx.StringStringEntryProto(key="purpose", value="fixed batch dimension"))
    onnx.checker.check_model(m)
    save_model(m, os.path.join(d, "fixed_batch.onnx"))

    n = 257
    a = rng.integers(-50, 50, n).astype(np.int64)
    b = rng.integers(-20, 20, n).astype(np.int32)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    key = np.arange(n, dtype=np.int64)
    t = pa.table(
        {
            "row_id": key,
            # a is stored as int16 and b as int64: both are cast to the model's dtypes.
            "a": pa.array(a.astype(np.int16)),
            "b": pa.array(b.astype(np.int64)),
            "x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "x3": x[:, 3],
        }
    )
    write_parquet(t, os.path.join(d, "rows.parquet"), row_group_size=100)

    y, big, bucket = session(os.path.join(d, "rank1_int.onnx")).run(None, {"a": a, "b": b})
    fs = session(os.path.join(d, "fixed_batch.onnx"))
    scores, labels = [], []
    for i in range(n):
        s, l = fs.run(None, {"x": x[i : i + 1]})
        scores.append(s[0])
        labels.append(l[0])
    exp = pa.table(
        {
            "row_id": key,
            "y": pa.array(y), "big": pa.array(big), "bucket": pa.array(bucket),
            "scores": pa.array([list(map(float, s)) for s in scores], type=pa.list_(pa.float32())),
            "score_2": pa.array(np.array([s[2] for s in scores], dtype=np.float32)),
            "label": pa.array(np.array(labels, dtype=np.int64)),
        }
    )
    write_parquet(exp, os.path.join(d, "expected.parquet"))


# --------------------------------------------------------------------------------------------
# lookup: a model ONNX Runtime fails on for some rows (Gather with an out-of-range index)
# --------------------------------------------------------------------------------------------
def make_lookup():
    d = os.path.join(HERE, "synthetic")
    os.makedirs(d, exist_ok=True)
    r = np.random.default_rng(11)  # its own generator: makes no difference to the others
    table = r.normal(size=(10,)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["value"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N"])],
        [onnx.numpy_helper.from_array(table, "table")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="batchscore-samples")
    m.ir_version = 8
    onnx.checker.check_model(m)
    save_model(m, os.path.join(d, "lookup.onnx"))
    n = 300
    idx = r.integers(0, 10, n).astype(np.int64)
    poisoned = np.array([17, 123, 250])
    idx[poisoned] = [99, -20, 10]  # out of [-10, 9]: ONNX Runtime refuses the whole batch
    key = np.arange(n, dtype=np.int64)
    write_parquet(pa.table({"row_id": key, "idx": idx}), os.path.join(d, "lookup.parquet"))
    ok = np.setdiff1d(key, poisoned)
    (value,) = session(os.path.join(d, "lookup.onnx")).run(None, {"idx": idx[ok]})
    write_parquet(
        pa.table({"row_id": key[ok], "value": pa.array(value)}),
        os.path.join(d, "lookup_expected.parquet"),
    )

    # The same table behind a Clip of the index: it scores every row, the poisoned ones too (as
    # the nearest end of the table). A champion beside lookup.onnx as a challenger that fails
    # on three rows.
    g = helper.make_graph(
        [
            helper.make_node("Clip", ["idx", "lo", "hi"], ["clipped"]),
            helper.make_node("Gather", ["table", "clipped"], ["value"], axis=0),
        ],
        "lookup_clipped",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N"])],
        [
            onnx.numpy_helper.from_array(table, "table"),
            onnx.numpy_helper.from_array(np.array(-10, dtype=np.int64), "lo"),
            onnx.numpy_helper.from_array(np.array(9, dtype=np.int64), "hi"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="batchscore-samples")
    m.ir_version = 8
    onnx.checker.check_model(m)
    save_model(m, os.path.join(d, "lookup_clipped.onnx"))
    (value,) = session(os.path.join(d, "lookup_clipped.onnx")).run(None, {"idx": idx})
    write_parquet(
        pa.table({"row_id": key, "value": pa.array(value)}),
        os.path.join(d, "lookup_clipped_expected.parquet"),
    )


# --------------------------------------------------------------------------------------------
# future_opset: a valid graph that imports an operator set no ONNX Runtime release knows
# --------------------------------------------------------------------------------------------
def make_future_opset():
    d = os.path.join(HERE, "synthetic")
    os.makedirs(d, exist_ok=True)
    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "future_opset",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 99)], producer_name="batchscore-samples")
    m.ir_version = 8
    path = os.path.join(d, "future_opset.onnx")
    save_model(m, path)
    # The oracle: onnxruntime's Python API refuses it too.
    try:
        session(path)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        assert "opset" in str(e).lower(), e
    else:
        raise AssertionError("onnxruntime accepted opset 99")


MAKERS = {
    "churn": make_churn,
    "plans": make_plans,
    "houses": make_houses,
    "xgb": make_xgb,
    "synthetic": make_synthetic,
    "lookup": make_lookup,
    "future_opset": make_future_opset,
}

if __name__ == "__main__":
    # `make_samples.py lookup` remakes one data set; no argument remakes them all (in this
    # order: the shared generator makes each depend on those before it).
    for name in sys.argv[1:] or list(MAKERS):
        MAKERS[name]()
    print("sample data written to", HERE)
