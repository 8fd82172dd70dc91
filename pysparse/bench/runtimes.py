"""The files each benchmarked system loads, built from one source model per benchmark model.

For every model the same pruned weights reach every system: the IR is pruned once per
sparsity (one-shot magnitude, `pysparse.prune.oneshot`; MobileNetV2 by `prune_pointwise`
on its 1x1 convolutions), then
- pysparse loads it packed (`.spnn`, the cost model picks sparse or dense per layer),
- LiteRT.js (the reference) loads the same weights stored sparse (`sparsify_tflite`,
  DENSIFY: XNNPACK's sparse-inference hint); for the MediaPipe models the pruned zeros are
  written into a copy of the original `.tflite` (every other op and weight kept), for
  MobileNetV2 the pruned graph is exported (`pysparse.exporters.export_tflite`); the legacy
  TFLite-wasm (tfjs-tflite), when asked for, loads the same `.tflite` files,
- onnxruntime-web loads the dense ONNX form (it has no sparse path).

MediaPipe's published sparse models (`PUBLISHED_SPARSE`) are not pruned again: pysparse runs
the file as imported, its sparse weights as they are, and LiteRT.js the original file.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError

MEDIAPIPE_MODELS = ("hand_landmark_full", "hand_landmark_lite", "palm_detection_full")
PUBLISHED_SPARSE = ("face_detection_full_range_sparse", "pose_detection")  # sparse as MediaPipe ships them
MOBILENET = "mobilenet_v2"
ALL_MODELS = MEDIAPIPE_MODELS + PUBLISHED_SPARSE + (MOBILENET,)
SPARSITIES = (0.5, 0.7, 0.8, 0.9)
SYSTEMS = ("pysparse", "litert", "tflite", "ort")
DEFAULT_SYSTEMS = ("pysparse", "litert", "ort")  # tfjs-tflite ("tflite") is the legacy row, off by default


@dataclass
class Artifact:
    """One configuration's model file: `system` loads `path` (served at /models/<name>)."""
    model: str
    system: str  # one of SYSTEMS
    sparsity: float  # fraction of zeros of the pruned layers; 0 for the dense model
    block: int
    path: Path
    input_shape: tuple[int, ...]  # NCHW
    label: str = ""  # what the row is called in tables and charts
    notes: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.model}/{self.label}"


def _write(path: Path, data: bytes) -> Path:
    """Atomic write (temp file, then rename); skips an identical file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_bytes() == data:
        return path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp.", suffix=path.suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def _pct(s: float) -> str:
    return f"{round(s * 100)}"


def mask_tflite_weights(tflite_bytes: bytes, pruned_graph) -> tuple[bytes, int]:
    """A copy of a TFLite model whose conv/FC weights are zero wherever the same-named
    weight of `pruned_graph` (imported from that model, then pruned) is zero. Weights behind
    DEQUANTIZE (fp16) are masked at their source. Returns the bytes and the count of
    weights masked."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    try:
        m = fb.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
    except Exception as e:
        raise ModelFormatError(f"cannot parse TFLite flatbuffer: {e}") from e
    dtypes = {fb.TensorType.FLOAT32: np.float32, fb.TensorType.FLOAT16: np.float16}
    masked = 0
    for sg in m.subgraphs:
        by_name = {(t.name.decode() if isinstance(t.name, bytes) else t.name): k for k, t in enumerate(sg.tensors)}
        producers = {o: op for op in sg.operators for o in op.outputs}
        for name, t_ir in pruned_graph.tensors.items():
            if t_ir.data is None or name not in by_name or t_ir.data.ndim not in (2, 4):
                continue
            k = by_name[name]
            prod = producers.get(k)
            if prod is not None:
                code = m.operatorCodes[prod.opcodeIndex]
                if max(code.builtinCode, code.deprecatedBuiltinCode) != fb.BuiltinOperator.DEQUANTIZE:
                    continue
                k = prod.inputs[0]
            t = sg.tensors[k]
            dtype = dtypes.get(t.type)
            buf = m.buffers[t.buffer].data if t.buffer > 0 else None
            if dtype is None or buf is None:
                continue
            ir = t_ir.data.transpose(0, 2, 3, 1) if t_ir.data.ndim == 4 else t_ir.data
            shape = tuple(int(d) for d in t.shape)
            if ir.shape != shape or not (ir == 0).any():
                continue
            w = np.frombuffer(np.asarray(buf, np.uint8).tobytes(), dtype).reshape(shape).copy()
            w[ir == 0] = 0
            m.buffers[t.buffer].data = np.frombuffer(w.tobytes(), np.uint8)
            masked += 1
    b = flatbuffers.Builder(len(tflite_bytes) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output()), masked


def _pointwise_sparsity(graph) -> float:
    zeros = total = 0
    for op in graph.ops:
        if op.type == "CONV2D" and int(op.attr("groups")) == 1:
            w = graph.tensors[op.inputs[1]].data
            if w is not None and w.shape[2:] == (1, 1):
                zeros += int((w == 0).sum())
                total += w.size
    return zeros / total if total else 0.0


def _mediapipe(name: str, out: Path, sparsities, blocks) -> list[Artifact]:
    from .. import assets
    from ..importers import load_model
    from ..pack import pack
    from ..prune import oneshot

    src = assets.model_path(f"{name}.tflite")
    original = Path(src).read_bytes()
    graph = load_model(original)
    shape = graph.tensors[graph.inputs[0]].shape
    arts = [
        Artifact(name, "pysparse", 0.0, 1, _write(out / f"{name}.dense.spnn", pack(graph, sparse=False)),
                 shape, "pysparse dense"),
        Artifact(name, "litert", 0.0, 1, _write(out / f"{name}.tflite", original), shape, "litert dense"),
    ]
    for s in sparsities:
        for block in blocks:
            pruned = oneshot(graph, s, block=block)
            arts.append(Artifact(name, "pysparse", s, block,
                                 _write(out / f"{name}.s{_pct(s)}b{block}.spnn", pack(pruned)),
                                 shape, f"pysparse {_pct(s)}% b{block}",
                                 {"pointwise_sparsity": _pointwise_sparsity(pruned)}))
            # LiteRT gets the same zeros, in TFLite's sparse storage.
            masked, n = mask_tflite_weights(original, pruned)
            arts.append(_tflite_sparse(name, s, block, blocks, out, masked, shape, {"masked_weights": n}))
    return arts


def _stored_sparse(pruned_tflite: bytes, s: float) -> tuple[bytes, int]:
    """`pruned_tflite` (S% of some weights zero, stored dense) with those weights in TFLite's
    sparse storage, and how many were converted."""
    from ..importers.tflite_sparse import sparsify_tflite

    converted: list = []
    data = sparsify_tflite(pruned_tflite, min_sparsity=max(0.0, s - 0.02), converted=converted)
    return data, len(converted)


def _tflite_sparse(name, s, block, blocks, out: Path, pruned_tflite: bytes, shape, notes) -> Artifact:
    """LiteRT's sparse-stored copy of the pysparse S% bB weights (`pruned_tflite`: the pruned
    weights, stored dense). Block-4 and unstructured zeros are stored alike; how each runtime
    takes them is measured (docs/benchmarks.md: tfjs-tflite's XNNPACK ran block-4 files like
    unstructured ones, LiteRT.js runs them slower)."""
    data, converted = _stored_sparse(pruned_tflite, s)
    notes = {**notes, "stored_sparse": converted}
    tag = f"b{block}" if len(blocks) > 1 else ""
    label = f"litert {_pct(s)}% sparse" + (f" {tag}" if tag else "")
    return Artifact(name, "litert", s, block, _write(out / f"{name}.s{_pct(s)}{tag}.sparse.tflite", data),
                    shape, label, notes)


def _mobilenet(out: Path, sparsities, blocks, include_ort: bool = True) -> list[Artifact]:
    import copy

    import torch

    from ..exporters import export_tflite
    from ..importers.torch import export_onnx, from_torch
    from ..pack import pack
    from ..passes import optimize
    from ..zoo.mobilenet_v2 import mobilenet_v2, prune_pointwise

    name = MOBILENET
    base = mobilenet_v2(width=1.0, input_size=224, seed=0)
    x = torch.zeros(1, 3, 224, 224)
    shape = (1, 3, 224, 224)
    graph = optimize(from_torch(base, x))
    arts = [
        Artifact(name, "pysparse", 0.0, 1, _write(out / f"{name}.dense.spnn", pack(graph, sparse=False)),
                 shape, "pysparse dense"),
        Artifact(name, "litert", 0.0, 1, _write(out / f"{name}.tflite", export_tflite(graph)), shape, "litert dense"),
    ]
    if include_ort:
        arts.append(Artifact(name, "ort", 0.0, 1, _write(out / f"{name}.onnx", export_onnx(base, x)), shape, "ort dense"))
    for s in sparsities:
        for block in blocks:
            model = copy.deepcopy(base)
            prune_pointwise(model, s, block=block)
            g = optimize(from_torch(model, x))
            arts.append(Artifact(name, "pysparse", s, block, _write(out / f"{name}.s{_pct(s)}b{block}.spnn", pack(g)),
                                 shape, f"pysparse {_pct(s)}% b{block}", {"pointwise_sparsity": _pointwise_sparsity(g)}))
            arts.append(_tflite_sparse(name, s, block, blocks, out, export_tflite(g), shape, {}))
    return arts


USER_FILES = "your files"  # the benchmark model that groups the user's own files


def _user_files(files, out: Path, sparsities=(), blocks=(1,), max_elements: int | None = None) -> list[Artifact]:
    """The user's own models, each as given: pysparse runs the `.spnn` (a `.tflite` or `.onnx`
    packed first, keeping its precision), LiteRT.js a `.tflite` and onnxruntime-web an
    `.onnx` as they are. With `sparsities`,
    also each one-shot pruned at every sparsity and block (`pysparse.prune.oneshot`, as the
    built-in models are): pysparse runs it packed, LiteRT.js (for a `.tflite`) a copy of the
    file with the same zeros in TFLite's sparse storage. A row's `notes["source"]` names the
    weights it runs, which pairs pysparse's rows with LiteRT.js's; a pruned row's
    `notes["dense_source"]` names the file it was pruned from. All of them share one browser
    session, so their times are interleaved."""
    from ..format.reader import read_spnn
    from ..importers import load_model
    from ..format.spec import MAGIC as SPNN_MAGIC
    from ..pack import pack
    from ..passes import optimize
    from ..prune import oneshot

    files = list(map(Path, files))
    names = [f.name for f in files]
    arts = []
    for k, f in enumerate(files):
        data = f.read_bytes()
        is_spnn, is_tflite = data[:4] == SPNN_MAGIC, f.suffix.lower() == ".tflite"
        is_onnx = not is_spnn and f.suffix.lower() == ".onnx"
        imported = read_spnn(data).graph if is_spnn else load_model(f, max_elements=max_elements)
        graph = imported if is_spnn else optimize(imported)
        blob = data if is_spnn else pack(graph)
        shape = graph.tensors[graph.inputs[0]].shape
        zeros = _pointwise_sparsity(graph)
        # files of the same name (from different folders) keep apart: their path as given
        shown, prefix = (f.name, "user.") if names.count(f.name) == 1 else (str(f), f"user.{k}.")
        arts.append(Artifact(USER_FILES, "pysparse", zeros, 1, _write(out / f"{prefix}{f.stem}.spnn", blob), shape,
                             f"pysparse {shown}", {"pointwise_sparsity": zeros, "source": str(f)}))
        if is_tflite or is_onnx:
            system = "litert" if is_tflite else "ort"
            arts.append(Artifact(USER_FILES, system, zeros, 1, _write(out / f"{prefix}{f.name}", data), shape,
                                 f"{system} {shown}", {"pointwise_sparsity": zeros, "source": str(f)}))
        for s in sparsities:
            for block in blocks:
                pruned = oneshot(imported, s, block=block)
                tag, stem = f"{_pct(s)}% b{block}", f"{prefix}{f.stem}.s{_pct(s)}b{block}"
                notes = {"pointwise_sparsity": _pointwise_sparsity(pruned), "source": f"{f} pruned {tag}",
                         "dense_source": str(f)}
                arts.append(Artifact(USER_FILES, "pysparse", s, block, _write(out / f"{stem}.spnn", pack(pruned)),
                                     shape, f"pysparse {shown} {tag}", notes))
                if is_tflite:  # the same zeros in a copy of the user's file, stored sparse
                    masked, n = mask_tflite_weights(data, pruned)
                    sparse, converted = _stored_sparse(masked, s)
                    arts.append(Artifact(USER_FILES, "litert", s, block, _write(out / f"{stem}.sparse.tflite", sparse),
                                         shape, f"litert {shown} {tag} sparse",
                                         {**notes, "masked_weights": n, "stored_sparse": converted}))
    return arts


def _published_sparse(name: str, out: Path) -> list[Artifact]:
    """A MediaPipe model published sparse: pysparse runs it as imported (its 1x1 weights
    sparse where the cost model says so), and all of it dense for comparison; LiteRT.js runs
    the original file. The sparse pair shares sparsity and block, so that reports pair them."""
    from .. import assets
    from ..importers import load_model
    from ..pack import pack

    assets.extract(names=[f"{name}.tflite"], quiet=True)  # fetched on first use outside a checkout
    original = assets.model_path(f"{name}.tflite").read_bytes()
    graph = load_model(original)
    shape = graph.tensors[graph.inputs[0]].shape
    zeros = _pointwise_sparsity(graph)
    notes = {"pointwise_sparsity": zeros, "published_sparse": True}
    return [
        Artifact(name, "pysparse", 0.0, 1, _write(out / f"{name}.dense.spnn", pack(graph, sparse=False)),
                 shape, "pysparse dense"),
        Artifact(name, "pysparse", zeros, 1, _write(out / f"{name}.spnn", pack(graph)), shape,
                 "pysparse as published", notes),
        Artifact(name, "litert", zeros, 1, _write(out / f"{name}.tflite", original), shape,
                 "litert as published", notes),
    ]


def _legacy_tflite(art: Artifact) -> Artifact:
    """The legacy TFLite-wasm (tfjs-tflite) row of a LiteRT.js file."""
    return Artifact(art.model, "tflite", art.sparsity, art.block, art.path, art.input_shape,
                    "tflite" + art.label[len("litert"):], art.notes)


def prepare(models, out_dir: Path, sparsities=SPARSITIES, blocks=(1, 4), systems=DEFAULT_SYSTEMS, files=(),
            file_sparsities=(), max_import_elements: int | None = None):
    """Builds (or reuses, when unchanged) every file the benchmark loads, under `out_dir`; the
    user's `files` also pruned at each of `file_sparsities` (and `blocks`), imported within
    `max_import_elements` (`load_model`'s bound)."""
    out_dir = Path(out_dir)
    arts: list[Artifact] = _user_files(files, out_dir, file_sparsities, blocks, max_import_elements) if files else []
    for model in models:
        if model in MEDIAPIPE_MODELS:
            arts += _mediapipe(model, out_dir, sparsities, blocks)
        elif model in PUBLISHED_SPARSE:
            arts += _published_sparse(model, out_dir)
        elif model == MOBILENET:
            arts += _mobilenet(out_dir, sparsities, blocks, include_ort="ort" in systems)
        else:
            raise ValueError(f"unknown benchmark model {model!r} (known: {', '.join(ALL_MODELS)})")
    # each legacy row beside its LiteRT.js row, so that both land in the same page
    arts = [x for a in arts for x in ([a, _legacy_tflite(a)] if a.system == "litert" else [a])]
    return [a for a in arts if a.system in systems]


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
