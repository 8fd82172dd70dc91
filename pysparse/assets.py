"""Where things are (checkout or installed wheel), and real models from registry packages.

npm's `@mediapipe/hands` carries the hand landmark models as plain files and bundles the
palm detection models inside `hands_solution_packed_assets.data`, whose offsets are listed
in the `loadPackage({...})` call of `hands_solution_packed_assets_loader.js`. MediaPipe's
published sparse models (for the benchmark) come the same way: the sparse face detector as a
plain file of `@mediapipe/face_detection`, the pose detector packed in `@mediapipe/pose`.

    python -m pysparse.assets            # extract into the models folder (a no-op when present)

In a checkout the npm packages come from its node_modules/ (`make setup`) and the models go
to models/. An installed wheel has no checkout: it looks for a node_modules/ folder in the
current directory, else fetches the pinned npm packages with `npm pack` into its cache
(`$PYSPARSE_CACHE`, else `$XDG_CACHE_HOME/pysparse` or `~/.cache/pysparse`), and keeps
models there too. `$PYSPARSE_NODE_MODULES` and `$PYSPARSE_MODELS` override both.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .fsutil import write_atomic

ROOT = Path(__file__).resolve().parent.parent
HANDS_PACKAGE = "@mediapipe/hands"
FACE_PACKAGE = "@mediapipe/face_detection"
POSE_PACKAGE = "@mediapipe/pose"
TFLITE_MAGIC = b"TFL3"  # at byte offset 4 of every .tflite flatbuffer

# model file -> (npm package, source inside it, name inside the packed assets or None)
MODELS = {
    "hand_landmark_full.tflite": (HANDS_PACKAGE, "hand_landmark_full.tflite", None),
    "hand_landmark_lite.tflite": (HANDS_PACKAGE, "hand_landmark_lite.tflite", None),
    "palm_detection_full.tflite": (HANDS_PACKAGE, "hands_solution_packed_assets.data", "palm_detection_full.tflite"),
    "palm_detection_lite.tflite": (HANDS_PACKAGE, "hands_solution_packed_assets.data", "palm_detection_lite.tflite"),
    "face_detection_full_range_sparse.tflite": (FACE_PACKAGE, "face_detection_full_range_sparse.tflite", None),
    "pose_detection.tflite": (POSE_PACKAGE, "pose_solution_packed_assets.data", "pose_detection.tflite"),
}
HAND_MODELS = tuple(name for name, (package, _, _) in MODELS.items() if package == HANDS_PACKAGE)


# The npm packages the models and photos come from, at the versions package-lock.json pins.
NPM_PACKAGES = {HANDS_PACKAGE: "0.4.1675469240", FACE_PACKAGE: "0.4.1657300184", POSE_PACKAGE: "0.5.1675469404",
                "fingerpose": "0.1.0"}
# The files a wheel carries besides Python: web/ (runtime and engine builds) and demo/.
PACKAGE_STATIC = Path(__file__).resolve().parent / "_static"


def in_checkout() -> bool:
    """Whether this package runs from a source checkout (editable install or tests)."""
    return (ROOT / "pyproject.toml").is_file() and (ROOT / "web" / "pysparse.mjs").is_file()


def static_root() -> Path:
    """The folder holding web/ and demo/: the checkout, else the installed wheel's copy."""
    return ROOT if in_checkout() or not (PACKAGE_STATIC / "web").is_dir() else PACKAGE_STATIC


def cache_dir() -> Path:
    if os.environ.get("PYSPARSE_CACHE"):
        return Path(os.environ["PYSPARSE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pysparse"


def node_modules() -> Path:
    if os.environ.get("PYSPARSE_NODE_MODULES"):
        return Path(os.environ["PYSPARSE_NODE_MODULES"])
    if in_checkout():
        return ROOT / "node_modules"
    local = Path.cwd() / "node_modules"
    return local if (local / HANDS_PACKAGE).is_dir() else cache_dir() / "node_modules"


def models_dir() -> Path:
    if os.environ.get("PYSPARSE_MODELS"):
        return Path(os.environ["PYSPARSE_MODELS"])
    return ROOT / "models" if in_checkout() else cache_dir() / "models"


def _setup_hint() -> str:
    return "run `make setup`" if in_checkout() else "run `python -m pysparse.assets` (it needs npm)"


def model_path(name: str) -> Path:
    """Path of a cached model, e.g. model_path("hand_landmark_full.tflite")."""
    p = models_dir() / name
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: {_setup_hint()}")
    return p


def fetch_npm_packages(dest: Path | None = None, quiet: bool = False, packages=None) -> Path:
    """Unpacks the pinned NPM_PACKAGES (or those of them named in `packages`) from the npm
    registry (`npm pack`, which checks each tarball's integrity) into `dest` (default: the
    cache's node_modules/); returns `dest`."""
    dest = dest or cache_dir() / "node_modules"
    wanted = [n for n in (packages or NPM_PACKAGES) if not (dest / n / "package.json").is_file()]
    if not wanted:
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(f"no npm to fetch {', '.join(wanted)} with: install Node.js and npm, "
                                "or pass your own model files")
    with tempfile.TemporaryDirectory(prefix="pysparse-npm-") as tmp:
        specs = [f"{n}@{NPM_PACKAGES[n]}" for n in wanted]
        if not quiet:
            print(f"fetching {', '.join(specs)} from the npm registry", flush=True)
        proc = subprocess.run([npm, "pack", "--silent", "--json", *specs, "--pack-destination", tmp],
                              capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise OSError(f"npm pack {' '.join(specs)} failed: {last}")
        for name, entry in zip(wanted, json.loads(proc.stdout)):
            out = dest / name
            staging = Path(tmp) / "unpacked" / name
            with tarfile.open(Path(tmp) / entry["filename"]) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, filter="data")
                else:  # older Pythons: refuse members that would land outside `staging`
                    if any(m.name.startswith(("/", "..")) or "/../" in m.name for m in tar.getmembers()):
                        raise ValueError(f"{entry['filename']}: unsafe paths in the tarball")
                    tar.extractall(staging)
            if out.exists():
                shutil.rmtree(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging / "package"), out)
    return dest


def _packed_offsets(loader_js: str) -> dict[str, tuple[int, int]]:
    m = re.search(r"loadPackage\((\{.*?\})\);", loader_js, re.S)
    if not m:
        raise ValueError("no loadPackage({...}) table in the packed assets loader")
    table = json.loads(m.group(1))
    return {Path(f["filename"]).name: (int(f["start"]), int(f["end"])) for f in table["files"]}

def extract(dest: Path | None = None, quiet: bool = False, names=None) -> list[Path]:
    """Extracts the models named in `names` (default: all of MODELS) that are missing;
    returns the paths written."""
    dest = dest or models_dir()
    names = [n for n in (names or MODELS) if not (dest / n).exists()]
    if not names:
        return []
    modules = node_modules()
    wanted = {MODELS[name][0] for name in names}
    if any(not (modules / p).is_dir() for p in wanted) and not in_checkout() \
            and "PYSPARSE_NODE_MODULES" not in os.environ:
        modules = fetch_npm_packages(quiet=quiet, packages=sorted(wanted))
    for package in wanted:
        if not (modules / package).is_dir():
            raise FileNotFoundError(f"{modules / package} is missing: {_setup_hint()}")
    offsets: dict[str, dict] = {}  # per package, its packed assets' table
    written = []
    for name in names:
        package, source, packed_name = MODELS[name]
        out = dest / name
        pkg = modules / package
        if packed_name is None:
            data = (pkg / source).read_bytes()
        else:
            if package not in offsets:
                loader = source.replace(".data", "_loader.js")
                offsets[package] = _packed_offsets((pkg / loader).read_text())
            start, end = offsets[package][packed_name]
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
        raise FileNotFoundError(f"{p} is missing: {_setup_hint()}")
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pysparse.assets", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, default=None)
    ap.add_argument("--clean", action="store_true", help="remove the cache first")
    args = ap.parse_args(argv)
    if args.clean and (args.dest or models_dir()).exists():
        shutil.rmtree(args.dest or models_dir())
    if not in_checkout() and "PYSPARSE_NODE_MODULES" not in os.environ and node_modules() == cache_dir() / "node_modules":
        fetch_npm_packages()  # the photos too, not only the models
    extract(args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
