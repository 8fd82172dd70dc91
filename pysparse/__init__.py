"""pysparse: sparse CNN inference in the browser, built from Python."""
__version__ = "0.1.0"
