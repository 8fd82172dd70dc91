"""Magnitude pruning: gradual (PyTorch, during training) and one-shot (on the IR).

- `GradualPruner`: polynomial schedule, per-layer or global ranking, unstructured or
  output-channel blocks of 2 or 4 (the engine's block kernels), masks kept through
  optimiser steps, `finalize()`, per-layer report.
- `oneshot(graph, sparsity, block=...)`: a pruned copy of an IR graph.
- `reconstruct(graph, inputs, sparsity, block=...)`: the same, with masks chosen and kept
  weights refit on calibration inputs (needs torch).
- `PolynomialSchedule`: the sparsity at each step.
See docs/pruning.md.
"""
from .layers import MIN_WEIGHTS, LayerInfo, default_exclusion, exclusion
from .masks import global_masks, layer_mask
from .oneshot import ir_layers, ir_report, oneshot
from .report import LayerReport, rich_table, text_table, totals
from .schedule import PolynomialSchedule


def __getattr__(name):
    # The PyTorch pruner is imported lazily: one-shot pruning of the IR needs no torch.
    if name in ("GradualPruner", "torch_layers"):
        from . import pruner
        return getattr(pruner, name)
    if name == "reconstruct":
        from .reconstruct import reconstruct
        return reconstruct
    raise AttributeError(name)


__all__ = ["GradualPruner", "PolynomialSchedule", "oneshot", "reconstruct", "ir_layers", "ir_report", "layer_mask",
           "global_masks", "LayerInfo", "LayerReport", "MIN_WEIGHTS", "default_exclusion", "exclusion",
           "rich_table", "text_table", "totals", "torch_layers"]
