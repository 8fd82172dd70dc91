"""A batch-1 graph made to take N images at once.

Every activation tensor's leading axis is the batch; the graph computes each image as the
batch-1 graph does, so only ops that move data across that axis stop the change (a concat,
slice, transpose, reduction, softmax or padding along it, or an elementwise op whose
run-time operands have fewer axes than its output).

    g2 = passes.with_batch(graph, 2)   # inputs [2, C, H, W], outputs [2, ...]
"""
from __future__ import annotations

import copy

from ..errors import InputShapeError, UnsupportedOpError
from ..ir import Graph

_ELEMENTWISE = {"ADD", "MUL", "SUB", "DIV", "MAX", "MIN", "POW", "PRELU", "SUM"}


def _across_batch(graph: Graph, op) -> str | None:
    """Why `op` mixes images of a batch (None if it keeps them apart)."""
    a = op.attr
    rank = len(graph.tensors[op.outputs[0]].shape)
    if op.type in ("CONCAT", "SLICE") and a("axis") % rank == 0:
        return f"{op.type} along the batch axis"
    if op.type == "TRANSPOSE" and a("perm0") != 0:
        return "a transpose that moves the batch axis"
    if op.type == "MEAN" and a("axes_mask") & 1:
        return "a mean over the batch axis"
    if op.type in ("SOFTMAX", "LOG_SOFTMAX") and a("axis") % len(graph.tensors[op.inputs[0]].shape) == 0:
        return f"{op.type} along the batch axis"
    if op.type == "PAD" and (a("pad0_begin") or a("pad0_end")):
        return "padding of the batch axis"
    if op.type in _ELEMENTWISE:
        for i in op.inputs:
            t = graph.tensors[i] if i else None
            if t is not None and not t.is_constant and len(t.shape) != rank:
                return f"operand {i!r} has fewer axes than the output"
    return None


def with_batch(graph: Graph, n: int) -> Graph:
    """A copy of the batch-1 `graph` whose inputs, activations and outputs lead with `n`."""
    if int(n) != n or n < 1:
        raise ValueError(f"batch {n!r}: must be an integer >= 1")
    for name, t in graph.tensors.items():
        if not t.is_constant and (not t.shape or t.shape[0] != 1):
            raise InputShapeError(f"tensor {name!r} has shape {t.shape}: batching needs a batch-1 graph")
    for op in graph.ops:
        why = _across_batch(graph, op)
        if why:
            raise UnsupportedOpError(op.type, op.name or op.outputs[0], f"{why}; it cannot run a batch")
    g = copy.deepcopy(graph)
    for t in g.tensors.values():
        if not t.is_constant:
            t.shape = (int(n),) + tuple(t.shape[1:])
    g.validate()
    return g
