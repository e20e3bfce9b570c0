"""benches/text.py's Python peer: the same text-embedding job as batchscore's [tokenizer] spec,
written the way a Python user would, in one process. Needs pyarrow, numpy, tokenizers and
onnxruntime.

    python benches/text_peer.py run DATA MODEL TOKENIZER OUT.parquet --batch-size B
    python benches/text_peer.py calibrate DATA MODEL TOKENIZER --rows 5000 --sizes 16,32,64,128
    python benches/text_peer.py ceiling DATA MODEL TOKENIZER --rows 20000 --batch-size B

run: reads DATA (ticket_id, text) with pyarrow in record batches of 2048 rows; tokenizes each
slice of B rows with `tokenizers` (truncation to 128 tokens, padding to the slice's longest
text), runs ONNX Runtime on it (CPU, all cores), mean-pools last_hidden_state over the
attention mask and L2-normalises in numpy, and writes ticket_id + embedding
(fixed_size_list<float32>[384]) to OUT, one row group per record batch. It prints
`rows N seconds S tokens T padded_tokens P`.
calibrate: the same work (less the writing) on the first --rows rows at each batch size;
prints `batch B rows/s R` per size, then `best B`.
ceiling: ONNX Runtime alone: the first --rows rows tokenized into B-row tensors in memory
first, then only the session.run calls timed; prints `rows N seconds S` (inference only).
"""

import argparse
import os
import sys
import time

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer

MAX_LENGTH = 128
READ_BATCH = 2048


def load(model, tokenizer):
    tok = Tokenizer.from_file(tokenizer)
    tok.enable_truncation(MAX_LENGTH)
    tok.enable_padding()  # no length: pad to the longest text of each encode_batch call
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count()
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return tok, sess


def tensors(tok, texts):
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    types = np.array([e.type_ids for e in enc], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def embed(sess, feed):
    hidden = sess.run(["last_hidden_state"], feed)[0]  # [b, s, 384]
    mask = feed["attention_mask"][:, :, None].astype(np.float32)
    pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def texts_of(data, rows=None):
    """The first `rows` texts (all when None), as a list of str."""
    texts = pq.read_table(data, columns=["text"]).column("text").to_pylist()
    return texts if rows is None else texts[:rows]


def run(a):
    start = time.time()
    tok, sess = load(a.model, a.tokenizer)
    rows = tokens = padded = 0
    writer = None
    for batch in pq.ParquetFile(a.data).iter_batches(batch_size=READ_BATCH, columns=["ticket_id", "text"]):
        texts = batch.column("text").to_pylist()
        parts = []
        for i in range(0, len(texts), a.batch_size):
            feed = tensors(tok, texts[i:i + a.batch_size])
            tokens += int(feed["attention_mask"].sum())
            padded += feed["attention_mask"].size
            parts.append(embed(sess, feed))
        emb = np.concatenate(parts).astype(np.float32)
        col = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1])
        table = pa.table({"ticket_id": batch.column("ticket_id"), "embedding": col})
        if writer is None:
            writer = pq.ParquetWriter(a.out, table.schema)
        writer.write_table(table)
        rows += len(texts)
    if writer is not None:
        writer.close()
    print(f"rows {rows} seconds {time.time() - start:.3f} tokens {tokens} padded_tokens {padded}")


def calibrate(a):
    tok, sess = load(a.model, a.tokenizer)
    texts = texts_of(a.data, a.rows)
    embed(sess, tensors(tok, texts[:16]))  # warm-up: the first run allocates
    best = None
    for b in (int(s) for s in a.sizes.split(",")):
        start = time.time()
        for i in range(0, len(texts), b):
            embed(sess, tensors(tok, texts[i:i + b]))
        rate = len(texts) / (time.time() - start)
        print(f"batch {b} rows/s {rate:.1f}", flush=True)
        if best is None or rate > best[1]:
            best = (b, rate)
    print(f"best {best[0]}")


def ceiling(a):
    tok, sess = load(a.model, a.tokenizer)
    texts = texts_of(a.data, a.rows)
    feeds = [tensors(tok, texts[i:i + a.batch_size]) for i in range(0, len(texts), a.batch_size)]
    sess.run(["last_hidden_state"], feeds[0])  # warm-up
    start = time.time()
    for feed in feeds:
        sess.run(["last_hidden_state"], feed)
    print(f"rows {len(texts)} seconds {time.time() - start:.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["run", "calibrate", "ceiling"])
    ap.add_argument("data")
    ap.add_argument("model")
    ap.add_argument("tokenizer")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--sizes", default="16,32,64,128")
    a = ap.parse_args()
    if a.mode == "run" and not a.out:
        sys.exit("run needs OUT")
    {"run": run, "calibrate": calibrate, "ceiling": ceiling}[a.mode](a)


if __name__ == "__main__":
    main()
