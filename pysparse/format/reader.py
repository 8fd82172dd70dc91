"""Read and validate `.spnn` bytes (docs/format.md) into a graph IR.

Every check the specification lists is made before the data it guards is used; every
count read from the file is checked against the bytes that hold it before anything is
allocated or looped over. Any problem raises SpnnFormatError naming the section, the
record and what is wrong.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

from .. import opset
from ..errors import SpnnFormatError
from ..ir import Graph, Op, Tensor
from . import spec
from .liveness import arena_need, first_live_overlap
from .shapes import check_op
from .sparse import EncodedWeight, check_descriptor, decode, matrix_shape


@dataclass
class SpnnFile:
    graph: Graph  # constants decoded to float32
    metadata: dict
    weights: dict[str, EncodedWeight]  # constant tensor name -> its stored encoding
    offsets: dict[str, int]  # activation / input tensor name -> arena offset
    arena_bytes: int
    version: tuple[int, int]
    producer: str
    file_size: int
    weight_order: list[str] = field(default_factory=list)  # constant names by weight index


def _fail(msg: str):
    raise SpnnFormatError(msg)


def read_spnn_file(path) -> SpnnFile:
    with open(path, "rb") as f:
        return read_spnn(f.read())


def read_spnn(data: bytes) -> SpnnFile:
    data = bytes(data)
    sections, version, producer = _read_container(data)
    strings = _Strings(sections[spec.SECTION_STRINGS])
    descriptors = _read_weight_descriptors(sections[spec.SECTION_WEIGHTS])
    g = _GraphReader(sections[spec.SECTION_GRAPH], strings, len(descriptors))
    graph, offsets, arena_bytes, weight_of = g.read()
    users = _check_weights(graph, descriptors, weight_of)
    pair = first_live_overlap(graph, offsets)
    if pair:
        _fail(f"section GRAPH: tensors {pair[0]!r} and {pair[1]!r} are live at the same time "
              f"and overlap in the arena")
    _check_memory(graph, offsets, arena_bytes, len(data))
    weights = _decode_weights(graph, descriptors, users)
    metadata = _read_metadata(sections[spec.SECTION_METADATA])
    graph.metadata = dict(metadata)
    order = sorted(weight_of, key=weight_of.get)
    return SpnnFile(graph, metadata, weights, offsets, arena_bytes, version, producer, len(data), order)


def _check_memory(graph: Graph, offsets: dict[str, int], arena_bytes: int, file_size: int) -> None:
    """The arena is what the plan needs, no more; with the constants it stays within the
    memory a file of this length may ask for (docs/format.md, "Limits")."""
    need = arena_need(graph, offsets)
    if arena_bytes > need:
        _fail(f"section GRAPH: arena_bytes {arena_bytes} is more than the {need} bytes its tensors need")
    constants = sum(t.size for t in graph.tensors.values() if t.name not in offsets)
    total, limit = arena_bytes + spec.ELEMENT_BYTES * constants, spec.memory_limit(file_size)
    if total > limit:
        _fail(f"section GRAPH: arena and constants take {total} bytes, over the limit of {limit} "
              f"for a {file_size}-byte file")


# -- container -----------------------------------------------------------------------
def _read_container(data: bytes):
    n = len(data)
    if n < spec.HEADER_SIZE:
        _fail(f"truncated: {n} bytes, the header alone is {spec.HEADER_SIZE}")
    magic, major, minor, producer, flags, count, crc, file_size = spec.HEADER.unpack_from(data)
    if magic != spec.MAGIC:
        _fail(f"not a .spnn file: magic {magic!r}, expected {spec.MAGIC!r}")
    if major != spec.VERSION_MAJOR:
        _fail(f"format version {major}.{minor} is not supported (this reader reads {spec.VERSION_MAJOR}.x)")
    if flags & ~spec.FLAGS_KNOWN:
        _fail(f"header: unknown flags 0x{flags:08x}")
    if file_size != n:
        _fail(f"truncated: the header says {file_size} bytes, the file has {n}" if file_size > n else
              f"header: file_size {file_size} but the file has {n} bytes")
    if not 1 <= count <= spec.MAX_SECTIONS:
        _fail(f"header: section_count {count} is outside 1..{spec.MAX_SECTIONS}")
    table_end = spec.HEADER_SIZE + spec.SECTION_ENTRY_SIZE * count
    if table_end > n:
        _fail(f"truncated: the section table needs {table_end} bytes, the file has {n}")
    if zlib.crc32(data[: spec.HEADER_CRC_SPAN] + data[spec.HEADER_SIZE:table_end]) != crc:
        _fail("header: CRC mismatch (header or section table corrupt)")
    found: dict[int, tuple[int, int]] = {}
    for i in range(count):
        stype, off, length, scrc = spec.SECTION_ENTRY.unpack_from(data, spec.HEADER_SIZE + i * spec.SECTION_ENTRY_SIZE)
        name = spec.SECTION_NAMES.get(stype)
        if name is None:
            _fail(f"section table entry {i}: unknown section type {stype}")
        if stype in found:
            _fail(f"section {name} appears twice")
        if off % spec.ALIGN:
            _fail(f"section {name}: offset {off} is not a multiple of {spec.ALIGN}")
        if off < table_end:
            _fail(f"section {name}: offset {off} is inside the header or section table (ends at {table_end})")
        if off + length > n:
            _fail(f"section {name}: bytes {off}..{off + length} run past the end of the file ({n} bytes)")
        if zlib.crc32(data[off:off + length]) != scrc:
            _fail(f"section {name}: CRC mismatch")
        found[stype] = (off, length)
    for stype in spec.SECTION_ORDER:
        if stype not in found:
            _fail(f"section {spec.SECTION_NAMES[stype]} is missing")
    spans = sorted((off, off + length, stype) for stype, (off, length) in found.items())
    pos = table_end
    for start, end, stype in spans:
        if start < pos:
            _fail(f"section {spec.SECTION_NAMES[stype]} overlaps the section before it")
        if any(data[pos:start]):
            _fail(f"nonzero padding before section {spec.SECTION_NAMES[stype]}")
        pos = end
    if any(data[pos:]):
        _fail("nonzero bytes after the last section")
    sections = {stype: data[off:off + length] for stype, (off, length) in found.items()}
    return sections, (major, minor), "{}.{}.{}".format(*producer[:3])


class _Strings:
    """Names in STRINGS. A name starts a string (offset 0, or just after a zero byte) and
    ends inside the section, so distinct offsets name disjoint strings: decoding each
    offset once makes reading all names linear in the section's length."""

    def __init__(self, blob: bytes):
        if not blob or blob[0] != 0:
            _fail("section STRINGS: must start with a zero byte (the empty string)")
        try:
            blob.decode("utf-8")
        except UnicodeDecodeError as e:
            _fail(f"section STRINGS: byte {e.start} is not UTF-8")
        self.blob = blob
        self.last_zero = blob.rindex(b"\0")
        self.cache: dict[int, str] = {0: ""}

    def get(self, off: int, where: str) -> str:
        s = self.cache.get(off)
        if s is not None:
            return s
        if off >= len(self.blob):
            _fail(f"{where}: string offset {off} is outside STRINGS ({len(self.blob)} bytes)")
        if off > self.last_zero:
            _fail(f"{where}: string at offset {off} has no terminating zero inside STRINGS")
        if self.blob[off - 1] != 0:
            _fail(f"{where}: string offset {off} does not start a string")
        end = self.blob.index(b"\0", off)
        s = self.blob[off:end].decode("utf-8")  # the whole section is UTF-8
        self.cache[off] = s
        return s


# -- WEIGHTS -------------------------------------------------------------------------
def _read_weight_descriptors(sec: bytes) -> list[EncodedWeight]:
    where = "section WEIGHTS"
    if len(sec) < spec.WEIGHTS_HEADER.size:
        _fail(f"{where}: {len(sec)} bytes, the header needs {spec.WEIGHTS_HEADER.size}")
    num, *reserved = spec.WEIGHTS_HEADER.unpack_from(sec)
    if any(reserved):
        _fail(f"{where}: reserved header fields are not zero")
    table_end = spec.WEIGHTS_HEADER.size + spec.WEIGHT_DESCRIPTOR_SIZE * num
    if table_end > len(sec):
        _fail(f"{where}: {num} descriptors need {table_end} bytes, the section has {len(sec)}")
    out = []
    for i in range(num):
        enc, dt, block, sw, rows, cols, nnz, nsteps, off, length, res = spec.WEIGHT_DESCRIPTOR.unpack_from(
            sec, spec.WEIGHTS_HEADER.size + i * spec.WEIGHT_DESCRIPTOR_SIZE)
        w = f"{where}: weight {i}"
        if res:
            _fail(f"{w}: reserved field is not zero")
        if off % spec.ALIGN:
            _fail(f"{w}: data offset {off} is not a multiple of {spec.ALIGN}")
        if off < table_end:
            _fail(f"{w}: data offset {off} is inside the descriptor table (ends at {table_end})")
        if off + length > len(sec):
            _fail(f"{w}: data {off}..{off + length} runs past the section ({len(sec)} bytes)")
        e = EncodedWeight(enc, dt, block, sw, rows, cols, nnz, nsteps, sec[off:off + length])
        check_descriptor(e, w)
        out.append(e)
    return out


def _check_weights(graph: Graph, descriptors: list[EncodedWeight], weight_of: dict[str, int]) -> dict[int, str]:
    """Each weight used by exactly one constant of its shape; weight index -> tensor name."""
    users: dict[int, str] = {}
    for name, idx in weight_of.items():
        if idx in users:
            _fail(f"section WEIGHTS: weight {idx} is used by tensors {users[idx]!r} and {name!r}")
        users[idx] = name
    if len(users) < len(descriptors):
        unused = min(set(range(len(descriptors))) - set(users))
        _fail(f"section WEIGHTS: weight {unused} is used by no tensor")
    total = 0
    for idx in sorted(users):
        name = users[idx]
        shape = graph.tensors[name].shape
        rows, cols = matrix_shape(shape)
        w = descriptors[idx]
        if (w.rows, w.cols) != (rows, cols):
            _fail(f"section WEIGHTS: weight {idx} is {w.rows}x{w.cols}, tensor {name!r} {shape} needs {rows}x{cols}")
        total += rows * cols
        if total >= spec.MAX_ELEMENTS:
            _fail(f"section WEIGHTS: constants hold {total} elements or more, the limit is {spec.MAX_ELEMENTS}")
    return users


def _decode_weights(graph: Graph, descriptors: list[EncodedWeight], users: dict[int, str]):
    weights = {}
    for idx in sorted(users):
        name = users[idx]
        w = descriptors[idx]
        graph.tensors[name].data = decode(w, f"section WEIGHTS: weight {idx} ({name!r})").reshape(
            graph.tensors[name].shape)
        weights[name] = w
    return weights


def _read_metadata(sec: bytes) -> dict:
    def no_constant(name):  # NaN and Infinity are not JSON
        raise ValueError(f"{name} is not JSON")

    def number(kind):
        def parse(token: str):
            if len(token) > spec.MAX_JSON_NUMBER:
                raise ValueError(f"a number of {len(token)} characters")
            return kind(token)
        return parse
    try:
        meta = json.loads(sec.decode("utf-8"), parse_constant=no_constant, parse_int=number(int),
                          parse_float=number(float))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        _fail(f"section METADATA: not UTF-8 JSON ({e})")
    if not isinstance(meta, dict):
        _fail("section METADATA: the JSON is not an object")
    level, depth = [meta], 1
    while level:  # containers nested deeper than the limit
        if depth > spec.MAX_JSON_DEPTH:
            _fail(f"section METADATA: JSON nested more than {spec.MAX_JSON_DEPTH} deep")
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c)
                 if isinstance(v, (dict, list))]
        depth += 1
    return meta


# -- GRAPH ---------------------------------------------------------------------------
class _GraphReader:
    def __init__(self, sec: bytes, strings: _Strings, num_weights: int):
        self.sec, self.strings, self.num_weights = sec, strings, num_weights
        self.pos = 0

    def take(self, n: int, what: str) -> int:
        if self.pos + n > len(self.sec):
            _fail(f"section GRAPH: {what} runs past the end of the section ({len(self.sec)} bytes)")
        at = self.pos
        self.pos += n
        return at

    def u32s(self, count: int, what: str) -> list[int]:
        at = self.take(4 * count, what)
        return list(struct.unpack_from(f"<{count}I", self.sec, at))

    def read(self):
        sec = self.sec
        at = self.take(spec.GRAPH_HEADER.size, "header")
        n_t, n_ops, n_in, n_out, arena_bytes, *reserved = spec.GRAPH_HEADER.unpack_from(sec, at)
        if any(reserved):
            _fail("section GRAPH: reserved header fields are not zero")
        need = spec.GRAPH_HEADER.size + spec.TENSOR_RECORD_SIZE * n_t + 4 * (n_in + n_out) + spec.OP_HEADER_SIZE * n_ops
        if need > len(sec):
            _fail(f"section GRAPH: {n_t} tensors, {n_ops} ops, {n_in} inputs and {n_out} outputs need at least "
                  f"{need} bytes, the section has {len(sec)}")
        graph = Graph()
        names, kinds, offsets, weight_of = [], [], {}, {}
        for i in range(n_t):
            rec = spec.TENSOR_RECORD.unpack_from(sec, self.take(spec.TENSOR_RECORD_SIZE, f"tensor {i}"))
            kind, dtype, ndim, res = rec[:4]
            dims, name_off, widx, aoff = rec[4:10], rec[10], rec[11], rec[12]
            w = f"section GRAPH: tensor {i}"
            if kind not in spec.KIND_NAMES:
                _fail(f"{w}: unknown kind {kind}")
            if dtype != spec.DTYPE_FLOAT32:
                _fail(f"{w}: unknown dtype {dtype}")
            if ndim > spec.MAX_NDIM:
                _fail(f"{w}: ndim {ndim} exceeds {spec.MAX_NDIM}")
            if res:
                _fail(f"{w}: reserved byte is not zero")
            if any(d < 1 for d in dims[:ndim]) or any(dims[ndim:]):
                _fail(f"{w}: dims {list(dims)} (ndim {ndim}): used dims must be >= 1, the rest 0")
            shape = tuple(dims[:ndim])
            elements = 1
            for d in shape:
                elements *= d
            if elements >= spec.MAX_ELEMENTS:
                _fail(f"{w}: dims {shape} exceed the limit of {spec.MAX_ELEMENTS} elements")
            name = self.strings.get(name_off, f"{w} name")
            if not name:
                _fail(f"{w}: empty name")
            if name in graph.tensors:
                _fail(f"{w}: name {name!r} is used by an earlier tensor")
            w = f"{w} ({name!r})"
            if kind == spec.KIND_CONSTANT:
                if widx >= self.num_weights:
                    _fail(f"{w}: weight index {widx} is not below num_weights {self.num_weights}")
                if aoff:
                    _fail(f"{w}: a constant has arena offset {aoff}, must be 0")
                weight_of[name] = widx
            else:
                if widx != spec.ABSENT:
                    _fail(f"{w}: a {spec.KIND_NAMES[kind]} has weight index {widx}")
                if aoff % spec.ALIGN:
                    _fail(f"{w}: arena offset {aoff} is not a multiple of {spec.ALIGN}")
                if aoff + spec.ELEMENT_BYTES * elements > arena_bytes:
                    _fail(f"{w}: bytes {aoff}..{aoff + 4 * elements} lie outside the arena ({arena_bytes} bytes)")
                offsets[name] = aoff
            graph.tensors[name] = Tensor(name, shape)
            names.append(name)
            kinds.append(kind)

        def tensor_id(tid: int, what: str) -> str:
            if tid >= n_t:
                _fail(f"section GRAPH: {what}: tensor id {tid} is not below num_tensors {n_t}")
            return names[tid]

        if n_in < 1 or n_out < 1:
            _fail(f"section GRAPH: {n_in} inputs and {n_out} outputs (at least one of each is needed)")
        listed: set[str] = set()
        for tid in self.u32s(n_in, "inputs"):
            name = tensor_id(tid, "graph input")
            if kinds[tid] != spec.KIND_INPUT:
                _fail(f"section GRAPH: graph input {name!r} is a {spec.KIND_NAMES[kinds[tid]]} tensor")
            if name in listed:
                _fail(f"section GRAPH: graph input {name!r} is listed twice")
            listed.add(name)
            graph.inputs.append(name)
        for tid, k in enumerate(kinds):
            if k == spec.KIND_INPUT and names[tid] not in listed:
                _fail(f"section GRAPH: tensor {tid} ({names[tid]!r}) is an input but not in the inputs list")
        outputs: set[str] = set()
        for tid in self.u32s(n_out, "outputs"):
            name = tensor_id(tid, "graph output")
            if kinds[tid] == spec.KIND_CONSTANT:
                _fail(f"section GRAPH: graph output {name!r} is a constant")
            if name in outputs:
                _fail(f"section GRAPH: graph output {name!r} is listed twice")
            outputs.add(name)
            graph.outputs.append(name)

        defined = set(graph.inputs) | set(weight_of)
        for i in range(n_ops):
            w = f"section GRAPH: op {i}"
            code, n_attrs, n_ins, n_outs, res, name_off = spec.OP_HEADER.unpack_from(
                sec, self.take(spec.OP_HEADER_SIZE, f"op {i}"))
            d = opset.BY_CODE.get(code)
            if d is None:
                _fail(f"{w}: unknown op code {code}")
            w = f"{w} ({d.name})"
            if n_attrs != len(d.attrs):
                _fail(f"{w}: {n_attrs} attributes, {d.name} has {len(d.attrs)}")
            if n_ins < d.min_inputs or (d.max_inputs >= 0 and n_ins > d.max_inputs):
                _fail(f"{w}: {n_ins} inputs is outside {d.name}'s arity")
            if n_outs != 1:
                _fail(f"{w}: {n_outs} outputs, must be 1")
            if res:
                _fail(f"{w}: reserved field is not zero")
            op_name = self.strings.get(name_off, f"{w} name")
            ins = []
            for j, tid in enumerate(self.u32s(n_ins, f"op {i} inputs")):
                if tid == spec.ABSENT:
                    if not (j < len(d.inputs) and d.inputs[j].endswith("?")):
                        _fail(f"{w}: required input {j} is absent")
                    ins.append("")
                    continue
                t = tensor_id(tid, f"op {i} input {j}")
                if t not in defined:
                    _fail(f"{w}: input {j} ({t!r}) is read before any op writes it")
                ins.append(t)
            outs = []
            for tid in self.u32s(n_outs, f"op {i} outputs"):
                t = tensor_id(tid, f"op {i} output")
                if kinds[tid] != spec.KIND_ACTIVATION:
                    _fail(f"{w}: output {t!r} is a {spec.KIND_NAMES[kinds[tid]]} tensor")
                if t in defined:
                    _fail(f"{w}: output {t!r} is written by an earlier op")
                defined.add(t)
                outs.append(t)
            raw = sec[self.take(4 * n_attrs, f"op {i} attributes"):self.pos]
            attrs = {}
            for k, a in enumerate(d.attrs):
                attrs[a.name] = struct.unpack_from("<i" if a.kind == "i" else "<f", raw, 4 * k)[0]
            try:
                check_op(d.name, attrs, [graph.tensors[t].shape if t else None for t in ins],
                         graph.tensors[outs[0]].shape)
            except ValueError as e:
                _fail(f"{w}: {e}")
            graph.ops.append(Op(d.name, ins, outs, attrs, op_name))
        if self.pos != len(sec):
            _fail(f"section GRAPH: {len(sec) - self.pos} bytes after the last op")
        for tid, k in enumerate(kinds):
            if k == spec.KIND_ACTIVATION and names[tid] not in defined:
                _fail(f"section GRAPH: activation tensor {tid} ({names[tid]!r}) is written by no op")
        return graph, offsets, arena_bytes, weight_of

