"""The graph IR: plain data, NCHW semantics, ops in execution order.

Importers produce it, passes rewrite it, the packer serialises it and the numpy reference
runs it. Op types and attributes are those of `pysparse.opset`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import opset


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    data: np.ndarray | None = None  # set for constants (weights, biases, slopes)

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Op:
    type: str  # a name from opset.OPS
    inputs: list[str]  # tensor names; "" marks an absent optional input
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""  # the source model's node name, for messages and per-layer tables

    def attr(self, key: str):
        """The attribute with its table default."""
        if key in self.attrs:
            return self.attrs[key]
        for a in opset.BY_NAME[self.type].attrs:
            if a.name == key:
                return a.default
        raise KeyError(f"{self.type} has no attribute {key!r}")


@dataclass
class Graph:
    tensors: dict[str, Tensor] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    # -- building ---------------------------------------------------------------
    def add_tensor(self, name: str, shape, data: np.ndarray | None = None) -> Tensor:
        if name in self.tensors:
            raise ValueError(f"tensor {name!r} defined twice")
        if data is not None:
            data = np.ascontiguousarray(data, dtype=np.float32)
            shape = data.shape
        t = Tensor(name, tuple(int(d) for d in shape), "float32", data)
        self.tensors[name] = t
        return t

    def add_constant(self, name: str, data: np.ndarray) -> str:
        self.add_tensor(name, data.shape, data)
        return name

    def unique_name(self, base: str) -> str:
        if base not in self.tensors:
            return base
        i = 1
        while f"{base}_{i}" in self.tensors:
            i += 1
        return f"{base}_{i}"

    def add_op(self, type: str, inputs, outputs, name: str = "", **attrs) -> Op:
        if type not in opset.BY_NAME:
            raise ValueError(f"unknown op type {type!r}")
        op = Op(type, list(inputs), list(outputs), dict(attrs), name)
        self.ops.append(op)
        return op

    # -- queries ----------------------------------------------------------------
    def producers(self) -> dict[str, Op]:
        return {o: op for op in self.ops for o in op.outputs}

    def consumers(self) -> dict[str, list[Op]]:
        out: dict[str, list[Op]] = {}
        for op in self.ops:
            for i in op.inputs:
                if i:
                    out.setdefault(i, []).append(op)
        return out

    def constant(self, name: str) -> np.ndarray | None:
        t = self.tensors.get(name)
        return None if t is None else t.data

    def remove_unused_tensors(self) -> None:
        used = set(self.inputs) | set(self.outputs)
        for op in self.ops:
            used.update(i for i in op.inputs if i)
            used.update(op.outputs)
        for name in list(self.tensors):
            if name not in used:
                del self.tensors[name]

    def validate(self) -> None:
        """Checks the invariants everything downstream relies on; raises ValueError."""
        defined = set(self.inputs) | {n for n, t in self.tensors.items() if t.is_constant}
        for n in list(self.inputs) + list(self.outputs):
            if n not in self.tensors:
                raise ValueError(f"graph input/output {n!r} has no tensor")
        for op in self.ops:
            d = opset.BY_NAME.get(op.type)
            if d is None:
                raise ValueError(f"op {op.name!r}: unknown type {op.type!r}")
            n_in = len(op.inputs)
            if n_in < d.min_inputs or (d.max_inputs >= 0 and n_in > d.max_inputs):
                raise ValueError(f"op {op.name!r} ({op.type}): {n_in} inputs")
            opset.attr_values(op.type, op.attrs)
            for i in op.inputs:
                if i and i not in defined:
                    raise ValueError(f"op {op.name!r} ({op.type}) reads {i!r} before it is computed")
            for o in op.outputs:
                if o not in self.tensors:
                    raise ValueError(f"op {op.name!r} writes unknown tensor {o!r}")
                if o in defined:
                    raise ValueError(f"tensor {o!r} is written twice")
                defined.add(o)
        for o in self.outputs:
            if o not in defined:
                raise ValueError(f"graph output {o!r} is never computed")

    def summary(self) -> str:
        lines = [f"Graph: {len(self.ops)} ops, inputs {self.inputs}, outputs {self.outputs}"]
        for op in self.ops:
            shapes = [self.tensors[i].shape if i else None for i in op.inputs]
            lines.append(f"  {op.type:<18} {op.name:<40} {shapes} -> {[self.tensors[o].shape for o in op.outputs]}")
        return "\n".join(lines)
