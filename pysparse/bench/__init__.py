"""Benchmarks in a real headless browser.

- `suite`: `pysparse bench`, pysparse against LiteRT.js (XNNPACK, dense and its own sparse
  path) and onnxruntime-web, interleaved in one Chromium session per thread count
  (`runtimes` builds the model files, `browser` drives the page web/bench/, `report`
  writes the table, JSON and charts). See docs/benchmarks.md.
"""
