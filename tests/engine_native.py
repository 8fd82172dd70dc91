"""ctypes binding of the native engine library (build/native/libpysparse.so) for tests.

    with NativeModel(data, threads=2) as m:
        outputs = m.run([x])          # list of float32 arrays, in output order
"""
from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LIB_PATH = Path(os.environ.get("SPNN_NATIVE_LIB", ROOT / "build" / "native" / "libpysparse.so"))
ASAN_TOOL = ROOT / "build" / "asan" / "spnn_tool"
NATIVE_TOOL = ROOT / "build" / "native" / "spnn_tool"

STATUS = {0: "OK", 1: "FORMAT", 2: "UNSUPPORTED", 3: "NOMEM", 4: "ARGUMENT"}
ERROR_SIZE = 256

_lib = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        L = ctypes.CDLL(str(LIB_PATH))
        P, I, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        sig = {
            "spnn_load": (I, [ctypes.c_char_p, ctypes.c_size_t, I, ctypes.POINTER(P), S, ctypes.c_size_t]),
            "spnn_free": (None, [P]),
            "spnn_error": (S, [P]),
            "spnn_num_inputs": (I, [P]), "spnn_num_outputs": (I, [P]),
            "spnn_input_name": (S, [P, I]), "spnn_output_name": (S, [P, I]),
            "spnn_input_shape": (I, [P, I, ctypes.POINTER(ctypes.c_int32)]),
            "spnn_output_shape": (I, [P, I, ctypes.POINTER(ctypes.c_int32)]),
            "spnn_input_data": (ctypes.POINTER(ctypes.c_float), [P, I]),
            "spnn_output_data": (ctypes.POINTER(ctypes.c_float), [P, I]),
            "spnn_run": (I, [P]), "spnn_wake_threads": (None, [P]),
            "spnn_set_num_threads": (I, [P, I]), "spnn_get_num_threads": (I, [P]),
            "spnn_metadata": (S, [P]),
            "spnn_arena_bytes": (ctypes.c_size_t, [P]), "spnn_weight_bytes": (ctypes.c_size_t, [P]),
            "spnn_set_profiling": (None, [P, I]), "spnn_profile_json": (S, [P]),
            "spnn_build_variant": (S, []), "spnn_version": (S, []),
        }
        for name, (res, args) in sig.items():
            f = getattr(L, name)
            f.restype, f.argtypes = res, args
        _lib = L
    return _lib


class EngineError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"{STATUS.get(status, status)}: {message}")
        self.status = STATUS.get(status, str(status))
        self.message = message


def load_status(data: bytes, threads: int = 1) -> tuple[str, str]:
    """(status name, message) of loading `data`; the model is freed at once."""
    try:
        NativeModel(data, threads).close()
        return "OK", ""
    except EngineError as e:
        return e.status, e.message


class NativeModel:
    def __init__(self, data: bytes, threads: int = 1):
        L = lib()
        self._m = ctypes.c_void_p()
        err = ctypes.create_string_buffer(ERROR_SIZE)
        st = L.spnn_load(data, len(data), threads, ctypes.byref(self._m), err, ERROR_SIZE)
        if st != 0:
            self._m = None
            raise EngineError(st, err.value.decode(errors="replace"))

    def close(self):
        if self._m:
            lib().spnn_free(self._m)
            self._m = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def _shape(self, fn, i) -> tuple[int, ...]:
        dims = (ctypes.c_int32 * 6)()
        n = fn(self._m, i, dims)
        return tuple(dims[:n])

    @property
    def input_shapes(self):
        return [self._shape(lib().spnn_input_shape, i) for i in range(lib().spnn_num_inputs(self._m))]

    @property
    def output_shapes(self):
        return [self._shape(lib().spnn_output_shape, i) for i in range(lib().spnn_num_outputs(self._m))]

    @property
    def input_names(self):
        return [lib().spnn_input_name(self._m, i).decode() for i in range(lib().spnn_num_inputs(self._m))]

    @property
    def output_names(self):
        return [lib().spnn_output_name(self._m, i).decode() for i in range(lib().spnn_num_outputs(self._m))]

    @property
    def metadata(self) -> dict:
        return json.loads(lib().spnn_metadata(self._m).decode())

    @property
    def arena_bytes(self) -> int:
        return lib().spnn_arena_bytes(self._m)

    @property
    def weight_bytes(self) -> int:
        return lib().spnn_weight_bytes(self._m)

    def set_threads(self, n: int) -> None:
        st = lib().spnn_set_num_threads(self._m, n)
        if st:
            raise EngineError(st, lib().spnn_error(self._m).decode())

    def set_profiling(self, on: bool) -> None:
        lib().spnn_set_profiling(self._m, int(on))

    def profile(self) -> list:
        return json.loads(lib().spnn_profile_json(self._m).decode())

    def input_values(self, i: int) -> np.ndarray:
        """A copy of what input i's buffer holds now."""
        shape = self.input_shapes[i]
        n = int(np.prod(shape, dtype=np.int64))
        return np.ctypeslib.as_array(lib().spnn_input_data(self._m, i), shape=(n,)).copy().reshape(shape)

    def run(self, inputs) -> list[np.ndarray]:
        L = lib()
        L.spnn_wake_threads(self._m)  # as the JS runtime does before writing the inputs
        for i, (x, shape) in enumerate(zip(inputs, self.input_shapes)):
            x = np.ascontiguousarray(x, dtype=np.float32)
            if x.shape != shape:
                raise ValueError(f"input {i}: shape {x.shape}, the model expects {shape}")
            ctypes.memmove(L.spnn_input_data(self._m, i), x.ctypes.data, x.nbytes)
        return self.run_in_place()

    def run_in_place(self) -> list[np.ndarray]:
        """Runs on what the input buffers hold now (nothing written)."""
        L = lib()
        st = L.spnn_run(self._m)
        if st:
            raise EngineError(st, L.spnn_error(self._m).decode())
        outs = []
        for i, shape in enumerate(self.output_shapes):
            n = int(np.prod(shape, dtype=np.int64))
            p = L.spnn_output_data(self._m, i)
            outs.append(np.ctypeslib.as_array(p, shape=(n,)).copy().reshape(shape))
        return outs
