"""PyTorch -> graph IR, through an in-memory ONNX export.

    graph = from_torch(model, torch.zeros(1, 3, 224, 224))

Uses torch's TorchScript-based ONNX exporter (`dynamo=False`): it needs nothing beyond
torch itself and works offline; its constant folding already merges BatchNorm into the
preceding convolution for a model in eval mode.
"""
from __future__ import annotations

import io
import warnings

from ..ir import Graph
from .onnx import load_onnx

OPSET = 17


def export_onnx(module, example_input, opset: int = OPSET, fold_constants: bool = True) -> bytes:
    """The ONNX bytes of `module` (run in eval mode) traced on `example_input` (a tensor or
    a tuple of tensors). Inputs are named input / input_1 ..., outputs output / output_1 ..."""
    import torch

    args = example_input if isinstance(example_input, tuple) else (example_input,)
    with torch.no_grad():
        n_out = len(_as_tuple(_run_eval(module, args)))
    names_in = ["input"] + [f"input_{i}" for i in range(1, len(args))]
    names_out = ["output"] + [f"output_{i}" for i in range(1, n_out)]
    buf = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter warns that it is the legacy one
            torch.onnx.export(module, args, buf, dynamo=False, opset_version=opset,
                              input_names=names_in, output_names=names_out,
                              do_constant_folding=fold_constants)
    finally:
        module.train(was_training)
    return buf.getvalue()


def from_torch(module, example_input, opset: int = OPSET) -> Graph:
    """Imports a torch.nn.Module, in eval mode, at the shape of `example_input` (batch 1)."""
    graph = load_onnx(export_onnx(module, example_input, opset))
    graph.metadata["source_format"] = "torch"
    graph.metadata.setdefault("name", type(module).__name__)
    return graph


def _run_eval(module, args):
    was_training = module.training
    module.eval()
    try:
        return module(*args)
    finally:
        module.train(was_training)


def _as_tuple(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)
