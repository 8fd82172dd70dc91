"""The .spnn format: weight encodings, memory plan, write -> read round trips."""
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from pysparse import opset, reference
from pysparse.format import read_spnn, spec, write_spnn
from pysparse.format import sparse as sp
from pysparse.format.costmodel import choose
from pysparse.format.writer import tensor_order
from pysparse.passes.memory import lifetimes, overlapping_live_pairs, plan_memory, tensor_bytes
from spnn_graphs import random_chain, small_cnn

ROOT = Path(__file__).resolve().parent.parent


# -- sparse encoding -----------------------------------------------------------------
def _random_matrix(rng, rows, cols):
    density = rng.choice([0.0, 0.05, 0.3, 0.7, 1.0])
    m = rng.standard_normal((rows, cols)).astype(np.float32)
    m[rng.random((rows, cols)) >= density] = 0
    if rows > 1 and rng.random() < 0.5:
        m[rng.integers(rows)] = 0  # a row with no nonzeros
    if rng.random() < 0.5:
        m[rng.integers(rows)] = rng.standard_normal(cols)  # a fully dense row
    return m


@pytest.mark.parametrize("block", spec.SPARSE_BLOCKS)
@pytest.mark.parametrize("dtype", [spec.VALUE_F32, spec.VALUE_F16])
def test_sparse_round_trip_random(block, dtype):
    rng = np.random.default_rng(block * 10 + dtype)
    for _ in range(150):
        rows, cols = int(rng.integers(1, 11)), int(rng.integers(1, 300))
        m = _random_matrix(rng, rows, cols)
        for width in (None, spec.STEP_U8, spec.STEP_U16):
            e = sp.encode_sparse(m, block, dtype, width)
            assert np.array_equal(sp.decode(e), sp.quantize(m, dtype))
            q = sp.quantize(m, dtype)
            assert e.nnz == sp.stored_values(q, block)
            assert e.num_steps == int(sp.stored_counts(q, block).sum())


def test_sparse_layout_by_hand():
    # 5 rows, block 2: blocks rows {0,1}, {2,3}, then remainder row {4}.
    m = np.zeros((5, 300), np.float32)
    m[0, 3] = 1; m[1, 7] = 2; m[1, 3] = 3  # block 0 stores columns 3 and 7
    m[4, 0] = 4; m[4, 299] = 5              # row 4 stores columns 0 and 299 (step 299: escape)
    e = sp.encode_sparse(m, 2, spec.VALUE_F32, spec.STEP_U8)
    assert (e.nnz, e.num_steps) == (6, 4)
    counts = np.frombuffer(e.data, "<u4", 3)
    assert counts.tolist() == [2, 0, 2]
    values = np.frombuffer(e.data, "<f4", 6, offset=12)
    assert values.tolist() == [1, 3, 0, 2, 4, 5]  # column by column, the block's rows in order
    steps = e.data[12 + 24:]
    assert steps == bytes([3, 4, 0, 255]) + struct.pack("<H", 299)
    assert np.array_equal(sp.decode(e), m)


def test_steps_of_255_and_more_use_escapes():
    m = np.zeros((1, 65536), np.float32)
    cols = [0, 254, 509, 510, 765, 65000]  # steps 0, 254, 255, 1, 255, 64235
    m[0, cols] = 1
    e = sp.encode_sparse(m, 1, spec.VALUE_F32, spec.STEP_U8)
    steps = e.data[4 + 4 * len(cols):]
    assert steps == bytes([0, 254, 255, 255, 0, 1, 255, 255, 0, 255]) + struct.pack("<H", 64235)
    assert np.array_equal(sp.decode(e), m)
    e16 = sp.encode_sparse(m, 1, spec.VALUE_F32, spec.STEP_U16)
    assert np.array_equal(sp.decode(e16), m)
    assert sp.encode_sparse(m, 1).step_width == spec.STEP_U8  # the smaller one
    wide = np.zeros((1, 3000), np.float32)
    wide[0, ::300] = 1  # every step escapes: u16 is smaller
    assert sp.encode_sparse(wide, 1).step_width == spec.STEP_U16


def test_sparse_refuses_steps_beyond_u16():
    with pytest.raises(ValueError):
        sp.encode_sparse(np.ones((1, 65537), np.float32))


@pytest.mark.parametrize("dtype", [spec.VALUE_F32, spec.VALUE_F16, spec.VALUE_I8])
def test_dense_round_trip(dtype):
    rng = np.random.default_rng(dtype)
    m = rng.standard_normal((7, 13)).astype(np.float32)
    m[3] = 0  # an all-zero row has scale 0 in int8
    e = sp.encode_dense(m, dtype)
    d = sp.decode(e)
    assert np.array_equal(d, sp.quantize(m, dtype))
    tol = {spec.VALUE_F32: 0, spec.VALUE_F16: 1e-3, spec.VALUE_I8: 1 / 254 + 1e-6}[dtype]
    assert np.all(np.abs(d - m) <= tol * np.abs(m).max(axis=1, keepdims=True) + 1e-7)


def test_cost_model_choices():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((64, 64)).astype(np.float32)
    assert choose(dense, 1024).encoding == "dense"
    sparse = dense * (rng.random((64, 64)) < 0.1)
    assert choose(sparse, 1024).encoding == "sparse"
    blocky = np.repeat(sparse[::4], 4, axis=0)  # identical 4-row blocks: block 4 stores no extra zeros
    assert choose(blocky, 1024).block == 4
    assert choose(dense, 1024, force=True).encoding == "sparse"
    assert choose(sparse, 1024, force=False).encoding == "dense"


# -- memory plan ---------------------------------------------------------------------
def test_memory_plan_never_overlaps_live_tensors():
    rng = np.random.default_rng(1)
    for _ in range(200):
        g = random_chain(rng, int(rng.integers(1, 30)))
        offsets, arena = plan_memory(g)
        assert overlapping_live_pairs(g, offsets, limit=1) == []
        life = lifetimes(g)
        for n, off in offsets.items():
            assert off % 64 == 0 and off + tensor_bytes(g, n) <= arena
        # brute force: every pair live at the same op index is disjoint
        names = list(offsets)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                (a0, a1), (b0, b1) = life[a], life[b]
                if a0 <= b1 and b0 <= a1:
                    assert offsets[a] + tensor_bytes(g, a) <= offsets[b] or \
                        offsets[b] + tensor_bytes(g, b) <= offsets[a], (a, b)


def test_memory_plan_reuses_space():
    g = small_cnn()
    offsets, arena = plan_memory(g)
    total = sum(tensor_bytes(g, n) for n in offsets)
    assert arena < total / 2


# -- write / read ----------------------------------------------------------------------
def _inputs(g, seed=1):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(g.tensors[n].shape).astype(np.float32) for n in g.inputs}


def _sparse_encodings(g, dtype=spec.VALUE_F32):
    enc = {}
    for name, block in (("wpw", 1), ("wpw2", 2), ("wfc", 4)):
        t = g.tensors[name]
        enc[name] = sp.encode_sparse(t.data.reshape(sp.matrix_shape(t.shape)), block, dtype)
    return enc


@pytest.mark.parametrize("sparse_weights", [False, True])
def test_round_trip_is_bit_exact(sparse_weights):
    g = small_cnn()
    data = write_spnn(g, _sparse_encodings(g) if sparse_weights else None, {"name": "small"})
    f = read_spnn(data)
    assert f.metadata == {"name": "small"} and f.file_size == len(data)
    assert f.version == (1, 0)
    assert [op.type for op in f.graph.ops] == [op.type for op in g.ops]
    assert f.graph.inputs == g.inputs and f.graph.outputs == g.outputs
    for name, t in g.tensors.items():
        assert f.graph.tensors[name].shape == t.shape
        if t.is_constant:
            assert np.array_equal(f.graph.tensors[name].data, t.data)
    x = _inputs(g)
    want, got = reference.run(g, x), reference.run(f.graph, x)
    for k in want:
        assert got[k].dtype == np.float32 and np.array_equal(got[k], want[k])
    assert write_spnn(f.graph, f.weights, f.metadata, (f.offsets, f.arena_bytes)) == data  # stable


def test_layout_follows_the_spec():
    g = small_cnn()
    data = write_spnn(g, _sparse_encodings(g), {"name": "small"})
    magic, major, minor, producer, flags, count, crc, size = spec.HEADER.unpack_from(data)
    assert (magic, major, minor, flags, count, size) == (b"SPNN", 1, 0, 0, 4, len(data))
    assert producer == bytes([0, 1, 0, 0])
    assert crc == zlib.crc32(data[:20] + data[32:32 + 16 * count])
    types = []
    for i in range(count):
        stype, off, length, scrc = struct.unpack_from("<4I", data, 32 + 16 * i)
        assert off % 16 == 0 and zlib.crc32(data[off:off + length]) == scrc
        types.append(stype)
        if stype == spec.SECTION_GRAPH:
            n_t, n_ops, n_in, n_out, arena = struct.unpack_from("<5I", data, off)
            assert (n_t, n_ops, n_in, n_out) == (len(tensor_order(g)), len(g.ops), 1, 2)
    assert sorted(types) == [1, 2, 3, 4]


def test_writer_refuses_bad_graphs():
    g = small_cnn()
    g.tensors["pw"].shape = (1, 16, 8, 9)
    with pytest.raises(ValueError, match="output shape"):
        write_spnn(g)


def test_optable_in_spec_matches_opset():
    text = (ROOT / "docs" / "format.md").read_text()
    table = re.search(r"<!-- optable:begin -->\n(.*?)\n<!-- optable:end -->", text, re.S).group(1)
    assert table.strip() == opset.markdown_table().strip()
