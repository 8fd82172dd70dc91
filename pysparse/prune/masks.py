"""Magnitude masks for one weight or many, unstructured or in output-channel blocks.

A weight is seen as the `.spnn` format sees it (docs/format.md): a matrix with
`rows = dims[0]` (output channels) and `cols` = the product of the other dims. With
`block = b`, the rows are cut the format's way: `rows // b` blocks of `b` consecutive rows,
then the `rows % b` remainder rows as blocks of one. The unit that is kept or dropped is a
block's column: its `b` weights at one input position, so every block column of a pruned
weight is either all zero or kept whole, which is what the engine's block kernels store.

Units are ranked by the RMS (norm "l2") or mean absolute value (norm "l1") of their
weights: for a fixed block size that is the same order as the L2/L1 norm, and it keeps
one-row remainder blocks comparable with full ones. Masks are numpy bool arrays (True =
kept) of the weight's shape; zeros already in the weight rank first, so masks grow
monotonically as a schedule raises the sparsity.
"""
from __future__ import annotations

import numpy as np

BLOCKS = (1, 2, 4)
NORMS = ("l2", "l1")


def check_block(block: int) -> int:
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    return block


def matrix_view(w: np.ndarray) -> np.ndarray:
    """The weight as the format's matrix: [dims[0], rest] (a 1-D weight is one row)."""
    if w.ndim == 0:
        return w.reshape(1, 1)
    if w.ndim == 1:
        return w.reshape(1, -1)
    return w.reshape(w.shape[0], -1)


def block_rows(rows: int, block: int) -> np.ndarray:
    """Block index of every row: `rows // block` full blocks, then one block per remainder row."""
    full = rows // block
    idx = np.arange(rows)
    return np.where(idx < full * block, idx // block, full + (idx - full * block))


def unit_scores(w: np.ndarray, block: int = 1, norm: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """Scores [num_blocks, cols] of every unit (block column) and the number of weights of
    each unit's block [num_blocks] (`block`, or 1 for remainder rows)."""
    check_block(block)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    m = np.abs(matrix_view(np.asarray(w, dtype=np.float64)))
    if norm == "l2":
        m = m * m
    rows = m.shape[0]
    ids = block_rows(rows, block)
    nb = int(ids.max()) + 1 if rows else 0
    sums = np.zeros((nb, m.shape[1]))
    np.add.at(sums, ids, m)
    sizes = np.bincount(ids, minlength=nb).astype(np.int64)
    scores = sums / sizes[:, None]
    return (np.sqrt(scores) if norm == "l2" else scores), sizes


def expand(unit_keep: np.ndarray, shape: tuple, block: int) -> np.ndarray:
    """A [num_blocks, cols] keep mask of units as a keep mask of the weight's shape."""
    rows = matrix_view(np.empty(shape, dtype=np.bool_)).shape[0]
    return unit_keep[block_rows(rows, block)].reshape(shape)


def _drop_smallest(scores: np.ndarray, sizes: np.ndarray, target: float) -> np.ndarray:
    """Keep flags for flat units: drop the lowest-scoring units while the number of weights
    dropped stays at or below round(target * total) (ties: the earlier unit first)."""
    total = int(sizes.sum())
    budget = int(round(target * total))
    order = np.argsort(scores, kind="stable")
    dropped = np.cumsum(sizes[order]) <= budget
    keep = np.ones(scores.shape, dtype=np.bool_)
    keep[order[dropped]] = False
    return keep


def layer_mask(w: np.ndarray, sparsity: float, block: int = 1, norm: str = "l2") -> np.ndarray:
    """Keep mask dropping a `sparsity` fraction of `w`'s weights, by unit magnitude."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    scores, sizes = unit_scores(w, block, norm)
    flat_sizes = np.broadcast_to(sizes[:, None], scores.shape).ravel()
    keep = _drop_smallest(scores.ravel(), flat_sizes, sparsity).reshape(scores.shape)
    return expand(keep, np.shape(w), block)


def global_masks(weights: dict, sparsity: float, block: int = 1, norm: str = "l2") -> dict:
    """Keep masks for several weights ranked together: one magnitude threshold for all, so
    that layers with many small weights lose more of them. Returns name -> mask."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    parts, shapes = [], {}
    for name, w in weights.items():
        scores, sizes = unit_scores(w, block, norm)
        shapes[name] = scores.shape
        parts.append((scores.ravel(), np.broadcast_to(sizes[:, None], scores.shape).ravel()))
    if not parts:
        return {}
    keep = _drop_smallest(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), sparsity)
    out, at = {}, 0
    for name, w in weights.items():
        n = int(np.prod(shapes[name]))
        out[name] = expand(keep[at:at + n].reshape(shapes[name]), np.shape(w), block)
        at += n
    return out


def sparsity(w: np.ndarray) -> float:
    """Fraction of exact zeros."""
    w = np.asarray(w)
    return float(np.count_nonzero(w == 0)) / w.size if w.size else 0.0


def units_all_or_nothing(mask: np.ndarray, block: int) -> bool:
    """Whether a keep mask keeps or drops each unit (block column) whole."""
    m = matrix_view(np.asarray(mask, dtype=np.bool_))
    ids = block_rows(m.shape[0], block)
    for b in range(int(ids.max()) + 1 if m.shape[0] else 0):
        rows = m[ids == b]
        if not np.all(rows == rows[0]):
            return False
    return True
