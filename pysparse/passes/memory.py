"""Activation memory plan: one arena, tensors placed by liveness with best-fit reuse.

A tensor is live from the op that writes it (graph inputs: from the start) to the last
op that reads it (graph outputs: to the end). Ops never write in place, so an op's output
never shares bytes with its inputs. Walking the ops in order, each op's outputs take the
smallest free hole that fits (else the end of the arena grows), then tensors whose last
reader was this op give their space back.

One exception to "from the op that writes it": the engine folds a residual ADD into the
1x1 convolution that computes one of its operands (the convolution adds the other operand,
the skip, to its sums and writes the add's output itself) where that is safe, which
includes the add's output holding no tensor live between the two ops. The plan makes it
so: such an add's output is placed as if written by the convolution (`folded_adds`). The
same for a RELU or CLIP after a resize and an ADD after either, which the engine folds into
the resize (`folded_activations`, `folded_adds`).

And one exception to "to the last op that reads it": the engine runs a 1x1 convolution and
the depthwise convolution that alone reads its output band by band, so the depthwise output
is written while the 1x1 input is still being read, and with them the 1x1 convolution after
that alone reads the depthwise output, whose output is then written while the first two
still read theirs. The plan keeps the first 1x1 layer's input live through the depthwise op,
and its input and output through the second 1x1 layer where there is one (`fused_bands`),
for the blocks the engine walks that way (large planes; a second layer stored sparse).
"""
from __future__ import annotations

import bisect

from ..ir import Graph

RESIZES = ("RESIZE_BILINEAR", "RESIZE_NEAREST")
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


def _pointwise(graph: Graph, op) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped CONV2D (the engine's SpMM and GEMM layers)."""
    if op.type != "CONV2D" or op.attrs.get("groups", 1) != 1 or len(op.inputs) < 2:
        return False
    w = graph.tensors[op.inputs[1]].shape
    if len(w) != 4 or tuple(w[2:]) != (1, 1):
        return False
    if any(op.attrs.get(k, 0) for k in ("pad_top", "pad_left", "pad_bottom", "pad_right")):
        return False
    return op.attrs.get("stride_h", 1) == 1 and op.attrs.get("stride_w", 1) == 1


def _writers_and_readers(graph: Graph) -> tuple[dict[str, int], dict[str, int]]:
    """Tensor -> index of the op that writes it, and tensor -> how many op inputs read it."""
    writer = {n: i for i, op in enumerate(graph.ops) for n in op.outputs}
    readers: dict[str, int] = {}
    for op in graph.ops:
        for n in op.inputs:
            readers[n] = readers.get(n, 0) + 1
    return writer, readers


def _read_once(graph: Graph, readers: dict[str, int], t: str) -> bool:
    """Whether exactly one op input reads `t` and it is no graph output (its reader may then
    take it over)."""
    return readers.get(t) == 1 and t not in graph.outputs


def folded_adds(graph: Graph) -> dict[str, int]:
    """Output of each ADD the engine may fold into a convolution or a resize -> that op's
    index: ADD(conv(x), skip) or ADD(resize(x), skip) (the resize's output perhaps through an
    activation folded into it), all three of one shape, the add the only reader of its
    operand and skip written before the convolution or resize (the engine checks the rest at
    load)."""
    writer, readers = _writers_and_readers(graph)
    shape = {n: t.shape for n, t in graph.tensors.items()}
    found = {}
    for op in graph.ops:
        if op.type != "ADD" or len(op.inputs) != 2 or op.inputs[0] == op.inputs[1]:
            continue
        y = op.outputs[0]
        for t, skip in (op.inputs, op.inputs[::-1]):
            p = writer.get(t)
            if p is None or not _read_once(graph, readers, t):
                continue
            src = graph.ops[p]
            if src.type in ("RELU", "CLIP") and src.inputs[0] in writer and _read_once(graph, readers, src.inputs[0]) \
                    and graph.ops[writer[src.inputs[0]]].type in RESIZES:
                p = writer[src.inputs[0]]  # an activation folded into a resize: the resize writes both
            elif src.type not in RESIZES and (not _pointwise(graph, src) or src.attrs.get("act", 0) != 0):
                continue  # a convolution's add takes the plain sums
            if not (shape[t] == shape[skip] == shape[y]) or writer.get(skip, -1) >= p:
                continue
            found[y] = p
            break
    return found


def folded_activations(graph: Graph) -> dict[str, int]:
    """Output of each RELU or CLIP the engine may fold into the resize before it -> that
    resize's op index: the activation the only reader of the resize's output, which is no
    graph output (the engine checks the rest at load)."""
    writer, readers = _writers_and_readers(graph)
    found = {}
    for op in graph.ops:
        if op.type not in ("RELU", "CLIP"):
            continue
        t = op.inputs[0]
        p = writer.get(t)
        if p is None or not _read_once(graph, readers, t):
            continue
        if graph.ops[p].type in RESIZES:
            found[op.outputs[0]] = p
    return found


# The engine walks a block band by band only where the first layer's output (one image) is
# over 2 MB, or over 1 MB where the 1x1 layer after the depthwise one joins
# (FUSE_MIN_BYTES and FUSE_BLOCK_MIN_BYTES in wasm/src/ops_conv.c); smaller ones stay apart.
PAIR_MIN_BYTES = 2048 * 1024
BLOCK_MIN_BYTES = 1024 * 1024


def fused_bands(graph: Graph, sparse: set[str] | None = None) -> dict[str, int]:
    """Tensors the engine may still read after their last reader's turn -> the op index they
    must stay live through: for each 1x1 convolution whose output only the next op, a
    depthwise convolution, reads (the two may run band by band), the 1x1 input through the
    depthwise op; where the op after that is a 1x1 convolution that alone reads the depthwise
    output and whose weight is stored sparse (`sparse`: the names of those weights; None: any
    may be), which joins the bands, the first 1x1 layer's input and output through it. Blocks
    smaller than the engine walks band by band keep the input through the depthwise op where
    the sparse projection follows (a channel chain on threads); pairs alone that small keep
    nothing. The engine checks the rest at load."""
    _, readers = _writers_and_readers(graph)
    ops = graph.ops

    def only_reader(t: str, op) -> bool:
        return op.inputs[0] == t and _read_once(graph, readers, t)

    found = {}
    for i, (op, dw) in enumerate(zip(ops, ops[1:])):
        if not _pointwise(graph, op) or dw.type != "CONV2D" or len(dw.inputs) < 2:
            continue
        t = op.outputs[0]
        if not only_reader(t, dw) or graph.tensors[t].shape[0] != 1:
            continue
        wd = graph.tensors[dw.inputs[1]].shape
        if not (len(wd) == 4 and wd[1] == 1 and dw.attrs.get("groups", 1) == wd[0] == graph.tensors[t].shape[1]):
            continue
        pw = ops[i + 2] if i + 2 < len(ops) else None
        join = (pw is not None and _pointwise(graph, pw) and only_reader(dw.outputs[0], pw)
                and (sparse is None or pw.inputs[1] in sparse))
        if join and tensor_bytes(graph, t) > BLOCK_MIN_BYTES:
            found[op.inputs[0]] = found[t] = i + 2
        elif tensor_bytes(graph, t) > PAIR_MIN_BYTES or join:
            # smaller blocks may run as a channel chain, which writes the depthwise output
            # while the 1x1 input is still read (spnn_conv_chain)
            found[op.inputs[0]] = i + 1
    return found


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


def plan_memory(graph: Graph, alignment: int = ALIGNMENT,
                sparse: set[str] | None = None) -> tuple[dict[str, int], int]:
    """Arena offset of every graph input and op output, and the arena size in bytes.
    `sparse`: the weights stored sparse, where known (`fused_bands`)."""
    life = lifetimes(graph)
    for x, last in fused_bands(graph, sparse).items():
        if x in life:
            life[x] = (life[x][0], max(life[x][1], last))
    free = _FreeList()
    offsets: dict[str, int] = {}
    size = {n: _round(tensor_bytes(graph, n), alignment) for n in life}
    by_last: dict[int, list[str]] = {}
    for n, (_, last) in life.items():
        by_last.setdefault(last, []).append(n)
    early: dict[int, list[str]] = {}  # op index -> folded ops' outputs placed with that op's outputs
    for y, p in {**folded_adds(graph), **folded_activations(graph)}.items():
        early.setdefault(p, []).append(y)
    for n in graph.inputs:
        if n not in offsets:
            offsets[n] = free.take(size[n])
    for i, op in enumerate(graph.ops):
        for n in [*op.outputs, *early.get(i, ())]:
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
