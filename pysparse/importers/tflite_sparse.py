"""TFLite's own sparse tensor storage: reading it (densify) and writing it (sparsify).

A TFLite sparse tensor keeps its dense shape and carries `SparsityParameters`: the dense
shape is optionally cut into blocks (`block_map` names the blocked dimensions; the block
sizes are the extra dimensions' sizes), the resulting dimensions are visited in
`traversal_order`, and each visited dimension is DENSE (all `dense_size` indices) or
SPARSE_CSR (`array_segments` / `array_indices`, like a CSR matrix's row pointers and
column indices, indexed by the position reached in the previous dimension). The buffer
holds the values in visiting order.

`sparsify_tflite(model_bytes, min_sparsity)` rewrites a model's constant 1x1 convolution
weights that are at least that sparse into this storage, feeding the convolution through
a DENSIFY op (`sparse fp16 -> DENSIFY -> DEQUANTIZE -> CONV_2D` for fp16 weights, `sparse
fp32 -> DENSIFY -> CONV_2D` for fp32 ones). That is the pattern TFLite's XNNPACK delegate
recognises to switch on its sparse inference path; results are unchanged, since DENSIFY
restores the same values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelFormatError
from ..fsutil import write_atomic

DENSE, SPARSE_CSR = 0, 1  # tflite.DimensionType


@dataclass
class DimMeta:
    format: int
    dense_size: int = 0
    segments: np.ndarray | None = None
    indices: np.ndarray | None = None


@dataclass
class Sparsity:
    traversal_order: list[int]
    block_map: list[int]
    dims: list[DimMeta]


def _index_vector(union_type: int, table) -> np.ndarray:
    """Reads a SparseIndexVector union (Int32Vector / Uint16Vector / Uint8Vector)."""
    import tflite
    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(union_type)
    if cls is None or table is None:
        raise ModelFormatError(f"sparse tensor: index vector of unknown type {union_type}")
    v = cls()
    v.Init(table.Bytes, table.Pos)
    arr = v.ValuesAsNumpy()
    return np.zeros(0, np.int64) if isinstance(arr, int) else arr.astype(np.int64)


def read_sparsity(sp) -> Sparsity:
    """Plain-data view of a `tflite.SparsityParameters` table."""
    order = [int(v) for v in sp.TraversalOrderAsNumpy()] if sp.TraversalOrderLength() else []
    block_map = [int(v) for v in sp.BlockMapAsNumpy()] if sp.BlockMapLength() else []
    dims = []
    for k in range(sp.DimMetadataLength()):
        d = sp.DimMetadata(k)
        if d.Format() == DENSE:
            dims.append(DimMeta(DENSE, int(d.DenseSize())))
        else:
            dims.append(DimMeta(SPARSE_CSR, 0, _index_vector(d.ArraySegmentsType(), d.ArraySegments()),
                                _index_vector(d.ArrayIndicesType(), d.ArrayIndices())))
    return Sparsity(order, block_map, dims)


def densify(values: np.ndarray, shape: tuple[int, ...], sp: Sparsity, budget=None) -> np.ndarray:
    """The dense tensor of `shape` that the sparse `values` with parameters `sp` describe.
    Vectorised over all paths at each level; every index is checked, so a malformed
    tensor raises ModelFormatError instead of reading out of bounds.

    `budget` (an importers.limits.ElementBudget) pays for the dense tensor before anything
    is allocated (ResourceLimitError when it cannot); no level of the walk may visit more
    paths than the dense tensor has elements, so the walk's memory is a small multiple of
    that."""
    if any(int(d) < 0 for d in shape):
        raise ModelFormatError(f"sparse tensor: negative dimension in {tuple(shape)}")
    total = 1
    for d in shape:
        total *= int(d)
    if budget is not None:
        budget.take(total, f"sparse tensor of shape {tuple(shape)}")

    def visit(n: int) -> None:
        if n > total:
            raise ModelFormatError(f"sparse tensor: {n} stored positions for a shape of {total} elements")

    rank, nblk = len(shape), len(sp.block_map)
    order = sp.traversal_order or list(range(rank))
    if len(order) != rank + nblk or sorted(order) != list(range(rank + nblk)) or len(sp.dims) != len(order):
        raise ModelFormatError("sparse tensor: traversal order and dimension metadata do not agree")
    if sorted(order[:rank]) != list(range(rank)) or any(not 0 <= m < rank for m in sp.block_map):
        raise ModelFormatError("sparse tensor: block dimensions must come after the original ones")
    pos = np.zeros(1, np.int64)  # position reached in the previous level, per path
    coords: list[np.ndarray] = []  # per level, the index of each path in that level's dimension
    for d in sp.dims:
        if d.format == DENSE:
            n = d.dense_size
            if n < 0:
                raise ModelFormatError("sparse tensor: negative dense size")
            visit(pos.size * n)
            coords = [np.repeat(c, n) for c in coords]
            i = np.tile(np.arange(n, dtype=np.int64), pos.size)
            pos = np.repeat(pos, n) * n + i
            coords.append(i)
        elif d.format == SPARSE_CSR:
            seg, idx = np.asarray(d.segments, np.int64), np.asarray(d.indices, np.int64)
            if pos.size and (pos.max() + 1 >= seg.size):
                raise ModelFormatError("sparse tensor: segment array too short")
            start, end = seg[pos], seg[pos + 1]
            counts = end - start
            if (counts < 0).any() or (end > idx.size).any():
                raise ModelFormatError("sparse tensor: bad segment array")
            visit(int(counts.sum()))
            coords = [np.repeat(c, counts) for c in coords]
            # positions start..end-1 of every path, in order
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            pos = np.repeat(start, counts) + offsets
            coords.append(idx[pos])
        else:
            raise ModelFormatError(f"sparse tensor: unknown dimension format {d.format}")
    if pos.size != values.size:
        raise ModelFormatError(f"sparse tensor: {values.size} values for {pos.size} stored positions")
    orig = [None] * rank
    for level in range(rank):
        orig[order[level]] = coords[level]
    for level in range(rank, rank + nblk):
        k = order[level] - rank
        m = sp.block_map[k]
        block = sp.dims[level].dense_size  # block dimensions are dense
        orig[m] = orig[m] * block + coords[level]
    for m in range(rank):
        if orig[m].size and (orig[m].min() < 0 or orig[m].max() >= shape[m]):
            raise ModelFormatError("sparse tensor: index outside the dense shape")
    dense = np.zeros(shape, values.dtype)
    dense[tuple(orig)] = values
    return dense


# -- writing: TFLite's sparse storage for 1x1 convolution weights ---------------------------

def _schema():
    try:  # the flatbuffer object API of the TFLite schema, shipped with LiteRT
        from ai_edge_litert import schema_py_generated as fb
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError("sparsify_tflite needs the `ai-edge-litert` package (pip install ai-edge-litert)") from e
    return fb


def _index_vector_t(fb, values: np.ndarray):
    """The smallest SparseIndexVector type that holds `values`, and the vector."""
    top = int(values.max()) if values.size else 0
    for union, cls, limit in ((fb.SparseIndexVector.Uint8Vector, fb.Uint8VectorT, 1 << 8),
                              (fb.SparseIndexVector.Uint16Vector, fb.Uint16VectorT, 1 << 16),
                              (fb.SparseIndexVector.Int32Vector, fb.Int32VectorT, 1 << 31)):
        if top < limit:
            v = cls()
            v.values = [int(x) for x in values]
            return union, v
    raise ValueError("index too large for a TFLite sparse tensor")


def encode_1x1(weight: np.ndarray, block: int = 1):
    """Sparse storage of a [Cout, 1, 1, Cin] weight: (values, SparsityParametersT).
    With block > 1, `block` consecutive output channels share their stored columns
    (a column is stored when any of them is nonzero there)."""
    fb = _schema()
    cout, kh, kw, cin = weight.shape
    if (kh, kw) != (1, 1) or cout % block:
        raise ValueError(f"not a 1x1 weight with {block}-row blocks: {weight.shape}")
    rows = weight.reshape(cout // block, block, cin)
    stored = (rows != 0).any(axis=1)  # [blocks, Cin]
    if not stored.any():  # keep one explicit zero: TFLite treats an empty buffer as no data
        stored[0, 0] = True
    segments = np.concatenate([[0], np.cumsum(stored.sum(axis=1))])
    indices = np.nonzero(stored)[1]
    # values: block by block, stored column by column, the block's rows inside a column
    values = rows.transpose(0, 2, 1)[stored].reshape(-1)

    def dense(n):
        d = fb.DimensionMetadataT()
        d.format, d.denseSize = DENSE, n
        return d

    csr = fb.DimensionMetadataT()
    csr.format = SPARSE_CSR
    csr.arraySegmentsType, csr.arraySegments = _index_vector_t(fb, segments)
    csr.arrayIndicesType, csr.arrayIndices = _index_vector_t(fb, indices)
    sp = fb.SparsityParametersT()
    sp.dimMetadata = [dense(cout // block), dense(1), dense(1), csr]
    sp.traversalOrder = [0, 1, 2, 3]
    if block > 1:
        sp.traversalOrder.append(4)
        sp.blockMap = [0]
        sp.dimMetadata.append(dense(block))
    return values.astype(weight.dtype), sp


def sparsify_tflite(model: bytes, min_sparsity: float = 0.7, block: int = 1, converted: list | None = None,
                    fp16: str = "keep") -> bytes:
    """Rewrites the constant 1x1 CONV_2D weights (fp32, or fp16 behind DEQUANTIZE) whose
    fraction of zeros is at least `min_sparsity` into TFLite's sparse storage, read through
    a DENSIFY op. Other weights, ops and metadata are kept. `converted`, when given,
    receives (tensor name, sparsity) for each rewritten weight.

    fp16 weights: "keep" stores the sparse values as fp16 (sparse fp16 -> DENSIFY ->
    DEQUANTIZE -> CONV_2D, half the bytes); "expand" stores them as fp32 and drops the
    DEQUANTIZE (sparse fp32 -> DENSIFY -> CONV_2D, for runtimes that only densify fp32).
    Both store the same values (fp16 -> fp32 is exact); TFLite's builtin kernels then give
    bit-identical results, while XNNPACK may round differently with "expand", since it can
    run fp16-stored weights through its own fp16-weight path."""
    fb = _schema()
    if fp16 not in ("keep", "expand"):
        raise ValueError("fp16 must be 'keep' or 'expand'")
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ModelFormatError("not a TFLite model (no TFL3 identifier at byte 4)")
    try:
        m = fb.ModelT.InitFromPackedBuf(bytearray(model), 0)
    except Exception as e:
        raise ModelFormatError(f"cannot parse TFLite flatbuffer: {e}") from e

    def builtin(op_code):
        return max(op_code.builtinCode, op_code.deprecatedBuiltinCode)

    densify_index = next((k for k, oc in enumerate(m.operatorCodes) if builtin(oc) == fb.BuiltinOperator.DENSIFY), None)
    buffer_users: dict[int, int] = {}
    for sg in m.subgraphs:
        for t in sg.tensors:
            buffer_users[t.buffer] = buffer_users.get(t.buffer, 0) + 1
    for sg in m.subgraphs:
        producers = {o: op for op in sg.operators for o in op.outputs}
        readers: dict[int, int] = {}
        for op in sg.operators:
            for i in (op.inputs if op.inputs is not None else []):
                readers[int(i)] = readers.get(int(i), 0) + 1
        new_ops, dropped = [], []
        for op in sg.operators:
            if builtin(m.operatorCodes[op.opcodeIndex]) != fb.BuiltinOperator.CONV_2D or len(op.inputs) < 2:
                continue
            w = op.inputs[1]
            dequantize = producers.get(w)
            if dequantize is not None and builtin(m.operatorCodes[dequantize.opcodeIndex]) == fb.BuiltinOperator.DEQUANTIZE:
                w = dequantize.inputs[0]
            else:
                dequantize = None
            t = sg.tensors[w]
            dtype = {fb.TensorType.FLOAT32: np.float32, fb.TensorType.FLOAT16: np.float16}.get(t.type)
            data = m.buffers[t.buffer].data if t.buffer > 0 else None
            if dtype is None or t.sparsity is not None or data is None or len(t.shape) != 4 \
                    or tuple(t.shape[1:3]) != (1, 1) or t.shape[0] % block or w in producers:
                continue
            weight = np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype).reshape(t.shape)
            sparsity = float(np.mean(weight == 0))
            if sparsity < min_sparsity:
                continue
            # The sparse constant is DENSIFY's input; DENSIFY writes an existing tensor, so
            # every reader of the weight keeps reading the same (dense) values.
            target = w
            if dequantize is not None and fp16 == "expand" and readers.get(int(w), 0) == 1:
                weight, target = weight.astype(np.float32), dequantize.outputs[0]
                dropped.append(dequantize)
            values, sp = encode_1x1(weight, block)
            if densify_index is None:
                oc = fb.OperatorCodeT()
                oc.builtinCode = oc.deprecatedBuiltinCode = fb.BuiltinOperator.DENSIFY
                oc.version = 1
                m.operatorCodes.append(oc)
                densify_index = len(m.operatorCodes) - 1
            buf = fb.BufferT()
            buf.data = np.frombuffer(values.tobytes(), np.uint8)
            m.buffers.append(buf)
            name = t.name.decode() if isinstance(t.name, bytes) else (t.name or "weight")
            st = fb.TensorT()
            st.name = name + "_sparse"
            st.shape, st.buffer, st.sparsity = list(t.shape), len(m.buffers) - 1, sp
            st.type = fb.TensorType.FLOAT32 if values.dtype == np.float32 else fb.TensorType.FLOAT16
            sg.tensors.append(st)
            if buffer_users.get(t.buffer, 0) == 1:
                m.buffers[t.buffer].data = None  # nothing else reads the dense copy
            t.buffer = 0
            d = fb.OperatorT()
            d.opcodeIndex, d.inputs, d.outputs = densify_index, [len(sg.tensors) - 1], [target]
            d.builtinOptionsType = fb.BuiltinOptions.DensifyOptions
            d.builtinOptions = fb.DensifyOptionsT()
            new_ops.append(d)
            producers[w] = producers[target] = d
            if converted is not None:
                converted.append((name, sparsity))
        # DENSIFY reads only constants, so running them all first is in order.
        sg.operators = new_ops + [op for op in sg.operators if all(op is not x for x in dropped)]
    import flatbuffers
    b = flatbuffers.Builder(len(model) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def main(argv=None) -> int:
    import argparse
    import os
    ap = argparse.ArgumentParser(prog="python -m pysparse.importers.tflite_sparse",
                                 description="Store a TFLite model's sparse 1x1 convolution weights in TFLite's "
                                             "sparse format (DENSIFY), as XNNPACK's sparse inference expects.")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--min-sparsity", type=float, default=0.7, help="fraction of zeros a weight needs (default 0.7)")
    ap.add_argument("--block", type=int, default=1, help="output channels per sparse block (default 1)")
    ap.add_argument("--fp16", choices=["keep", "expand"], default="keep",
                    help="fp16 weights: keep them fp16 (default) or store the sparse values as fp32")
    args = ap.parse_args(argv)
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        ap.error("the output must be a different file from the input")
    with open(args.input, "rb") as f:
        data = f.read()
    converted: list = []
    out = sparsify_tflite(data, args.min_sparsity, args.block, converted, args.fp16)
    write_atomic(args.output, out)
    for name, sparsity in converted:
        print(f"  {name}: {sparsity:.1%} zeros, stored sparse")
    print(f"{args.output}: {len(converted)} weights stored sparse, {len(data)} -> {len(out)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
