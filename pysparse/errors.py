"""Errors pysparse raises on bad input: each names what is wrong."""


class PysparseError(Exception):
    """Base class of the errors pysparse raises for bad input."""


class SpnnFormatError(PysparseError):
    """A `.spnn` file is truncated, corrupt, or not a `.spnn` file."""


class UnsupportedOpError(PysparseError):
    """A source model uses an op (or op variant) that pysparse cannot run."""

    def __init__(self, op: str, node: str = "", detail: str = ""):
        self.op, self.node, self.detail = op, node, detail
        msg = f"unsupported op {op}"
        if node:
            msg += f" (node {node!r})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class ModelFormatError(PysparseError):
    """A source model file (TFLite, ONNX) cannot be parsed."""


class ResourceLimitError(PysparseError):
    """A model asks for more memory than pysparse allows for a file of its size (a densified
    or folded tensor, an arena, a job on the server)."""


class InputShapeError(PysparseError):
    """An input given to a model does not have the shape the model expects."""
