"""Per-layer chart of an A/B profile: the JSON of

    node wasm/tests/profile_model.mjs MODEL.spnn --build BEFORE --build AFTER --layers 1 --json OUT

(per-op medians of each build, interleaved runs), drawn as one pair of bars per op.

    python wasm/bench/plot_layers.py OUT.json CHART.png [--threads 1] [--labels before,after]
"""
from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GROUPS = (("spmm", "sparse 1x1"), ("gemm", "dense 1x1"), ("dwconv", "depthwise"), ("conv", "KxK conv"))


def group(kernel: str) -> str:
    if "+" in kernel:  # parts ("/N") on the 1x1 layers: a channel chain; else a band walk
        return "1x1 + depthwise, channel chain" if "/" in kernel else "1x1 + depthwise, band by band"
    return next((name for prefix, name in GROUPS if kernel.startswith(prefix)), "other")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("png")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--labels", default=None, help="comma-separated names of the builds")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    data = json.load(open(args.profile))
    builds = data["builds"]
    labels = args.labels.split(",") if args.labels else [b["build"] for b in builds]
    ops = builds[-1]["ops"]  # the ticks name the last build's kernels
    times = [b["threads"][args.threads]["op_ms"] for b in builds]
    fig, ax = plt.subplots(figsize=(max(10, 0.22 * len(ops)), 4.8))
    width = 0.8 / len(builds)
    x = range(len(ops))
    for k, (t, label) in enumerate(zip(times, labels)):
        total = sum(t)
        ax.bar([i + (k - (len(builds) - 1) / 2) * width for i in x], t, width,
               label=f"{label}: {total:.2f} ms in all ops (median run {builds[k]['threads'][args.threads]['median_ms']:.2f} ms)")
    ax.set_xticks(list(x))
    ax.set_xticklabels([f"{i} {op['kernel'].replace('dwconv_', 'dw').replace('_32x1', '').replace('_48x1', '')}"
                        for i, op in enumerate(ops)], rotation=90, fontsize=6)
    ax.set_ylabel("ms per run (median)")
    ax.set_title(args.title or f"{data['model']}: per layer, {args.threads} thread(s)")
    # per-group totals in the corner
    lines = []
    for name in dict.fromkeys(group(op["kernel"]) for b in builds for op in b["ops"]):
        sums = [sum(v for v, op in zip(t, b["ops"]) if group(op["kernel"]) == name) for t, b in zip(times, builds)]
        lines.append(f"{name}: " + " -> ".join(f"{s:.2f}" for s in sums) + " ms")
    ax.text(0.99, 0.97, "\n".join(lines), transform=ax.transAxes, ha="right", va="top", fontsize=8,
            family="monospace", bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
    ax.legend(loc="upper center", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
