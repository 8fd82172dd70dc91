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


def densify(values: np.ndarray, shape: tuple[int, ...], sp: Sparsity) -> np.ndarray:
    """The dense tensor of `shape` that the sparse `values` with parameters `sp` describe.
    Vectorised over all paths at each level; every index is checked, so a malformed
    tensor raises ModelFormatError instead of reading out of bounds."""
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
            coords = [np.repeat(c, n) for c in coords]
            i = np.tile(np.arange(n, dtype=np.int64), pos.size)
            pos = np.repeat(pos, n) * n + i
            coords.append(i)
        elif d.format == SPARSE_CSR:
            seg, idx = d.segments, d.indices
            if pos.size and (pos.max() + 1 >= seg.size):
                raise ModelFormatError("sparse tensor: segment array too short")
            start, end = seg[pos], seg[pos + 1]
            counts = end - start
            if (counts < 0).any() or (end > idx.size).any():
                raise ModelFormatError("sparse tensor: bad segment array")
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
