"""Per-layer sparsity reports, shared by the PyTorch pruner and one-shot pruning of the IR."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .layers import LayerInfo


@dataclass
class LayerReport:
    name: str
    kind: str
    shape: tuple
    weights: int
    zeros: int
    block: int
    status: str  # "pruned" or why the layer stayed dense

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["sparsity"] = round(self.sparsity, 6)
        return d


def layer_report(info: LayerInfo, weight: np.ndarray, block: int, status: str) -> LayerReport:
    w = np.asarray(weight)
    return LayerReport(info.name, info.kind, tuple(info.shape), int(w.size), int(np.count_nonzero(w == 0)), block, status)


def totals(rows: list[LayerReport]) -> dict:
    """Sparsity over the pruned layers and over all conv/fc weights."""
    pruned = [r for r in rows if r.status == "pruned"]
    def frac(rs):
        n = sum(r.weights for r in rs)
        return sum(r.zeros for r in rs) / n if n else 0.0
    return {"pruned_layers": len(pruned), "layers": len(rows),
            "pruned_weights": sum(r.weights for r in pruned), "all_weights": sum(r.weights for r in rows),
            "sparsity_pruned": frac(pruned), "sparsity_all": frac(rows)}


def short_name(name: str, width: int = 40) -> str:
    """The informative end of a long weight name (TFLite's run to hundreds of characters):
    the last of its ";"-joined parts, its last two path components, no "_dequantize"."""
    part = name.split(";")[-1].removesuffix("_dequantize")
    part = "/".join(part.split("/")[-2:])
    return part if len(part) <= width else "…" + part[-(width - 1):]


def rich_table(rows: list[LayerReport], title: str = "per-layer sparsity"):
    """A rich Table of the report (print it with rich.console.Console().print)."""
    from rich.table import Table
    t = Table(title=title)
    for col, just in (("layer", "left"), ("shape", "left"), ("weights", "right"), ("sparsity", "right"),
                      ("status", "left")):
        t.add_column(col, justify=just, no_wrap=True)
    for r in rows:
        status = f"pruned, block {r.block}" if r.status == "pruned" and r.block > 1 else r.status
        t.add_row(short_name(r.name, 28), "x".join(map(str, r.shape)), f"{r.weights:,}", f"{r.sparsity:.1%}", status)
    s = totals(rows)
    t.caption = (f"{s['pruned_layers']}/{s['layers']} layers pruned; sparsity {s['sparsity_pruned']:.1%} of "
                 f"their {s['pruned_weights']:,} weights, {s['sparsity_all']:.1%} of all {s['all_weights']:,}")
    return t


def text_table(rows: list[LayerReport]) -> str:
    """The report as plain text (logs, tests)."""
    width = max([len(r.name) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'kind':<4}  {'weights':>9}  {'sparsity':>8}  status"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.kind:<4}  {r.weights:>9,}  {r.sparsity:>8.1%}  {r.status}")
    s = totals(rows)
    lines.append(f"{s['pruned_layers']}/{s['layers']} layers pruned; sparsity {s['sparsity_pruned']:.1%} of "
                 f"their weights, {s['sparsity_all']:.1%} of all conv/fc weights")
    return "\n".join(lines)
