"""Model importers: each turns a source model into a `pysparse.ir.Graph` (NCHW semantics).

    graph = load_model("hand_landmark_full.tflite")   # TFLite or ONNX, told by content
"""
from __future__ import annotations

import os

from ..errors import ModelFormatError, PysparseError, ResourceLimitError
from ..ir import Graph


def _read(path_or_bytes) -> bytes:
    if isinstance(path_or_bytes, (str, os.PathLike)):
        with open(path_or_bytes, "rb") as f:
            return f.read()
    return bytes(path_or_bytes)


def _looks_like_onnx(data: bytes) -> bool:
    # An ONNX ModelProto starts with a protobuf field; its first field is ir_version
    # (field 1, varint: tag byte 0x08) in every exporter we know of. Other fields may come
    # first in principle, so accept any small field number with a valid wire type.
    if not data:
        return False
    tag = data[0]
    return tag >> 3 in range(1, 21) and tag & 7 in (0, 2)


def load_model(path_or_bytes, max_elements: int | None = None) -> Graph:
    """Imports a TFLite (`TFL3` at byte 4) or ONNX (protobuf) model from a path or bytes.

    max_elements raises the bound on the elements an import may build beyond its file's
    bytes (importers.limits): for a trusted file whose weights are made at import time."""
    data = _read(path_or_bytes)
    name = os.path.basename(os.fspath(path_or_bytes)) if isinstance(path_or_bytes, (str, os.PathLike)) else None
    if len(data) >= 8 and data[4:8] == b"TFL3":
        from .tflite import load_tflite as importer
    elif _looks_like_onnx(data):
        from .onnx import load_onnx as importer  # imported lazily: needs the onnx package
    else:
        raise ModelFormatError("not a TFLite or ONNX model (unknown file content)")
    # A damaged or hostile file ends in one of pysparse's errors, whatever it trips over.
    try:
        graph = importer(data, max_elements=max_elements)
    except PysparseError:
        raise
    except MemoryError:
        raise ResourceLimitError("out of memory while importing the model") from None
    except Exception as e:
        raise ModelFormatError(f"cannot import the model ({type(e).__name__}: {e})") from e
    if name:
        graph.metadata["name"] = os.path.splitext(name)[0]
    return graph
