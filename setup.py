"""Packaging beyond what pyproject.toml can say: the wheel carries the JS runtime, its engine
builds and the demo page as package data under pysparse/_static/, copied from web/ and demo/
of the checkout at build time (an editable install reads them in place instead)."""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent

# (folder of the checkout, glob patterns inside it) copied to pysparse/_static/<folder>/.
STATIC = {
    "web": ["*.mjs", "*.d.ts", "hands/*.mjs", "index.html", "README.md", "package.json", "test/index.html"],
    "web/dist": ["pysparse-*.mjs", "pysparse-*.wasm", "pysparse-*.worker.js"],
    "demo": ["*.mjs", "*.html", "*.css", "finetuned/hand_landmark_full.s[0-9][0-9].spnn"],
}
# The four engine builds the runtime chooses from: a wheel without them cannot serve a model.
ENGINE_BUILDS = [f"pysparse-{v}.{ext}" for v in ("simd", "simd-threads", "relaxed", "relaxed-threads")
                 for ext in ("mjs", "wasm")]


def static_files() -> list[tuple[Path, str]]:
    """(source file, path under _static/) for every file the wheel carries besides Python."""
    files = []
    for folder, patterns in STATIC.items():
        for pattern in patterns:
            for src in sorted((HERE / folder).glob(pattern)):
                if src.is_file():
                    files.append((src, f"{folder}/{src.relative_to(HERE / folder).as_posix()}"))
    return files


class BuildPyWithStatic(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install serves web/ and demo/ from the checkout itself
        missing = [n for n in ENGINE_BUILDS if not (HERE / "web" / "dist" / n).is_file()]
        if missing:
            raise SystemExit(f"web/dist lacks {', '.join(missing)}: build the engine first (`make wasm`)")
        out = Path(self.build_lib) / "pysparse" / "_static"
        if out.exists():
            shutil.rmtree(out)
        for src, rel in static_files():
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


setup(cmdclass={"build_py": BuildPyWithStatic})
