#!/usr/bin/env python3
"""Writes tests/sql/predict.slt: sqllogictest cases for `predict` and `predict_output`, whose
expected results come from the oracle, sample_data/*/expected.parquet (onnxruntime's Python
API, sample_data/make_samples.py), and from the sample inputs themselves (pyarrow only: no
batchscore, no DataFusion).

Floats are compared after SQL's round(CAST(x AS DOUBLE), DECIMALS). This script rounds the
oracle's values the way DataFusion's round() does (x * 10^d, rounded half away from zero,
divided by 10^d, in float64) and prints them as tests/sqllogic.rs prints floats (Rust's
shortest representation, no exponent: trailing zeros and a trailing point dropped). It refuses
a value within 1e-3 of a rounding tie, where summation order could tip it.

Run from the repository root: .venv-test/bin/python tests/sql/make_slt.py
"""

import math
import pathlib

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/sql/predict.slt"
D = 6  # decimals kept by round()


def rounded(x, d=D):
    """DataFusion's round(x, d) on a float64, printed as tests/sqllogic.rs prints it."""
    if x is None:
        return "NULL"
    f = 10.0**d
    y = float(x) * f
    frac = y - math.floor(y)
    if abs(frac - 0.5) < 1e-3:
        raise SystemExit(f"{x!r} is too close to a rounding tie at {d} decimals")
    r = math.floor(y) if frac < 0.5 else math.ceil(y)
    v = r / f
    text = f"{v:.{d}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def table(path):
    return pq.read_table(ROOT / path).to_pylist()


CHURN_F = "tenure, monthly_charges, coalesce(total_charges, 0), ln(1 + support_calls), is_senior"
CHURN_RAW = "tenure, monthly_charges, total_charges, ln(1 + support_calls), is_senior"
CHURN_DATA = "'sample_data/churn/data/'"


def churn_cases(out):
    oracle = {r["customer_id"]: r for r in table("sample_data/churn/expected.parquet")}
    data = ds.dataset(ROOT / "sample_data/churn/data", partitioning="hive").to_table()
    rows = sorted(data.to_pylist(), key=lambda r: r["customer_id"])
    eu = [r for r in rows if r["region"] == "eu"]

    out.append("# churn: a [?, 5] tensor input fed by five arguments; probabilities[1] and label.")
    out.append("query IRI")
    out.append(
        f"SELECT customer_id, round(CAST(predict_output('churn', 'probabilities[1]', {CHURN_F}) AS DOUBLE), {D}), "
        f"predict_output('churn', 'label', {CHURN_F}) FROM {CHURN_DATA} WHERE region = 'eu' "
        "ORDER BY customer_id LIMIT 12"
    )
    out.append("----")
    for r in eu[:12]:
        o = oracle[r["customer_id"]]
        out.append(f"{r['customer_id']} {rounded(o['churn_probability'])} {o['churn_label']}")
    out.append("")

    nulls = [r for r in eu if r["total_charges"] is None][:3]
    ids = ", ".join(str(r["customer_id"]) for r in nulls)
    out.append("# A null feature gives NULL; coalesce() fills it as the job's fill_null = 0.0 does.")
    out.append("query IRR")
    out.append(
        f"SELECT customer_id, round(CAST(predict_output('churn', 'probabilities[1]', {CHURN_RAW}) AS DOUBLE), {D}), "
        f"round(CAST(predict_output('churn', 'probabilities[1]', {CHURN_F}) AS DOUBLE), {D}) "
        f"FROM {CHURN_DATA} WHERE customer_id IN ({ids}) ORDER BY customer_id"
    )
    out.append("----")
    for r in nulls:
        out.append(f"{r['customer_id']} NULL {rounded(oracle[r['customer_id']]['churn_probability'])}")
    out.append("")

    scored = sum(1 for r in eu if r["total_charges"] is not None)
    out.append("# Rows with a NULL prediction are not counted.")
    out.append("query II")
    out.append(
        f"SELECT count(*), count(predict_output('churn', 'label', {CHURN_RAW})) FROM {CHURN_DATA} WHERE region = 'eu'"
    )
    out.append("----")
    out.append(f"{len(eu)} {scored}")
    out.append("")

    out.append("# Aggregates over predictions: the oracle's mean per region.")
    out.append("query TRI")
    out.append(
        f"SELECT region, round(avg(predict_output('churn', 'probabilities[1]', {CHURN_F})), {D}), count(*) "
        f"FROM {CHURN_DATA} WHERE region <> 'apac' GROUP BY region ORDER BY region"
    )
    out.append("----")
    for region in ("eu", "us"):
        ps = [float(o["churn_probability"]) for o in oracle.values() if o["region"] == region]
        out.append(f"{region} {rounded(sum(ps) / len(ps))} {len(ps)}")
    out.append("")


def houses_cases(out):
    oracle = {r["house_id"]: r["price"] for r in table("sample_data/houses/expected.parquet")}
    rows = sorted(
        pacsv.read_csv(ROOT / "sample_data/houses/houses.csv.gz").to_pylist(),
        key=lambda r: r["house_id"],
    )
    feats = "rooms, area_m2, built, km_to_center"
    out.append("# houses: predict() of a single-output model (variable, float64 [?, 1]), from CSV.")
    out.append("query TR")
    out.append(
        f"SELECT house_id, round(predict('price', {feats}), 4) FROM 'sample_data/houses/houses.csv.gz' "
        "ORDER BY house_id LIMIT 8"
    )
    out.append("----")
    for r in rows[:8]:
        out.append(f"{r['house_id']} {rounded(oracle[r['house_id']], 4)}")
    out.append("")

    first = rows[0]
    out.append(f"# Literal arguments: {first['house_id']}'s features typed in.")
    out.append("query R")
    lits = ", ".join(repr(first[k]) for k in ("rooms", "area_m2", "built", "km_to_center"))
    out.append(f"SELECT round(predict('price', {lits}), 4)")
    out.append("----")
    out.append(rounded(oracle[first["house_id"]], 4))
    out.append("")


def fraud_cases(out):
    oracle = {r["txn_id"]: r for r in table("sample_data/fraud/expected.parquet")}
    ids = sorted(oracle)[:10]
    out.append("# fraud: six float32 columns into a [?, 6] input; a filter and ORDER BY on the prediction.")
    out.append("query IRI")
    out.append(
        f"SELECT txn_id, round(CAST(predict_output('fraud', 'probabilities[1]', x0, x1, x2, x3, x4, x5) AS DOUBLE), {D}) AS p, "
        "predict_output('fraud', 'label', x0, x1, x2, x3, x4, x5) "
        f"FROM 'sample_data/fraud/transactions.parquet' WHERE txn_id <= {ids[-1]} ORDER BY txn_id"
    )
    out.append("----")
    for i in ids:
        o = oracle[i]
        out.append(f"{i} {rounded(o['fraud_probability'])} {o['fraud_label']}")
    out.append("")

    flagged = sum(1 for o in oracle.values() if o["fraud_label"] == 1)
    out.append("query I")
    out.append(
        "SELECT count(*) FROM 'sample_data/fraud/transactions.parquet' "
        "WHERE predict_output('fraud', 'label', x0, x1, x2, x3, x4, x5) = 1"
    )
    out.append("----")
    out.append(str(flagged))
    out.append("")


def plans_cases(out):
    oracle = {r["account"]: r for r in table("sample_data/plans/expected.parquet")}
    accounts = sorted(oracle)[:8]
    feats = "plan, country, age, usage"
    out.append("# plans: four per-column inputs (string, string, int64, float32), one argument each;")
    out.append("# a ZipMap output read by element, as [outputs] reads it.")
    out.append("query TTR")
    quoted = ", ".join(f"'{a}'" for a in accounts)
    out.append(
        f"SELECT account, predict_output('plans', 'output_label', {feats}), "
        f"round(CAST(predict_output('plans', 'output_probability[2]', {feats}) AS DOUBLE), {D}) "
        f"FROM 'sample_data/plans/accounts.parquet' WHERE account IN ({quoted}) ORDER BY account"
    )
    out.append("----")
    for a in accounts:
        o = oracle[a]
        out.append(f"{a} {o['output_label']} {rounded(o['p_upgrade'])}")
    out.append("")


def refusals(out):
    out.append("# Refusals while planning, naming the model, the output, the argument.")
    for sql, pattern in [
        (f"SELECT predict('churn', {CHURN_F}) FROM {CHURN_DATA}",
         r'model "churn" has 2 outputs \(label, probabilities\)'),
        (f"SELECT predict_output('churn', 'label', tenure) FROM {CHURN_DATA}",
         r'model "churn" takes 5 feature arguments \(features float32 \[\?, 5\]\), but 1 is given'),
        (f"SELECT predict_output('churn', 'scores', {CHURN_F}) FROM {CHURN_DATA}",
         r'the model has no output "scores"'),
        (f"SELECT predict('nope', {CHURN_F}) FROM {CHURN_DATA}",
         r'no model "nope"'),
        ("SELECT predict_output('plans', 'output_label', plan, country, now(), usage) FROM 'sample_data/plans/accounts.parquet'",
         r'argument 5 \(now\(\)\) has type Timestamp.*model input "age" \(int64\)'),
    ]:
        out.append(f"query error {pattern}")
        out.append(sql)
        out.append("")


def main():
    out = [
        "# predict() and predict_output() over the sample models.",
        "# GENERATED by tests/sql/make_slt.py from sample_data/*/expected.parquet (onnxruntime's",
        "# Python API) and the sample inputs; do not edit, rerun it. Run by tests/sqllogic.rs, with",
        "# the models registered as churn, price, fraud and plans, from the repository root.",
        "",
    ]
    churn_cases(out)
    houses_cases(out)
    fraud_cases(out)
    plans_cases(out)
    refusals(out)
    OUT.write_text("\n".join(out).rstrip("\n") + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
