"""The Pyodide front end: run .spnn models from Python in the browser, on the WASM engine.

    import pysparse
    model = await pysparse.load("/models/hand.spnn")   # or the file's bytes
    out = model.run(x)        # {output name: numpy array (or memoryview without numpy)}

It drives the JS runtime (web/pysparse.mjs), imported dynamically from `runtime_url`
(default: `/web/pysparse.mjs` on the page's origin, as `pysparse serve` lays it out).
Inputs may be numpy arrays where numpy is importable, and any buffer (memoryview,
`array('f')`, bytes) or list of numbers where it is not. This module imports nothing
heavy: only the stdlib, plus Pyodide's `js`/`pyodide` modules when a model is loaded.
"""
from __future__ import annotations

import array
import math

from .errors import InputShapeError, PysparseError, SpnnFormatError

DEFAULT_RUNTIME_URL = "/web/pysparse.mjs"
RUNTIME_URL: str | None = None  # set to load the runtime from elsewhere (absolute or page-relative)

_runtimes: dict[str, object] = {}
_NO_NUMPY = object()
_numpy_module = None


def _numpy():
    """numpy if it can be imported here, else None (checked once)."""
    global _numpy_module
    if _numpy_module is None:
        try:
            import numpy
            _numpy_module = numpy
        except ImportError:
            _numpy_module = _NO_NUMPY
    return None if _numpy_module is _NO_NUMPY else _numpy_module


def _count(shape) -> int:
    return math.prod(int(d) for d in shape)


def as_float32(value, shape, name: str = "input"):
    """`value` as a C-contiguous float32 buffer (a memoryview of format 'f') of `shape`.

    numpy arrays (any dtype) must have exactly `shape`, or `shape` without its leading 1;
    buffers and lists must hold product(shape) values.
    """
    shape = tuple(int(d) for d in shape)
    expected = _count(shape)
    np = _numpy()
    if np is not None and isinstance(value, np.ndarray):
        if value.shape != shape and not (shape[:1] == (1,) and value.shape == shape[1:]):
            raise InputShapeError(f"{name} has shape {value.shape}; the model expects {shape}")
        return memoryview(np.ascontiguousarray(value, dtype=np.float32)).cast("B").cast("f")
    if isinstance(value, (list, tuple)):
        mv = memoryview(array.array("f", value))
    else:
        try:
            mv = memoryview(value)
        except TypeError:
            raise TypeError(f"{name} must be a numpy array, a buffer (memoryview, array('f'), bytes) "
                            f"or a list of numbers, not {type(value).__name__}") from None
        if not mv.c_contiguous:
            raise ValueError(f"{name}: the buffer must be C-contiguous")
        if mv.format in ("f", "<f", "=f") and mv.itemsize == 4:
            mv = mv.cast("B").cast("f")
        elif mv.format in ("B", "b", "c"):
            if mv.nbytes % 4:
                raise InputShapeError(f"{name} has {mv.nbytes} bytes, not a whole number of float32 values")
            mv = mv.cast("B").cast("f")
        elif mv.format.lstrip("@=") in tuple("bBhHiIlLqQd"):  # other numbers: convert value by value
            mv = memoryview(array.array("f", mv.cast("B").cast(mv.format.lstrip("@=")).tolist()))
        else:
            raise TypeError(f"{name}: cannot read numbers of buffer format {mv.format!r}")
    if len(mv) != expected:
        raise InputShapeError(f"{name} has {len(mv)} values; the model expects "
                              f"{'x'.join(map(str, shape))} = {expected} float32 values")
    return mv


def from_float32(data: bytes, shape):
    """Output bytes (float32) as a numpy array of `shape`, or a writable memoryview of that shape."""
    shape = tuple(int(d) for d in shape)
    np = _numpy()
    if np is not None:
        return np.frombuffer(bytearray(data), dtype=np.float32).reshape(shape)
    return memoryview(bytearray(data)).cast("f", shape) if shape else memoryview(bytearray(data)).cast("f")


async def _runtime(url: str | None):
    """The JS runtime module, imported once per URL."""
    import js
    from pyodide.code import run_js

    url = url or RUNTIME_URL or DEFAULT_RUNTIME_URL
    location = getattr(js, "location", None)
    if location is not None:
        url = js.URL.new(url, location.href).href
    if url not in _runtimes:
        _runtimes[url] = await run_js("(url) => import(url)")(url)
    return _runtimes[url]


def _python_error(e: Exception) -> Exception:
    """A JS PysparseError (from the engine) as pysparse's Python error; others unchanged."""
    js_error = getattr(e, "js_error", None)
    if getattr(js_error, "name", None) != "PysparseError":
        return e
    message, status = str(js_error.message), str(getattr(js_error, "status", ""))
    return SpnnFormatError(message) if status == "format" else PysparseError(message)


class Model:
    """A model loaded into the WASM engine; create it with `await pysparse.load(...)`."""

    def __init__(self, js_model):
        self._js = js_model
        self.inputs = [{"name": str(t.name), "shape": [int(d) for d in t.shape]} for t in js_model.inputs]
        self.outputs = [{"name": str(t.name), "shape": [int(d) for d in t.shape]} for t in js_model.outputs]

    @property
    def info(self) -> dict:
        """Metadata from the file, the engine variant and threads, arena and weight bytes."""
        import js
        return json_loads(js.JSON.stringify(self._js.info))

    def run(self, inputs, **options) -> dict:
        """Runs the model on one input (or {name: input}); returns {output name: array}.

        Arrays are numpy arrays where numpy is importable, else memoryviews of the output
        shape. `options` are passed to the JS run() (e.g. crop for image sources).
        """
        if self._js is None:
            raise RuntimeError("this model has been disposed")
        import js
        from pyodide.ffi import to_js

        if isinstance(inputs, dict):
            named = inputs
        elif len(self.inputs) == 1:
            named = {self.inputs[0]["name"]: inputs}
        else:
            raise TypeError(f"this model has {len(self.inputs)} inputs: pass {{name: value}}")
        specs = {t["name"]: t for t in self.inputs}
        js_inputs = js.Object.new()
        for name, value in named.items():
            if name not in specs:
                raise KeyError(f"unknown input {name!r}; the model's inputs are {list(specs)}")
            buf = as_float32(value, specs[name]["shape"], f"input {name!r}")
            tensor = self._js.inputData(name)  # the engine's own input buffer: run() reads it in place
            tensor.assign(buf)
            setattr(js_inputs, name, tensor)
        try:
            result = self._js.run(js_inputs, to_js(options, dict_converter=js.Object.fromEntries))
        except Exception as e:
            raise _python_error(e) from None
        out = {}
        for spec in self.outputs:
            o = getattr(result, spec["name"])
            out[spec["name"]] = from_float32(o.data.to_bytes(), spec["shape"])
        return out

    def dispose(self) -> None:
        """Frees the model in the engine."""
        if self._js is not None:
            self._js.dispose()
            self._js = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.dispose()


def json_loads(text) -> dict:
    import json
    return json.loads(str(text))


async def load(source, threads: int | str = 1, variant: str | None = None, runtime_url: str | None = None) -> Model:
    """Loads a .spnn model (a URL, or its bytes) through the JS runtime.

    threads: a number or "auto" (more than one needs a cross-origin-isolated page);
    variant: force "simd", "simd-threads", "relaxed" or "relaxed-threads" (default: the best
        available).
    """
    import js
    from pyodide.ffi import to_js

    runtime = await _runtime(runtime_url)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source).cast("B")
        js_source = js.Uint8Array.new(len(data))
        js_source.assign(data)
    elif isinstance(source, str):
        js_source = source
    else:
        raise TypeError(f"load() takes a URL or the model's bytes, not {type(source).__name__}")
    opts = {"threads": threads}
    if variant is not None:
        opts["variant"] = variant
    try:
        js_model = await runtime.load(js_source, to_js(opts, dict_converter=js.Object.fromEntries))
    except Exception as e:
        raise _python_error(e) from None
    return Model(js_model)
