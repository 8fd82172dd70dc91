"""Real models from registry packages, extracted into a local cache at set-up.

npm's `@mediapipe/hands` carries the hand landmark models as plain files and bundles the
palm detection models inside `hands_solution_packed_assets.data`, whose offsets are listed
in the `loadPackage({...})` call of `hands_solution_packed_assets_loader.js`.

    python -m pysparse.assets            # extract into ./models (a no-op when present)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

from .fsutil import write_atomic

ROOT = Path(__file__).resolve().parent.parent
HANDS_PACKAGE = "@mediapipe/hands"
TFLITE_MAGIC = b"TFL3"  # at byte offset 4 of every .tflite flatbuffer

# model file -> (source inside the npm package, name inside the packed assets or None)
MODELS = {
    "hand_landmark_full.tflite": ("hand_landmark_full.tflite", None),
    "hand_landmark_lite.tflite": ("hand_landmark_lite.tflite", None),
    "palm_detection_full.tflite": ("hands_solution_packed_assets.data", "palm_detection_full.tflite"),
    "palm_detection_lite.tflite": ("hands_solution_packed_assets.data", "palm_detection_lite.tflite"),
}


def node_modules() -> Path:
    return Path(os.environ.get("PYSPARSE_NODE_MODULES", ROOT / "node_modules"))


def models_dir() -> Path:
    return Path(os.environ.get("PYSPARSE_MODELS", ROOT / "models"))


def model_path(name: str) -> Path:
    """Path of a cached model, e.g. model_path("hand_landmark_full.tflite")."""
    p = models_dir() / name
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: run `make setup` (or `python -m pysparse.assets`)")
    return p


def _packed_offsets(loader_js: str) -> dict[str, tuple[int, int]]:
    m = re.search(r"loadPackage\((\{.*?\})\);", loader_js, re.S)
    if not m:
        raise ValueError("no loadPackage({...}) table in the packed assets loader")
    table = json.loads(m.group(1))
    return {Path(f["filename"]).name: (int(f["start"]), int(f["end"])) for f in table["files"]}

def extract(dest: Path | None = None, quiet: bool = False) -> list[Path]:
    dest = dest or models_dir()
    pkg = node_modules() / HANDS_PACKAGE
    if not pkg.is_dir():
        raise FileNotFoundError(f"{pkg} is missing: run `npm ci` (part of `make setup`)")
    offsets = None
    written = []
    for name, (source, packed_name) in MODELS.items():
        out = dest / name
        if out.exists():
            continue
        if packed_name is None:
            data = (pkg / source).read_bytes()
        else:
            if offsets is None:
                offsets = _packed_offsets((pkg / "hands_solution_packed_assets_loader.js").read_text())
            start, end = offsets[packed_name]
            with open(pkg / source, "rb") as f:
                f.seek(start)
                data = f.read(end - start)
        if data[4:8] != TFLITE_MAGIC:
            raise ValueError(f"{name} extracted from {source} is not a TFLite model (no TFL3 magic)")
        write_atomic(out, data)
        written.append(out)
        if not quiet:
            print(f"extracted {out} ({len(data)} bytes)")
    return written


# Real photos from registry packages (npm `fingerpose@0.1.0`, MIT licence).
PHOTOS = {
    "hand_nocurl.jpg": "fingerpose/assets/nocurl.jpg",
    "hand_halfcurl.jpg": "fingerpose/assets/halfcurl.jpg",
    "hand_fullcurl.jpg": "fingerpose/assets/fullcurl.jpg",
}


def photo_path(name: str) -> Path:
    p = node_modules() / PHOTOS[name]
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: run `make setup`")
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pysparse.assets", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, default=None)
    ap.add_argument("--clean", action="store_true", help="remove the cache first")
    args = ap.parse_args(argv)
    if args.clean and (args.dest or models_dir()).exists():
        shutil.rmtree(args.dest or models_dir())
    extract(args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
