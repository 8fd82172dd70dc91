"""Per-layer choice of weight encoding: dense GEMM or sparse SpMM (block 1, 2 or 4).

Only the weights of 1x1, stride-1, unpadded, ungrouped convolutions and of fully connected
layers can be sparse: those are the products W[M x K] . X[K x P] the engine runs as SpMM
over P pixels (P = N rows for fully connected). Every other weight is dense.

The estimate is time = floating-point work / sustained rate. Dense work is 2*M*K*P flops.
Sparse work counts every *stored* value (a block of b rows stores all b values of a
column where any of them is nonzero), 2*stored*P flops, at a rate that grows with b
because each stored column's pixel load is shared by the b rows of the block.

The rates (GFLOP/s, WebAssembly SIMD128, one thread) are the single place these figures
live; they come from the engine's kernel microbenchmarks (`make bench-kernels`): the
dense GEMM kernel sustains ~42, the sparse kernel ~28 effective over stored values with
one row per block and ~36 with four; two rows sits between.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Op
from . import spec
from .sparse import stored_values

DENSE_GFLOPS = 42.0
SPARSE_GFLOPS = {1: 28.0, 2: 32.0, 4: 36.0}


@dataclass(frozen=True)
class Choice:
    encoding: str  # "dense" or "sparse"
    block: int  # rows per block (sparse), 0 (dense)
    stored: int  # values stored (sparse: with the block's explicit zeros), or M*K (dense)
    seconds: float  # estimated time of the product


def spmm_problem(graph: Graph, op: Op) -> tuple[int, int, int] | None:
    """(M, K, P) when op's weight may be stored sparse, else None."""
    if op.type == "FULLY_CONNECTED":
        w = graph.tensors[op.inputs[1]].shape
        x = graph.tensors[op.inputs[0]].shape
        m, k, p = w[0], w[1], x[0]
    elif op.type == "CONV2D":
        w = graph.tensors[op.inputs[1]].shape
        out = graph.tensors[op.outputs[0]].shape
        pads = [op.attr(f"pad_{s}") for s in ("top", "left", "bottom", "right")]
        if (w[2], w[3]) != (1, 1) or op.attr("groups") != 1 or any(pads) \
                or op.attr("stride_h") != 1 or op.attr("stride_w") != 1:
            return None
        m, k, p = w[0], w[1], out[0] * out[2] * out[3]
    else:
        return None
    if k > spec.MAX_STEP + 1:  # steps are at most u16
        return None
    return m, k, p


def dense_seconds(m: int, k: int, p: int) -> float:
    return 2.0 * m * k * p / (DENSE_GFLOPS * 1e9)


def sparse_seconds(stored: int, p: int, block: int) -> float:
    return 2.0 * stored * p / (SPARSE_GFLOPS[block] * 1e9)


def best_sparse(matrix: np.ndarray, p: int) -> Choice:
    options = []
    for b in spec.SPARSE_BLOCKS:
        s = stored_values(matrix, b)
        options.append(Choice("sparse", b, s, sparse_seconds(s, p, b)))
    return min(options, key=lambda c: (c.seconds, c.block))


def choose(matrix: np.ndarray, p: int, force: bool | None = None) -> Choice:
    """The cheaper encoding of an [M, K] weight applied to P pixels; force True picks the
    best sparse block, False dense, None whichever is estimated faster."""
    m, k = matrix.shape
    dense = Choice("dense", 0, m * k, dense_seconds(m, k, p))
    if force is False:
        return dense
    sparse = best_sparse(matrix, p)
    if force is True:
        return sparse
    return sparse if sparse.seconds < dense.seconds else dense
