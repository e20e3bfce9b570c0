"""An oracle for a challenger's agreement with the champion, independent of batchscore:
numpy and pyarrow only. tests/operate.rs runs it with $BATCHSCORE_TEST_PYTHON and compares
its figures with the `challengers` of the _metrics.json a run wrote.

    agreement.py CHAMPION CHALLENGER KEY LABEL SCORE
        CHAMPION and CHALLENGER are Parquet files of onnxruntime's outputs on the same rows
        (joined on column KEY). For the label column LABEL: the rows, the share whose labels
        are equal, and the confusion counts {champion label: {challenger label: rows}}. For
        the score column SCORE (float32 values, compared as float64): the rows, the mean and
        the largest |challenger - champion|, numpy.corrcoef's correlation, and numpy's
        percentiles 1, 5, 25, 50, 75, 95 and 99 of challenger - champion. Prints JSON.
"""

import json
import sys

import numpy as np
import pyarrow.parquet as pq


def main(champion_path, challenger_path, key, label, score):
    a = pq.read_table(champion_path).to_pydict()
    b = pq.read_table(challenger_path).to_pydict()
    at = {k: i for i, k in enumerate(b[key])}
    rows = [(i, at[k]) for i, k in enumerate(a[key]) if k in at]
    la = np.array([a[label][i] for i, _ in rows])
    lb = np.array([b[label][j] for _, j in rows])
    confusion = {}
    for x, y in zip(la.tolist(), lb.tolist()):
        row = confusion.setdefault(str(x), {})
        row[str(y)] = row.get(str(y), 0) + 1
    sa = np.array([a[score][i] for i, _ in rows], dtype=np.float32).astype(np.float64)
    sb = np.array([b[score][j] for _, j in rows], dtype=np.float32).astype(np.float64)
    diff = sb - sa
    out = {
        "label": {
            "rows": int(len(la)),
            "agreement_rate": float(np.mean(la == lb)),
            "confusion": confusion,
        },
        "score": {
            "rows": int(len(sa)),
            "mean_abs_diff": float(np.mean(np.abs(diff))),
            "max_abs_diff": float(np.max(np.abs(diff))),
            "correlation": float(np.corrcoef(sa, sb)[0, 1]),
            "percentiles": {
                f"p{q:02d}": float(np.percentile(diff, q)) for q in (1, 5, 25, 50, 75, 95, 99)
            },
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
