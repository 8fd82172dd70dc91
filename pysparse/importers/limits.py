"""What an import may build beyond the bytes of its file, and the checks every importer ends with.

Densified sparse weights and constants folded from declared shapes are the only tensors an
importer makes that its file does not hold byte for byte. Together they may hold at most
`ELEMENT_FLOOR + ELEMENTS_PER_BYTE * file size` elements (ElementBudget), so a small file
cannot make an import allocate gigabytes; past that, ResourceLimitError.
"""
from __future__ import annotations

from ..errors import ModelFormatError, ResourceLimitError
from ..ir import Graph

ELEMENT_FLOOR = 1 << 22
ELEMENTS_PER_BYTE = 4


class ElementBudget:
    def __init__(self, file_bytes: int, limit: int | None = None):
        """`limit` replaces the default bound, for a trusted file that builds its weights
        (ONNX ConstantOfShape weights, say) from a few bytes."""
        self.limit = ELEMENT_FLOOR + ELEMENTS_PER_BYTE * file_bytes if limit is None else int(limit)
        self.left = self.limit

    def check(self, elements: int, what: str) -> None:
        """Raises unless `elements` more fit (nothing is taken)."""
        if elements > self.left:
            raise ResourceLimitError(f"{what}: {elements} elements, more than the {self.left} left of the "
                                     f"{self.limit} an import of this file may build (for a trusted file, "
                                     "raise the bound: --max-import-elements N, or max_elements=N in Python)")

    def take(self, elements: int, what: str) -> None:
        self.check(elements, what)
        self.left -= elements


def check_names(graph: Graph) -> None:
    """Names the `.spnn` format can store: text, UTF-8 encodable, without zero bytes."""
    for kind, names in (("tensor", graph.tensors), ("node", [op.name for op in graph.ops])):
        for name in names:
            if not isinstance(name, str):
                raise ModelFormatError(f"a {kind} name is not text: {name!r}")
            if "\0" in name:
                raise ModelFormatError(f"{kind} name {name!r} holds a zero byte")
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise ModelFormatError(f"{kind} name {name!r} is not valid Unicode") from None


def finish(graph: Graph) -> Graph:
    """The checks an imported graph passes before anyone packs it: names, and every op's
    shapes as the writer checks them (a source model that lies about its shapes fails
    here, as a bad model)."""
    from ..format.writer import check_graph

    check_names(graph)
    try:
        check_graph(graph)
    except ValueError as e:
        raise ModelFormatError(f"the model's graph is inconsistent: {e}") from None
    return graph
