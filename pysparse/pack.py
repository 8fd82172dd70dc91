"""The packer: a graph IR in, `.spnn` bytes out (optimised, memory planned, each weight in
its cheapest encoding, metadata filled in as docs/format.md lists).

    data = pack(graph, weights="fp16")                 # bytes
    pack_file("model.tflite", "model.spnn", sparse=True)  # import, pack, write atomically

Without `weights`, the weights keep the source's precision: fp16 when every weight of the
imported model is exactly a float16 value (as in fp16 TFLite files, whose weights come
through DEQUANTIZE), else fp32.
"""
from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

import numpy as np

from . import __version__
from .format import spec, write_spnn
from .format.costmodel import choose, spmm_problem
from .fsutil import write_atomic  # noqa: F401  (part of this module's API)
from .format.sparse import EncodedWeight, encode_dense, encode_sparse, matrix_shape, sparse_weights
from .ir import Graph, Op
from .passes.memory import plan_memory

WEIGHT_DTYPES = {"fp32": spec.VALUE_F32, "fp16": spec.VALUE_F16, "int8": spec.VALUE_I8}
WEIGHT_OPS = ("CONV2D", "CONV_TRANSPOSE2D", "FULLY_CONNECTED")  # ops whose input 1 is a weight
SOURCE_FORMATS = {".tflite": "tflite", ".onnx": "onnx", ".pt": "torch", ".pth": "torch"}


def dense_macs(graph: Graph, op: Op) -> int:
    w = graph.tensors[op.inputs[1]].shape
    out = graph.tensors[op.outputs[0]].shape
    if op.type == "CONV2D":
        return int(np.prod(w, dtype=np.int64)) * out[0] * out[2] * out[3]
    if op.type == "CONV_TRANSPOSE2D":
        x = graph.tensors[op.inputs[0]].shape
        return int(np.prod(w, dtype=np.int64)) * x[0] * x[2] * x[3]
    return w[0] * w[1] * out[0]  # FULLY_CONNECTED


def source_precision(graph: Graph) -> str:
    """"fp16" when every weight of the weight-bearing ops holds only float16 values (so
    storing them as fp16 loses nothing), else "fp32"."""
    seen = False
    for op in graph.ops:
        if op.type not in WEIGHT_OPS:
            continue
        data = graph.tensors[op.inputs[1]].data
        if data is None:
            continue
        seen = True
        w = np.asarray(data, dtype=np.float32)
        with np.errstate(over="ignore"):
            if not np.array_equal(w.astype(np.float16).astype(np.float32), w):
                return "fp32"
    return "fp16" if seen else "fp32"


def choose_encodings(graph: Graph, weights: str = "fp32", sparse: bool | None = None):
    """Encoded weights of the weight-bearing ops and one metadata `layers` entry per op.
    Other constants (biases, slopes, operands of binary ops) are left to the writer (f32)."""
    if weights not in WEIGHT_DTYPES:
        raise ValueError(f"weights must be one of {sorted(WEIGHT_DTYPES)}, not {weights!r}")
    dense_dtype = WEIGHT_DTYPES[weights]
    sparse_dtype = spec.VALUE_F32 if weights == "fp32" else spec.VALUE_F16  # sparse values have no i8
    encodings: dict[str, EncodedWeight] = {}
    layers = []
    for op in graph.ops:
        if op.type not in WEIGHT_OPS or op.inputs[1] in encodings:
            continue
        wname = op.inputs[1]
        data = graph.tensors[wname].data
        if data is None:
            continue  # a weight computed at run time: nothing to encode
        matrix = data.reshape(matrix_shape(data.shape))
        macs = dense_macs(graph, op)
        problem = spmm_problem(graph, op)
        effective = macs
        c = choose(matrix, problem[2], sparse) if problem is not None else None
        if c is not None and c.encoding == "sparse":
            enc = encode_sparse(matrix, c.block, sparse_dtype)
            effective = enc.nnz * problem[2]
        else:
            enc = encode_dense(matrix, dense_dtype)
        encodings[wname] = enc
        size = len(enc.data)
        if len(op.inputs) > 2 and op.inputs[2]:
            size += 4 * graph.tensors[op.inputs[2]].size
        layers.append({
            "op": op.type, "name": op.name, "encoding": enc.encoding_name, "block": enc.block,
            "sparsity": round(float(np.mean(data == 0)), 6), "dense_macs": int(macs),
            "effective_macs": int(effective), "bytes": int(size),
        })
    return encodings, layers


def _model_info(name: str) -> dict:
    """Known facts about a model (input range, output meanings, landmarks), if any."""
    from .modelinfo import info_for
    return dict(info_for(name))


def build_metadata(graph: Graph, layers: list, arena_bytes: int, extra: dict | None = None) -> dict:
    """The METADATA object: graph metadata < known model info < `extra`, then the facts
    the packer computed."""
    meta: dict = {}
    meta.update({k: v for k, v in graph.metadata.items() if k != "layers"})
    name = (extra or {}).get("name") or meta.get("name") or "model"
    meta.update(_model_info(name))
    known_input = dict(meta.get("input") or {})
    meta.update(extra or {})
    if isinstance((extra or {}).get("input"), dict):  # `extra` adds to the input's facts, field by field
        meta["input"] = {**known_input, **extra["input"]}
    meta["name"] = name
    meta["pysparse_version"] = __version__
    first = graph.inputs[0] if graph.inputs else None
    inp = dict(meta.get("input") or {})
    if first is not None:
        inp.setdefault("layout", "NCHW")
        inp.setdefault("color", "RGB")
        inp.setdefault("range", [0.0, 1.0])
        inp["name"] = first
        inp["shape"] = list(graph.tensors[first].shape)
    meta["input"] = inp
    meanings = {o.get("name"): o.get("meaning", "") for o in meta.get("outputs") or [] if isinstance(o, dict)}
    meta["outputs"] = [{"name": n, "shape": list(graph.tensors[n].shape), "meaning": meanings.get(n, "")}
                       for n in graph.outputs]
    meta["layers"] = layers
    meta["peak_activation_bytes"] = int(arena_bytes)
    return meta


def pack(graph: Graph, weights: str | None = None, sparse: bool | None = None, metadata: dict | None = None,
         optimize: bool = True) -> bytes:
    """`.spnn` bytes of `graph` (which is not modified). weights: "fp32", "fp16" or "int8"
    for the weights of convolutions and fully connected layers (biases stay f32), or None
    for the source's precision (`source_precision`, judged before the passes fold anything
    into the weights); sparse: None lets the cost model pick per layer, True forces sparse
    wherever the engine can run it, False forces dense."""
    if weights is None:
        weights = source_precision(graph)
    g = copy.deepcopy(graph)
    if optimize:
        from .passes import optimize as run_passes
        g = run_passes(g) or g
    encodings, layers = choose_encodings(g, weights, sparse)
    offsets, arena_bytes = plan_memory(g, sparse=sparse_weights(encodings))
    meta = build_metadata(g, layers, arena_bytes, metadata)
    return write_spnn(g, encodings, meta, (offsets, arena_bytes))


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def same_file(a, b) -> bool:
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def pack_file(src, dst, weights: str | None = None, sparse: bool | None = None, metadata: dict | None = None,
              graph_hook=None, max_elements: int | None = None) -> bytes:
    """Imports the model at `src`, packs it and writes `dst` atomically; returns the bytes.
    Refuses to write over `src`. `graph_hook(graph)` may rewrite the imported graph first;
    `max_elements` raises the import's bound on what it builds (importers.load_model)."""
    src, dst = Path(src), Path(dst)
    if same_file(src, dst):
        raise ValueError(f"refusing to overwrite the source model {src} with the packed output")
    if not dst.parent.is_dir():
        raise FileNotFoundError(f"output folder {dst.parent} does not exist")
    from .importers import load_model
    graph = load_model(src, max_elements=max_elements)
    if graph_hook is not None:
        graph = graph_hook(graph) or graph
    meta = {"source": {"file": src.name, "sha256": sha256_file(src), "bytes": src.stat().st_size,
                       "format": SOURCE_FORMATS.get(src.suffix.lower(), src.suffix.lstrip("."))}}
    meta.update(metadata or {})
    data = pack(graph, weights, sparse, meta)
    write_atomic(dst, data)
    return data
