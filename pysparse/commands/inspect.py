"""`pysparse inspect FILE.spnn`: per-layer encodings, sparsity, MACs and sizes of a packed model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..tables import add_format_option


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show the layers, encodings, sizes and memory of a .spnn file",
                       description="Read and validate a .spnn file, then print a table per weight-bearing "
                                   "layer and the totals.")
    p.add_argument("file", type=Path, help="a .spnn file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_format_option(p)
    p.set_defaults(func=run)


def layer_rows(f) -> list[dict]:
    """One row per convolution / fully connected op, computed from the file's own graph and
    weights (not from its metadata)."""
    from ..format.costmodel import spmm_problem
    from ..pack import WEIGHT_OPS, dense_macs
    g = f.graph
    rows = []
    for op in g.ops:
        if op.type not in WEIGHT_OPS or op.inputs[1] not in f.weights:
            continue
        w = f.weights[op.inputs[1]]
        macs = dense_macs(g, op)
        problem = spmm_problem(g, op)
        effective = w.nnz * problem[2] if w.encoding_name == "sparse" and problem else macs
        size = len(w.data)
        bias = op.inputs[2] if len(op.inputs) > 2 else ""
        if bias in f.weights:
            size += len(f.weights[bias].data)
        rows.append({
            "op": op.type, "name": op.name,
            "input": list(g.tensors[op.inputs[0]].shape), "weight": list(g.tensors[op.inputs[1]].shape),
            "output": list(g.tensors[op.outputs[0]].shape),
            "sparsity": float(np.mean(g.tensors[op.inputs[1]].data == 0)),
            "encoding": w.encoding_name, "block": w.block, "dtype": w.dtype_name,
            "dense_macs": int(macs), "effective_macs": int(effective), "bytes": int(size),
        })
    return rows


def summary(f, path: Path) -> dict:
    rows = layer_rows(f)
    source = f.metadata.get("source") or {}
    total_dense = sum(r["dense_macs"] for r in rows)
    total_eff = sum(r["effective_macs"] for r in rows)
    ones = [r for r in rows if r["op"] == "CONV2D" and r["weight"][2:] == [1, 1]]
    ones_elems = sum(int(np.prod(r["weight"])) for r in ones)
    ones_zero = sum(r["sparsity"] * int(np.prod(r["weight"])) for r in ones)
    out = {
        "file": str(path), "file_size": f.file_size, "name": f.metadata.get("name", ""),
        "format_version": "%d.%d" % f.version, "producer": f.producer,
        "ops": len(f.graph.ops), "inputs": {n: list(f.graph.tensors[n].shape) for n in f.graph.inputs},
        "outputs": {n: list(f.graph.tensors[n].shape) for n in f.graph.outputs},
        "arena_bytes": f.arena_bytes, "peak_activation_bytes": f.arena_bytes,
        "weight_bytes": sum(len(w.data) for w in f.weights.values()),
        "dense_macs": total_dense, "effective_macs": total_eff,
        "sparse_layers": sum(1 for r in rows if r["encoding"] == "sparse"),
        "conv1x1_sparsity": ones_zero / ones_elems if ones_elems else 0.0,
        "source": source, "layers": rows,
    }
    if source.get("bytes"):
        out["size_ratio"] = f.file_size / source["bytes"]
    return out


def _print_table(s: dict, fmt: str = "auto") -> None:
    from ..prune.report import short_name
    from ..tables import Table, emit
    t = Table(f"{s['name']} ({s['file']}, format {s['format_version']}, written by pysparse {s['producer']})",
              ["#", "op", "name", "input", "weight", "output", "sparsity", "encoding", "dense MACs", "eff. MACs",
               "bytes"], right={0, 6, 8, 9, 10})
    fmt_shape = lambda v: "x".join(map(str, v))  # noqa: E731
    for i, r in enumerate(s["layers"]):
        enc = f"sparse b{r['block']} {r['dtype']}" if r["encoding"] == "sparse" else f"dense {r['dtype']}"
        t.add(i, r["op"], short_name(r["name"]), fmt_shape(r["input"]), fmt_shape(r["weight"]), fmt_shape(r["output"]),
              f"{100 * r['sparsity']:.1f}%", enc, f"{r['dense_macs']:,}", f"{r['effective_macs']:,}",
              f"{r['bytes']:,}")
    t.footer.append(["", "total", f"{len(s['layers'])} layers, {s['sparse_layers']} sparse", "", "", "", "", "",
                     f"{s['dense_macs']:,}", f"{s['effective_macs']:,}", f"{s['weight_bytes']:,}"])
    emit(t, fmt)
    src = s["source"]
    lines = [f"file size: {s['file_size']:,} bytes"]
    if "size_ratio" in s:
        lines[0] += f" ({100 * s['size_ratio']:.1f}% of {src.get('file', 'the source')}, {src['bytes']:,} bytes)"
    lines.append(f"peak activation memory (arena): {s['arena_bytes']:,} bytes")
    lines.append(f"1x1 convolution weight sparsity: {100 * s['conv1x1_sparsity']:.1f}%")
    if s["dense_macs"]:
        lines.append(f"MACs: {s['dense_macs']:,} dense, {s['effective_macs']:,} effective "
                     f"({100 * s['effective_macs'] / s['dense_macs']:.1f}%)")
    lines.append(f"ops: {s['ops']}; inputs {s['inputs']}; outputs {s['outputs']}")
    print("\n".join(lines))


def run(args) -> int:
    from ..format import read_spnn_file
    f = read_spnn_file(args.file)
    s = summary(f, args.file)
    if args.json:
        print(json.dumps(s, indent=1))
    else:
        _print_table(s, args.table)
    return 0
