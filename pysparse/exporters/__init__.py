"""Exporters: a pysparse graph IR written out in other runtimes' formats (for comparison runs)."""
from .tflite import export_tflite

__all__ = ["export_tflite"]
