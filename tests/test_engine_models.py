"""Whole real models in the engine against the numpy reference: hand_landmark_full,
hand_landmark_lite and palm_detection_full, dense and one-shot pruned (50/70/80/90% of
the 1x1 convolution weights, unstructured and in blocks of 4 rows), natively (optimised
and under ASan+UBSan) and in Node on the real wasm builds through web/pysparse.mjs.
Outputs must be within 1e-4 of each output's range and bit-identical for 1 and 2 threads.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from pysparse import reference

import engine_graphs as eg
from engine_native import ASAN_TOOL, NativeModel
from web_fixtures import run_node

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "web" / "dist"
MODELS = ["hand_landmark_full", "hand_landmark_lite", "palm_detection_full"]
PRUNINGS = [(0.0, 1)] + [(s, b) for s in (0.5, 0.7, 0.8, 0.9) for b in (1, 4)]
CASES = [(m, s, b) for m in MODELS for s, b in PRUNINGS]
REL_TOL = 1e-4


def case_id(case) -> str:
    m, s, b = case
    return f"{m}-dense" if not s else f"{m}-{int(s * 100)}-b{b}"


class Case:
    """A packed model, its input (a real photo) and the reference outputs, cached on disk."""

    def __init__(self, model, sparsity, block):
        self.graph, self.data = eg.packed_real_model(model, sparsity, block)
        self.name = case_id((model, sparsity, block))
        with NativeModel(self.data, 1) as m:
            meta = m.metadata
            self.input_shape = m.input_shapes[0]
            self.output_names = m.output_names
        lo, hi = (meta.get("input") or {}).get("range", [0.0, 1.0])
        self.x = eg.photo_input(self.input_shape, lo, hi)
        ref_path = eg.CACHE / (self.name + "-" + str(abs(hash(self.data)) % 10**12) + "-ref.npz")
        if ref_path.exists():
            z = np.load(ref_path)
            self.ref = [z[f"o{i}"] for i in range(len(z.files))]
        else:
            outs = reference.run(self.graph, {self.graph.inputs[0]: self.x})
            self.ref = [outs[n] for n in self.output_names]
            np.savez(ref_path, **{f"o{i}": r for i, r in enumerate(self.ref)})

    def check(self, outs, where: str):
        assert len(outs) == len(self.ref)
        for name, o, r in zip(self.output_names, outs, self.ref):
            o = np.asarray(o).reshape(r.shape)
            scale = max(float(np.ptp(r)), float(np.abs(r).max()), 1e-6)
            err = float(np.abs(o - r).max())
            assert err <= REL_TOL * scale, f"{self.name} {where} output {name}: error {err:.3g}, range {scale:.3g}"


@pytest.fixture(scope="session")
def cases():
    cache: dict = {}

    def get(case) -> Case:
        if case not in cache:
            cache[case] = Case(*case)
        return cache[case]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_native_whole_model(cases, case):
    c = cases(case)
    with NativeModel(c.data, threads=2) as m:
        m.set_profiling(True)
        m.set_threads(1)
        one = m.run([c.x])
        kernels = {p["kernel"] for p in m.profile()}
        m.set_threads(2)
        two = m.run([c.x])
    for a, b in zip(one, two):
        assert np.array_equal(a, b), f"{c.name}: 1 and 2 threads differ"
    c.check(one, "native")
    if case[1]:  # pruned: the 1x1 convolutions run sparse, with the block pruned for
        rows = "x4" if case[2] == 4 else "x1"  # spmm_<pixels per tile>x<rows per block>
        assert any(k.startswith("spmm_") and k.endswith(rows) for k in kernels), (c.name, sorted(kernels))


@pytest.mark.slow
def test_whole_models_under_sanitizers(cases, tmp_path):
    assert ASAN_TOOL.exists(), "build/asan/spnn_tool missing: run make -C wasm native"
    for case in [(m, 0.0, 1) for m in MODELS] + [("hand_landmark_full", 0.8, 1), ("hand_landmark_full", 0.9, 4)]:
        c = cases(case)
        model, inp, out = tmp_path / "m.spnn", tmp_path / "in.bin", tmp_path / "out.bin"
        model.write_bytes(c.data)
        c.x.tofile(inp)
        r = subprocess.run([str(ASAN_TOOL), "run", str(model), "2", str(inp), str(out)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]
        flat = np.fromfile(out, np.float32)
        outs, pos = [], 0
        for ref in c.ref:
            outs.append(flat[pos:pos + ref.size])
            pos += ref.size
        c.check(outs, "asan")


def node_outputs(c: Case, prefix: Path, threads: int) -> list:
    flat = np.fromfile(f"{prefix}.t{threads}.bin", np.float32)
    outs, pos = [], 0
    for ref in c.ref:
        outs.append(flat[pos:pos + ref.size])
        pos += ref.size
    return outs


@pytest.mark.slow
@pytest.mark.parametrize("variant,threads,subset", [
    ("simd", 1, CASES),
    ("simd-threads", 2, CASES),
    ("relaxed", 1, [(m, s, b) for m, s, b in CASES if m == "hand_landmark_full" and s in (0.0, 0.8)]),
    ("relaxed-threads", 2, [(m, s, b) for m, s, b in CASES if m == "hand_landmark_full" and s in (0.0, 0.8)]),
])
def test_node_wasm_whole_models(cases, tmp_path, variant, threads, subset):
    stem = {"simd": "pysparse-simd", "simd-threads": "pysparse-simd-threads", "relaxed": "pysparse-relaxed",
            "relaxed-threads": "pysparse-relaxed-threads"}[variant]
    assert (DIST / f"{stem}.wasm").exists(), f"web/dist/{stem}.wasm missing: run make -C wasm all"
    jobs, built = [], []
    for case in subset:
        c = cases(case)
        model, inp = tmp_path / f"{c.name}.spnn", tmp_path / f"{c.name}.in.bin"
        model.write_bytes(c.data)
        c.x.tofile(inp)
        jobs.append({"model": str(model), "input": str(inp), "out": str(tmp_path / c.name), "threads": threads})
        built.append(c)
    results = run_node(variant, jobs, tmp_path)
    assert len(results) == len(jobs)
    for c, res in zip(built, results):
        assert res["build"] == {"simd": "simd128", "simd-threads": "simd128-threads", "relaxed": "relaxed-simd",
                                "relaxed-threads": "relaxed-simd-threads"}[variant]
        one = node_outputs(c, tmp_path / c.name, 1)
        c.check(one, f"node {variant}")
        if threads == 2:
            two = node_outputs(c, tmp_path / c.name, 2)
            for a, b in zip(one, two):
                assert np.array_equal(a, b), f"{c.name}: wasm outputs differ between 1 and 2 threads"
