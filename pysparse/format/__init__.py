"""The `.spnn` format: writer, reader, weight encodings (docs/format.md is the spec)."""
from .reader import SpnnFile, read_spnn, read_spnn_file
from .writer import write_spnn

__all__ = ["SpnnFile", "read_spnn", "read_spnn_file", "write_spnn"]
