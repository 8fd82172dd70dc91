"""One corpus of valid and invalid `.spnn` files for every reader: the Python reader, the
native engine and the wasm engine must all accept the valid ones and reject each invalid
one with the error named here.

    cases = corpus()      # name -> Case(data, python, engine)

`python` is a regular expression the SpnnFormatError message must match (None: the file
is valid); `engine` the status the C loader returns ("OK", "FORMAT" or "UNSUPPORTED").
Besides small valid models of every op and the damaged files of the engine's own tests,
the corpus holds files built to cost a careless reader memory or time: a huge declared
arena, 100 000 graph inputs, 100 001 tensors of one name, overlapping unread inputs, an
op writing over its own input, a padded output and a sparse weight over the memory limit.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from pysparse import opset
from pysparse.format import spec, write_spnn
from pysparse.format.writer import assemble

ABSENT = spec.ABSENT


@dataclass
class Case:
    data: bytes
    python: str | None  # regex of the reader's message; None: valid
    engine: str  # "OK", "FORMAT", "UNSUPPORTED"


# -- a writer of raw records, to say in a file what the pysparse writer never would ------
class RawGraph:
    def __init__(self):
        self.strings = bytearray(b"\0")
        self.names: dict[str, int] = {"": 0}
        self.tensors: list[bytes] = []
        self.ends: list[int] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.ops = bytearray()
        self.n_ops = 0
        self.weights: list[tuple[bytes, bytes]] = []  # descriptor fields without offset, blob

    def name(self, s: str) -> int:
        if s not in self.names:
            self.names[s] = len(self.strings)
            self.strings += s.encode() + b"\0"
        return self.names[s]

    def tensor(self, name: str | int, dims, kind=spec.KIND_ACTIVATION, offset=0, weight=ABSENT) -> int:
        dims = list(dims)
        off = name if isinstance(name, int) else self.name(name)
        self.tensors.append(spec.TENSOR_RECORD.pack(kind, 0, len(dims), 0, *(dims + [0] * (6 - len(dims))), off,
                                                    weight, offset))
        self.ends.append(0 if kind == spec.KIND_CONSTANT else offset + 4 * int(np.prod(dims)))
        return len(self.tensors) - 1

    def input(self, name, dims, offset) -> int:
        t = self.tensor(name, dims, spec.KIND_INPUT, offset)
        self.inputs.append(t)
        return t

    def constant(self, name, dims, encoding: tuple, blob: bytes) -> int:
        self.weights.append((encoding, blob))
        return self.tensor(name, dims, spec.KIND_CONSTANT, 0, len(self.weights) - 1)

    def op(self, type_: str, ins, out: int, name: str = "", **attrs) -> None:
        d = opset.BY_NAME[type_]
        values = opset.attr_values(type_, attrs)
        self.ops += spec.OP_HEADER.pack(d.code, len(values), len(ins), 1, 0, self.name(name))
        self.ops += struct.pack(f"<{len(ins) + 1}I", *ins, out)
        for a, v in zip(d.attrs, values):
            self.ops += struct.pack("<i" if a.kind == "i" else "<f", v)
        self.n_ops += 1

    def bytes(self, arena: int | None = None, extra_inputs=()) -> bytes:
        if arena is None:
            arena = spec.align_up(max(self.ends, default=0), 64)
        inputs = self.inputs + list(extra_inputs)
        g = spec.GRAPH_HEADER.pack(len(self.tensors), self.n_ops, len(inputs), len(self.outputs), arena, 0, 0, 0)
        g += b"".join(self.tensors) + struct.pack(f"<{len(inputs)}I", *inputs)
        g += struct.pack(f"<{len(self.outputs)}I", *self.outputs) + bytes(self.ops)
        w = bytearray(spec.WEIGHTS_HEADER.pack(len(self.weights), 0, 0, 0))
        pos = spec.align_up(16 + 32 * len(self.weights))
        at = []
        for _, blob in self.weights:
            at.append(pos)
            pos = spec.align_up(pos + len(blob))
        for (enc, blob), a in zip(self.weights, at):
            w += spec.WEIGHT_DESCRIPTOR.pack(*enc, a, len(blob), 0)
        for (_, blob), a in zip(self.weights, at):
            w += bytes(a - len(w)) + blob
        return assemble({spec.SECTION_STRINGS: bytes(self.strings), spec.SECTION_GRAPH: bytes(g),
                         spec.SECTION_WEIGHTS: bytes(w), spec.SECTION_METADATA: b"{}"})


def fix_crcs(data: bytes) -> bytes:
    """Recomputes every CRC the (possibly damaged) header and table allow, so that checks
    behind the CRCs are reached."""
    b = bytearray(data)
    if len(b) < 32:
        return bytes(b)
    count = struct.unpack_from("<I", b, 16)[0]
    if count > 64 or 32 + 16 * count > len(b):
        return bytes(b)
    for i in range(count):
        _, off, length, _ = struct.unpack_from("<4I", b, 32 + 16 * i)
        if off + length <= len(b):
            struct.pack_into("<I", b, 32 + 16 * i + 12, zlib.crc32(bytes(b[off:off + length])))
    struct.pack_into("<I", b, 20, zlib.crc32(bytes(b[:20] + b[32:32 + 16 * count])))
    return bytes(b)


def graph_offset(data: bytes) -> int:
    count = struct.unpack_from("<I", data, 16)[0]
    for i in range(count):
        stype, off, _, _ = struct.unpack_from("<4I", data, 32 + 16 * i)
        if stype == spec.SECTION_GRAPH:
            return off
    raise ValueError("no GRAPH section")


def with_arena(data: bytes, arena: int) -> bytes:
    b = bytearray(data)
    struct.pack_into("<I", b, graph_offset(data) + 16, arena)
    return fix_crcs(bytes(b))


# -- the hostile files ---------------------------------------------------------------------
def relu_into(g: RawGraph, x: int, y: int) -> bytes:
    """The file of `g` with y = RELU(x) as its last op and y its output."""
    g.op("RELU", [x], y, "relu")
    g.outputs = [y]
    return g.bytes()


def many_inputs(n: int = 100_000, repeat_last: bool = False) -> bytes:
    """n graph inputs of one float each; the op reads the first. With repeat_last, the
    inputs list names input 0 again in place of the last input."""
    g = RawGraph()
    ids = [g.input(f"in{i}", (1,), 16 * i) for i in range(n)]
    if repeat_last:
        g.inputs[-1] = ids[0]
    return relu_into(g, ids[0], g.tensor("y", (1,), offset=16 * n))


def one_name(n: int = 100_001) -> bytes:
    """n graph inputs all named input_1 (one STRINGS offset)."""
    g = RawGraph()
    off = g.name("input_1")
    ids = [g.input(off, (1,), 16 * i) for i in range(n)]
    return relu_into(g, ids[0], g.tensor("y", (1,), offset=16 * n))


def one_name_two_offsets() -> bytes:
    """Two tensors with equal names stored twice in STRINGS."""
    g = RawGraph()
    x = g.input("x", (1, 4), 0)
    g.strings += b"x\0"
    return relu_into(g, x, g.tensor(len(g.strings) - 2, (1, 4), offset=16))


def unread_inputs_overlap() -> bytes:
    g = RawGraph()
    x = g.input("x", (1, 8), 0)
    g.input("unread", (1, 4), 0)
    return relu_into(g, x, g.tensor("y", (1, 8), offset=32))


def in_place(type_: str = "RELU") -> bytes:
    """An op whose output takes exactly its input's bytes, the input read by no later op."""
    g = RawGraph()
    x = g.input("x", (1, 8), 0)
    h = g.tensor("h", (1, 8), offset=32)
    g.op("RELU", [x], h, "first")
    y = g.tensor("y", (1, 8), offset=32)
    g.op(type_, [h], y, "in_place")
    g.outputs = [y]
    return g.bytes()


def name_inside_a_string() -> bytes:
    g = RawGraph()
    x = g.input("x", (1, 4), 0)
    # names "y", the tail of "output_y"
    return relu_into(g, x, g.tensor(g.name("output_y") + 7, (1, 4), offset=16))


def unwritten_activation() -> bytes:
    g = RawGraph()
    x = g.input("x", (1, 4), 0)
    y = g.tensor("y", (1, 4), offset=16)
    g.tensor("orphan", (1, 4), offset=32)
    return relu_into(g, x, y)


def no_outputs() -> bytes:
    g = RawGraph()
    x = g.input("x", (1, 4), 0)
    y = g.tensor("y", (1, 4), offset=16)
    g.op("RELU", [x], y, "relu")
    return g.bytes()


def constant_output() -> bytes:
    g = RawGraph()
    x = g.input("x", (1, 4), 0)
    c = g.constant("c", (4,), (0, 0, 0, 0, 1, 4, 4, 0), np.ones(4, np.float32).tobytes())
    y = g.tensor("y", (1, 4), offset=16)
    g.op("ADD", [x, c], y, "add")
    g.outputs = [y, c]
    return g.bytes()


def padded_over_limit(side: int = 12_000) -> bytes:
    """A 1x1 input padded to side x side: within the per-tensor limit, but its arena is
    over the memory limit of a file of a few hundred bytes."""
    g = RawGraph()
    x = g.input("x", (1, 1, 1, 1), 0)
    y = g.tensor("y", (1, 1, side, side), offset=64)
    lo, hi = (side - 1) // 2, side - 1 - (side - 1) // 2
    g.op("PAD", [x], y, "pad", pad2_begin=lo, pad2_end=hi, pad3_begin=lo, pad3_end=hi)
    g.outputs = [y]
    return g.bytes()


def sparse_over_limit(rows: int = 2048, cols: int = 65536) -> bytes:
    """A fully connected layer whose sparse weight stores nothing: a few kB that decode to
    rows x cols floats (512 MiB), over the memory limit of the file."""
    g = RawGraph()
    x = g.input("x", (1, cols), 0)
    counts = bytes(4 * (rows // 4))
    w = g.constant("w", (rows, cols), (spec.ENCODING_SPARSE, spec.VALUE_F32, 4, 1, rows, cols, 0, 0), counts)
    y = g.tensor("y", (1, rows), offset=4 * cols)
    g.op("FULLY_CONNECTED", [x, w, ABSENT], y, "fc")
    g.outputs = [y]
    return g.bytes()


def hostile() -> dict[str, Case]:
    """The files of the six kinds of hostile input, and their neighbours."""
    from spnn_graphs import small_cnn

    good = write_spnn(small_cnn(), metadata={"name": "small"})
    return {
        "arena_0x78000000": Case(with_arena(good, 0x78000000), "arena_bytes .* is more than", "FORMAT"),
        "arena_0xFFFFFFF0": Case(with_arena(good, 0xFFFFFFF0), "arena_bytes .* is more than", "FORMAT"),
        "arena_one_too_many": Case(with_arena(good, struct.unpack_from("<I", good, graph_offset(good) + 16)[0] + 64),
                                   "arena_bytes .* is more than", "FORMAT"),
        "inputs_100000": Case(many_inputs(), None, "OK"),
        "inputs_100000_listed_twice": Case(many_inputs(repeat_last=True), "listed twice", "FORMAT"),
        "names_100001_input_1": Case(one_name(), "used by an earlier tensor", "FORMAT"),
        "names_equal_at_two_offsets": Case(one_name_two_offsets(), "used by an earlier tensor", "FORMAT"),
        "unread_inputs_overlap": Case(unread_inputs_overlap(), "overlap in the arena", "FORMAT"),
        "relu_in_place": Case(in_place("RELU"), "overlap in the arena", "FORMAT"),
        "reshape_in_place": Case(in_place("RESHAPE"), "overlap in the arena", "FORMAT"),
        "name_inside_a_string": Case(name_inside_a_string(), "does not start a string", "FORMAT"),
        "activation_unwritten": Case(unwritten_activation(), "written by no op", "FORMAT"),
        "no_outputs": Case(no_outputs(), "at least one of each", "FORMAT"),
        "constant_output": Case(constant_output(), "is a constant", "FORMAT"),
        "pad_over_memory_limit": Case(padded_over_limit(), "over the limit", "FORMAT"),
        "sparse_over_memory_limit": Case(sparse_over_limit(), "over the limit", "FORMAT"),
    }


def valid_models() -> dict[str, Case]:
    """Small valid files of every op (dense and sparse, f32/f16/i8 weights) and a small CNN."""
    from engine_graphs import op_graphs
    from spnn_graphs import small_cnn

    from pysparse.pack import pack

    out = {"small_cnn": Case(write_spnn(small_cnn()), None, "OK")}
    for name, g in sorted(op_graphs().items()):
        out[f"op_{name}"] = Case(pack(g), None, "OK")
        if name.startswith(("conv_1x1", "fc_")):
            out[f"op_{name}_sparse_f16"] = Case(pack(g, weights="fp16", sparse=True), None, "OK")
    return out


def damaged() -> dict[str, Case]:
    """The engine's own corruption cases of a small packed model (test_engine.py)."""
    from test_engine import corruption_cases

    import engine_graphs as eg
    from pysparse.pack import pack

    g = eg._single("CONV2D", [(1, 16, 6, 6)], (1, 8, 6, 6),
                   [eg._w(np.random.default_rng(3), 8, 16, 1, 1, zero=0.7), np.ones(8)])
    return {f"damaged_{k}": Case(data, "", status)
            for k, (data, status, _) in corruption_cases(pack(g, sparse=True)).items()}


def mutated(valid: dict[str, Case], count: int = 120, seed: int = 17) -> dict[str, bytes]:
    """Valid files with a few bytes changed and their CRCs made right: no expected answer,
    only that the readers agree."""
    rng = np.random.default_rng(seed)
    names = sorted(k for k, c in valid.items() if len(c.data) < 1 << 16)
    out = {}
    for i in range(count):
        b = bytearray(valid[names[i % len(names)]].data)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(32, len(b)))] = int(rng.integers(256))
        out[f"mutated_{i}"] = fix_crcs(bytes(b))
    return out


def corpus() -> dict[str, Case]:
    cases = valid_models()
    cases.update(hostile())
    cases.update(damaged())
    return cases
