"""Builds a ticket classifier ONNX model from the MiniLM sentence encoder that
scripts/fetch-models puts in .models/minilm, for the text tests and sample jobs:

    python sample_data/text/make_classifier.py --model .models/minilm/model.onnx \
        --tokenizer .models/minilm/tokenizer.json --texts sample_data/text/tickets.parquet \
        --out .models/minilm/ticket_classifier.onnx

(needs onnx, onnxruntime, numpy, pyarrow and tokenizers; scripts/test runs it with
.venv-test's Python when the classifier is missing.)

To MiniLM's graph (inputs input_ids, attention_mask, token_type_ids int64 [batch, sequence];
output last_hidden_state float [batch, sequence, 384]) it appends mean pooling over the
attention mask, sum(h * mask) / max(sum(mask), 1e-9), L2 normalisation, v / max(||v||, 1e-12),
and a linear layer, MatMul by W [384, 3] then Add b [3], giving the graph's only output,
logits float [batch, 3]. The weights are a nearest-centroid classifier: each labelled ticket
(text neither null nor empty) is embedded the same way here in numpy (truncated at 128
tokens), each class's mean embedding is normalised, W = 20 * centroids.T and b = 0. The classes,
in the order of the logits, are in the model's metadata_props: classes = billing,shipping,technical.
Same opset as the original graph (17).
"""

import argparse
import os

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

CLASSES = ["billing", "shipping", "technical"]
SCALE = 20.0
MAX_LENGTH = 128


def session(path_or_bytes):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(path_or_bytes, opts, providers=["CPUExecutionProvider"])


def encode(tok, texts):
    encs = tok.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encs], np.int64),
        "attention_mask": np.array([e.attention_mask for e in encs], np.int64),
        "token_type_ids": np.array([e.type_ids for e in encs], np.int64),
    }


def embed(sess, tok, texts, batch=32):
    out = []
    for start in range(0, len(texts), batch):
        feed = encode(tok, texts[start:start + batch])
        (h,) = sess.run(["last_hidden_state"], feed)
        m = feed["attention_mask"][..., None].astype(np.float32)
        v = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        out.append(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))
    return np.concatenate(out)


def append_head(model, w, b):
    """Mean pooling, L2 normalisation and the linear layer after last_hidden_state."""
    g = model.graph
    (hidden,) = [o for o in g.output if o.name == "last_hidden_state"]
    g.initializer.extend([
        numpy_helper.from_array(w, "head/W"),
        numpy_helper.from_array(b, "head/b"),
        numpy_helper.from_array(np.array([-1], np.int64), "head/axis_last"),
        numpy_helper.from_array(np.array([1], np.int64), "head/axis_seq"),
        numpy_helper.from_array(np.array(1e-9, np.float32), "head/min_count"),
        numpy_helper.from_array(np.array(1e-12, np.float32), "head/min_norm"),
    ])
    n = helper.make_node
    g.node.extend([
        n("Cast", ["attention_mask"], ["head/mask_f"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["head/mask_f", "head/axis_last"], ["head/mask"]),          # [b, s, 1]
        n("Mul", ["last_hidden_state", "head/mask"], ["head/masked"]),             # [b, s, 384]
        n("ReduceSum", ["head/masked", "head/axis_seq"], ["head/sum"], keepdims=0),  # [b, 384]
        n("ReduceSum", ["head/mask", "head/axis_seq"], ["head/count"], keepdims=0),  # [b, 1]
        n("Max", ["head/count", "head/min_count"], ["head/count_c"]),
        n("Div", ["head/sum", "head/count_c"], ["head/mean"]),
        n("ReduceL2", ["head/mean"], ["head/norm"], axes=[-1], keepdims=1),        # [b, 1]
        n("Max", ["head/norm", "head/min_norm"], ["head/norm_c"]),
        n("Div", ["head/mean", "head/norm_c"], ["head/embedding"]),                # [b, 384]
        n("MatMul", ["head/embedding", "head/W"], ["head/scores"]),
        n("Add", ["head/scores", "head/b"], ["logits"]),                           # [b, 3]
    ])
    g.output.remove(hidden)
    g.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(CLASSES)]))
    del model.metadata_props[:]
    model.metadata_props.add(key="classes", value=",".join(CLASSES))
    return model


def main():
    p = argparse.ArgumentParser(description="Builds the ticket classifier from MiniLM.")
    for name in ("model", "tokenizer", "texts", "out"):
        p.add_argument("--" + name, required=True)
    a = p.parse_args()

    table = pq.read_table(a.texts, columns=["text", "label"]).to_pydict()
    rows = [(t, l) for t, l in zip(table["text"], table["label"]) if t]
    texts = [t for t, _ in rows]
    y = np.array([CLASSES.index(l) for _, l in rows])

    tok = Tokenizer.from_file(a.tokenizer)
    tok.enable_truncation(max_length=MAX_LENGTH)
    tok.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]")  # to each batch's longest
    x = embed(session(a.model), tok, texts)
    centroids = np.stack([x[y == k].mean(axis=0) for k in range(len(CLASSES))])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    w = (SCALE * centroids.T).astype(np.float32)  # [384, 3]
    b = np.zeros(len(CLASSES), np.float32)

    model = onnx.load(a.model)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == 17, f"expected opset 17, the graph has {opsets}"
    model = append_head(model, w, b)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, a.out + ".part")  # whole or not at all: scripts/test builds it when missing
    os.replace(a.out + ".part", a.out)

    sess = session(a.out)
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    assert sess.get_modelmeta().custom_metadata_map == {"classes": ",".join(CLASSES)}
    logits = np.concatenate([sess.run(["logits"], encode(tok, texts[i:i + 32]))[0]
                             for i in range(0, len(texts), 32)])
    assert np.allclose(logits, x @ w + b, atol=1e-4), np.abs(logits - (x @ w + b)).max()
    accuracy = (logits.argmax(axis=1) == y).mean()
    print(f"{a.out}: {len(texts)} labelled tickets, training accuracy {accuracy:.3f}, "
          f"classes {','.join(CLASSES)}")


if __name__ == "__main__":
    main()
