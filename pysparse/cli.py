"""The `pysparse` command line: one subcommand per module in pysparse/commands/.

Each module exposes `add_parser(subparsers)`, which adds its parser and sets `func`
(called with the parsed arguments, returning the exit code). Errors a user can cause
print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import PysparseError

COMMANDS = ("pack", "inspect", "run", "serve", "prune", "sensitivity", "distill", "evaluate", "bench")
EXIT_ERROR = 2
# Optional parts of the package: the top-level module a command may lack -> what to install.
OPTIONAL = {
    "torch": "pip install 'pysparse-web[torch]'",
    "playwright": "pip install 'pysparse-web[bench]' (it drives the system's Chromium)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pysparse", description="Sparse CNN inference in the browser: "
                                     "pack models into .spnn files, inspect and run them.")
    parser.add_argument("--version", action="version", version=f"pysparse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"pysparse.commands.{name}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (PysparseError, OSError, ValueError) as e:
        print(f"pysparse {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in OPTIONAL:
            raise
        print(f"pysparse {args.command}: error: this needs {top}: {OPTIONAL[top]}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
