"""pysparse: sparse CNN inference in the browser, built from Python."""
__version__ = "0.1.0"


def __getattr__(name):
    # `await pysparse.load(url)` in Pyodide; imported lazily so `import pysparse` stays light.
    if name == "load":
        from .pyodide import load
        return load
    raise AttributeError(f"module 'pysparse' has no attribute {name!r}")
