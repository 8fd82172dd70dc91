"""Clean-up passes: drop ops that do nothing and tensors nobody reads.

Plain functions Graph -> Graph; each returns a rewritten copy.
"""
from __future__ import annotations

import copy

from ..ir import Graph, Op


def _is_identity(graph: Graph, op: Op) -> bool:
    x = graph.tensors[op.inputs[0]]
    y = graph.tensors[op.outputs[0]]
    if x.shape != y.shape:
        return False
    if op.type == "RESHAPE":
        return True
    if op.type == "TRANSPOSE":
        return all(op.attr(f"perm{k}") == k for k in range(len(x.shape)))
    if op.type == "CLIP":
        return op.attr("min") == float("-inf") and op.attr("max") == float("inf")
    if op.type == "PAD":
        return not any(op.attr(f"pad{a}_{e}") for a in range(4) for e in ("begin", "end"))
    if op.type == "CONCAT":
        return len([i for i in op.inputs if i]) == 1
    return False


def remove_identities(graph: Graph) -> Graph:
    """Removes RESHAPE to the same shape, TRANSPOSE by the identity, empty PAD, unbounded
    CLIP and one-input CONCAT; merges RESHAPE chains. Readers of the removed op's output read
    its input instead. Where that output is a graph output, the op that made the input
    writes the graph output directly (or the op stays, if the input is an input, a
    constant or itself an output)."""
    g = copy.deepcopy(graph)
    # RESHAPE(RESHAPE(x)) = RESHAPE(x), when the inner one has no other reader.
    consumers = g.consumers()
    producers = g.producers()
    for op in g.ops:
        if op.type == "RESHAPE":
            inner = producers.get(op.inputs[0])
            if inner is not None and inner.type == "RESHAPE" and len(consumers[op.inputs[0]]) == 1 \
                    and op.inputs[0] not in g.outputs:
                op.inputs[0] = inner.inputs[0]
                consumers = g.consumers()
    kept = []
    rename: dict[str, str] = {}
    producers = g.producers()
    for op in g.ops:
        op.inputs = [rename.get(i, i) for i in op.inputs]
        if not _is_identity(g, op):
            kept.append(op)
            continue
        src, dst = op.inputs[0], op.outputs[0]
        if dst not in g.outputs:
            rename[dst] = src
            continue
        prod = producers.get(src)
        if prod is None or src in g.outputs or prod not in kept:
            kept.append(op)
            continue
        # The producer writes the graph output itself; earlier readers of src follow.
        prod.outputs = [dst if o == src else o for o in prod.outputs]
        for other in kept:
            other.inputs = [dst if i == src else i for i in other.inputs]
        rename[src] = dst
    g.ops = kept
    _prune(g)
    return g


def remove_unused(graph: Graph) -> Graph:
    """Removes ops whose results nobody reads (and that are not graph outputs), then every
    tensor no op or graph input/output names."""
    g = copy.deepcopy(graph)
    _prune(g)
    return g


def _prune(g: Graph) -> None:
    needed = set(g.outputs)
    kept = []
    for op in reversed(g.ops):
        if any(o in needed for o in op.outputs):
            kept.append(op)
            needed.update(i for i in op.inputs if i)
    g.ops = kept[::-1]
    g.remove_unused_tensors()
