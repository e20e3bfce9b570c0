"""Compare batchscore with its peers on the shared workload, in one run, and print a table.

    python3 benches/compare.py --workload /tmp/w --python /tmp/peers/bin/python

--python is an interpreter with ../shared/bench/requirements.txt installed (onnxruntime,
pyarrow, lightgbm, scikit-learn, skl2onnx, onnxmltools, ...). The workload is made with
../shared/bench/make_workload.py when --workload holds no data.parquet. batchscore is
target/release/batchscore unless --batchscore says otherwise (build it with
`cargo build --release`).

Each row: rows per second and peak RSS of batchscore, of the pyarrow + onnxruntime peer, and
the inference-only ceiling (onnxruntime on tensors already in memory), with the ratios. Only
ratios from one run on one machine mean anything: these machines are noisy.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BENCH = os.path.join(REPO, "..", "shared", "bench")
FEATURES = [f"f{j:02d}" for j in range(28)]
MODEL_INPUT = {"gbdt": "features", "mlp": "X"}


def timed(cmd, env=None):
    """Runs cmd; returns (seconds, peak RSS in MiB, stdout)."""
    start = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    out = p.stdout.read()
    err = p.stderr.read()
    p.wait()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return time.time() - start, usage.ru_maxrss / 1024, out


def job_spec(workload, model, out):
    cols = ", ".join(f'"{c}"' for c in FEATURES)
    return f"""name = "bench-{model}"
[input]
uri = "{workload}/data.parquet"
[model]
uri = "{workload}/{model}.onnx"
[inputs.{MODEL_INPUT[model]}]
columns = [{cols}]
fill_null = 0
[output]
uri = "{out}/"
passthrough = ["customer_id"]
mode = "overwrite"
[outputs]
score = "probabilities[1]"
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="/tmp/w")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--batchscore", default=os.path.join(REPO, "target/release/batchscore"))
    ap.add_argument("--models", default="gbdt,mlp")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.workload, "data.parquet")):
        subprocess.run([a.python, os.path.join(BENCH, "make_workload.py"), a.workload, str(a.rows)], check=True)
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", os.path.join(REPO, ".ort/lib/libonnxruntime.so.1.31.1"))
    env["RUST_LOG"] = "error"
    rows = a.rows
    print(f"| model | batchscore rows/s | peak RSS MiB | pyarrow+ORT rows/s | ratio | inference-only rows/s | ratio |")
    print(f"|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models.split(","):
            spec = os.path.join(tmp, f"{model}.toml")
            with open(spec, "w") as f:
                f.write(job_spec(a.workload, model, os.path.join(tmp, f"out-{model}")))
            secs, rss, out = timed([a.batchscore, "run", spec], env)
            scored = int(re.search(r": (\d+) rows scored", out).group(1))
            ours = scored / secs
            peers = os.path.join(BENCH, "peers.py")
            model_path = os.path.join(a.workload, f"{model}.onnx")
            data = os.path.join(a.workload, "data.parquet")
            psecs, _, _ = timed([a.python, peers, "pyarrow", data, model_path, os.path.join(tmp, "p")])
            peer = rows / psecs
            _, _, raw = timed([a.python, peers, "raw-ort", data, model_path, os.path.join(tmp, "r")])
            ceiling = float(re.search(r"inference-only rows/s (\d+)", raw).group(1))
            print(
                f"| {model} | {ours:,.0f} | {rss:,.0f} | {peer:,.0f} | {ours / peer:.2f}x "
                f"| {ceiling:,.0f} | {ours / ceiling:.2f}x |"
            )


if __name__ == "__main__":
    main()
