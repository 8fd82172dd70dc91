"""Per-layer pruning sensitivity: prune one layer at a time, see how far the outputs move.

For every prunable layer and level, only that layer is pruned one-shot and the graph is run
with the numpy reference from the first op that reads the layer's weight (the activations
before it are the dense model's, computed once).

The error of an output is its relative L2 distance to the dense model's, pooled over the
inputs: sqrt(sum |y - y_dense|^2) / sqrt(sum |y_dense|^2), the sums running over the
output's elements and all inputs (so inputs where an output is near zero, such as the
presence score of a noise image, do not dominate). A layer's error at a level is the mean
over the model's outputs; the JSON keeps each output's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import reference
from ..ir import Graph
from .masks import layer_mask
from .oneshot import select
from .report import short_name

LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95)


@dataclass
class Sensitivity:
    levels: list[float]
    inputs: list[str]  # what each input was (photo name or "noise seed N")
    outputs: list[str]
    layers: list[dict] = field(default_factory=list)  # name, shape, weights, errors[level] = {output: err}

    def error(self, layer: dict, level: float) -> float:
        e = layer["errors"][str(level)]
        return float(np.mean(list(e.values())))

    def as_dict(self) -> dict:
        return {"levels": self.levels, "inputs": self.inputs, "outputs": self.outputs,
                "metric": "relative L2 error of each output vs the dense model, pooled over the inputs",
                "layers": [dict(layer, mean_error={str(lv): self.error(layer, lv) for lv in self.levels})
                           for layer in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> "Sensitivity":
        """The inverse of `as_dict`."""
        layers = [{k: v for k, v in layer.items() if k != "mean_error"} for layer in d["layers"]]
        return cls(list(d["levels"]), list(d["inputs"]), list(d["outputs"]), layers)


def photo_to_input(graph: Graph, img) -> np.ndarray:
    """A PIL image as the model's (single) image input [3, H, W]: resized to the input size,
    RGB mapped to the range the model expects (its metadata, or [0, 1])."""
    from PIL import Image
    shape = graph.tensors[graph.inputs[0]].shape
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"photos need an image input [1, 3, H, W]; the model's is {list(shape)}")
    lo, hi = (graph.metadata.get("input") or {}).get("range", [0.0, 1.0])
    img = img.convert("RGB").resize((shape[3], shape[2]), Image.BILINEAR)
    x = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
    return (lo + (hi - lo) * x).astype(np.float32)


def image_inputs(graph: Graph, photos: list[Path], noise: int, seed: int = 0) -> tuple[list, list[str]]:
    """The model's input made from each photo (`photo_to_input`) and from `noise` seeded images
    (uniform over the model's input range)."""
    from PIL import Image
    name = graph.inputs[0]
    shape = graph.tensors[name].shape
    lo, hi = (graph.metadata.get("input") or {}).get("range", [0.0, 1.0])
    xs, what = [], []
    for p in photos:
        xs.append({name: photo_to_input(graph, Image.open(p))[None]})
        what.append(Path(p).name)
    for i in range(noise):
        x = np.random.default_rng(seed + i).random(shape, dtype=np.float32)
        xs.append({name: (lo + (hi - lo) * x).astype(np.float32)})
        what.append(f"noise seed {seed + i}")
    return xs, what


def _run_from(graph: Graph, start: int, values: dict, weight: str, data: np.ndarray) -> dict:
    """Graph outputs when ops from index `start` on are rerun with `weight` replaced."""
    vals = dict(values)
    vals[weight] = data
    for op in graph.ops[start:]:
        ins = [vals[i] if i else None for i in op.inputs]
        vals[op.outputs[0]] = reference.run_op(op.type, ins, op.attrs, graph.tensors[op.outputs[0]].shape)
    return {o: vals[o] for o in graph.outputs}


def analyse(graph: Graph, inputs: list[dict], levels=LEVELS, block: int = 1, exclude=(), include=(),
            input_names=None, progress=None) -> Sensitivity:
    """Sensitivity of every layer the default rule (with overrides) prunes. `progress(n)` is
    called once per (layer, level) step, after being told the total via `progress.total`."""
    chosen = [n for n, why in select(graph, exclude, include).items() if why is None]
    dense = []
    for x in inputs:
        v = reference.run(graph, x, keep_all=True)

        v.update(x)
        v.update({n: t.data for n, t in graph.tensors.items() if t.is_constant})
        dense.append(v)
    norm = {o: float(np.sqrt(sum(np.sum(v[o].astype(np.float64) ** 2) for v in dense))) for o in graph.outputs}
    result = Sensitivity([float(lv) for lv in levels], list(input_names or [f"input {i}" for i in range(len(inputs))]),
                         list(graph.outputs))
    if progress is not None:
        progress.total = len(chosen) * len(levels)
    for name in chosen:
        start = next(i for i, op in enumerate(graph.ops) if name in op.inputs)
        w = graph.tensors[name].data
        row = {"name": name, "op": graph.ops[start].name, "shape": list(w.shape), "weights": int(w.size),
               "errors": {}}
        for level in levels:
            pruned = (w * layer_mask(w, level, block)).astype(np.float32)
            sq = {o: 0.0 for o in graph.outputs}
            for v in dense:
                out = _run_from(graph, start, v, name, pruned)
                for o in graph.outputs:
                    sq[o] += float(np.sum((out[o].astype(np.float64) - v[o]) ** 2))
            row["errors"][str(float(level))] = {o: float(np.sqrt(sq[o]) / max(norm[o], 1e-30))
                                                for o in graph.outputs}
            if progress is not None:
                progress(1)
        result.layers.append(row)
    return result


def plot(result: Sensitivity, path: Path, title: str) -> None:
    """A heat map: layers down, levels across, the mean output error in each cell."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    errs = np.array([[result.error(layer, lv) for lv in result.levels] for layer in result.layers])
    fig, ax = plt.subplots(figsize=(2.2 + 1.1 * len(result.levels), 1.2 + 0.32 * max(len(result.layers), 1)))
    shown = np.clip(errs, 1e-4, None)
    im = ax.imshow(shown, aspect="auto", cmap="magma_r", norm=LogNorm(vmin=1e-4, vmax=max(1.0, shown.max())))
    ax.set_xticks(range(len(result.levels)), [f"{lv:.0%}" for lv in result.levels])
    ax.set_yticks(range(len(result.layers)), [short_name(layer["name"]) for layer in result.layers], fontsize=7)
    for i in range(errs.shape[0]):
        for j in range(errs.shape[1]):
            ax.text(j, i, f"{errs[i, j]:.3f}", ha="center", va="center", fontsize=6,
                    color="white" if shown[i, j] > 0.05 else "black")
    ax.set_xlabel("sparsity of the one pruned layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="relative output error")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
