"""Graph passes: plain functions Graph -> Graph that return a rewritten copy.

    graph = passes.optimize(graph)

`optimize` runs the rewrites that keep results unchanged (up to float rounding); the
memory plan (`passes.memory`) is the packer's business.
"""
from __future__ import annotations

from ..ir import Graph
from .batch import with_batch
from .cleanup import remove_identities, remove_unused
from .fold import fold_constant_scale_shift, fold_constants, fold_pad, fuse_activations
from .reorder import pointwise_before_resize

__all__ = ["optimize", "fold_constants", "fold_constant_scale_shift", "fold_pad", "fuse_activations",
           "pointwise_before_resize", "remove_identities", "remove_unused", "with_batch"]


def optimize(graph: Graph) -> Graph:
    """Constant folding, identities out, padding/scale/shift/activation folded into the
    ops that can absorb them, 1x1 convolutions moved before the resizes that feed them,
    dead ops and tensors out."""
    g = fold_constants(graph)
    g = remove_identities(g)
    g = fold_pad(g)
    g = fold_constant_scale_shift(g)  # before fuse_activations: a bias add comes before the ReLU
    g = fuse_activations(g)
    g = pointwise_before_resize(g)  # after fuse_activations: the conv's activation moves with it
    g = remove_identities(g)
    g = remove_unused(g)
    g.validate()
    return g
