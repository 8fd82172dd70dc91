"""The `.task` bundle that MediaPipe Tasks' HandLandmarker loads, made from the project's models.

A `.task` file is a zip holding `hand_detector.tflite` (here palm_detection_full) and
`hand_landmarks_detector.tflite` (hand_landmark_full). MediaPipe Tasks preprocesses a float
image input only when the model carries TFLite metadata saying how to normalise it
(`NormalizationOptions`: value = (pixel - mean) / std); these models take pixels in [0, 1],
so mean 0 and std 255. The npm packages ship the models without that metadata, so it is
written here, following TFLite's metadata schema (`metadata_schema.fbs`):

    ModelMetadata {name, description, version, subgraph_metadata: [SubGraphMetadata], ...,
                   min_parser_version}                                  file identifier "M001"
    SubGraphMetadata {name, description, input_tensor_metadata: [TensorMetadata], ...}
    TensorMetadata {name, description, dimension_names, content: Content,
                    process_units: [ProcessUnit], ...}
    Content {content_properties: union ContentProperties (ImageProperties = 2), range}
    ImageProperties {color_space: ColorSpaceType (RGB = 1), default_size}
    ProcessUnit {options: union ProcessUnitOptions (NormalizationOptions = 1)}
    NormalizationOptions {mean: [float], std: [float]}

A union field takes two table slots: its type (a byte) and then its value. The metadata
flatbuffer goes into one of the model's buffers, named by a model `metadata` entry
"TFLITE_METADATA".

    path = write_task(Path("build/bench"))   # build/bench/hand_landmarker.task
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
PIXEL_MEAN, PIXEL_STD = 0.0, 255.0  # pixels 0..255 -> inputs in [0, 1]
TASK_FILE = "hand_landmarker.task"
# file inside the bundle -> the project's model (pysparse.assets)
BUNDLE = {"hand_detector.tflite": "palm_detection_full.tflite",
          "hand_landmarks_detector.tflite": "hand_landmark_full.tflite"}

# Table slots and union tags of the metadata schema used here.
IMAGE_PROPERTIES, RGB = 2, 1
NORMALIZATION_OPTIONS = 1


def _floats(b, values) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _offsets(b, offsets) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _table(b, slots: int, *fields) -> int:
    """A table of `slots` slots holding `fields`: (slot, the Builder's Prepend*Slot method,
    value), written in the order given."""
    b.StartObject(slots)
    for slot, prepend, value in fields:
        prepend(slot, value, 0)
    return b.EndObject()


def image_metadata(model_name: str, mean: float = PIXEL_MEAN, std: float = PIXEL_STD) -> bytes:
    """The metadata flatbuffer of a model with one RGB image input normalised by mean/std."""
    import flatbuffers

    b = flatbuffers.Builder(256)
    offset, u8, i8 = b.PrependUOffsetTRelativeSlot, b.PrependUint8Slot, b.PrependInt8Slot
    name, tensor_name = b.CreateString(model_name), b.CreateString("image")
    version = b.CreateString("1.0.0")
    mean_off, std_off = _floats(b, [mean]), _floats(b, [std])
    normalization = _table(b, 2, (0, offset, mean_off), (1, offset, std_off))  # NormalizationOptions
    unit = _table(b, 2, (0, u8, NORMALIZATION_OPTIONS), (1, offset, normalization))  # ProcessUnit
    image = _table(b, 2, (0, i8, RGB))  # ImageProperties
    content = _table(b, 3, (0, u8, IMAGE_PROPERTIES), (1, offset, image))  # Content
    tensor = _table(b, 7, (0, offset, tensor_name), (3, offset, content),
                    (4, offset, _offsets(b, [unit])))  # TensorMetadata
    subgraph = _table(b, 10, (2, offset, _offsets(b, [tensor])))  # SubGraphMetadata
    root = _table(b, 8, (0, offset, name), (3, offset, _offsets(b, [subgraph])),
                  (7, offset, version))  # ModelMetadata
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def with_metadata(tflite_bytes: bytes, metadata: bytes) -> bytes:
    """A copy of a TFLite model carrying `metadata` as its TFLITE_METADATA (replacing any)."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    m.buffers.append(buffer)
    entry = fb.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(m.buffers) - 1
    name_of = lambda e: e.name.decode() if isinstance(e.name, bytes) else e.name  # noqa: E731
    m.metadata = [e for e in (m.metadata or []) if name_of(e) != METADATA_NAME] + [entry]
    b = flatbuffers.Builder(len(tflite_bytes) + len(metadata) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def task_bytes() -> bytes:
    """The zip of both models, each with its image normalisation metadata (stored, not
    compressed, as MediaPipe's own bundles are)."""
    from .. import assets

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for inside, model in BUNDLE.items():
            data = assets.model_path(model).read_bytes()
            info = zipfile.ZipInfo(inside, date_time=(2020, 1, 1, 0, 0, 0))  # same bytes on every build
            z.writestr(info, with_metadata(data, image_metadata(Path(model).stem)))
    return out.getvalue()


def write_task(out_dir: Path) -> Path:
    """Writes (or keeps, when unchanged) `out_dir`/hand_landmarker.task; returns its path."""
    from ..fsutil import write_atomic

    path = Path(out_dir) / TASK_FILE
    data = task_bytes()
    if not (path.is_file() and path.read_bytes() == data):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    return path
