"""The arena check of the `.spnn` readers: no two tensors live at the same time share a byte.

A tensor is live from the op that writes it (graph inputs: from the start, all together) to
the last op that reads it (graph outputs: to the end), both included, so an op's output
never shares bytes with its inputs. The check walks the ops in order and keeps the live
tensors in a segment tree over the distinct arena offsets: a leaf holds the live tensor that
starts there, a node the end of the one of its leaves that ends furthest. A new tensor
[s, e) overlaps a live one exactly when, among the live tensors starting below e, the one
that ends furthest ends after s: one query of O(log n), so the whole check is O(n log n)
however many tensors are live together.
"""
from __future__ import annotations

from bisect import bisect_left
from math import prod

from ..ir import Graph

ARENA_ALIGN = 64  # the arena a file declares is its tensors' highest end rounded up to this


def arena_need(graph: Graph, offsets: dict[str, int]) -> int:
    """Bytes the arena needs for the tensors placed in it, rounded up to ARENA_ALIGN."""
    top = max((off + 4 * prod(graph.tensors[n].shape) for n, off in offsets.items()), default=0)
    return -(-top // ARENA_ALIGN) * ARENA_ALIGN


def first_live_overlap(graph: Graph, offsets: dict[str, int]) -> tuple[str, str] | None:
    """(live tensor, newer tensor) of the first overlap found in op order, else None."""
    n_ops = len(graph.ops)
    end = {n: off + 4 * prod(graph.tensors[n].shape) for n, off in offsets.items()}
    last = dict.fromkeys(graph.inputs, -1)
    for k, op in enumerate(graph.ops):
        for n in op.inputs:
            if n in last:
                last[n] = k
        for n in op.outputs:
            last[n] = k
    for n in graph.outputs:
        last[n] = n_ops
    dying: list[list[str]] = [[] for _ in range(n_ops + 2)]  # graph outputs: never
    for n, k in last.items():
        dying[k + 1].append(n)

    starts = sorted(set(offsets.values()))
    size = len(starts)
    top = [0] * (2 * size)  # per node: the furthest end below it (0: nothing live)
    who: list[str | None] = [None] * (2 * size)

    def put(name: str, live: bool) -> None:
        i = bisect_left(starts, offsets[name]) + size
        top[i], who[i] = (end[name], name) if live else (0, None)
        i >>= 1
        while i:
            a, b = 2 * i, 2 * i + 1
            j = a if top[a] >= top[b] else b
            top[i], who[i] = top[j], who[j]
            i >>= 1

    def overlap(name: str) -> str | None:
        lo, hi = size, size + bisect_left(starts, end[name])
        best, best_name = 0, None
        while lo < hi:
            if lo & 1:
                if top[lo] > best:
                    best, best_name = top[lo], who[lo]
                lo += 1
            if hi & 1:
                hi -= 1
                if top[hi] > best:
                    best, best_name = top[hi], who[hi]
            lo >>= 1
            hi >>= 1
        return best_name if best > offsets[name] else None

    # The start: all graph inputs at once, checked in offset order; those read later fill
    # the tree's leaves, and the nodes above them are made bottom-up.
    ordered = sorted(graph.inputs, key=offsets.__getitem__)
    reach, reacher = -1, None
    for n in ordered:
        if offsets[n] < reach:
            return reacher, n
        if end[n] > reach:
            reach, reacher = end[n], n
    for n in graph.inputs:
        if last[n] >= 0:
            i = bisect_left(starts, offsets[n]) + size
            top[i], who[i] = end[n], n
    for i in range(size - 1, 0, -1):
        a, b = 2 * i, 2 * i + 1
        j = a if top[a] >= top[b] else b
        top[i], who[i] = top[j], who[j]
    for step in range(1, n_ops + 1):
        for n in graph.ops[step - 1].outputs:
            other = overlap(n)
            if other is not None:
                return other, n
            put(n, True)
        for n in dying[step]:
            put(n, False)
    return None
