"""A reader must turn every damaged or crafted .spnn file into SpnnFormatError: never another
exception, never a hang, never a silently inconsistent graph."""
import json
import struct

import numpy as np
import pytest

from pysparse import reference
from pysparse.errors import SpnnFormatError
from pysparse.format import read_spnn, spec, write_spnn
from pysparse.format import sparse as sp
from pysparse.format.writer import assemble
from spnn_corpus import fix_crcs
from spnn_graphs import small_cnn

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def graph():
    return small_cnn()


@pytest.fixture(scope="module")
def good(graph) -> bytes:
    enc = {}
    for name, block, width in (("wpw", 1, 1), ("wpw2", 2, 2), ("wfc", 4, 1)):
        t = graph.tensors[name]
        enc[name] = sp.encode_sparse(t.data.reshape(sp.matrix_shape(t.shape)), block, spec.VALUE_F32, width)
    enc["w1"] = sp.encode_dense(graph.tensors["w1"].data.reshape(8, 27), spec.VALUE_I8)
    enc["wdw"] = sp.encode_dense(graph.tensors["wdw"].data.reshape(8, 9), spec.VALUE_F16)
    return write_spnn(graph, enc, {"name": "small"})


# -- helpers to find and patch fields, then make the CRCs right again ------------------
def sections(data: bytes) -> dict:
    count = struct.unpack_from("<I", data, 16)[0]
    out = {}
    for i in range(count):
        stype, off, length, _ = struct.unpack_from("<4I", data, 32 + 16 * i)
        out[stype] = (i, off, length)
    return out


def patch(data: bytes, at: int, fmt: str, *values, crc=True) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, at, *values)
    return fix_crcs(bytes(b)) if crc else bytes(b)


def graph_at(data):
    return sections(data)[spec.SECTION_GRAPH][1]


def weights_at(data):
    return sections(data)[spec.SECTION_WEIGHTS][1]


def op_offsets(data) -> list[int]:
    """Absolute offsets of the op records."""
    g = graph_at(data)
    n_t, n_ops, n_in, n_out = struct.unpack_from("<4I", data, g)
    pos = g + 32 + 40 * n_t + 4 * (n_in + n_out)
    out = []
    for _ in range(n_ops):
        out.append(pos)
        _, n_attrs, n_ins, n_outs = struct.unpack_from("<HHBB", data, pos)
        pos += 12 + 4 * (n_ins + n_outs + n_attrs)
    return out


def tensor_at(data, tid):
    return graph_at(data) + 32 + 40 * tid


def tensor_id(data, name: str) -> int:
    f = read_spnn(data)
    from pysparse.format.writer import tensor_order
    return tensor_order(f.graph).index(name)


def rejects(data, match=None):
    with pytest.raises(SpnnFormatError, match=match):
        read_spnn(data)


def read_or_reject(data: bytes) -> bool:
    """Reading either fails with SpnnFormatError or gives a graph the reference can run."""
    try:
        f = read_spnn(data)
    except SpnnFormatError:
        return False
    x = {n: np.ones(f.graph.tensors[n].shape, np.float32) for n in f.graph.inputs}
    with np.errstate(all="ignore"):
        reference.run(f.graph, x)
    return True


# -- the file as a whole -------------------------------------------------------------
def test_good_file_reads(good):
    assert read_spnn(good).metadata["name"] == "small"


def test_every_truncation(good):
    for n in range(len(good)):
        with pytest.raises(SpnnFormatError):
            read_spnn(good[:n])


def test_every_truncation_with_consistent_header(good):
    """Truncations that also shrink file_size and recompute CRCs reach the section checks."""
    for n in range(32, len(good), 7):
        b = patch(good[:n], 24, "<Q", n)
        with pytest.raises(SpnnFormatError):
            read_spnn(b)


def test_random_byte_flips(good):
    rng = np.random.default_rng(1234)
    accepted = 0
    for i in range(2000):
        b = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        raw = bytes(b)
        if raw != good:
            with pytest.raises(SpnnFormatError):  # without fixing the CRCs, always caught
                read_spnn(raw)
        accepted += read_or_reject(fix_crcs(raw))
    assert 0 < accepted < 2000  # both outcomes happen: flips in values pass, in structure fail


def test_random_flips_in_structure(good):
    """Flips aimed at the graph records and weight descriptors, CRCs recomputed."""
    rng = np.random.default_rng(99)
    s = sections(good)
    g_off, g_len = s[spec.SECTION_GRAPH][1:]
    w_off = s[spec.SECTION_WEIGHTS][1]
    n_w = struct.unpack_from("<I", good, w_off)[0]
    spans = [(0, 32 + 16 * len(s)), (g_off, g_off + g_len), (w_off, w_off + 16 + 32 * n_w)]
    rejected = 0
    for i in range(1500):
        lo, hi = spans[i % 3]
        b = bytearray(good)
        b[int(rng.integers(lo, hi))] ^= 1 << int(rng.integers(8))
        if rng.random() < 0.3:  # and sometimes a whole random u32
            at = int(rng.integers(lo, hi - 4))
            b[at:at + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        rejected += not read_or_reject(fix_crcs(bytes(b)))
    assert rejected > 1000


def test_random_garbage():
    rng = np.random.default_rng(5)
    for n in list(range(0, 200)) + [1000, 5000]:
        blob = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        rejects(blob)
        if n >= 4:
            rejects(b"SPNN" + blob[4:])


# -- header and section table ----------------------------------------------------------
def test_header_fields(good):
    rejects(b"XPNN" + good[4:], "magic")
    rejects(patch(good, 0, "4s", b"TFL3"), "magic")
    rejects(patch(good, 4, "<H", 2), "version 2.0")
    rejects(patch(good, 4, "<H", 0), "version")
    assert read_spnn(patch(good, 6, "<H", 7)).version == (1, 7)  # any minor of major 1
    rejects(patch(good, 12, "<I", 1), "flags")
    rejects(patch(good, 16, "<I", 0), "section_count")
    rejects(patch(good, 16, "<I", 65), "section_count")
    rejects(patch(good, 16, "<I", 3), "section")
    rejects(patch(good, 24, "<Q", len(good) + 16), "truncated")
    rejects(patch(good, 24, "<Q", len(good) - 1), "file_size")
    rejects(good + bytes(16), "file_size")
    rejects(patch(good, 20, "<I", 0, crc=False), "CRC")
    rejects(patch(good, 8, "B", 9, crc=False), "CRC")  # producer byte: covered by the header CRC


def test_section_crc(good):
    _, off, length = sections(good)[spec.SECTION_GRAPH]
    b = bytearray(good)
    b[off + length // 2] ^= 0x10
    rejects(bytes(b), "section GRAPH: CRC")


def test_section_table_entries(good):
    s = sections(good)
    i, off, length = s[spec.SECTION_GRAPH]
    entry = 32 + 16 * i
    rejects(patch(good, entry + 4, "<I", off + 4), "multiple of 16")
    rejects(patch(good, entry + 4, "<I", 16), "inside the header")
    rejects(patch(good, entry + 4, "<I", len(good) // 16 * 16), "past the end")
    rejects(patch(good, entry + 8, "<I", 0xFFFFFFF0), "past the end")
    rejects(patch(good, entry + 4, "<I", s[spec.SECTION_STRINGS][1]), "overlaps")
    rejects(patch(good, entry, "<I", 9), "unknown section type 9")
    rejects(patch(good, entry, "<I", spec.SECTION_WEIGHTS), "appears twice")
    b = bytearray(good)
    b[off + length] = 1  # the padding after a section
    rejects(fix_crcs(bytes(b)), "padding")


def test_sections_may_come_in_any_order(graph):
    blobs = {}
    data = write_spnn(graph)
    for stype, (_, off, length) in sections(data).items():
        blobs[stype] = data[off:off + length]
    shuffled = assemble({t: blobs[t] for t in (4, 3, 1, 2)})
    assert read_spnn(shuffled).graph.outputs == graph.outputs


# -- STRINGS -------------------------------------------------------------------------
def test_strings(good):
    _, s_off, s_len = sections(good)[spec.SECTION_STRINGS]
    rejects(patch(good, s_off, "B", ord("x")), "STRINGS: must start")
    t = tensor_at(good, 0)
    rejects(patch(good, t + 28, "<I", s_len), "string offset")
    rejects(patch(good, t + 28, "<I", 0xFFFFFFFF), "string offset")
    rejects(patch(good, t + 28, "<I", 0), "empty name")
    rejects(patch(good, s_off + s_len - 1, "B", ord("z")), "no terminating zero")
    rejects(patch(good, s_off + 1, "B", 0xFF), "UTF-8")
    name1 = struct.unpack_from("<I", good, tensor_at(good, 1) + 28)[0]
    rejects(patch(good, t + 28, "<I", name1), "used by an earlier tensor")


# -- GRAPH ---------------------------------------------------------------------------
def test_graph_counts_checked_against_size(good):
    g = graph_at(good)
    for field in range(4):  # num_tensors, num_ops, num_inputs, num_outputs
        rejects(patch(good, g + 4 * field, "<I", 0xFFFFFFFF), "section GRAPH")
        rejects(patch(good, g + 4 * field, "<I", 0x00FFFFFF), "section GRAPH")
    rejects(patch(good, g + 20, "<I", 1), "reserved")


def test_tensor_records(good):
    pw = tensor_id(good, "pw")
    t = tensor_at(good, pw)
    rejects(patch(good, t, "B", 3), "unknown kind")
    rejects(patch(good, t + 1, "B", 1), "dtype")
    rejects(patch(good, t + 2, "B", 7), "ndim 7 exceeds 6")
    rejects(patch(good, t + 3, "B", 1), "reserved")
    rejects(patch(good, t + 4 + 4 * 2, "<I", 0), "dims")
    rejects(patch(good, t + 4 + 4 * 5, "<I", 3), "dims")
    rejects(patch(good, t + 4, "<4I", 1 << 14, 1 << 14, 1, 1), f"tensor {pw}: dims .* exceed")
    rejects(patch(good, t + 4 + 4, "<I", 17), "output shape")
    rejects(patch(good, t + 36, "<I", 8), "multiple of 16")
    rejects(patch(good, t + 36, "<I", 1 << 30), "outside the arena")
    rejects(patch(good, t + 32, "<I", 0), "weight index")
    rejects(patch(good, t, "B", spec.KIND_INPUT), "not in the inputs list")
    rejects(patch(good, graph_at(good) + 16, "<I", 64), "outside the arena")  # arena_bytes
    w1 = tensor_at(good, tensor_id(good, "w1"))
    rejects(patch(good, w1 + 32, "<I", 999), "weight index 999")
    rejects(patch(good, w1 + 36, "<I", 16), "arena offset")
    rejects(patch(good, w1 + 32, "<I", 1), "used by tensors")
    rejects(patch(good, w1, "B", spec.KIND_ACTIVATION), "weight index")


def test_arena_overlap_of_live_tensors(good):
    c1 = tensor_at(good, tensor_id(good, "c1"))
    dw_off = struct.unpack_from("<I", good, tensor_at(good, tensor_id(good, "dw")) + 36)[0]
    rejects(patch(good, c1 + 36, "<I", dw_off), "overlap")


def test_graph_inputs_outputs(good):
    g = graph_at(good)
    n_t = struct.unpack_from("<I", good, g)[0]
    inputs_at = g + 32 + 40 * n_t
    rejects(patch(good, inputs_at, "<I", n_t), "tensor id")
    rejects(patch(good, inputs_at, "<I", 1), "graph input")
    rejects(patch(good, inputs_at + 4, "<I", tensor_id(good, "w1")), "constant")


def test_op_records(good):
    ops = op_offsets(good)
    conv = ops[0]
    rejects(patch(good, conv, "<H", 99), "unknown op code 99")
    rejects(patch(good, conv, "<H", 0), "unknown op code 0")
    rejects(patch(good, conv + 2, "<H", 9), "attributes")
    rejects(patch(good, conv + 4, "B", 4), "arity")
    rejects(patch(good, conv + 5, "B", 2), "outputs")
    rejects(patch(good, conv + 6, "<H", 1), "reserved")
    rejects(patch(good, conv + 8, "<I", 1 << 20), "string offset")
    rejects(patch(good, conv + 12, "<I", 0xFFFFFF), "tensor id")
    rejects(patch(good, conv + 12, "<I", spec.ABSENT), "required input 0 is absent")
    # conv1's attributes follow its 3 inputs and 1 output: stride_h = 0, then 3
    rejects(patch(good, conv + 12 + 16, "<i", 0), "stride")
    rejects(patch(good, conv + 12 + 16, "<i", 3), "output shape")
    rejects(patch(good, conv + 12 + 16 + 4 * 8, "<i", 3), "groups")
    rejects(patch(good, conv + 12 + 16 + 4 * 9, "<i", 7), "fused activation")
    rejects(patch(good, conv + 12 + 16 + 4 * 4, "<i", -1), "padding")
    # an op reading a tensor that a later op writes
    rejects(patch(good, conv + 12, "<I", tensor_id(good, "pw")), "before any op writes it")
    # an op writing the graph input / a constant / an already written tensor
    rejects(patch(good, conv + 12 + 12, "<I", tensor_id(good, "image")), "input")
    rejects(patch(good, ops[1] + 12 + 12, "<I", tensor_id(good, "c1")), "written by an earlier op")


def test_op_shape_rules(good):
    ops = op_offsets(good)
    f = read_spnn(good)
    by_name = {op.name: i for i, op in enumerate(f.graph.ops)}
    fc = ops[by_name["fc"]]
    rejects(patch(good, fc + 12, "<I", tensor_id(good, "pr")), "FULLY_CONNECTED.*2-D")
    flat = tensor_at(good, tensor_id(good, "flat"))
    rejects(patch(good, flat + 4, "<2I", 2, 128), "FULLY_CONNECTED|RESHAPE")
    mean = ops[by_name["squeeze"]]
    rejects(patch(good, mean + 12 + 8, "<i", 1 << 5), "axes_mask")
    cat = ops[by_name["concat"]]
    rejects(patch(good, cat + 12 + 12, "<i", 4), "axis 4 out of range")
    rejects(patch(good, cat + 12 + 12, "<i", 2), "does not match|output shape")
    add = ops[by_name["residual"]]
    rejects(patch(good, add + 16, "<I", tensor_id(good, "c1")), "broadcast")
    s = {t: good[o:o + n] for t, (_, o, n) in sections(good).items()}
    s[spec.SECTION_GRAPH] += bytes(4)  # a stray u32 after the last op
    rejects(assemble(s), "after the last op")


# -- WEIGHTS -------------------------------------------------------------------------
def weight_fields(data, index):
    at = weights_at(data) + 16 + 32 * index
    return at, spec.WEIGHT_DESCRIPTOR.unpack_from(data, at)


def weight_index(data, name):
    f = read_spnn(data)
    return f.weight_order.index(name)


def test_weight_descriptors(good):
    w = weights_at(good)
    rejects(patch(good, w, "<I", 0xFFFFFFFF), "descriptors need")
    rejects(patch(good, w, "<I", 3), "used by no tensor|weight index")
    rejects(patch(good, w + 4, "<I", 1), "reserved")
    at, d = weight_fields(good, weight_index(good, "w1"))
    rejects(patch(good, at, "B", 2), "unknown encoding")
    rejects(patch(good, at + 1, "B", 3), "dtype")
    rejects(patch(good, at + 2, "B", 1), "dense weight")
    rejects(patch(good, at + 4, "<I", d[4] + 1), "rows")
    rejects(patch(good, at + 8, "<I", d[5] - 1), "nnz|data is")
    rejects(patch(good, at + 20, "<I", d[8] + 4), "multiple of 16")
    rejects(patch(good, at + 20, "<I", 16), "inside the descriptor table")
    rejects(patch(good, at + 20, "<I", 1 << 24), "runs past")
    rejects(patch(good, at + 24, "<I", d[9] + 1), "data is")
    rejects(patch(good, at + 28, "<I", 1), "reserved")


def test_sparse_weights(good):
    for name in ("wpw", "wpw2", "wfc"):
        at, d = weight_fields(good, weight_index(good, name))
        enc, dt, block, width, rows, cols, nnz, nsteps, off, length, _ = d
        data_at = weights_at(good) + off
        rejects(patch(good, at + 1, "B", spec.VALUE_I8), "sparse value dtype")
        rejects(patch(good, at + 2, "B", 3), "block 3")
        rejects(patch(good, at + 3, "B", 4), "step width")
        rejects(patch(good, at + 12, "<I", nnz + block), "nnz")
        rejects(patch(good, at + 12, "<I", rows * cols + 1), "nnz")
        rejects(patch(good, at + 16, "<I", nsteps + 1), "num_steps|steps")
        rejects(patch(good, at + 24, "<I", 4), "counts need|values end|steps")
        rejects(patch(good, data_at, "<I", cols + 1), "more than cols")
        rejects(patch(good, data_at, "<I", 0xFFFFFFFF), "more than cols")
        first = struct.unpack_from("<I", good, data_at)[0]
        rejects(patch(good, data_at, "<I", first + 1), "counts give")
        num_blocks = rows // block + rows % block
        steps_at = data_at + 4 * num_blocks + 4 * nnz
        if width == 1:
            rejects(patch(good, steps_at, "B", 250), "reaches column|step")
            rejects(patch(good, data_at + length - 1, "B", 255), "escape|steps")
            rejects(patch(good, steps_at, "<BH", 255, 0xFFFF), "steps|column")
        else:
            rejects(patch(good, steps_at, "<H", cols), "reaches column")
        # a later step of 0 breaks strictly increasing columns
        later = steps_at + (1 if width == 1 else 2)
        counts = np.frombuffer(good, "<u4", num_blocks, data_at)
        if counts[0] >= 2 and (width == 2 or good[steps_at] < 255):
            rejects(patch(good, later, "<B" if width == 1 else "<H", 0), "strictly increase")


def test_constant_totals_are_bounded():
    """Three sparse all-zero weights of 4 x (2^26 - 4) take a few bytes each and are each
    below the per-tensor limit; together they are over it, and the reader refuses them
    before decoding (which would allocate 3 GiB)."""
    from pysparse.ir import Graph
    g = Graph()
    g.add_tensor("x", (1, 4))
    g.inputs = ["x"]
    for i in range(3):
        g.add_tensor(f"y{i}", (1, 4))
        g.add_op("FULLY_CONNECTED", ["x", g.add_constant(f"w{i}", np.zeros((4, 4), np.float32))], [f"y{i}"], f"fc{i}")
    g.outputs = ["y0", "y1", "y2"]
    data = write_spnn(g, {f"w{i}": sp.encode_sparse(np.zeros((4, 4), np.float32), 4) for i in range(3)})
    assert read_spnn(data).graph.outputs == g.outputs
    k = (1 << 26) - 4
    b = patch(data, graph_at(data) + 16, "<I", 1 << 30)  # arena_bytes
    b = patch(b, tensor_at(b, tensor_id(data, "x")) + 8, "<I", k)
    for i in range(3):
        b = patch(b, tensor_at(b, tensor_id(data, f"w{i}")) + 8, "<I", k)
        at, _ = weight_fields(b, weight_index(data, f"w{i}"))
        b = patch(b, at + 8, "<I", k)  # cols
    rejects(b, "constants hold")


# -- METADATA ------------------------------------------------------------------------
def test_metadata(graph):
    data = write_spnn(graph, metadata={"name": "x"})
    _, off, length = sections(data)[spec.SECTION_METADATA]
    rejects(patch(data, off, "B", ord("[")), "METADATA")
    rejects(patch(data, off, "B", 0xC3), "METADATA")
    s = {t: data[o:o + n] for t, (_, o, n) in sections(data).items()}
    s[spec.SECTION_METADATA] = json.dumps([1, 2]).encode()
    rejects(assemble(s), "not an object")
    s[spec.SECTION_METADATA] = b'{"x": NaN}'
    rejects(assemble(s), "NaN is not JSON")
    s[spec.SECTION_METADATA] = b"[" * 100000
    rejects(assemble(s), "METADATA")
