"""One-shot magnitude pruning of an IR graph, for quick experiments on any imported model.

    pruned = oneshot(graph, 0.8, block=4)          # a pruned copy; `graph` is left as it is
    for row in ir_report(pruned, block=4): ...

The layers are the weights of CONV2D and FULLY_CONNECTED ops, named after their weight
constants, and the default rule of `pysparse.prune.layers` picks which are pruned (1x1
convs and FC layers that are not tiny; the first conv in execution order is the stem).
Without fine-tuning, accuracy drops quickly past 50-70%: see `pysparse sensitivity`.
"""
from __future__ import annotations

import copy

from ..ir import Graph
from . import masks as M
from .layers import MIN_WEIGHTS, LayerInfo, exclusion
from .report import LayerReport, layer_report

KINDS = {"CONV2D": "conv", "FULLY_CONNECTED": "fc"}


def ir_layers(graph: Graph) -> list[LayerInfo]:
    """The conv/FC weight constants of `graph` in execution order (each once)."""
    out, seen, first = [], set(), True
    for op in graph.ops:
        if op.type not in KINDS:
            continue
        name = op.inputs[1]
        t = graph.tensors.get(name)
        is_first = op.type == "CONV2D" and first
        if op.type == "CONV2D":
            first = False
        if t is None or not t.is_constant or name in seen:
            continue  # weights computed at run time are not pruned
        seen.add(name)
        groups = int(op.attr("groups")) if op.type == "CONV2D" else 1
        out.append(LayerInfo(name, KINDS[op.type], tuple(t.shape), groups, is_first))
    return out


def select(graph: Graph, exclude=(), include=(), min_weights: int = MIN_WEIGHTS, only=None) -> dict:
    """name -> None (pruned) or the reason the layer stays dense. `only`: exactly these layers."""
    layers = ir_layers(graph)
    if only is not None:
        only = set(only)
        unknown = only - {layer.name for layer in layers}
        if unknown:
            raise ValueError(f"no conv/FC weight named {sorted(unknown)}")
        return {layer.name: (None if layer.name in only else "not selected") for layer in layers}
    return {layer.name: exclusion(layer, exclude, include, min_weights) for layer in layers}


def oneshot(graph: Graph, sparsity: float, block: int = 1, exclude=(), include=(), scope: str = "layer",
            norm: str = "l2", min_weights: int = MIN_WEIGHTS, only=None) -> Graph:
    """A copy of `graph` whose prunable weights have `sparsity` of their weights zeroed."""
    M.check_block(block)
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    chosen = [name for name, why in select(graph, exclude, include, min_weights, only).items() if why is None]
    out = copy.deepcopy(graph)
    weights = {name: out.tensors[name].data for name in chosen}
    if scope == "global":
        keep = M.global_masks(weights, sparsity, block, norm)
    else:
        keep = {name: M.layer_mask(w, sparsity, block, norm) for name, w in weights.items()}
    for name, k in keep.items():
        out.tensors[name].data = (weights[name] * k).astype(weights[name].dtype)
    return out


def ir_report(graph: Graph, block: int = 1, exclude=(), include=(), min_weights: int = MIN_WEIGHTS,
              only=None) -> list[LayerReport]:
    """Per-layer sparsity of `graph`'s conv/FC weights; status says which the rule prunes."""
    why = select(graph, exclude, include, min_weights, only)
    return [layer_report(layer, graph.tensors[layer.name].data, block, why[layer.name] or "pruned")
            for layer in ir_layers(graph)]
