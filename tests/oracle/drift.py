"""An oracle for batchscore's distributions and drift, independent of batchscore: numpy and
pyarrow only (both pinned in scripts/test). The tests in tests/operate.rs run it with
$BATCHSCORE_TEST_PYTHON and compare its figures with what a run wrote in _metrics.json.

    drift.py inputs BASE SHIFTED
        Writes two Parquet files with the churn model's input columns (customer_id int64,
        tenure int32, monthly_charges decimal(8,2), total_charges float64 with nulls,
        support_calls int64, is_senior bool), drawn from fixed seeds: SHIFTED is another draw
        of the same distributions with tenure moved up by 12 months.

    drift.py column BASELINE_METRICS INPUT COLUMN [CURRENT_METRICS]
        The distribution of feature COLUMN of the Parquet file INPUT as the model reads it
        (each value as float32, as ONNX's tensor(float) holds it): count, nulls, mean, std
        (population), min, max, numpy's percentiles; and its population stability index
        against the histogram that BASELINE_METRICS (a _metrics.json) recorded for the
        column: PSI = sum((a - b) * ln(a / b)) over the baseline's bins, b the baseline's
        proportions, a this input's values counted into the baseline's edges with
        numpy.searchsorted(edges[1:-1], v, side="right"), each proportion floored at 1e-4.
        With CURRENT_METRICS (the _metrics.json of the run that read INPUT), also where each
        of that run's estimated quantiles ranks among INPUT's values: [fraction below it,
        fraction at or below it]. Prints JSON.

    drift.py describe COLUMN PARQUET...
        A column of the PARQUET files (their rows together) as numpy sees it: count (non-null), mean, std (population), min,
        max, and the count of each value (numpy.unique) as {"value": count}. Prints JSON.
"""

import decimal
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EPSILON = 1e-4
ROWS = 3000


def churn_inputs(seed, tenure_shift):
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, ROWS) + tenure_shift
    cents = rng.integers(1500, 12000, ROWS)
    total = tenure * cents / 100.0 * rng.uniform(0.9, 1.1, ROWS)
    missing = rng.random(ROWS) < 0.05
    calls = rng.poisson(1.5, ROWS)
    senior = rng.random(ROWS) < 0.2
    ids = np.arange(ROWS, dtype=np.int64) + 1_000_000 * seed
    return pa.table(
        {
            "customer_id": pa.array(ids, pa.int64()),
            "tenure": pa.array(tenure.astype(np.int32), pa.int32()),
            "monthly_charges": pa.array(
                [decimal.Decimal(int(c)).scaleb(-2) for c in cents], pa.decimal128(8, 2)
            ),
            "total_charges": pa.array(total, pa.float64(), mask=missing),
            "support_calls": pa.array(calls.astype(np.int64), pa.int64()),
            "is_senior": pa.array(senior, pa.bool_()),
        }
    )


def model_values(column):
    """A column's non-null values as the model's float32 input holds them."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    valid = column.drop_null()
    if pa.types.is_decimal(valid.type):
        # Unscaled integer over 10^scale in float64, then float32: what arrow's cast does.
        scale = valid.type.scale
        unscaled = np.array([int(d.scaleb(scale)) for d in valid.to_pylist()], dtype=np.int64)
        as_f64 = unscaled.astype(np.float64) / 10.0**scale
    else:
        as_f64 = valid.to_numpy(zero_copy_only=False).astype(np.float64)
    return as_f64.astype(np.float32).astype(np.float64), column.null_count


def psi(baseline_counts, current_counts):
    b = np.asarray(baseline_counts, dtype=np.float64)
    a = np.asarray(current_counts, dtype=np.float64)
    b = np.maximum(b / b.sum(), EPSILON)
    a = np.maximum(a / a.sum(), EPSILON)
    return float(np.sum((a - b) * np.log(a / b)))


def column(baseline_metrics, input_path, name, current_metrics=None):
    with open(baseline_metrics) as f:
        baseline = json.load(f)["distributions"][name]
    edges = np.asarray(baseline["histogram"]["edges"], dtype=np.float64)
    baseline_counts = baseline["histogram"]["counts"]
    values, nulls = model_values(pq.read_table(input_path).column(name))
    finite = values[np.isfinite(values)]
    bins = np.searchsorted(edges[1:-1], finite, side="right")
    counts = np.bincount(bins, minlength=len(edges) - 1)
    levels = {"p01": 1, "p05": 5, "p25": 25, "p50": 50, "p75": 75, "p95": 95, "p99": 99}
    ranks = None
    if current_metrics is not None:
        with open(current_metrics) as f:
            estimated = json.load(f)["distributions"][name]["quantiles"]
        ordered = np.sort(finite)
        ranks = {
            k: [
                float(np.searchsorted(ordered, q, side="left") / ordered.size),
                float(np.searchsorted(ordered, q, side="right") / ordered.size),
            ]
            for k, q in estimated.items()
        }
    return {
        "count": int(finite.size),
        "nulls": int(nulls),
        "non_finite": int(values.size - finite.size),
        "mean": float(np.mean(finite)),
        "std": float(np.std(finite)),
        "min": float(np.min(finite)),
        "max": float(np.max(finite)),
        "quantiles": {k: float(np.percentile(finite, q)) for k, q in levels.items()},
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "baseline_counts": baseline_counts,
        "psi": psi(baseline_counts, counts),
        "bins": len(edges) - 1,
        "quantile_ranks": ranks,
    }


def describe(name, paths):
    values = pa.concat_arrays(
        [pq.read_table(p).column(name).combine_chunks() for p in paths]
    ).drop_null().to_numpy(zero_copy_only=False)
    labels, counts = np.unique(values, return_counts=True)
    numbers = values.astype(np.float64)
    return {
        "count": int(values.size),
        "mean": float(np.mean(numbers)),
        "std": float(np.std(numbers)),
        "min": float(np.min(numbers)),
        "max": float(np.max(numbers)),
        "classes": {str(label): int(n) for label, n in zip(labels.tolist(), counts.tolist())},
    }


def main(argv):
    match argv:
        case ["inputs", base, shifted]:
            pq.write_table(churn_inputs(1, 0), base)
            pq.write_table(churn_inputs(2, 12), shifted)
        case ["column", baseline_metrics, input_path, name, *current] if len(current) <= 1:
            print(json.dumps(column(baseline_metrics, input_path, name, *current)))
        case ["describe", name, *paths] if paths:
            print(json.dumps(describe(name, paths)))
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
