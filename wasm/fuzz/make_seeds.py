"""Writes the fuzz seeds: small valid .spnn files covering every op, dense and sparse
(blocks 1, 2, 4), f32/f16/i8 weights. Usage: python wasm/fuzz/make_seeds.py OUT_DIR"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from engine_graphs import op_graphs  # noqa: E402
from pysparse.pack import pack  # noqa: E402


def write_seeds(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, g in sorted(op_graphs().items()):
        variants = {"": {}}
        if name.startswith(("conv_1x1", "fc_")):
            variants = {"-dense": {"sparse": False}, "-sparse": {"sparse": True}, "-f16": {"sparse": True, "weights": "fp16"}}
        elif name.startswith("conv"):
            variants = {"": {}, "-i8": {"weights": "int8"}}
        for suffix, kw in variants.items():
            p = out / f"{name}{suffix}.spnn"
            data = pack(g, **kw)
            if len(data) <= 65536:
                p.write_bytes(data)
                written.append(p)
    return written


if __name__ == "__main__":
    paths = write_seeds(Path(sys.argv[1]))
    print(f"{len(paths)} seeds in {sys.argv[1]}")
