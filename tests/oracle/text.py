"""The independent oracle for tests/text.rs: what batchscore's text features should produce,
computed with the Python `tokenizers` library, onnxruntime, numpy and pyarrow only (all pinned
in scripts/test), none of batchscore's code. The tests run it with $BATCHSCORE_TEST_PYTHON.

    text.py --model M --tokenizer T --input FILE.parquet --column text --max-length N
            --output last_hidden_state|logits --pool mean|cls|max|none --normalize 0|1
            --softmax 0|1 --batch B --empty reject|embed --out result.json

Each row's text is tokenized (Tokenizer.from_file, truncation at N tokens with the special
tokens, no padding of the tokenizer's own); every B embedded rows, in input order, make one
batch, padded here to its longest row (pad id 0, mask 0, type id 0), or to the sequence length
the model's inputs fix where they declare one ([batch, 64]). The model gets whichever
of input_ids, attention_mask and token_type_ids (int64) it declares. Output OUTPUT is pooled:
mean = sum(h * mask) / max(sum(mask), 1e-9) over positions, cls = h[:, 0], max = max over the
positions where mask is 1, none = the output as is ([batch, k]). Then, if asked, each vector is
divided by max(||v||_2, 1e-12), then softmax over its last axis (float64, cast to float32).
A null text is rejected; an empty text "" is rejected with --empty reject, embedded otherwise.

Writes JSON: {"rows": [{"row": i, "value": [floats] or null, "rejected": bool}, ...] in input
order, "truncated": how many texts had more than N tokens (special tokens included) before
truncation, "tokens": the attention mask's ones summed over all embedded rows}.
"""

import argparse
import json

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
from tokenizers import Tokenizer

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def pool(h, mask, how):
    m = mask[..., None].astype(h.dtype)
    if how == "mean":
        return (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    if how == "cls":
        return h[:, 0, :]
    if how == "max":
        return np.where(m > 0, h, -np.inf).max(axis=1).astype(h.dtype)
    if h.ndim != 2:
        raise SystemExit(f"--pool none needs a [batch, k] output, this one has shape {h.shape}")
    return h


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("model", "tokenizer", "input", "column", "output", "out"):
        p.add_argument("--" + name, required=True)
    p.add_argument("--max-length", type=int, required=True)
    p.add_argument("--pool", choices=["mean", "cls", "max", "none"], required=True)
    p.add_argument("--normalize", type=int, choices=[0, 1], default=0)
    p.add_argument("--softmax", type=int, choices=[0, 1], default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--empty", choices=["reject", "embed"], default="reject")
    a = p.parse_args()

    texts = pq.read_table(a.input, columns=[a.column]).column(a.column).to_pylist()
    tok = Tokenizer.from_file(a.tokenizer)
    tok.no_padding()
    full = Tokenizer.from_file(a.tokenizer)  # without truncation: to count truncated texts
    full.no_padding()
    full.no_truncation()
    tok.enable_truncation(max_length=a.max_length)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    declared = [i.name for i in sess.get_inputs()]
    if set(declared) - set(INPUTS):
        raise SystemExit(f"the model declares inputs other than {INPUTS}: {declared}")
    fixed = {i.shape[1] for i in sess.get_inputs() if isinstance(i.shape[1], int)}
    if len(fixed) > 1:
        raise SystemExit(f"the model's inputs fix different sequence lengths: {fixed}")
    seq = min(fixed) if fixed else None

    keep = [i for i, t in enumerate(texts) if t is not None and (t != "" or a.empty == "embed")]
    values, truncated, tokens = {}, 0, 0
    for start in range(0, len(keep), a.batch):
        rows = keep[start:start + a.batch]
        batch = [texts[i] for i in rows]
        truncated += sum(len(e.ids) > a.max_length for e in full.encode_batch(batch))
        encs = tok.encode_batch(batch)
        longest = max(len(e.ids) for e in encs)
        if seq is not None and longest > seq:
            raise SystemExit(f"a text of {longest} tokens is longer than the model's {seq}")
        width = longest if seq is None else seq
        feed = {name: np.zeros((len(rows), width), np.int64) for name in INPUTS}
        for r, e in enumerate(encs):
            n = len(e.ids)
            feed["input_ids"][r, :n] = e.ids
            feed["attention_mask"][r, :n] = e.attention_mask
            feed["token_type_ids"][r, :n] = e.type_ids
        tokens += int(feed["attention_mask"].sum())
        (h,) = sess.run([a.output], {name: feed[name] for name in declared})
        v = pool(h, feed["attention_mask"], a.pool)
        if a.normalize:
            v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
        if a.softmax:
            z = v.astype(np.float64)
            z = np.exp(z - z.max(axis=-1, keepdims=True))
            v = (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)
        for r, i in enumerate(rows):
            values[i] = v[r].astype(np.float32).astype(np.float64).tolist()

    result = {
        "rows": [{"row": i, "value": values.get(i), "rejected": i not in values}
                 for i in range(len(texts))],
        "truncated": truncated,
        "tokens": tokens,
    }
    with open(a.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
