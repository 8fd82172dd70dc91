"""The Pyodide front end (pysparse/pyodide.py).

In headless Chromium: npm's `pyodide` package served by `pysparse serve`, a freshly built
pysparse wheel unpacked into Pyodide's site-packages (`pyodide.unpackArchive`; no package
index is reachable), a real hand model run from Python with plain buffers (the npm package
carries no numpy), outputs equal to the JS runtime's on the same page.
The buffer conversions are also checked here in CPython, with and without numpy.
"""
from __future__ import annotations

import array
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pysparse import pyodide as front
from pysparse.errors import InputShapeError
from web_fixtures import ROOT, b64, chromium, open_page, require_engine_builds, serve, write_case

PYODIDE = ROOT / "node_modules" / "pyodide"

PYTHON_IN_PYODIDE = """
import array, json, sys
import pysparse
from pysparse.errors import InputShapeError, SpnnFormatError
from js import caseInput

assert "numpy" not in sys.modules
model = await pysparse.load("/models/model.spnn", threads=1)
x = caseInput.to_bytes()
flat = lambda mv: mv.cast("B").cast("f").tolist()
runs = {
    "bytes": model.run(x),
    "array": model.run(array.array("f", memoryview(x).cast("f"))),
    "memoryview": model.run({model.inputs[0]["name"]: memoryview(x).cast("f")}),
}
result = {kind: {name: {"shape": list(mv.shape), "data": flat(mv)} for name, mv in out.items()}
          for kind, out in runs.items()}
result["info"] = {k: model.info[k] for k in ("variant", "threads", "arenaBytes")}
result["inputs"] = model.inputs
try:
    model.run(b"\\0" * 40)
    result["wrong_size"] = "ran"
except InputShapeError as e:
    result["wrong_size"] = str(e)
model.dispose()
try:
    await pysparse.load("/models/corrupt.spnn")
    result["corrupt"] = "loaded"
except SpnnFormatError as e:
    result["corrupt"] = str(e)
json.dumps(result)
"""

PAGE_JS = """async (c) => {
  const { loadPyodide } = await import('/node_modules/pyodide/pyodide.mjs');
  const pyodide = await loadPyodide({ indexURL: '/node_modules/pyodide/' });
  const wheel = await (await fetch(c.wheelUrl)).arrayBuffer();
  const site = pyodide.runPython('import site; site.getsitepackages()[0]');
  pyodide.unpackArchive(wheel, 'wheel', { extractDir: site });
  globalThis.caseInput = Uint8Array.from(atob(c.input), (ch) => ch.charCodeAt(0));
  const fromPython = JSON.parse(await pyodide.runPythonAsync(c.python));
  // The same model and input through the JS runtime.
  const { load } = await import('/web/pysparse.mjs');
  const model = await load('/models/model.spnn', { threads: 1 });
  const out = model.run(new Float32Array(caseInput.buffer));
  const fromJs = Object.fromEntries(Object.entries(out).map(([k, v]) => [k, { shape: v.shape, data: Array.from(v.data) }]));
  model.dispose();
  return { fromPython, fromJs, jsVariant: model.info.variant };
}"""


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory) -> Path:
    """A wheel of this checkout, built fresh (the one in dist/ may be older)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, timeout=300)
    return out


@pytest.mark.slow
def test_pyodide_runs_a_hand_model_like_the_js_runtime(tmp_path, wheel_dir):
    require_engine_builds()
    if not (PYODIDE / "pyodide.mjs").exists():
        raise FileNotFoundError(f"{PYODIDE} is missing: run `make setup` (npm ci)")
    case = write_case(tmp_path, "hand_landmark_lite.tflite")
    (wheel,) = wheel_dir.glob("pysparse_web-*.whl")
    with serve(tmp_path, "--dist", str(wheel_dir)) as url, chromium() as browser:
        page = open_page(browser, url + "/web/test/index.html")
        page.set_default_timeout(120_000)
        result = page.evaluate(PAGE_JS, {"wheelUrl": f"/dist/{wheel.name}", "python": PYTHON_IN_PYODIDE,
                                          "input": b64((tmp_path / "input.f32").read_bytes())})
    py = result["fromPython"]
    assert py["info"]["threads"] == 1 and py["info"]["variant"] == result["jsVariant"]
    assert py["inputs"] == [{"name": case["input"]["name"], "shape": case["input"]["shape"]}]
    for kind in ("bytes", "array", "memoryview"):
        assert py[kind] == result["fromJs"], f"Python ({kind} input) and JS outputs differ"
    for o in case["outputs"]:
        expected = np.fromfile(tmp_path / o["file"], dtype="<f4")
        got = np.asarray(py["bytes"][o["name"]]["data"], dtype=np.float32)
        assert py["bytes"][o["name"]]["shape"] == o["shape"]
        assert float(np.max(np.abs(got - expected))) <= o["tolerance"]
    assert "has 10 values" in py["wrong_size"]
    assert "CRC mismatch" in py["corrupt"]


# -- conversions, in CPython ------------------------------------------------------------
def test_inputs_from_numpy_buffers_and_lists():
    shape = (1, 3, 2, 2)
    ref = np.arange(12, dtype=np.float32)
    cases = [
        np.arange(12, dtype=np.float64).reshape(shape),  # converted to float32
        np.arange(12, dtype=np.float32).reshape(3, 2, 2),  # batch dim left out
        array.array("f", range(12)),
        array.array("d", range(12)),
        ref.tobytes(),
        memoryview(ref),
        list(range(12)),
    ]
    for value in cases:
        mv = front.as_float32(value, shape)
        assert mv.format == "f" and mv.ndim == 1
        np.testing.assert_array_equal(np.frombuffer(mv, np.float32), ref)


def test_input_errors():
    with pytest.raises(InputShapeError, match="has 11 values; the model expects 1x3x2x2 = 12"):
        front.as_float32(array.array("f", range(11)), (1, 3, 2, 2))
    with pytest.raises(InputShapeError, match="shape"):
        front.as_float32(np.zeros((1, 2, 3, 2), np.float32), (1, 3, 2, 2))
    with pytest.raises(InputShapeError, match="whole number"):
        front.as_float32(b"\0" * 10, (1, 3, 2, 2))
    with pytest.raises(TypeError, match="numpy array, a buffer"):
        front.as_float32(object(), (1,))
    with pytest.raises(ValueError, match="contiguous"):
        front.as_float32(memoryview(np.zeros(16, np.float32))[::2], (8,))


def test_outputs_with_and_without_numpy(monkeypatch):
    data = np.arange(6, dtype=np.float32).tobytes()
    out = front.from_float32(data, [1, 2, 3])
    assert isinstance(out, np.ndarray) and out.shape == (1, 2, 3) and out.flags.writeable
    monkeypatch.setattr(front, "_numpy_module", front._NO_NUMPY)
    mv = front.from_float32(data, [1, 2, 3])
    assert isinstance(mv, memoryview) and mv.shape == (1, 2, 3) and mv[0, 1, 2] == 5.0 and not mv.readonly
    assert front.as_float32(mv, (6,)).tolist() == list(range(6))


def test_import_pysparse_stays_light():
    code = "import sys, pysparse; pysparse.load; assert 'numpy' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
