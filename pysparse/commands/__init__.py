"""Subcommands of the `pysparse` command line (listed in pysparse/cli.py)."""


def add_import_limit(p) -> None:
    """--max-import-elements, for the commands that import .tflite/.onnx files."""
    p.add_argument("--max-import-elements", type=int, default=None, metavar="N",
                   help="let the import build up to N elements beyond the file's bytes (for a trusted model "
                        "whose weights are made at load, e.g. by ONNX ConstantOfShape)")
