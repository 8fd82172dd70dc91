"""Which weights are pruned: the default rule and its overrides, shared by the PyTorch
pruner and one-shot pruning of the IR.

Sparsity pays where the engine has a sparse kernel and the layer is big enough to matter:
1x1 convolutions and fully connected layers. By default these are left dense:
- the first convolution (it reads the image; few weights, large outputs),
- depthwise and other grouped convolutions, and KxK convolutions with K > 1 (dense kernels),
- tiny layers (fewer than `MIN_WEIGHTS` weights, such as single-output heads).
`include` patterns make a layer prunable whatever the rule says; `exclude` patterns leave
it dense and win over `include`. Patterns are shell-style globs (`fnmatch`) on the layer name.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

MIN_WEIGHTS = 2048


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str  # "conv" (weight [Cout, Cin/groups, KH, KW]) or "fc" (weight [M, K])
    shape: tuple
    groups: int = 1
    first: bool = False  # the first convolution, reading the input image

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


def default_exclusion(layer: LayerInfo, min_weights: int = MIN_WEIGHTS) -> str | None:
    """Why the default rule leaves `layer` dense, or None when it prunes it."""
    if layer.kind == "conv":
        if layer.first:
            return "first conv"
        if layer.groups > 1:
            return "depthwise" if layer.shape[1] == 1 else "grouped conv"
        if tuple(layer.shape[2:]) != (1, 1):
            return f"{layer.shape[2]}x{layer.shape[3]} conv"
    elif layer.kind != "fc":
        return f"unknown kind {layer.kind}"
    if layer.numel < min_weights:
        return f"tiny ({layer.numel} weights)"
    return None


def _matches(name: str, patterns) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def exclusion(layer: LayerInfo, exclude=(), include=(), min_weights: int = MIN_WEIGHTS) -> str | None:
    """Why `layer` stays dense (None: it is pruned), with the overrides applied."""
    if _matches(layer.name, exclude):
        return "excluded by pattern"
    if _matches(layer.name, include):
        return None
    return default_exclusion(layer, min_weights)
