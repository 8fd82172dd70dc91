"""Activation memory plan: one arena, tensors placed by liveness with best-fit reuse.

A tensor is live from the op that writes it (graph inputs: from the start) to the last
op that reads it (graph outputs: to the end). Ops never write in place, so an op's output
never shares bytes with its inputs. Walking the ops in order, each op's outputs take the
smallest free hole that fits (else the end of the arena grows), then tensors whose last
reader was this op give their space back.
"""
from __future__ import annotations

import bisect

from ..ir import Graph

ALIGNMENT = 64  # bytes; the format needs 16, cache lines and SIMD loads like 64
ELEMENT_BYTES = 4


def _round(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def lifetimes(graph: Graph) -> dict[str, tuple[int, int]]:
    """Non-constant tensor -> (first op index, last op index), inclusive; inputs start at -1,
    outputs end at len(graph.ops)."""
    end = len(graph.ops)
    life: dict[str, list[int]] = {n: [-1, -1] for n in graph.inputs}
    for i, op in enumerate(graph.ops):
        for n in op.inputs:
            if n in life:
                life[n][1] = max(life[n][1], i)
        for n in op.outputs:
            life.setdefault(n, [i, i])
    for n in graph.outputs:
        if n in life:
            life[n][1] = end
    return {n: (a, b) for n, (a, b) in life.items()}


class _FreeList:
    """Free holes below the arena's high-water mark, sorted by offset, coalesced."""

    def __init__(self):
        self.holes: list[tuple[int, int]] = []  # (offset, size)
        self.top = 0

    def take(self, size: int) -> int:
        best = None
        for i, (off, sz) in enumerate(self.holes):
            if sz >= size and (best is None or sz < self.holes[best][1]):
                best = i
        if best is not None:
            off, sz = self.holes[best]
            if sz == size:
                del self.holes[best]
            else:
                self.holes[best] = (off + size, sz - size)
            return off
        if self.holes and sum(self.holes[-1]) == self.top:  # grow the last hole into new space
            off, sz = self.holes.pop()
            self.top = off + size
            return off
        off = self.top
        self.top += size
        return off

    def give(self, off: int, size: int) -> None:
        i = bisect.bisect(self.holes, (off, size))
        self.holes.insert(i, (off, size))
        if i + 1 < len(self.holes) and off + size == self.holes[i + 1][0]:
            self.holes[i] = (off, size + self.holes[i + 1][1])
            del self.holes[i + 1]
        if i > 0 and sum(self.holes[i - 1]) == self.holes[i][0]:
            self.holes[i - 1] = (self.holes[i - 1][0], self.holes[i - 1][1] + self.holes[i][1])
            del self.holes[i]


def tensor_bytes(graph: Graph, name: str) -> int:
    return ELEMENT_BYTES * graph.tensors[name].size


def plan_memory(graph: Graph, alignment: int = ALIGNMENT) -> tuple[dict[str, int], int]:
    """Arena offset of every graph input and op output, and the arena size in bytes."""
    life = lifetimes(graph)
    free = _FreeList()
    offsets: dict[str, int] = {}
    size = {n: _round(tensor_bytes(graph, n), alignment) for n in life}
    by_last: dict[int, list[str]] = {}
    for n, (_, last) in life.items():
        by_last.setdefault(last, []).append(n)
    for n in graph.inputs:
        if n not in offsets:
            offsets[n] = free.take(size[n])
    for i, op in enumerate(graph.ops):
        for n in op.outputs:
            if n not in offsets:
                offsets[n] = free.take(size[n])
        for n in by_last.get(i, ()):
            free.give(offsets[n], size[n])
    return offsets, free.top


def overlapping_live_pairs(graph: Graph, offsets: dict[str, int], limit: int = 1) -> list[tuple[str, str]]:
    """Pairs of tensors that are live at the same time and share bytes (empty for a good plan)."""
    life = lifetimes(graph)
    names = sorted(life, key=lambda n: life[n][0])
    found = []
    active: list[str] = []
    for n in names:
        first = life[n][0]
        active = [a for a in active if life[a][1] >= first]
        lo, hi = offsets[n], offsets[n] + tensor_bytes(graph, n)
        for a in active:
            alo = offsets[a]
            if alo < hi and lo < alo + tensor_bytes(graph, a):
                found.append((a, n))
                if len(found) >= limit:
                    return found
        active.append(n)
    return found
