"""The Python half of scripts/test-slurm: makes the bucket, the input and the job specs, and
checks what batchscore left in the bucket and in the Slurm tasks' logs. Each step is a
subcommand; a failed check exits non-zero with a message that says what was expected and
what was found.

    check.py setup WORK          bucket, input split into files and row groups, model, specs
    check.py plan WORK PLAN.json the plan deals every row group to one of 4 non-empty shards
    check.py logs WORK LOG…      each Slurm task's log names its shard and scheduler=Slurm
    check.py uncommitted WORK    nothing committed; shards 0, 1, 3 finished and 2 not
    check.py committed WORK ID   one commit of every row, equal to the single run and the oracle
    check.py unchanged WORK      the bucket's scores/ is as `committed` left it

The S3 server's URL is in S3_ENDPOINT, the bucket's name in S3_BUCKET, the credentials in
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the same the batchscore processes get).
"""

import hashlib
import io
import json
import os
import re
import sys
from pathlib import Path

import boto3
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
SHARDS = 4
# The input is the fraud sample cut into three files of small row groups, so that the run
# has 21 work units and the shard boundaries fall inside files as well as between them.
FILE_ROWS = [1000, 800, 700]
ROW_GROUP_ROWS = 125
TOLERANCE = 1e-6

ENDPOINT = os.environ["S3_ENDPOINT"]
BUCKET = os.environ["S3_BUCKET"]


def fail(msg):
    sys.exit(f"slurm test FAILED: {msg}")


def check(cond, msg):
    if not cond:
        fail(msg)


def s3():
    return boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1")


def keys(prefix):
    out = []
    for page in s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(out)


def get(key):
    return s3().get_object(Bucket=BUCKET, Key=key)["Body"].read()


def setup(work):
    work = Path(work)
    client = s3()
    client.create_bucket(Bucket=BUCKET)
    table = pq.read_table(REPO / "sample_data/fraud/transactions.parquet")
    check(table.num_rows == sum(FILE_ROWS), f"the fraud sample has {table.num_rows} rows, expected {sum(FILE_ROWS)}")
    start = 0
    for i, n in enumerate(FILE_ROWS):
        buf = io.BytesIO()
        pq.write_table(table.slice(start, n), buf, row_group_size=ROW_GROUP_ROWS)
        client.put_object(Bucket=BUCKET, Key=f"fraud/in/part-{i}.parquet", Body=buf.getvalue())
        start += n
    model = (REPO / "sample_data/fraud/fraud_xgb.onnx").read_bytes()
    client.put_object(Bucket=BUCKET, Key="models/fraud_xgb.onnx", Body=model)

    # The repository's fraud job with its input, model and output moved into the bucket.
    text = (REPO / "jobs/fraud.toml").read_text()
    for old, new in [
        ('"../sample_data/fraud/transactions.parquet"', f'"s3://{BUCKET}/fraud/in/"'),
        ('"../sample_data/fraud/fraud_xgb.onnx"', f'"s3://{BUCKET}/models/fraud_xgb.onnx"\nsha256 = "{hashlib.sha256(model).hexdigest()}"'),
        ('"../out/fraud/"', '"${output}"'),
    ]:
        check(old in text, f"jobs/fraud.toml no longer holds {old}; update scripts/slurm/check.py")
        text = text.replace(old, new)
    check("\n[run]\n" in text, "jobs/fraud.toml has no [run] table; update scripts/slurm/check.py")
    storage = f'\n[storage]\nendpoint = "{ENDPOINT}"\nallow_http = true\n'
    # The sharded job gives its shard count, so a Slurm array task's id is its shard.
    sharded = text.replace("\n[run]\n", f"\n[run]\nshards = {SHARDS}\n").replace("${output}", f"s3://{BUCKET}/scores/")
    (work / "sharded.toml").write_text(sharded + storage)
    # The same job as one process, for comparison: no shard count, another prefix.
    (work / "single.toml").write_text(text.replace("${output}", f"s3://{BUCKET}/single/") + storage)
    print(f"bucket {BUCKET}: {len(FILE_ROWS)} input files, {table.num_rows} rows, row groups of {ROW_GROUP_ROWS}")


def plan(work, plan_json):
    p = json.loads(Path(plan_json).read_text())
    groups = sum(-(-n // ROW_GROUP_ROWS) for n in FILE_ROWS)
    units = p["units"]
    check(len(units) == groups, f"plan: {len(units)} units, expected one per row group ({groups})")
    check(sum(u["rows"] for u in units) == sum(FILE_ROWS), f"plan: the units hold {sum(u['rows'] for u in units)} rows, expected {sum(FILE_ROWS)}")
    shards = p["shards"]
    check([s["index"] for s in shards] == list(range(SHARDS)), f"plan: shards {[s['index'] for s in shards]}, expected 0..{SHARDS - 1}")
    for s in shards:
        check(s["units"]["end"] > s["units"]["start"], f"plan: shard {s['index']} has no units, so the test would not exercise it: {s}")
    files = [{u["file"] for u in units if s["units"]["start"] <= u["index"] < s["units"]["end"]} for s in shards]
    check(any(len(f) > 1 for f in files), f"plan: no shard spans two files ({files}); change FILE_ROWS or ROW_GROUP_ROWS")
    print("plan: " + ", ".join(f"shard {s['index']} {s['rows']} rows" for s in shards))


def logs(work, *files):
    """Each array task's log (slurm-<job>_<task>.out) says it took its shard from Slurm."""
    for f in files:
        task = int(re.search(r"_(\d+)\.out$", f).group(1))
        text = Path(f).read_text()
        if "injected failure" in text:
            check(task == 2, f"{f}: the injected failure is for task 2 only:\n{text}")
            continue
        # The log quotes the field's value (scheduler="Slurm (SLURM_ARRAY_TASK_ID)"); the
        # README writes it without the quotes.
        want = rf'--shard auto shard={task}/{SHARDS} scheduler="?Slurm \(SLURM_ARRAY_TASK_ID\)'
        check(re.search(want, text), f"{f}: no log line matching {want}:\n{text}")
    print(f"logs: {len(files)} task log(s) checked")


def uncommitted(work):
    scores = keys("scores/")
    for name in ["_SUCCESS", "_manifest.json", "_metrics.json"]:
        check(f"scores/{name}" not in scores, f"scores/{name} exists after shard 2 failed: nothing should be committed. Objects:\n" + "\n".join(scores))
    check(not any(re.match(r"scores/part-", k) for k in scores), "committed parts under scores/ after shard 2 failed:\n" + "\n".join(scores))
    finished = sorted(int(m.group(1)) for k in scores if (m := re.fullmatch(r"scores/_run/shards/(\d+)\.json", k)))
    check(finished == [0, 1, 3], f"shards recorded finished in scores/_run/shards/: {finished}, expected [0, 1, 3]")
    print("uncommitted: no _SUCCESS, no _manifest.json, shards 0, 1, 3 finished, 2 not")


def read_rows(prefix, manifest):
    """The committed output: exactly the parts the manifest lists, as txn_id -> (p, label)."""
    listed = sorted(f"{prefix}{f['path']}" for f in manifest["files"])
    present = sorted(k for k in keys(prefix) if re.match(re.escape(prefix) + r"part-", k))
    check(listed == present, f"{prefix}: the manifest lists {listed}, the bucket holds {present}")
    rows = {}
    for f in manifest["files"]:
        t = pq.read_table(io.BytesIO(get(prefix + f["path"])))
        check(t.num_rows == f["rows"], f"{prefix}{f['path']}: {t.num_rows} rows, the manifest says {f['rows']}")
        for txn, p, label in zip(t["txn_id"].to_pylist(), t["fraud_probability"].to_pylist(), t["fraud_label"].to_pylist()):
            check(txn not in rows, f"{prefix}: txn_id {txn} appears more than once")
            rows[txn] = (p, label)
    return rows


def compare(name, got, want):
    check(got.keys() == want.keys(), f"{name}: txn_ids differ: {len(got.keys() - want.keys())} extra, {len(want.keys() - got.keys())} missing")
    worst = 0.0
    for txn, (p, label) in want.items():
        gp, glabel = got[txn]
        check(glabel == label, f"{name}: txn_id {txn}: fraud_label {glabel}, expected {label}")
        check(abs(gp - p) <= TOLERANCE, f"{name}: txn_id {txn}: fraud_probability {gp}, expected {p} (within {TOLERANCE})")
        worst = max(worst, abs(gp - p))
    return worst


def committed(work, first_job_id):
    rows_in = sum(FILE_ROWS)
    scores = keys("scores/")
    for name in ["_SUCCESS", "_manifest.json", "_metrics.json"]:
        n = sum(k.rsplit("/", 1)[-1] == name for k in keys(""))
        check(n == 2, f"{n} objects named {name} in the bucket, expected one under scores/ and one under single/")
        check(f"scores/{name}" in scores, f"no scores/{name} after the rerun of shard 2")
    leftovers = [k for k in scores if k.startswith(("scores/_run/", "scores/_staging/"))]
    check(not leftovers, "the run's folder or staging is left after the commit:\n" + "\n".join(leftovers))
    manifest = json.loads(get("scores/_manifest.json"))
    metrics = json.loads(get("scores/_metrics.json"))
    check(manifest["rows"] == rows_in, f"_manifest.json rows = {manifest['rows']}, expected {rows_in}")
    check(manifest["rejected_rows"] == 0, f"_manifest.json rejected_rows = {manifest['rejected_rows']}, expected 0")
    check(metrics["rows"]["scored"] == rows_in, f"_metrics.json rows.scored = {metrics['rows']['scored']}, expected {rows_in}")
    check(metrics["run_id"] == manifest["run_id"], f"_metrics.json run_id {metrics['run_id']!r} != _manifest.json run_id {manifest['run_id']!r}")
    # The rerun was another Slurm job; it joined the first job's run rather than starting one.
    check(manifest["run_id"] == first_job_id, f"run_id {manifest['run_id']!r}, expected the first array job's id {first_job_id!r}")
    # Every shard's parts are in the commit, named part-<shard>-<worker>-<n>.
    from_shards = sorted({int(f["path"].split("-")[1]) for f in manifest["files"]})
    check(from_shards == list(range(SHARDS)), f"the committed parts come from shards {from_shards}, expected 0..{SHARDS - 1}: {[f['path'] for f in manifest['files']]}")
    sharded = read_rows("scores/", manifest)
    check(len(sharded) == rows_in, f"scores/: {len(sharded)} distinct txn_ids, expected {rows_in}")

    single_manifest = json.loads(get("single/_manifest.json"))
    single = read_rows("single/", single_manifest)
    t = pq.read_table(REPO / "sample_data/fraud/expected.parquet")
    oracle = dict(zip(t["txn_id"].to_pylist(), zip(t["fraud_probability"].to_pylist(), t["fraud_label"].to_pylist())))
    check(len(oracle) == rows_in, f"expected.parquet has {len(oracle)} distinct txn_ids, expected {rows_in}")
    d_single = compare("sharded vs single-process run", sharded, single)
    d_oracle = compare("sharded vs onnxruntime (expected.parquet)", sharded, oracle)
    compare("single-process run vs onnxruntime (expected.parquet)", single, oracle)
    # What `unchanged` compares with, after a shard runs again.
    snapshot = {k: get(k).decode("latin-1") if k.rsplit("/", 1)[-1].startswith("_") else None for k in scores}
    (Path(work) / "committed.json").write_text(json.dumps(snapshot))
    print(
        f"committed: run {manifest['run_id']}, {manifest['rows']} rows in {len(manifest['files'])} parts from {SHARDS} shards, "
        f"each txn_id once; max |diff| {d_single:.1e} against the single run, {d_oracle:.1e} against onnxruntime"
    )


def unchanged(work):
    before = json.loads((Path(work) / "committed.json").read_text())
    now = keys("scores/")
    check(sorted(before) == now, f"scores/ changed: added {sorted(set(now) - set(before))}, removed {sorted(set(before) - set(now))}")
    for k, text in before.items():
        if text is not None:
            check(get(k).decode("latin-1") == text, f"{k} changed")
    print(f"unchanged: the {len(now)} objects under scores/ and the manifest, metrics and _SUCCESS")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"setup": setup, "plan": plan, "logs": logs, "uncommitted": uncommitted, "committed": committed, "unchanged": unchanged}[cmd](*args)
