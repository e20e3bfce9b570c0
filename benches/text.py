"""Text embeddings: batchscore's [tokenizer] job against a Python peer doing the same work, as tables.

    .venv-test/bin/python benches/text.py [--workload /tmp/text-bench] [--rounds 3] [--rows 100000]
    .venv-test/bin/python benches/text.py --batchscore target/debug/batchscore --rows 2000 --rounds 1   # smoke

Run it with an interpreter that has pyarrow, numpy, tokenizers and onnxruntime==1.31.1
(.venv-test has them; --python picks another one for the peer). The model and tokenizer are
all-MiniLM-L6-v2 (int8) from --models (default .models/minilm, put there by
scripts/fetch-models). batchscore is target/release/batchscore unless --batchscore says
otherwise (`cargo build --release`); ONNX Runtime is .ort/lib unless ORT_DYLIB_PATH is set.

The workload, --workload/texts.parquet (texts-ROWS.parquet for another --rows), is made when
missing, deterministically: ticket_id int64 and text utf8, no nulls, from the phrase banks of
sample_data/text/make_texts.py, row groups of 10,000 rows. Lengths: 15% short (3-6 words),
80% one issue and 0-9 details (mostly 10-80 words), 5% long stories of 100-300 words, of
which most exceed 128 tokens and are truncated.

What it runs, each as its own process, one after the other:
  - batchscore run on a spec like jobs/tickets-embed.toml (mean-pooled, L2-normalised
    embedding + ticket_id, Parquet out, default [run] settings): rows scored / wall time of
    the whole process, and its peak RSS;
  - the peer, benches/text_peer.py run: pyarrow reader, tokenizers (truncation 128, padding
    to each batch's longest), ONNX Runtime (CPU, intra-op threads = all cores), numpy
    pooling, pyarrow writer; same measures. Its batch size is the fastest of 16, 32, 64, 128
    on the workload's first 5,000 rows (text_peer.py calibrate, once, before the rounds);
  - the ceiling, text_peer.py ceiling: ONNX Runtime alone on the peer's batches,
    pre-tokenized in memory, over the first --ceiling-rows rows (only session.run is timed).

Rounds: --rounds (default 3), each running batchscore, then the peer, then the ceiling; the
tables give medians (peak RSS: the worst round) and the rounds' figures are printed below.
Only ratios from one run on one machine mean anything. The target: batchscore >= 1.5x the
peer's rows/s. Note batchscore groups each batch's rows by token count before padding
(`tokenizer.sort_by_length`), the peer pads as it reads, so batchscore can beat the ceiling;
the "real / padded tokens" column says how much of each one's model work was real text. A
last line compares the two outputs' embeddings (max |diff|, joined on ticket_id).

Time: the peer dominates; at 100k rows a round is the two whole runs plus 20k rows of
inference (minutes each on a 2-core machine). --rows 20000 gives a quicker, noisier answer.
"""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEER = os.path.join(HERE, "text_peer.py")
SEED = 20240612
TARGET = 1.5  # batchscore / peer, rows/s


def run_measured(cmd, env=None):
    """Runs cmd; returns (seconds, its peak RSS in MiB, stdout). Exits when it fails."""
    start = time.time()
    # stdout and stderr go to files, not pipes: a chatty process cannot block on a full pipe.
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        secs = time.time() - start
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return secs, usage.ru_maxrss / 1024, out


def make_workload(path, rows):
    """ticket_id + text, `rows` rows, from make_texts.py's phrase banks; the same rows each time."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    sys.path.insert(0, os.path.join(REPO, "sample_data", "text"))
    import make_texts as mt

    rng = random.Random(SEED)
    texts = []
    for _ in range(rows):
        label, u = rng.choice(list(mt.BANKS)), rng.random()
        bank = mt.BANKS[label]
        if u < 0.01:  # accents, CJK, emoji
            text = rng.choice(mt.UNICODE)[1]
        elif u < 0.16:  # 3 to 6 words
            text = rng.choice(bank["short"])
        else:
            long = u > 0.95
            words = rng.randint(100, 300) if long else 0
            parts = [rng.choice(mt.OPENERS), mt.sentence(mt.fill(rng, rng.choice(bank["issue"])))]
            parts += [mt.fill(rng, d) for d in rng.sample(bank["detail"], rng.randint(0, len(bank["detail"])))]
            while long and len(" ".join(parts).split()) < words:  # the whole story, told again
                parts.append(mt.sentence(mt.fill(rng, rng.choice(bank["issue"]))))
                parts += [mt.fill(rng, d) for d in rng.sample(bank["detail"], 3)]
            parts.append(rng.choice(mt.CLOSERS))
            text = " ".join(p for p in parts if p)
        texts.append(text)
    ids = [100_000 + 7 * i for i in range(rows)]
    table = pa.table({"ticket_id": pa.array(ids, pa.int64()), "text": pa.array(texts, pa.string())})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path + ".tmp", row_group_size=10_000, compression="snappy")
    os.replace(path + ".tmp", path)
    words = sorted(len(t.split()) for t in texts)
    print(f"made {path}: {rows:,} texts, words min {words[0]} median {words[len(words) // 2]} "
          f"p95 {words[int(len(words) * 0.95)]} max {words[-1]}", file=sys.stderr)


def job_spec(data, models, out):
    return f"""name = "bench-text"
[input]
uri = "{data}"
[model]
uri = "{os.path.join(models, 'model.onnx')}"
[tokenizer]
uri = "{os.path.join(models, 'tokenizer.json')}"
text = "text"
max_length = 128
[output]
uri = "{out}/"
passthrough = ["ticket_id"]
mode = "overwrite"
[outputs]
embedding = {{ from = "last_hidden_state", pool = "mean", normalize = true }}
"""


def batchscore_run(a, env, spec, out):
    """(rows/s, peak RSS MiB, real/padded tokens) of one batchscore run, rows/s over the whole process."""
    secs, rss, _ = run_measured([a.batchscore, "run", spec], env)
    with open(os.path.join(out, "_metrics.json")) as f:
        m = json.load(f)
    text = m.get("text") or {}
    fill = text["tokens"] / text["padded_tokens"] if text.get("padded_tokens") else None
    return m["rows"]["scored"] / secs, rss, fill


def peer_run(a, data, out, batch):
    secs, rss, out_ = run_measured([a.python, PEER, "run", data, a.model, a.tokenizer, out, "--batch-size", str(batch)])
    m = re.search(r"rows (\d+) seconds [\d.]+ tokens (\d+) padded_tokens (\d+)", out_)
    return int(m.group(1)) / secs, rss, int(m.group(2)) / int(m.group(3))


def parity(bs_out, peer_out):
    """max |diff| between the two outputs' embeddings, joined on ticket_id, and the rows compared."""
    import numpy as np
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    def by_id(table):
        ids = table.column("ticket_id").to_numpy()
        emb = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(len(ids), -1)
        return emb[np.argsort(ids)], np.sort(ids)

    ours = ds.dataset(bs_out, format="parquet", exclude_invalid_files=True).to_table(columns=["ticket_id", "embedding"])
    (e1, i1), (e2, i2) = by_id(ours), by_id(pq.read_table(peer_out))
    if len(i1) != len(i2) or (i1 != i2).any():
        return None, len(i1)
    return float(np.abs(e1 - e2).max()), len(i1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="/tmp/text-bench", help="folder of texts.parquet (made when missing)")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--python", default=sys.executable, help="the peer's interpreter")
    ap.add_argument("--batchscore", default=os.path.join(REPO, "target/release/batchscore"))
    ap.add_argument("--models", default=os.path.join(REPO, ".models/minilm"), help="model.onnx and tokenizer.json")
    ap.add_argument("--peer-batch-sizes", default="16,32,64,128")
    ap.add_argument("--calibrate-rows", type=int, default=5000)
    ap.add_argument("--ceiling-rows", type=int, default=20_000, help="0: no ceiling")
    a = ap.parse_args()
    a.model, a.tokenizer = os.path.join(a.models, "model.onnx"), os.path.join(a.models, "tokenizer.json")
    for p in (a.batchscore, a.model, a.tokenizer):
        if not os.path.exists(p):
            sys.exit(f"{p} is missing (cargo build --release; scripts/fetch-models)")
    data = os.path.join(a.workload, "texts.parquet" if a.rows == 100_000 else f"texts-{a.rows}.parquet")
    if not os.path.exists(data):
        make_workload(data, a.rows)
    env = dict(os.environ, RUST_LOG="error")
    env.setdefault("ORT_DYLIB_PATH", os.path.join(REPO, ".ort/lib/libonnxruntime.so.1.31.1"))
    started = time.time()

    # The peer's batch size: the fastest on the first rows, once.
    print("calibrating the peer's batch size …", file=sys.stderr)
    _, _, out = run_measured([a.python, PEER, "calibrate", data, a.model, a.tokenizer,
                              "--rows", str(min(a.calibrate_rows, a.rows)), "--sizes", a.peer_batch_sizes])
    calibration = re.findall(r"batch (\d+) rows/s ([\d.]+)", out)
    batch = int(re.search(r"best (\d+)", out).group(1))

    samples = {}  # contender -> [rows/s per round]
    rss, fill = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        bs_out, peer_out, spec = os.path.join(tmp, "out"), os.path.join(tmp, "peer.parquet"), os.path.join(tmp, "job.toml")
        with open(spec, "w") as f:
            f.write(job_spec(data, a.models, bs_out))
        for r in range(a.rounds):
            print(f"round {r + 1} of {a.rounds} …", file=sys.stderr)
            for name, fn in (("batchscore", lambda: batchscore_run(a, env, spec, bs_out)),
                             ("peer", lambda: peer_run(a, data, peer_out, batch))):
                rate, peak, fill[name] = fn()
                samples.setdefault(name, []).append(rate)
                rss[name] = max(peak, rss.get(name, 0))
            if a.ceiling_rows:
                _, _, out = run_measured([a.python, PEER, "ceiling", data, a.model, a.tokenizer,
                                          "--rows", str(min(a.ceiling_rows, a.rows)), "--batch-size", str(batch)])
                m = re.search(r"rows (\d+) seconds ([\d.]+)", out)
                samples.setdefault("ceiling", []).append(int(m.group(1)) / float(m.group(2)))
        diff, compared = parity(bs_out, peer_out)

    med = {k: statistics.median(v) for k, v in samples.items()}
    ratio = med["batchscore"] / med["peer"]
    ceil_rows = min(a.ceiling_rows, a.rows)
    print(f"\n{a.rows:,} texts, all-MiniLM-L6-v2 int8, max_length 128, {os.cpu_count()} cores, "
          f"median of {a.rounds} round{'s' if a.rounds != 1 else ''}\n")
    print("| contender | rows/s | peak RSS MiB | batchscore / it | real / padded tokens |")
    print("|---|---|---|---|---|")
    ours_fill = "—" if fill["batchscore"] is None else f"{fill['batchscore']:.2f}"
    print(f"| batchscore run (default [run] settings) | {med['batchscore']:,.1f} | {rss['batchscore']:,.0f} | — "
          f"| {ours_fill} |")
    print(f"| Python peer: pyarrow + tokenizers + ORT, batch {batch} (fastest of {a.peer_batch_sizes}) "
          f"| {med['peer']:,.1f} | {rss['peer']:,.0f} | {ratio:.2f}x | {fill['peer']:.2f} |")
    if "ceiling" in med:
        print(f"| ORT inference-only ceiling: batch {batch}, pre-tokenized, first {ceil_rows:,} rows "
              f"| {med['ceiling']:,.1f} | — | {med['batchscore'] / med['ceiling']:.2f}x | ≈ the peer's |")
    print()
    print("| target | measured | verdict |")
    print("|---|---|---|")
    print(f"| batchscore >= {TARGET}x the peer's rows/s | {ratio:.2f}x | {'met' if ratio >= TARGET else 'missed'} |")
    print()
    print(f"rows/s in each of the {a.rounds} rounds (the tables give the medians):")
    for k, v in samples.items():
        print(f"  {k:10} " + "  ".join(f"{x:>10,.1f}" for x in v))
    print(f"the peer's batch sizes on the first {min(a.calibrate_rows, a.rows):,} rows (rows/s): "
          + ", ".join(f"{b}: {float(r):,.1f}" for b, r in calibration))
    if diff is None:
        print(f"embeddings: the outputs' ticket_ids differ ({compared:,} rows in batchscore's)")
    else:
        print(f"embeddings: max |batchscore - peer| = {diff:.2e} over {compared:,} rows (last round's outputs)")
    print(f"\nthe benchmark took {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
