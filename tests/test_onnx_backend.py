"""Conformance with ONNX's own backend test data (tests/onnx_backend.py says what it holds).

Every float case within the op set goes import -> pack -> numpy reference and -> the wasm
engine under Node, and must match the stored outputs (onnxruntime for the light models)
within 1e-4 of each output's scale. Cases out of scope are counted by reason and printed
(run with -s to see the table); their number may only shrink.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest

from pysparse import reference
from pysparse.pack import pack

import onnx_backend as ob

pytestmark = pytest.mark.timeout(1200)
REL_TOL = 1e-4
# Single-layer cases that pass today: a floor, raised as the op set grows.
MIN_SINGLE_LAYER_PASSES = 109


@pytest.fixture(scope="module")
def single_layer(tmp_path_factory):
    """Every single-layer case, classified: in scope with its packed model, or a reason."""
    in_scope, refused = [], {}
    for d in ob.single_layer_dirs():
        case = ob.SingleLayerCase.load(d)
        if not case.is_float():
            refused[case.name] = "not float"
            continue
        graph, why = ob.import_case(d / "model.onnx")
        if graph is None:
            refused[case.name] = ob.reason_kind(why)
            continue
        in_scope.append((case, graph, pack(graph, weights="fp32")))
    return in_scope, refused


def _check(name: str, where: str, got: list, want: list) -> list[str]:
    bad = []
    for i, (g, w) in enumerate(zip(got, want)):
        err = ob.max_relative_error(g, w)
        if not err <= REL_TOL:
            bad.append(f"{name} output {i} ({where}): error {err:.3g} of the output's scale")
    return bad


def test_single_layer_cases(single_layer, tmp_path):
    in_scope, refused = single_layer
    failures = []
    for case, graph, _ in in_scope:
        outs = reference.run(graph, dict(zip(graph.inputs, case.inputs)))
        failures += _check(case.name, "reference", [outs[n] for n in graph.outputs], case.outputs)
    wasm = ob.run_in_node([(c.name, data, c.inputs, [o.shape for o in c.outputs]) for c, _, data in in_scope],
                          tmp_path)
    for (case, _, _), outs in zip(in_scope, wasm):
        failures += _check(case.name, "wasm", outs, case.outputs)
    total = len(in_scope) + len(refused)
    counts = collections.Counter(refused.values())
    print(f"\nONNX single-layer cases: {total}; pass (reference and wasm): {len(in_scope) - len(failures)}")
    for reason, n in counts.most_common():
        print(f"  {n:3d}  out of scope: {reason}")
    assert not failures, failures
    assert len(in_scope) >= MIN_SINGLE_LAYER_PASSES, sorted(refused.items())


@pytest.mark.slow
@pytest.mark.parametrize("path", ob.light_models(), ids=ob.light_name)
def test_light_model(path, tmp_path):
    """As shipped (every weight 0.02) and with seeded random conv/Gemm weights: import,
    pack, reference and wasm against onnxruntime on a seeded input."""
    import onnx

    results, runs = {}, []
    for variant, model in (("shipped", onnx.load(str(path))), ("random", ob.random_weights(path))):
        graph, why = ob.import_case(model, max_elements=ob.LIGHT_MAX_ELEMENTS)
        assert graph is not None, why
        x = np.random.default_rng(0).standard_normal(graph.tensors[graph.inputs[0]].shape).astype(np.float32)
        want = ob.onnxruntime_outputs(model, {graph.inputs[0]: x})
        ref = reference.run(graph, {graph.inputs[0]: x})
        results[variant] = (want, [ref[n] for n in graph.outputs])
        runs.append((variant, pack(graph, weights="fp32"), [x], [w.shape for w in want]))
        del graph, model
    failures = []
    for (variant, *_), outs in zip(runs, ob.run_in_node(runs, tmp_path)):
        want, ref = results[variant]
        failures += _check(f"{path.name} {variant}", "reference", ref, want)
        failures += _check(f"{path.name} {variant}", "wasm", outs, want)
        print(f"\n{ob.light_name(path)} {variant}: max error vs onnxruntime, reference "
              f"{max(ob.max_relative_error(r, w) for r, w in zip(ref, want)):.2g}, wasm "
              f"{max(ob.max_relative_error(o, w) for o, w in zip(outs, want)):.2g} of the output's scale")
    assert not failures, failures
