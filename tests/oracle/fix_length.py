"""Writes a copy of an ONNX text model whose token inputs fix the sequence length, as
static-shape exports write them, with the `onnx` library alone:

    fix_length.py MODEL OUT LENGTH

Each graph input's second dimension (input_ids, attention_mask, token_type_ids: [batch,
sequence]) becomes LENGTH; nothing else changes.
"""

import sys

import onnx


def main():
    src, out, length = sys.argv[1], sys.argv[2], int(sys.argv[3])
    m = onnx.load(src)
    for i in m.graph.input:
        dims = i.type.tensor_type.shape.dim
        if len(dims) != 2:
            raise SystemExit(f"input {i.name} has {len(dims)} dimensions, not [batch, sequence]")
        dims[1].Clear()
        dims[1].dim_value = length
    onnx.checker.check_model(m)
    onnx.save(m, out)


if __name__ == "__main__":
    main()
