"""What the distributions and drift of `_metrics.json` cost: the benchmark's GBDT job
(../shared/bench's 2M-row workload, as benches/compare.py runs it) with `[monitor]
distributions = false`, with the default (distributions), and with `baseline = "previous"`
(every value also counted into the previous run's bins), in interleaved rounds.

    python3 benches/monitor_overhead.py [--workload /tmp/w] [--rounds 5]

Prints each variant's median wall and CPU (user + system, from getrusage of the child)
seconds and their ratios to the run without distributions. batchscore is
target/release/batchscore unless --batchscore says otherwise.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The benchmark's own job, so that both scripts score exactly the same thing.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import job_spec  # noqa: E402

VARIANTS = {
    "off": "[monitor]\ndistributions = false\n",
    "distributions": "",
    "drift": '[monitor]\nbaseline = "previous"\n',
}


def spec(workload, out, monitor):
    data, model = os.path.join(workload, "data.parquet"), os.path.join(workload, "gbdt.onnx")
    return job_spec(data, model, "gbdt", out) + monitor


def measured(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="/tmp/w")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batchscore", default=os.path.join(REPO, "target/release/batchscore"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bs-monitor-")
    jobs = {}
    for name, monitor in VARIANTS.items():
        jobs[name] = os.path.join(tmp, f"{name}.toml")
        with open(jobs[name], "w") as f:
            f.write(spec(a.workload, os.path.join(tmp, f"out-{name}"), monitor))
    # A first run of each: warms the page cache, and gives `drift` its previous run.
    for job in jobs.values():
        measured([a.batchscore, "run", job])
    times = {name: [] for name in jobs}
    for _ in range(a.rounds):
        for name, job in jobs.items():
            times[name].append(measured([a.batchscore, "run", job]))
    base_wall = statistics.median(w for w, _ in times["off"])
    base_cpu = statistics.median(c for _, c in times["off"])
    print(f"{'variant':<14} {'wall s':>8} {'cpu s':>8} {'wall/off':>9} {'cpu/off':>8}")
    for name, t in times.items():
        wall = statistics.median(w for w, _ in t)
        cpu = statistics.median(c for _, c in t)
        print(f"{name:<14} {wall:8.2f} {cpu:8.2f} {wall / base_wall:9.3f} {cpu / base_cpu:8.3f}")


if __name__ == "__main__":
    sys.exit(main())
