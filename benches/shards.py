"""Issue 13's measurement: a run split into 2 shard processes with one core each, against
one process with both cores, on the same data.

    python3 benches/shards.py [--workload /tmp/w] [--model gbdt] [--rounds 3]

The workload is compare.py's (data.parquet, gbdt.onnx, mlp.onnx; run compare.py once to make
it). batchscore is target/release/batchscore unless --batchscore says otherwise.

Each round runs, one after the other:
  - whole: `batchscore run` with default settings (a worker per core, 2 here);
  - sharded: `batchscore run --shard 0/2` and `--shard 1/2` started together, each pinned
    to one core with taskset and given `[run] workers = 1`, as two one-core pods would be;
    its wall time runs from the start of both to the end of the last (which commits).
Both commit the same rows (checked from the manifests); the table gives each one's median
rows per second and their ratio (target: the sharded run within 10% of the whole one).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import job_spec  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rows_of(out):
    with open(os.path.join(out, "_manifest.json")) as f:
        return json.load(f)["rows"]


def whole(a, spec, out):
    start = time.time()
    subprocess.run([a.batchscore, "run", spec], check=True, capture_output=True)
    return rows_of(out) / (time.time() - start)


def sharded(a, spec, out, round_):
    # The last round's commit has the same run key: a shard would find nothing to do.
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    procs = [
        subprocess.Popen(
            ["taskset", "-c", str(i), a.batchscore, "run", spec, "--shard", f"{i}/2",
             "--run-id", f"bench-{round_}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for p in procs:
        out_text, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"shard failed:\n{out_text}\n{err}")
    return rows_of(out) / (time.time() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", default="/tmp/w")
    p.add_argument("--model", default="gbdt", choices=["gbdt", "mlp"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batchscore", default=os.path.join(REPO, "target/release/batchscore"))
    a = p.parse_args()
    data = os.path.join(a.workload, "data.parquet")
    if not os.path.exists(data):
        sys.exit(f"no {data}: run benches/compare.py once to make the workload")
    tmp = tempfile.mkdtemp(prefix="batchscore-shards-")
    model = os.path.join(a.workload, f"{a.model}.onnx")
    specs = {}
    for name, extra in [("whole", ""), ("sharded", "[run]\nworkers = 1\n")]:
        out = os.path.join(tmp, name)
        specs[name] = (os.path.join(tmp, f"{name}.toml"), out)
        with open(specs[name][0], "w") as f:
            f.write(job_spec(data, model, a.model, out) + extra)
    results = {"whole": [], "sharded": []}
    for r in range(a.rounds):
        results["whole"].append(whole(a, *specs["whole"]))
        results["sharded"].append(sharded(a, *specs["sharded"], r))
        print(f"round {r + 1}: whole {results['whole'][-1]:,.0f} rows/s, "
              f"2 shards x 1 core {results['sharded'][-1]:,.0f} rows/s", flush=True)
    if rows_of(specs["whole"][1]) != rows_of(specs["sharded"][1]):
        sys.exit("the sharded and whole runs committed different row counts")
    w, s = statistics.median(results["whole"]), statistics.median(results["sharded"])
    print(f"\n| {a.model}, {rows_of(specs['whole'][1]):,} rows | rows/s (median of {a.rounds}) |")
    print("|---|---|")
    print(f"| 1 process, 2 cores | {w:,.0f} |")
    print(f"| 2 shard processes, 1 core each | {s:,.0f} |")
    print(f"| ratio | {s / w:.3f} |")


if __name__ == "__main__":
    main()
