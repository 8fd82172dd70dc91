"""ONNX's own backend test data as a yardstick: the cases that ship inside the `onnx` wheel.

- `light/`: nine classic ImageNet CNNs whose weights are made at run time by
  ConstantOfShape (every weight 0.02), with one stored output for an input that is not
  stored. We compare with onnxruntime on a seeded input, both on the model as shipped
  and on a copy whose convolution and Gemm weights are seeded random (He-scaled)
  initializers: with equal weights every class scores the same, so only the copy
  shows a wrong channel or a wrong window.
- `pytorch-converted/`, `pytorch-operator/`: single-layer models converted from PyTorch,
  each with stored inputs and outputs (test_data_set_0).

A case is in scope when all its inputs and outputs are float32 and pysparse imports it;
the rest are listed with the importer's reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA = Path(__import__("onnx").__file__).parent / "backend" / "test" / "data"
LIGHT_DIR = DATA / "light"
SINGLE_LAYER_DIRS = (DATA / "pytorch-converted", DATA / "pytorch-operator")
# The light models build their weights with ConstantOfShape from a few bytes (VGG-19: 143
# million elements from 0.6 MB): trusted files, imported with a raised element bound.
LIGHT_MAX_ELEMENTS = 1 << 28


def light_models() -> list[Path]:
    return sorted(LIGHT_DIR.glob("*.onnx"))


def light_name(path: Path) -> str:
    return path.stem.removeprefix("light_")


def single_layer_dirs() -> list[Path]:
    return sorted(d for root in SINGLE_LAYER_DIRS for d in root.iterdir() if (d / "model.onnx").is_file())


def read_pb(path: Path) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(t)


@dataclass
class SingleLayerCase:
    """One pytorch-converted/-operator case: its model, stored inputs and outputs."""
    path: Path
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @classmethod
    def load(cls, path: Path) -> "SingleLayerCase":
        data = path / "test_data_set_0"
        c = cls(path)
        c.inputs = [read_pb(p) for p in sorted(data.glob("input_*.pb"), key=_index)]
        c.outputs = [read_pb(p) for p in sorted(data.glob("output_*.pb"), key=_index)]
        return c

    def is_float(self) -> bool:
        return all(a.dtype == np.float32 for a in self.inputs + self.outputs)


def _index(p: Path) -> int:
    return int(p.stem.rsplit("_", 1)[1])


def import_case(model, **kw):
    """(graph, None) or (None, reason): pysparse's import of an ONNX model (path or proto)."""
    from pysparse.errors import PysparseError
    from pysparse.importers import load_model
    from pysparse.importers.onnx import load_onnx

    try:
        graph = load_onnx(model, **kw) if not isinstance(model, (str, os.PathLike)) else load_model(model, **kw)
        return graph, None
    except PysparseError as e:
        return None, f"{type(e).__name__}: {e}"


def reason_kind(reason: str) -> str:
    """A short key that groups refusals: the error type and the op (or the batch)."""
    if "runs batch 1" in reason:
        return "batch > 1"
    kind, _, rest = reason.partition(": ")
    if kind == "UnsupportedOpError":
        words = rest.split()
        op = words[2] if len(words) > 2 and words[:2] == ["unsupported", "op"] else words[0]
        detail = rest.split("): ", 1)[1] if "): " in rest else ""
        return f"{op}" + (f" ({detail})" if detail else "")
    return f"{kind}: {rest.split(':')[0]}"


def random_weights(path: Path, seed: int = 0):
    """The light model with every ConstantOfShape that feeds a Conv or Gemm weight replaced
    by a seeded He-scaled random initializer (other constants stay as shipped)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    weights = {n.input[1] for n in g.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 1}
    rng = np.random.default_rng(seed)
    keep = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.output[0] in weights and n.input[0] in inits:
            shape = tuple(int(v) for v in numpy_helper.to_array(inits[n.input[0]]))
            fan_in = int(np.prod(shape[1:]))
            w = rng.standard_normal(shape).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
            g.initializer.append(numpy_helper.from_array(w, n.output[0]))
            if model.ir_version < 4:  # initializers are graph inputs too before IR version 4
                g.input.append(helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, shape))
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    return model


def onnxruntime_outputs(model, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    data = model.SerializeToString() if hasattr(model, "SerializeToString") else Path(model).read_bytes()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def max_relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| over the output's scale (its range or largest magnitude); NaN where
    the expected output has NaN (a square root of a negative number, say), inf elsewhere."""
    got = np.asarray(got, np.float64).reshape(want.shape)
    want = np.asarray(want, np.float64)
    nan = np.isnan(want)
    if not np.array_equal(nan, np.isnan(got)):
        return float("inf")
    got, want = got[~nan], want[~nan]
    if not want.size:
        return 0.0
    scale = max(float(np.ptp(want)), float(np.max(np.abs(want))), 1e-6)
    return float(np.max(np.abs(got - want))) / scale


def run_in_node(cases: list, tmp_path: Path, variant: str = "simd") -> list[list[np.ndarray]]:
    """Runs packed models in the wasm engine under Node, one process for all.

    cases: (name, .spnn bytes, inputs in the model's order, output shapes); returns each
    case's outputs."""
    from web_fixtures import require_engine_builds, run_node

    require_engine_builds((variant,))
    jobs = []
    for k, (name, data, inputs, _) in enumerate(cases):
        stem = tmp_path / f"case{k}"
        stem.with_suffix(".spnn").write_bytes(data)
        np.concatenate([np.asarray(x, np.float32).reshape(-1) for x in inputs]).tofile(stem.with_suffix(".in.bin"))
        jobs.append({"model": str(stem.with_suffix(".spnn")), "input": str(stem.with_suffix(".in.bin")),
                     "out": str(stem), "threads": 1})
    results = run_node(variant, jobs, tmp_path)
    assert len(results) == len(jobs)
    outs = []
    for job, (_, _, _, shapes) in zip(jobs, cases):
        flat = np.fromfile(job["out"] + ".t1.bin", np.float32)
        sizes = [int(np.prod(s)) for s in shapes]
        assert flat.size == sum(sizes), (job, flat.size, sizes)
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        outs.append([p.reshape(s) for p, s in zip(parts, shapes)])
    return outs
