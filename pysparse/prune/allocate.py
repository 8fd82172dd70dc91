"""Per-layer sparsity at a fixed budget of effective multiply-adds, from sensitivity.

A uniform sparsity treats a 1x1 layer on 56x56 pixels like one on 7x7, and a layer whose
every weight matters like one full of redundancy. Here each layer's cost is its multiply-adds
(weights x output pixels) and its damage is its sensitivity (`pysparse.prune.sensitivity`:
how far the outputs move when that layer alone is pruned). Starting from `floor` everywhere,
the allocation raises, one small step at a time, the sparsity of the layer that saves the
most multiply-adds per unit of added damage, until the pruned layers' effective
multiply-adds fit `(1 - target) x` their dense total.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph


def layer_macs(graph: Graph, names) -> dict:
    """Multiply-adds of each named weight's op at batch 1: weights x output pixels."""
    out = {}
    for op in graph.ops:
        for name in op.inputs[1:2]:
            if name in names and name not in out:
                shape = graph.tensors[op.outputs[0]].shape
                pixels = int(np.prod(shape[2:])) if len(shape) == 4 else 1
                out[name] = int(graph.tensors[name].data.size) * pixels
    return out


def damage_curve(levels, errors) -> tuple[np.ndarray, np.ndarray]:
    """The sensitivity at each level, from 0 at sparsity 0, made non-decreasing."""
    x = np.concatenate([[0.0], np.asarray(levels, float)])
    y = np.maximum.accumulate(np.concatenate([[0.0], np.asarray(errors, float)]))
    return x, y


def allocate(macs: dict, curves: dict, target: float, floor: float = 0.5, ceiling: float = 0.97,
             step: float = 0.01) -> dict:
    """{layer: sparsity}: effective multiply-adds sum(macs * (1 - s)) <= (1 - target) * sum(macs).
    `curves`: {layer: (levels, errors)} as `damage_curve` returns (interpolated in between)."""
    if not 0.0 <= floor <= target <= ceiling < 1.0:
        raise ValueError(f"need 0 <= floor <= target <= ceiling < 1, got {floor}, {target}, {ceiling}")
    names = list(macs)
    s = {n: floor for n in names}
    budget = (1.0 - target) * sum(macs.values())

    def damage(n, v):
        x, y = curves[n]
        return float(np.interp(v, x, y))

    def cost():
        return sum(macs[n] * (1.0 - s[n]) for n in names)

    while cost() > budget + 1e-9:
        best, best_ratio = None, None
        for n in names:
            if s[n] + step > ceiling + 1e-9:
                continue
            saved = macs[n] * step
            ratio = (damage(n, s[n] + step) - damage(n, s[n]) + 1e-12) / saved
            if best is None or ratio < best_ratio:
                best, best_ratio = n, ratio
        if best is None:
            raise ValueError(f"the budget of {target:.0%} cannot be met with every layer at {ceiling:.0%}")
        s[best] = round(s[best] + step, 6)
    return s


def from_sensitivity(graph: Graph, result, target: float, low_levels: float = 0.7, base: float = 0.05,
                     **kw) -> dict:
    """`allocate` over the layers of a `Sensitivity` result. One-shot errors saturate at high
    sparsity (the outputs are simply wrong), which would make further pruning look free, so
    each layer's damage is modelled as e * -log(1 - s), with e its mean output error at the
    levels up to `low_levels` plus `base`: the density this gives is proportional to e over
    the layer's multiply-adds, within the floor and ceiling."""
    names = [row["name"] for row in result.layers]
    macs = layer_macs(graph, set(names))
    grid = np.linspace(0.0, 0.995, 400)
    curves = {}
    for row in result.layers:
        lows = [float(np.mean(list(v.values()))) for k, v in row["errors"].items() if float(k) <= low_levels + 1e-9]
        e = (float(np.mean(lows)) if lows else 1.0) + base
        curves[row["name"]] = (grid, e * -np.log1p(-grid))
    kw.setdefault("ceiling", 0.95)
    return allocate({n: macs[n] for n in names}, curves, target, **kw)
