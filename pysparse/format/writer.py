"""Serialise a graph IR into `.spnn` bytes (docs/format.md)."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from .. import __version__, opset
from ..errors import ResourceLimitError
from ..ir import Graph
from ..passes.memory import plan_memory
from . import spec
from .shapes import check_op
from .sparse import EncodedWeight, encode_dense, matrix_shape, sparse_weights


class _Strings:
    def __init__(self):
        self.blob = bytearray(b"\0")
        self.index = {"": 0}

    def add(self, s: str) -> int:
        if s not in self.index:
            if "\0" in s:
                raise ValueError(f"string {s!r} contains a zero byte")
            self.index[s] = len(self.blob)
            self.blob += s.encode("utf-8") + b"\0"
        return self.index[s]


def tensor_order(graph: Graph) -> list[str]:
    """Tensors as the file lists them: graph inputs, then in order of first use by the ops."""
    order: dict[str, None] = dict.fromkeys(graph.inputs)
    for op in graph.ops:
        order.update(dict.fromkeys(n for n in op.inputs if n))
        order.update(dict.fromkeys(op.outputs))
    order.update(dict.fromkeys(graph.outputs))
    return list(order)


def check_graph(graph: Graph) -> None:
    """What the writer needs of a graph beyond Graph.validate(); raises ValueError."""
    graph.validate()
    for i, op in enumerate(graph.ops):
        if len(op.outputs) != 1:
            raise ValueError(f"op {i} ({op.type} {op.name!r}): {len(op.outputs)} outputs, the format has 1")
        ins = [graph.tensors[n].shape if n else None for n in op.inputs]
        try:
            check_op(op.type, op.attrs, ins, graph.tensors[op.outputs[0]].shape)
        except ValueError as e:
            raise ValueError(f"op {i} ({op.type} {op.name!r}): {e}") from None
    for name in tensor_order(graph):
        t = graph.tensors[name]
        if not name:
            raise ValueError("a tensor has an empty name")
        if len(t.shape) > spec.MAX_NDIM or any(d < 1 for d in t.shape) or t.size >= spec.MAX_ELEMENTS:
            raise ValueError(f"tensor {name!r}: shape {t.shape} is outside the format's limits")
        if t.is_constant and (name in graph.inputs or name in graph.outputs):
            raise ValueError(f"tensor {name!r}: a constant cannot be a graph input or output")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"metadata value {o!r} is not JSON")


def write_spnn(graph: Graph, encodings: dict[str, EncodedWeight] | None = None,
               metadata: dict | None = None, plan: tuple[dict[str, int], int] | None = None,
               producer: str = __version__) -> bytes:
    """The `.spnn` bytes of `graph`. `encodings` maps constant tensor names to encoded
    weights (missing ones are stored dense f32); `plan` is (arena offsets, arena bytes),
    computed by passes.memory.plan_memory when not given."""
    check_graph(graph)
    encodings = encodings or {}
    offsets, arena_bytes = plan if plan is not None else plan_memory(graph, sparse=sparse_weights(encodings))
    names = tensor_order(graph)
    ids = {n: i for i, n in enumerate(names)}
    strings = _Strings()

    # -- WEIGHTS ---------------------------------------------------------------------
    constants = [n for n in names if graph.tensors[n].is_constant]
    weight_index = {n: i for i, n in enumerate(constants)}
    blobs = []
    for n in constants:
        t = graph.tensors[n]
        rows, cols = matrix_shape(t.shape)
        w = encodings.get(n) or encode_dense(t.data.reshape(rows, cols))
        if (w.rows, w.cols) != (rows, cols):
            raise ValueError(f"encoding of {n!r} is {w.rows}x{w.cols}, the tensor is {rows}x{cols}")
        blobs.append(w)
    wsec = bytearray(spec.WEIGHTS_HEADER.pack(len(blobs), 0, 0, 0))
    pos = spec.align_up(spec.WEIGHTS_HEADER.size + spec.WEIGHT_DESCRIPTOR_SIZE * len(blobs))
    data_at = []
    for w in blobs:
        data_at.append(pos)
        pos = spec.align_up(pos + len(w.data))
    for w, at in zip(blobs, data_at):
        wsec += spec.WEIGHT_DESCRIPTOR.pack(w.encoding, w.dtype, w.block, w.step_width, w.rows, w.cols, w.nnz,
                                            w.num_steps, at, len(w.data), 0)
    for w, at in zip(blobs, data_at):
        wsec += bytes(at - len(wsec)) + w.data

    # -- GRAPH -----------------------------------------------------------------------
    gsec = bytearray(spec.GRAPH_HEADER.pack(len(names), len(graph.ops), len(graph.inputs), len(graph.outputs),
                                            arena_bytes, 0, 0, 0))
    inputs = set(graph.inputs)
    for n in names:
        t = graph.tensors[n]
        dims = list(t.shape) + [0] * (spec.MAX_NDIM - len(t.shape))
        if t.is_constant:
            kind, widx, off = spec.KIND_CONSTANT, weight_index[n], 0
        else:
            kind, widx, off = (spec.KIND_INPUT if n in inputs else spec.KIND_ACTIVATION), spec.ABSENT, offsets[n]
            if off % spec.ALIGN or off + spec.ELEMENT_BYTES * t.size > arena_bytes:
                raise ValueError(f"memory plan puts {n!r} at {off}, outside or misaligned in {arena_bytes} bytes")
        gsec += spec.TENSOR_RECORD.pack(kind, spec.DTYPE_FLOAT32, len(t.shape), 0, *dims, strings.add(n), widx, off)
    gsec += struct.pack(f"<{len(graph.inputs)}I", *(ids[n] for n in graph.inputs))
    gsec += struct.pack(f"<{len(graph.outputs)}I", *(ids[n] for n in graph.outputs))
    for op in graph.ops:
        d = opset.BY_NAME[op.type]
        values = opset.attr_values(op.type, op.attrs)
        gsec += spec.OP_HEADER.pack(d.code, len(values), len(op.inputs), len(op.outputs), 0, strings.add(op.name))
        gsec += struct.pack(f"<{len(op.inputs)}I", *(ids[n] if n else spec.ABSENT for n in op.inputs))
        gsec += struct.pack(f"<{len(op.outputs)}I", *(ids[n] for n in op.outputs))
        for a, v in zip(d.attrs, values):
            gsec += struct.pack("<i" if a.kind == "i" else "<f", v)

    meta = json.dumps(metadata or {}, default=_json_default, ensure_ascii=False, allow_nan=False).encode("utf-8")
    data = assemble({spec.SECTION_STRINGS: bytes(strings.blob), spec.SECTION_GRAPH: bytes(gsec),
                     spec.SECTION_WEIGHTS: bytes(wsec), spec.SECTION_METADATA: meta}, producer)
    total = arena_bytes + spec.ELEMENT_BYTES * sum(graph.tensors[n].size for n in constants)
    if total > spec.memory_limit(len(data)):
        raise ResourceLimitError(f"the model needs {total} bytes of arena and constants, over the limit of "
                                 f"{spec.memory_limit(len(data))} for its {len(data)}-byte file (docs/format.md, Limits)")
    return data


def assemble(sections: dict[int, bytes], producer: str = __version__) -> bytes:
    """Header, section table and 16-byte aligned sections, with all CRCs filled in."""
    count = len(sections)
    pos = spec.align_up(spec.HEADER_SIZE + spec.SECTION_ENTRY_SIZE * count)
    table = bytearray()
    body = bytearray()
    for stype, blob in sections.items():
        table += spec.SECTION_ENTRY.pack(stype, pos, len(blob), zlib.crc32(blob))
        body += bytes(pos - spec.align_up(spec.HEADER_SIZE + spec.SECTION_ENTRY_SIZE * count) - len(body)) + blob
        pos = spec.align_up(pos + len(blob))
    table_end = spec.HEADER_SIZE + len(table)
    gap = bytes(spec.align_up(table_end) - table_end)
    file_size = table_end + len(gap) + len(body)
    head = spec.HEADER.pack(spec.MAGIC, spec.VERSION_MAJOR, spec.VERSION_MINOR, spec.pysparse_version_bytes(producer),
                            spec.FLAGS_KNOWN, count, 0, file_size)
    crc = zlib.crc32(head[: spec.HEADER_CRC_SPAN] + table)
    head = head[:20] + struct.pack("<I", crc) + head[24:]
    return bytes(head + table + gap + body)
