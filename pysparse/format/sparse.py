"""Weight encodings of the `.spnn` format: dense f32/f16/i8 and row-block sparse.

A weight is a constant tensor viewed as a matrix (`matrix_shape`). The sparse encoding cuts
the rows into blocks of 1, 2 or 4 (remainder rows become one-row blocks) and stores, per
block, the columns where any row of the block is nonzero, as steps between column
indices, plus all of the block's values in those columns. docs/format.md has the layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SpnnFormatError
from . import spec


@dataclass(frozen=True)
class EncodedWeight:
    encoding: int  # spec.ENCODING_*
    dtype: int  # spec.VALUE_*
    block: int  # rows per block (sparse), 0 (dense)
    step_width: int  # spec.STEP_U8 / STEP_U16 (sparse), 0 (dense)
    rows: int
    cols: int
    nnz: int
    num_steps: int
    data: bytes

    @property
    def encoding_name(self) -> str:
        return spec.ENCODING_NAMES[self.encoding]

    @property
    def dtype_name(self) -> str:
        return spec.VALUE_NAMES[self.dtype]


def sparse_weights(encodings: dict[str, EncodedWeight]) -> set[str]:
    """The names of the weights stored sparse."""
    return {n for n, e in encodings.items() if e.encoding == spec.ENCODING_SPARSE}


def matrix_shape(shape) -> tuple[int, int]:
    """(rows, cols) of a tensor of this shape viewed as a matrix."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], int(np.prod(shape[1:], dtype=np.int64))


def _value_dtype(code: int) -> np.dtype:
    return np.dtype("<f4") if code == spec.VALUE_F32 else np.dtype("<f2")


def quantize(matrix: np.ndarray, dtype: int) -> np.ndarray:
    """The float32 matrix that decoding an encoding of `matrix` with value dtype `dtype` gives."""
    m = np.asarray(matrix, dtype=np.float32)
    if dtype == spec.VALUE_F32:
        return m.copy()
    if dtype == spec.VALUE_F16:
        return m.astype(np.float16).astype(np.float32)
    scale, q = _int8_rows(m)
    return (scale[:, None] * q.astype(np.float32)).astype(np.float32)


def _int8_rows(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: scale = max|row| / 127, q in [-127, 127]."""
    amax = np.abs(m).max(axis=1) if m.shape[1] else np.zeros(m.shape[0], np.float32)
    scale = (amax / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint(m / safe[:, None]), -127, 127).astype(np.int8)
    return scale, q


# -- dense ---------------------------------------------------------------------------
def encode_dense(matrix: np.ndarray, dtype: int = spec.VALUE_F32) -> EncodedWeight:
    m = np.asarray(matrix, dtype=np.float32)
    rows, cols = m.shape
    if dtype == spec.VALUE_I8:
        scale, q = _int8_rows(m)
        data = scale.astype("<f4").tobytes() + q.tobytes()
    else:
        data = m.astype(_value_dtype(dtype)).tobytes()
    return EncodedWeight(spec.ENCODING_DENSE, dtype, 0, 0, rows, cols, rows * cols, 0, data)


# -- sparse --------------------------------------------------------------------------
def block_sizes(rows: int, block: int) -> np.ndarray:
    """Rows per block: floor(rows/block) blocks of `block`, then rows % block blocks of 1."""
    return np.concatenate([np.full(rows // block, block, np.int64), np.ones(rows % block, np.int64)])


def stored_counts(matrix: np.ndarray, block: int) -> np.ndarray:
    """Stored columns per block (a column is stored when any row of the block is nonzero there)."""
    m = np.asarray(matrix)
    rows, cols = m.shape
    full = rows // block
    nz = m != 0
    head = nz[: full * block].reshape(full, block, cols).any(axis=1).sum(axis=1)
    tail = nz[full * block:].sum(axis=1)
    return np.concatenate([head, tail]).astype(np.int64)


def stored_values(matrix: np.ndarray, block: int) -> int:
    """nnz of the sparse encoding with this block size (explicit zeros of blocks included)."""
    return int((stored_counts(matrix, block) * block_sizes(matrix.shape[0], block)).sum())


def _blocks(m: np.ndarray, block: int):
    """counts, values (block by block, column by column, rows in order), stored column indices."""
    rows, cols = m.shape
    full = rows // block
    head = m[: full * block].reshape(full, block, cols).transpose(0, 2, 1)  # [blocks, cols, block]
    head_mask = (head != 0).any(axis=2)
    tail = m[full * block:]  # one-row blocks
    tail_mask = tail != 0
    counts = np.concatenate([head_mask.sum(axis=1), tail_mask.sum(axis=1)]).astype(np.int64)
    values = np.concatenate([head[head_mask].reshape(-1), tail[tail_mask]])
    columns = np.concatenate([np.nonzero(head_mask)[1], np.nonzero(tail_mask)[1]]).astype(np.int64)
    return counts, values, columns


def _steps_from_columns(counts: np.ndarray, columns: np.ndarray) -> np.ndarray:
    steps = np.diff(columns, prepend=0)
    starts = np.cumsum(counts) - counts  # index of each block's first step
    firsts = starts[counts > 0]
    steps[firsts] = columns[firsts]
    return steps


def encode_steps_u8(steps: np.ndarray) -> bytes:
    steps = np.asarray(steps, np.int64)
    big = steps >= spec.STEP_ESCAPE
    lengths = np.where(big, 3, 1)
    pos = np.cumsum(lengths) - lengths
    out = np.zeros(int(lengths.sum()), np.uint8)
    out[pos[~big]] = steps[~big]
    out[pos[big]] = spec.STEP_ESCAPE
    out[pos[big] + 1] = steps[big] & 0xFF
    out[pos[big] + 2] = steps[big] >> 8
    return out.tobytes()


def encode_sparse(matrix: np.ndarray, block: int = 1, dtype: int = spec.VALUE_F32,
                  step_width: int | None = None) -> EncodedWeight:
    """Sparse encoding; step_width None picks the smaller of u8-with-escape and u16."""
    if block not in spec.SPARSE_BLOCKS:
        raise ValueError(f"sparse block must be one of {spec.SPARSE_BLOCKS}, not {block}")
    if dtype not in (spec.VALUE_F32, spec.VALUE_F16):
        raise ValueError("sparse values are f32 or f16")
    m = quantize(matrix, dtype)
    rows, cols = m.shape
    if cols > spec.MAX_STEP + 1:
        raise ValueError(f"sparse encoding needs cols <= {spec.MAX_STEP + 1}, not {cols}")
    counts, values, columns = _blocks(m, block)
    steps = _steps_from_columns(counts, columns)
    u8 = encode_steps_u8(steps)
    u16 = steps.astype("<u2").tobytes()
    if step_width is None:
        step_width = spec.STEP_U8 if len(u8) <= len(u16) else spec.STEP_U16
    step_bytes = u8 if step_width == spec.STEP_U8 else u16
    data = counts.astype("<u4").tobytes() + values.astype(_value_dtype(dtype)).tobytes() + step_bytes
    return EncodedWeight(spec.ENCODING_SPARSE, dtype, block, step_width, rows, cols, int(values.size),
                         int(steps.size), data)


# -- decoding (validating) -----------------------------------------------------------
def _fail(where: str, msg: str):
    raise SpnnFormatError(f"{where}: {msg}")


def decode_steps_u8(raw: np.ndarray, num_steps: int, where: str) -> np.ndarray:
    """Steps from u8-with-escape bytes; all bytes must be used by exactly num_steps steps."""
    n = raw.size
    is_payload = np.zeros(n, bool)
    escapes = []
    skip_until = 0
    for c in np.flatnonzero(raw == spec.STEP_ESCAPE).tolist():  # bounded by the data length
        if c < skip_until:
            continue
        if c + 2 >= n:
            _fail(where, f"step escape at byte {c} of the steps runs past the data")
        escapes.append(c)
        skip_until = c + 3
    esc = np.asarray(escapes, np.int64)
    if esc.size:
        is_payload[esc + 1] = True
        is_payload[esc + 2] = True
    starts = np.flatnonzero(~is_payload)
    if starts.size != num_steps:
        _fail(where, f"the step bytes hold {starts.size} steps, num_steps is {num_steps}")
    steps = raw[starts].astype(np.int64)
    if esc.size:
        at = np.searchsorted(starts, esc)
        steps[at] = raw[esc + 1].astype(np.int64) | (raw[esc + 2].astype(np.int64) << 8)
    return steps


def check_descriptor(w: EncodedWeight, where: str) -> None:
    """Field checks that need no data; raises SpnnFormatError."""
    if w.encoding == spec.ENCODING_DENSE:
        if w.dtype not in spec.VALUE_NAMES:
            _fail(where, f"unknown value dtype {w.dtype}")
        if w.block != 0 or w.step_width != 0 or w.num_steps != 0:
            _fail(where, "dense weight with nonzero block, step width or num_steps")
        if w.nnz != w.rows * w.cols:
            _fail(where, f"dense weight nnz {w.nnz} != rows*cols {w.rows * w.cols}")
        expect = w.rows * w.cols * (4 if w.dtype == spec.VALUE_F32 else 2 if w.dtype == spec.VALUE_F16 else 1)
        if w.dtype == spec.VALUE_I8:
            expect += 4 * w.rows
        if len(w.data) != expect:
            _fail(where, f"dense {w.dtype_name} data is {len(w.data)} bytes, expected {expect}")
    elif w.encoding == spec.ENCODING_SPARSE:
        if w.dtype not in (spec.VALUE_F32, spec.VALUE_F16):
            _fail(where, f"sparse value dtype {w.dtype} is not f32 or f16")
        if w.block not in spec.SPARSE_BLOCKS:
            _fail(where, f"sparse block {w.block} is not 1, 2 or 4")
        if w.step_width not in (spec.STEP_U8, spec.STEP_U16):
            _fail(where, f"step width {w.step_width} is not 1 or 2")
        if w.nnz > w.rows * w.cols:
            _fail(where, f"nnz {w.nnz} exceeds rows*cols {w.rows * w.cols}")
        if w.num_steps > w.nnz:
            _fail(where, f"num_steps {w.num_steps} exceeds nnz {w.nnz}")
    else:
        _fail(where, f"unknown encoding {w.encoding}")


def decode(w: EncodedWeight, where: str = "weight") -> np.ndarray:
    """The float32 [rows, cols] matrix of an encoded weight, validating it fully."""
    check_descriptor(w, where)
    rows, cols, data = w.rows, w.cols, w.data
    if w.encoding == spec.ENCODING_DENSE:
        if w.dtype == spec.VALUE_I8:
            scale = np.frombuffer(data, "<f4", rows).astype(np.float32)
            q = np.frombuffer(data, np.int8, rows * cols, offset=4 * rows).reshape(rows, cols)
            return (scale[:, None] * q.astype(np.float32)).astype(np.float32)
        return np.frombuffer(data, _value_dtype(w.dtype), rows * cols).astype(np.float32).reshape(rows, cols)

    sizes = block_sizes(rows, w.block)
    num_blocks = sizes.size
    if 4 * num_blocks > len(data):
        _fail(where, f"{num_blocks} block counts need {4 * num_blocks} bytes, data is {len(data)}")
    counts = np.frombuffer(data, "<u4", num_blocks).astype(np.int64)
    over = np.flatnonzero(counts > cols)
    if over.size:
        _fail(where, f"block {over[0]} stores {counts[over[0]]} columns, more than cols {cols}")
    if int((counts * sizes).sum()) != w.nnz:
        _fail(where, f"counts give {int((counts * sizes).sum())} values, nnz is {w.nnz}")
    if int(counts.sum()) != w.num_steps:
        _fail(where, f"counts give {int(counts.sum())} steps, num_steps is {w.num_steps}")
    vbytes = 4 if w.dtype == spec.VALUE_F32 else 2
    vend = 4 * num_blocks + w.nnz * vbytes
    if vend > len(data):
        _fail(where, f"values end at byte {vend}, data is {len(data)} bytes")
    values = np.frombuffer(data, _value_dtype(w.dtype), w.nnz, offset=4 * num_blocks).astype(np.float32)
    raw = np.frombuffer(data, np.uint8, offset=vend)
    if w.step_width == spec.STEP_U16:
        if raw.size != 2 * w.num_steps:
            _fail(where, f"u16 steps take {raw.size} bytes, expected {2 * w.num_steps}")
        steps = np.frombuffer(data, "<u2", w.num_steps, offset=vend).astype(np.int64)
    else:
        steps = decode_steps_u8(raw, w.num_steps, where)

    # Columns: running sums of the steps inside each block.
    starts = np.cumsum(counts) - counts
    csum = np.cumsum(steps)
    base = np.where(starts > 0, csum[np.maximum(starts - 1, 0)] if csum.size else 0, 0)
    columns = csum - np.repeat(base, counts)
    first = np.zeros(steps.size, bool)
    first[starts[counts > 0]] = True
    bad = np.flatnonzero(~first & (steps < 1))
    if bad.size:
        _fail(where, f"step {bad[0]} is 0: a block's columns must strictly increase")
    bad = np.flatnonzero(columns >= cols)
    if bad.size:
        _fail(where, f"step {bad[0]} reaches column {columns[bad[0]]}, cols is {cols}")

    out = np.zeros((rows, cols), np.float32)
    block_of = np.repeat(np.arange(num_blocks, dtype=np.int64), counts)
    full = rows // w.block
    n_head = int(counts[:full].sum())
    head_vals = values[: n_head * w.block].reshape(n_head, w.block)
    for r in range(w.block):
        out[block_of[:n_head] * w.block + r, columns[:n_head]] = head_vals[:, r]
    tail_rows = full * w.block + (block_of[n_head:] - full)
    out[tail_rows, columns[n_head:]] = values[n_head * w.block:]
    return out
