"""Damaged and hostile source models: the importers (and the packing after them) end in
pysparse's own errors only, quickly and in bounded memory (tests/importer_fuzz.py)."""
from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
import pytest

from importer_fuzz import import_pack_read, mutate, onnx_seeds, tflite_seeds
from pysparse.errors import ModelFormatError, PysparseError, ResourceLimitError
from pysparse.importers import load_model

CASES = int(os.environ.get("SPNN_IMPORT_FUZZ_CASES", "120"))  # per seed model
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def seeds():
    return {**tflite_seeds(), **onnx_seeds()}


def test_seeds_import(seeds):
    for data, _ in seeds.values():
        import_pack_read(data)


@pytest.mark.parametrize("kind", ["tflite", "tflite_sparse", "onnx"])
def test_mutated_models_give_typed_errors(seeds, kind):
    seed, names = seeds[kind]
    rng = np.random.default_rng({"tflite": 1, "tflite_sparse": 2, "onnx": 3}[kind])
    outcomes: dict[str, int] = {}
    for i in range(CASES):
        data = mutate(seed, names, rng)
        t0 = time.perf_counter()
        try:
            import_pack_read(data)
            outcome = "ok"
        except PysparseError as e:
            outcome = type(e).__name__
        except Exception as e:  # anything else is a finding
            raise AssertionError(f"case {i}: {type(e).__name__}: {e}") from e
        assert time.perf_counter() - t0 < 10, f"case {i} took {time.perf_counter() - t0:.1f} s"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("ok", 0) < CASES  # the mutations do reach the checks


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\x00", b"a\x00b"])
def test_names_that_cannot_be_stored(seeds, kind, bad):
    """A name holding a zero byte is a bad model; one that is not UTF-8 is a bad model in
    ONNX (whose names are UTF-8 strings) and, in TFLite, imported with U+FFFD in place of
    the bytes that are not."""
    data, _ = seeds[kind]
    name = b"stem_conv" if kind == "onnx" else b"stem_out"
    at = data.find(name)
    damaged = data[:at] + bad + data[at + len(bad):]
    if kind == "tflite" and b"\x00" not in bad:
        graph = load_model(damaged)
        assert any("\ufffd" in n for n in graph.tensors)
        import_pack_read(damaged)
    else:
        with pytest.raises(ModelFormatError):
            import_pack_read(damaged)


def sparse_rows_model(rows: int) -> bytes:
    """A 1x1 convolution whose sparse weight (TFLite sparse storage, read through DENSIFY)
    declares `rows` output channels while storing a handful of values."""
    from ai_edge_litert import schema_py_generated as fb

    from pysparse.importers.tflite_sparse import encode_1x1
    from tflite_builder import TFLiteBuilder, options

    b = TFLiteBuilder()
    x = b.input("x", (1, 4, 4, 8))
    values, sp = encode_1x1(np.eye(8, dtype=np.float32).reshape(8, 1, 1, 8))
    sp.dimMetadata[0].denseSize = rows
    w = b.const("w_sparse", values)
    b.tensors[w].shape = [rows, 1, 1, 8]
    b.tensors[w].sparsity = sp
    dense = b.tensor("w", (rows, 1, 1, 8))
    b.op("DENSIFY", [w], [dense], fb.DensifyOptionsT())
    y = b.tensor("y", (1, 4, 4, rows))
    b.op("CONV_2D", [x, dense, b.const("bias", np.zeros(1))], [y],
         options("Conv2DOptions", padding=0, strideW=1, strideH=1, fusedActivationFunction=0))
    return b.finish([y])


def test_densify_bomb_is_refused_before_allocating():
    """A sparse tensor declaring 11 000 000 rows: refused by the element budget, in well
    under a second, with the Python heap a few MB at its peak (it used to take 1.1 GB)."""
    data = sparse_rows_model(11_000_000)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ResourceLimitError):
        load_model(data)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 2 and peak < 16 * 2**20 + 16 * len(data), (seconds, peak)
