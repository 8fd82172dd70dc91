"""Constants of the `.spnn` format, version 1.0 (docs/format.md is the specification)."""
from __future__ import annotations

import struct

MAGIC = b"SPNN"
VERSION_MAJOR = 1
VERSION_MINOR = 0
FLAGS_KNOWN = 0  # no flags are defined in 1.0

ALIGN = 16  # sections, weight blobs and arena offsets start at multiples of this
MAX_SECTIONS = 64
MAX_NDIM = 6
MAX_ELEMENTS = 1 << 28  # per tensor, and for all constants together
ABSENT = 0xFFFFFFFF  # absent optional input; "no weight" in a tensor record

# Header: magic, major, minor, producer[4], flags, section_count, header_crc, file_size.
HEADER = struct.Struct("<4sHH4sIIIQ")
HEADER_SIZE = HEADER.size  # 32
HEADER_CRC_SPAN = 20  # header bytes covered by header_crc (then the section table)
SECTION_ENTRY = struct.Struct("<IIII")  # type, offset, length, crc32
SECTION_ENTRY_SIZE = SECTION_ENTRY.size  # 16

SECTION_STRINGS, SECTION_GRAPH, SECTION_WEIGHTS, SECTION_METADATA = 1, 2, 3, 4
SECTION_NAMES = {SECTION_STRINGS: "STRINGS", SECTION_GRAPH: "GRAPH", SECTION_WEIGHTS: "WEIGHTS",
                 SECTION_METADATA: "METADATA"}
SECTION_ORDER = (SECTION_STRINGS, SECTION_GRAPH, SECTION_WEIGHTS, SECTION_METADATA)

# GRAPH section.
GRAPH_HEADER = struct.Struct("<8I")  # num_tensors, num_ops, num_inputs, num_outputs, arena_bytes, reserved[3]
TENSOR_RECORD = struct.Struct("<BBBB6IIII")  # kind, dtype, ndim, reserved, dims[6], name, weight, arena_offset
TENSOR_RECORD_SIZE = TENSOR_RECORD.size  # 40
OP_HEADER = struct.Struct("<HHBBHI")  # code, num_attrs, num_inputs, num_outputs, reserved, name
OP_HEADER_SIZE = OP_HEADER.size  # 12
KIND_ACTIVATION, KIND_CONSTANT, KIND_INPUT = 0, 1, 2
KIND_NAMES = {KIND_ACTIVATION: "activation", KIND_CONSTANT: "constant", KIND_INPUT: "input"}
DTYPE_FLOAT32 = 0
ELEMENT_BYTES = 4  # activations are float32

# WEIGHTS section.
WEIGHTS_HEADER = struct.Struct("<4I")  # num_weights, reserved[3]
WEIGHT_DESCRIPTOR = struct.Struct("<BBBBIIIIIII")  # encoding, dtype, block, step_width, rows, cols, nnz, num_steps, offset, length, reserved
WEIGHT_DESCRIPTOR_SIZE = WEIGHT_DESCRIPTOR.size  # 32
ENCODING_DENSE, ENCODING_SPARSE = 0, 1
ENCODING_NAMES = {ENCODING_DENSE: "dense", ENCODING_SPARSE: "sparse"}
VALUE_F32, VALUE_F16, VALUE_I8 = 0, 1, 2
VALUE_NAMES = {VALUE_F32: "f32", VALUE_F16: "f16", VALUE_I8: "i8"}
VALUE_CODES = {v: k for k, v in VALUE_NAMES.items()}
SPARSE_BLOCKS = (1, 2, 4)
STEP_U8, STEP_U16 = 1, 2
STEP_ESCAPE = 255  # in u8 steps: the next two bytes hold the step as a u16
MAX_STEP = 0xFFFF

assert HEADER_SIZE == 32 and TENSOR_RECORD_SIZE == 40 and WEIGHT_DESCRIPTOR_SIZE == 32


# METADATA: containers nested at most this deep, numbers at most this many characters.
MAX_JSON_DEPTH = 64
MAX_JSON_NUMBER = 64

# Limits: a file's arena plus 4 bytes per constant element may not exceed
# MEMORY_FLOOR + MEMORY_PER_BYTE * the file's length (docs/format.md, "Limits").
MEMORY_FLOOR = 256 << 20
MEMORY_PER_BYTE = 64


def memory_limit(file_size: int) -> int:
    return MEMORY_FLOOR + MEMORY_PER_BYTE * file_size


def align_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def pysparse_version_bytes(version: str) -> bytes:
    """The header's producer field: major, minor, patch, 0."""
    parts = []
    for p in version.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit()) or "0"
        parts.append(min(int(digits), 255))
    parts += [0] * (3 - len(parts))
    return bytes(parts + [0])
