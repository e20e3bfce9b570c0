"""Issue 5's benchmark: batchscore against its peers and two ceilings, in one run, as tables.

    python3 benches/compare.py --python /tmp/peers/bin/python [--workload /tmp/w]
    python3 benches/compare.py --python /tmp/peers/bin/python --models gbdt,xgb,rf [--tree-engines native,onnxruntime]

--python is an interpreter with onnxruntime==1.31.1, pyarrow, polars, pyspark, pandas and
numpy (../shared/bench/requirements.txt has them all; lightgbm, scikit-learn, skl2onnx and
onnxmltools too if the workload must be made). The workload (2M rows, 28 float64 features
with nulls, gbdt.onnx and mlp.onnx) is made with ../shared/bench/make_workload.py when
--workload holds no data.parquet; an 8M-row copy for the memory check goes to
--workload-8m (made the same way when missing). batchscore is target/release/batchscore
unless --batchscore says otherwise (`cargo build --release`).

--models takes gbdt and mlp (make_workload.py's) and the tree ensembles xgb and rf, made by
benches/make_trees.py beside them when missing (it needs xgboost==3.2.0 in --python).

What it runs, each as its own process, one after the other, on the same machine:
  - batchscore run, Parquet in and out, default settings (and the CSV version for the MLP);
  - for the tree models (gbdt, xgb, rf): batchscore run again with `[run] tree_engine = "native"`
    and with `tree_engine = "onnxruntime"`, one row each (--tree-engines picks them); an engine
    the binary refuses (a build without the key) is said so and left out;
  - the peers of ../shared/bench/peers.py: pyarrow + onnxruntime, polars + onnxruntime,
    PySpark mapInPandas, pyarrow's CSV reader + onnxruntime;
  - the ceilings: `batchscore bench` (ONNX Runtime inference-only on tensors in memory,
    through the same library, best batch size and thread layout, over as many rows as the
    run scores) and Parquet decode-only (peers.py read-only);
  - batchscore on the 8M-row workload, --rounds times (the median peak RSS must stay within
    20% of the 2M-row rounds' median);
  - batchscore on a 10-row input (start-up), best of five.

Only ratios from one run on one machine mean anything, and even within a run these 2-core
machines are noisy (the same batchscore job ranges over +-8% from one minute to the next).
So the 2M-row comparisons are made in --rounds rounds (default 3), each round running every
contender once, interleaved, and the tables give each one's median; the rounds' figures are
printed under the tables.

For the tree models a last table sets the native engine against the ceiling and against
`tree_engine = "onnxruntime"`, with targets: native whole run >= 3x the inference-only ceiling for
gbdt, >= 2x for xgb and rf; native >= 3x the onnxruntime engine's whole run for gbdt; native's
peak RSS no more than 64 MiB above the onnxruntime engine's (2M rows, the worst of the rounds).
The table also gives the native evaluator's own inference-only rate (`batchscore bench`'s
native rows, best of its layouts), the most its whole run could reach.
"""

import argparse
import json
import statistics
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BENCH = os.path.join(REPO, "..", "shared", "bench")
PEERS = os.path.join(BENCH, "peers.py")
FEATURES = [f"f{j:02d}" for j in range(28)]
MODEL_INPUT = {"gbdt": "features", "mlp": "X", "xgb": "features", "rf": "features"}
TREE_MODELS = ("gbdt", "xgb", "rf")  # the ones the [run] tree_engine key applies to
TREE_ENGINES = ("native", "onnxruntime")
# Native engine's targets: (whole run / inference-only ceiling, whole run / tree_engine = "onnxruntime")
TREE_FLOORS = {"gbdt": (3.0, 3.0), "xgb": (2.0, None), "rf": (2.0, None)}
TREE_RSS_MARGIN = 64  # MiB the native engine's peak RSS may exceed the onnxruntime engine's


class Failed(Exception):
    """A command that exited non-zero; the message is its stderr (or stdout)."""


def run_measured(cmd, env=None, check=True):
    """Runs cmd; returns (seconds, its peak RSS in MiB, stdout). When it fails: exits, or with
    check=False raises Failed."""
    start = time.time()
    # stdout and stderr go to files, not pipes: a chatty process cannot block on a full pipe
    # while we wait for it.
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        secs = time.time() - start
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    if os.waitstatus_to_exitcode(status) != 0:
        if not check:
            raise Failed(err.strip() or out.strip())
        sys.exit(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return secs, usage.ru_maxrss / 1024, out


def job_spec(data, model_path, model, out, fmt="parquet", tree_engine=None):
    cols = ", ".join(f'"{c}"' for c in FEATURES)
    run = "" if tree_engine is None else f'[run]\ntree_engine = "{tree_engine}"\n'
    return f"""name = "bench-{model}"
[input]
uri = "{data}"
format = "{fmt}"
[model]
uri = "{model_path}"
[inputs.{MODEL_INPUT[model]}]
columns = [{cols}]
fill_null = 0
[output]
uri = "{out}/"
passthrough = ["customer_id"]
mode = "overwrite"
[outputs]
score = "probabilities[1]"
{run}"""


def batchscore_run(a, env, tmp, data, model, workload, fmt="parquet", tree_engine=None):
    """(rows/s, peak RSS MiB) of one batchscore run. With tree_engine, a failure raises Failed
    (the caller skips that engine) instead of ending the benchmark."""
    spec = os.path.join(tmp, f"{model}-{fmt}-{os.path.basename(workload)}-{tree_engine or 'default'}.toml")
    with open(spec, "w") as f:
        f.write(job_spec(data, os.path.join(workload, f"{model}.onnx"), model, os.path.join(tmp, "out"), fmt,
                         tree_engine))
    secs, rss, out = run_measured([a.batchscore, "run", spec], env, check=tree_engine is None)
    scored = int(re.search(r": (\d+) rows scored", out).group(1))
    return scored / secs, rss


def peer(a, mode, data, model_path, tmp):
    # Spark's Python workers must be the interpreter with the peers' packages.
    env = dict(os.environ, PYSPARK_PYTHON=a.python, PYSPARK_DRIVER_PYTHON=a.python)
    secs, rss, out = run_measured([a.python, PEERS, mode, data, model_path, os.path.join(tmp, f"peer-{mode}")], env)
    m = re.search(r"rows (\d+) seconds [\d.]+ rows/s (\d+)", out)
    return float(m.group(2)), rss


def ensure_workload(a, path, rows, models=()):
    if not os.path.exists(os.path.join(path, "data.parquet")):
        print(f"making the {rows:,}-row workload in {path} …", file=sys.stderr)
        subprocess.run([a.python, os.path.join(BENCH, "make_workload.py"), path, str(rows)], check=True)
    if any(m in ("xgb", "rf") and not os.path.exists(os.path.join(path, f"{m}.onnx")) for m in models):
        print(f"making xgb.onnx and rf.onnx in {path} …", file=sys.stderr)
        subprocess.run([a.python, os.path.join(HERE, "make_trees.py"), path], check=True)


def refusal(err):
    """Why batchscore would not run a tree_engine job, in a line: the key refused (a build from
    before it), or else its error's first line, cut short."""
    if "unknown field `tree_engine`" in err:
        return "this build refuses the [run] tree_engine key (built before it existed?)"
    lines = [l.strip() for l in err.splitlines() if l.strip()]
    why = next((l for l in lines if "error" in l.lower()), lines[-1] if lines else "no message")
    return why if len(why) <= 200 else why[:200] + " …"


def verdict(ok):
    return "met" if ok else "NOT MET"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="/tmp/w")
    ap.add_argument("--workload-8m", default="/tmp/w8m")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--batchscore", default=os.path.join(REPO, "target/release/batchscore"))
    ap.add_argument("--models", default="gbdt,mlp", help="comma-separated: gbdt, mlp, xgb, rf")
    ap.add_argument("--tree-engines", default=",".join(TREE_ENGINES),
                    help="comma-separated [run] tree_engine values to run the tree models with (native, "
                         "onnxruntime); empty for none")
    ap.add_argument("--skip", default="", help="comma-separated: spark, 8m, csv, peers (pyarrow and polars)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the 2M-row comparisons; medians are reported")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    models = a.models.split(",")
    for m in models:
        if m not in MODEL_INPUT:
            sys.exit(f"--models: unknown model {m!r} (one of {', '.join(MODEL_INPUT)})")
    engines = [e for e in a.tree_engines.split(",") if e]
    for e in engines:
        if e not in TREE_ENGINES:
            sys.exit(f"--tree-engines: unknown engine {e!r} (one of {', '.join(TREE_ENGINES)})")
    ensure_workload(a, a.workload, a.rows, models)
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", os.path.join(REPO, ".ort/lib/libonnxruntime.so.1.31.1"))
    env["RUST_LOG"] = "error"
    data = os.path.join(a.workload, "data.parquet")
    started = time.time()
    targets = []
    rss_2m = {}  # the worst of the rounds, for the 512 MiB bound
    rss_2m_runs = {}  # every round's, for the growth to 8M rows
    skipped = {}  # (model, tree engine) -> why batchscore would not run it
    with tempfile.TemporaryDirectory() as tmp:
        # Each round runs every contender once; a contender's figure is its median.
        samples = {}  # (table row, contender) -> [rows/s per round]
        for r in range(a.rounds):
            print(f"round {r + 1} of {a.rounds} …", file=sys.stderr)
            for model in models:
                model_path = os.path.join(a.workload, f"{model}.onnx")
                ours, rss = batchscore_run(a, env, tmp, data, model, a.workload)
                rss_2m[model] = max(rss, rss_2m.get(model, 0))
                rss_2m_runs.setdefault(model, []).append(rss)
                row = {"ours": ours}
                for engine in engines if model in TREE_MODELS else []:
                    if (model, engine) in skipped:
                        continue
                    try:
                        rate, rss = batchscore_run(a, env, tmp, data, model, a.workload, tree_engine=engine)
                    except Failed as e:
                        skipped[(model, engine)] = refusal(str(e))
                        print(f"batchscore will not run {model} with tree_engine = \"{engine}\", skipping that "
                              f"row: {skipped[(model, engine)]}", file=sys.stderr)
                        continue
                    row[engine] = rate
                    rss_2m[(model, engine)] = max(rss, rss_2m.get((model, engine), 0))
                    rss_2m_runs.setdefault((model, engine), []).append(rss)
                if "peers" not in skip:
                    row["pyarrow"] = peer(a, "pyarrow", data, model_path, tmp)[0]
                    row["polars"] = peer(a, "polars", data, model_path, tmp)[0]
                if "spark" not in skip:
                    row["spark"] = peer(a, "spark", data, model_path, tmp)[0]
                # As many rows as the run scores: short samples are noisier, and the best of
                # several noisy samples overstates the ceiling.
                _, _, out = run_measured([a.batchscore, "bench", model_path, "--json", "--rows", str(a.rows),
                                          "--batch-sizes", "2048,8192,65536"], env)
                report = json.loads(out)
                row["ceiling"] = report["best"]["rows_per_second"]
                if report.get("native"):
                    # The native evaluator on the same tensors: what its whole run could reach.
                    row["native-only"] = max(r["rows_per_second"] for r in report["native"])
                row["decode"] = peer(a, "read-only", data, model_path, tmp)[0]
                for k, v in row.items():
                    samples.setdefault((model, k), []).append(v)
            if "csv" not in skip and "mlp" in models:
                csv = os.path.join(a.workload, "data.csv")
                model_path = os.path.join(a.workload, "mlp.onnx")
                ours, rss = batchscore_run(a, env, tmp, csv, "mlp", a.workload, "csv")
                rss_2m["csv"] = max(rss, rss_2m.get("csv", 0))
                samples.setdefault(("csv", "ours"), []).append(ours)
                samples.setdefault(("csv", "pyarrow-csv"), []).append(peer(a, "pyarrow-csv", csv, model_path, tmp)[0])

        med = {k: statistics.median(v) for k, v in samples.items()}
        print(f"| model | batchscore rows/s | peak RSS MiB | pyarrow+ORT | polars+ORT | PySpark | inference-only ceiling | Parquet decode-only |")
        print("|---|---|---|---|---|---|---|---|")
        for model in models:
            # The default settings' row, then (tree models) one per engine, each against the same peers.
            for engine in [None] + (engines if model in TREE_MODELS else []):
                if engine is None:
                    label, ours, rss = model, med[(model, "ours")], rss_2m[model]
                elif (model, engine) in med:
                    label, ours, rss = f'{model}, tree_engine = "{engine}"', med[(model, engine)], rss_2m[(model, engine)]
                else:
                    print(f'| {model}, tree_engine = "{engine}" | skipped (see below the tables) | | | | | | |')
                    continue
                cell = lambda k: "—" if (model, k) not in med else f"{med[(model, k)]:,.0f} ({ours / med[(model, k)]:.2f}x)"
                print(f"| {label} | {ours:,.0f} | {rss:,.0f} | {cell('pyarrow')} | {cell('polars')} | {cell('spark')} "
                      f"| {cell('ceiling')} | {med[(model, 'decode')]:,.0f} |")
            ours = med[(model, "ours")]
            floors = {"gbdt": [("pyarrow", "pyarrow+ORT", 1.15), ("polars", "polars+ORT", 1.15),
                               ("ceiling", "inference-only", 0.92), ("spark", "PySpark", 3.5)],
                      "mlp": [("pyarrow", "pyarrow+ORT", 2.0), ("polars", "polars+ORT", 1.6), ("spark", "PySpark", 10.0)]}
            for k, name, floor in floors.get(model, []):
                if (model, k) in med:
                    targets.append((f"{model} vs {name} >= {floor}x", ours / med[(model, k)], floor))
            targets.append((f"{model} peak RSS <= 512 MiB (MiB)", rss_2m[model], None))
        tree_models = [m for m in models if m in TREE_MODELS and engines]
        if tree_models:
            # The native evaluator's targets: its whole run against ONNX Runtime's inference-only
            # rate and against the whole run through ONNX Runtime's tree ensemble.
            print()
            print('| tree model | native rows/s | tree_engine = "onnxruntime" rows/s | inference-only ceiling '
                  '| native / ceiling | native / onnxruntime engine | native evaluator inference-only (/ ceiling) '
                  '| peak RSS MiB, native | peak RSS MiB, onnxruntime engine | native - onnxruntime engine RSS |')
            print("|---|---|---|---|---|---|---|---|---|---|")
            for model in tree_models:
                nat, ort_ = med.get((model, "native")), med.get((model, "onnxruntime"))
                ceil = med[(model, "ceiling")]
                rn, ro = rss_2m.get((model, "native")), rss_2m.get((model, "onnxruntime"))
                num = lambda v: "—" if v is None else f"{v:,.0f}"
                ratio = lambda x, y: "—" if x is None or y is None else f"{x / y:.2f}x"
                above = "—" if rn is None or ro is None else f"{rn - ro:+,.0f}"
                only = med.get((model, "native-only"))
                print(f"| {model} | {num(nat)} | {num(ort_)} | {ceil:,.0f} | {ratio(nat, ceil)} | {ratio(nat, ort_)} "
                      f"| {num(only)} ({ratio(only, ceil)}) | {num(rn)} | {num(ro)} | {above} |")
                vs_ceiling, vs_ort = TREE_FLOORS[model]
                if nat is not None:
                    targets.append((f"{model} native vs inference-only ceiling >= {vs_ceiling}x", nat / ceil, vs_ceiling))
                if nat is not None and ort_ is not None:
                    if vs_ort is not None:
                        targets.append((f'{model} native vs tree_engine = "onnxruntime" >= {vs_ort}x', nat / ort_, vs_ort))
                    targets.append((f'{model} native peak RSS <= onnxruntime engine\'s + {TREE_RSS_MARGIN} MiB (MiB above)',
                                    rn - ro, None))
        for (model, engine), why in skipped.items():
            print(f'{model}, tree_engine = "{engine}": skipped: {why}')
        if ("csv", "ours") in med:
            ours, pc = med[("csv", "ours")], med[("csv", "pyarrow-csv")]
            print()
            print("| CSV in (mlp) | batchscore rows/s | peak RSS MiB | pyarrow CSV reader + ORT |")
            print("|---|---|---|---|")
            print(f"| mlp | {ours:,.0f} | {rss_2m['csv']:,.0f} | {pc:,.0f} ({ours / pc:.2f}x) |")
            targets.append(("mlp CSV vs pyarrow CSV+ORT >= 1.5x", ours / pc, 1.5))
        print()
        print(f"rows/s in each of the {a.rounds} rounds (the tables give the medians):")
        for (row, k), v in samples.items():
            print(f"  {row:5} {k:12} " + "  ".join(f"{x:>10,.0f}" for x in v))
        engine_rss = [(k, v) for k, v in rss_2m_runs.items() if isinstance(k, tuple)]
        if engine_rss:
            print("peak RSS MiB of the tree engines' runs in each round (the tables give the worst):")
            for (row, k), v in engine_rss:
                print(f"  {row:5} {k:12} " + "  ".join(f"{x:>10,.0f}" for x in v))
        if ("gbdt", "spark") in med:
            # ORT alone, on tensors in memory in their given order: what a scorer that hands
            # ONNX Runtime the rows as they come can reach at most.
            bound = med[("gbdt", "ceiling")] / med[("gbdt", "spark")]
            print(f"\nthe GBDT's inference-only ceiling is {bound:.2f}x PySpark's rate in this run: "
                  "the most a scorer that gives ONNX Runtime's tree ensemble its rows in input order can reach")

        if "8m" not in skip:
            ensure_workload(a, a.workload_8m, 8_000_000, models)
            data8 = os.path.join(a.workload_8m, "data.parquet")
            print()
            # Like with like: the median peak of the 2M-row rounds against the median of as
            # many 8M-row runs (one 8M sample moved the growth from +4% to +25%).
            print("| model | peak RSS MiB, 2M rows (median) | peak RSS MiB, 8M rows (median) | growth |")
            print("|---|---|---|---|")
            for model in models:
                rss8 = statistics.median(batchscore_run(a, env, tmp, data8, model, a.workload_8m)[1]
                                         for _ in range(a.rounds))
                rss2 = statistics.median(rss_2m_runs[model])
                growth = rss8 / rss2 - 1
                print(f"| {model} | {rss2:,.0f} | {rss8:,.0f} | {growth * 100:+.0f}% |")
                targets.append((f"{model} RSS growth 2M -> 8M <= 20%", 1 + growth, None))

        # Start-up: a 10-row input, best of five.
        tiny = os.path.join(tmp, "tiny.parquet")
        subprocess.run([a.python, "-c", f"import pyarrow.parquet as pq; pq.write_table(pq.read_table({data!r}).slice(0, 10), {tiny!r})"], check=True)
        best = min(
            run_measured([a.batchscore, "run", spec_file(tmp, tiny, a.workload)], env)[0] for _ in range(5)
        )
        print()
        print(f"start-up: a 10-row job (gbdt) takes {best:.3f} s, best of five")

    print()
    print("| target | measured | verdict |")
    print("|---|---|---|")
    for name, value, floor in targets:
        if floor is not None:
            print(f"| {name} | {value:.3f}x | {verdict(value >= floor)} |")
        elif "MiB above" in name:
            print(f"| {name} | {value:+,.0f} | {verdict(value <= TREE_RSS_MARGIN)} |")
        elif "RSS <=" in name:
            print(f"| {name} | {value:,.0f} | {verdict(value <= 512)} |")
        else:
            print(f"| {name} | {(value - 1) * 100:+.0f}% | {verdict(value <= 1.2)} |")
    print(f"| start-up < 0.3 s | {best:.3f} s | {verdict(best < 0.3)} |")
    print(f"\nthe benchmark took {time.time() - started:.0f} s")


def spec_file(tmp, data, workload):
    path = os.path.join(tmp, "tiny.toml")
    with open(path, "w") as f:
        f.write(job_spec(data, os.path.join(workload, "gbdt.onnx"), "gbdt", os.path.join(tmp, "tiny-out")))
    return path


if __name__ == "__main__":
    main()
