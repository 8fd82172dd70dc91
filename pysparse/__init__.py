"""pysparse: sparse CNN inference in the browser, built from Python."""
__version__ = "0.1.0"

# The package's front door, imported lazily so `import pysparse` stays light (no numpy,
# no torch): Pyodide imports it without either.
_LAZY = {
    "load": ("pysparse.pyodide", "load"),  # `await pysparse.load(url)` in Pyodide
    "load_model": ("pysparse.importers", "load_model"),  # .tflite / .onnx -> Graph
    "from_torch": ("pysparse.importers.torch", "from_torch"),  # torch.nn.Module -> Graph
    "read_spnn": ("pysparse.format.reader", "read_spnn"),  # .spnn bytes -> SpnnFile
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'pysparse' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
