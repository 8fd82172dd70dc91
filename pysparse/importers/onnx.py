"""ONNX -> graph IR.

A translator: each ONNX node becomes the IR op(s) with the same meaning. Shapes come from
ONNX shape inference (inputs must be static; the batch N >= 1 is part of the shape). Nodes whose inputs are all known at
import time (initializers, Constant, Shape of a static tensor, and whatever is computed from
those: the Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains that PyTorch emits for a
flatten) are evaluated here with onnx's reference evaluator and never reach the IR.

    graph = load_onnx("model.onnx", input_shapes={"input": (1, 3, 224, 224)})

BatchNormalization becomes a per-channel MUL then ADD with constants of shape [1, C, 1, 1];
the passes fold those into the preceding convolution.
"""
from __future__ import annotations

import os
from fractions import Fraction
from math import ceil, floor

import numpy as np

from .. import opset
from ..errors import InputShapeError, ModelFormatError, UnsupportedOpError
from ..ir import Graph
from .limits import ElementBudget, finish

# Ops that never make more elements than their inputs hold together: folded on constants
# even when shape inference has no shape for the output (others then are not folded).
_NEVER_GROW = {"Identity", "Reshape", "Transpose", "Cast", "CastLike", "Squeeze", "Unsqueeze", "Flatten",
               "Slice", "Split", "Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal", "Relu", "Sigmoid", "Tanh",
               "Floor", "Ceil", "Round", "Sign", "Not", "Erf", "Sin", "Cos", "Clip", "Softmax", "Shape", "Size",
               "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
               "GatherElements", "DequantizeLinear", "QuantizeLinear"}

MIN_OPSET = 13  # older models are converted up to this with onnx's version converter

# ONNX element types the IR accepts as activations.
_FLOAT_TYPES = {1: "float32"}


def load_onnx(model, input_shapes: dict | None = None, max_elements: int | None = None) -> Graph:
    """Import an ONNX model (a path, the file's bytes, or an onnx.ModelProto).

    input_shapes gives static shapes to inputs whose dims are symbolic, e.g.
    {"input": (1, 3, 224, 224)}. max_elements raises the bound on the elements the import
    may build from constants (importers.limits), for trusted files that need more.
    """
    import onnx

    proto = _parse(model)
    for node in proto.graph.node:  # before shape inference, which knows only ONNX's own ops
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(f"{node.domain}.{node.op_type}", node.name or node.output[0], "custom domain")
    source_opset = _default_opset(proto)
    proto = _upgrade(proto)
    _fix_input_shapes(proto, input_shapes or {})
    try:
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises several types here; all mean the model is inconsistent
        raise ModelFormatError(f"ONNX shape inference failed: {e}") from e
    try:
        return finish(_Importer(proto, max_elements, source_opset).run())
    except (KeyError, IndexError, TypeError, ValueError, ArithmeticError) as e:
        # The checker and shape inference let through some inconsistencies (an unknown
        # element type, an attribute of the wrong kind): report them as a bad model.
        raise ModelFormatError(f"cannot translate the ONNX model: {type(e).__name__}: {e}") from e


# -- parsing and normalising ----------------------------------------------------------------

def _parse(model):
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)  # never modify the caller's model
    elif isinstance(model, (bytes, bytearray, memoryview)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(model))
        except (DecodeError, RuntimeError, ValueError) as e:
            raise ModelFormatError(f"not an ONNX model: {e}") from e
    elif isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):
            raise FileNotFoundError(f"no such model file: {os.fspath(model)}")
        try:  # from a path, weights stored as external data next to the model load too
            proto = onnx.load_model(os.fspath(model), load_external_data=True)
        except (DecodeError, RuntimeError, ValueError, OSError) as e:
            raise ModelFormatError(f"{os.fspath(model)}: not an ONNX model: {e}") from e
    else:
        raise TypeError(f"load_onnx takes a path, bytes or onnx.ModelProto, not {type(model).__name__}")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise ModelFormatError("the model keeps weights in external data files: load it from its path")
    if not proto.HasField("graph") or not proto.opset_import or not proto.graph.output:
        raise ModelFormatError("not an ONNX model: no graph, outputs or opset")
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"invalid ONNX model: {e}") from e
    return proto


def _default_opset(proto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelFormatError("the model imports no version of the default ONNX op set")


def _upgrade(proto):
    import onnx.version_converter

    version = _default_opset(proto)
    if version >= MIN_OPSET:
        return proto
    try:
        return onnx.version_converter.convert_version(proto, MIN_OPSET)
    except Exception as e:
        raise ModelFormatError(f"ONNX opset {version} could not be converted to opset {MIN_OPSET}: {e}") from e


def _graph_inputs(proto):
    inits = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in inits]


def _fix_input_shapes(proto, input_shapes: dict) -> None:
    """Writes the given shapes into the model's inputs; every input must end up static."""
    inputs = _graph_inputs(proto)
    unknown = set(input_shapes) - {v.name for v in inputs}
    if unknown:
        raise InputShapeError(f"input_shapes names {sorted(unknown)}, but the model's inputs are {[v.name for v in inputs]}")
    for v in inputs:
        tt = v.type.tensor_type
        if tt.elem_type not in _FLOAT_TYPES:
            raise UnsupportedOpError("input", v.name, f"element type {tt.elem_type}; only float32 inputs are supported")
        dims = tt.shape.dim
        if v.name in input_shapes:
            given = tuple(int(d) for d in input_shapes[v.name])
            if len(dims) and len(given) != len(dims):
                raise InputShapeError(f"input {v.name!r} has rank {len(dims)}, input_shapes gives {given}")
            for d, g in zip(dims, given):
                if d.HasField("dim_value") and d.dim_value != g:
                    raise InputShapeError(f"input {v.name!r} has static shape {_dims(dims)}, input_shapes gives {given}")
            tt.shape.ClearField("dim")
            for g in given:
                tt.shape.dim.add().dim_value = g
            dims = tt.shape.dim
        if not tt.HasField("shape") or any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            raise InputShapeError(
                f"input {v.name!r} has dynamic shape {_dims(dims) if tt.HasField('shape') else '(unknown rank)'}; "
                f"give a static one, e.g. load_onnx(..., input_shapes={{{v.name!r}: (1, 3, 224, 224)}})")


def _dims(dims) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


# -- translation ----------------------------------------------------------------------------

class _Importer:
    def __init__(self, proto, max_elements: int | None = None, source_opset: int | None = None):
        from onnx import numpy_helper

        self.proto = proto
        self.opset = _default_opset(proto)
        self.source_opset = source_opset or self.opset  # before the version converter ran
        self.graph = Graph(metadata={"source_format": "onnx", "producer": proto.producer_name,
                                     "opset": self.opset})
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        self.budget = ElementBudget(proto.ByteSize(), max_elements)  # for constants folded from declared shapes
        self.shapes: dict[str, tuple[int, ...]] = {}
        for v in list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output):
            tt = v.type.tensor_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                self.shapes[v.name] = tuple(d.dim_value for d in tt.shape.dim)
        self.alias: dict[str, str] = {}  # outputs of Identity-like nodes -> their input
        self.const_in_graph: dict[str, str] = {}  # constant name -> IR tensor holding it
        # Names of the source model, so that names made up here never collide with one.
        self.read = {i for n in proto.graph.node for i in n.input}  # names some node reads
        self.taken = set(self.consts) | {o for n in proto.graph.node for o in n.output} | {
            v.name for v in proto.graph.input}

    def run(self) -> Graph:
        g = self.graph
        for v in _graph_inputs(self.proto):
            g.add_tensor(v.name, self.shapes[v.name])
            g.inputs.append(v.name)
        for node in self.proto.graph.node:
            self.node(node)
        for v in self.proto.graph.output:
            src = self.alias.get(v.name, v.name)
            if src in self.consts:
                raise UnsupportedOpError("output", v.name, "the output is a constant")
            if src != v.name:  # an Identity feeds the output: keep the model's output name
                g.add_tensor(v.name, g.tensors[src].shape)
                g.add_op("RESHAPE", [src], [v.name], name=v.name)
            g.outputs.append(v.name)
        g.remove_unused_tensors()
        g.validate()
        return g

    # -- helpers ------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name

    def name_of(self, node) -> str:
        return node.name or f"{node.op_type}:{node.output[0]}"

    def src(self, name: str) -> str:
        return self.alias.get(name, name)

    def is_const(self, name: str) -> bool:
        return self.src(name) in self.consts

    def const(self, name: str) -> np.ndarray:
        return self.consts[self.src(name)]

    def shape(self, name: str) -> tuple[int, ...]:
        name = self.src(name)
        if name in self.consts:
            return tuple(self.consts[name].shape)
        if name in self.graph.tensors:
            return self.graph.tensors[name].shape
        if name in self.shapes:
            return self.shapes[name]
        raise ModelFormatError(f"the shape of tensor {name!r} is not known statically")

    def tensor(self, name: str) -> str:
        """The IR tensor holding `name`: an activation, or a float constant added on first use."""
        name = self.src(name)
        if name not in self.consts:
            return name
        if name not in self.const_in_graph:
            data = self.consts[name]
            if not np.issubdtype(data.dtype, np.floating):
                raise UnsupportedOpError("constant", name, f"{data.dtype} constant used as a float operand")
            ir_name = name if name not in self.graph.tensors else self.fresh(name)
            self.graph.add_constant(ir_name, data.astype(np.float32))
            self.const_in_graph[name] = ir_name
        return self.const_in_graph[name]

    def add_const(self, base: str, data: np.ndarray) -> str:
        return self.graph.add_constant(self.fresh(base), np.asarray(data, dtype=np.float32))

    def inferred(self, name: str) -> tuple[int, ...]:
        """The shape ONNX shape inference found for an op output."""
        if name not in self.shapes:
            raise ModelFormatError(f"the shape of tensor {name!r} is not known statically")
        return self.shapes[name]

    def out(self, name: str, shape=None) -> str:
        """Declares an op output tensor with its inferred shape (or the one computed here)."""
        self.graph.add_tensor(name, self.inferred(name) if shape is None else shape)
        return name

    def temp(self, base: str, shape) -> str:
        name = self.fresh(base)
        self.graph.add_tensor(name, shape)
        return name

    def emit(self, type: str, node, inputs, outputs, **attrs):
        return self.graph.add_op(type, inputs, outputs, name=node.name or node.output[0], **attrs)

    def attrs(self, node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def need_const(self, node, index: int, what: str) -> np.ndarray:
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            raise UnsupportedOpError(node.op_type, self.name_of(node), f"{what} is missing")
        if not self.is_const(name):
            raise UnsupportedOpError(node.op_type, self.name_of(node), f"{what} must be a constant")
        return self.const(name)

    def opt_const(self, node, index: int, what: str):
        if index >= len(node.input) or not node.input[index]:
            return None
        return self.need_const(node, index, what)

    def unsupported(self, node, detail: str):
        return UnsupportedOpError(node.op_type, self.name_of(node), detail)

    # -- dispatch -----------------------------------------------------------------------
    def node(self, node) -> None:
        if node.op_type == "Shape" and node.input[0] and not self.is_const(node.input[0]):
            self.consts[node.output[0]] = self.shape_of(node)
            return
        inputs = [i for i in node.input if i]
        if all(self.is_const(i) for i in inputs) and node.op_type not in _NEVER_FOLD:
            self.fold(node)
            return
        handler = getattr(self, "op_" + node.op_type, None)
        if handler is None:
            raise UnsupportedOpError(node.op_type, self.name_of(node))
        handler(node)

    def shape_of(self, node) -> np.ndarray:
        shape = np.array(self.shape(node.input[0]), dtype=np.int64)
        a = self.attrs(node)
        rank = len(shape)
        start, end = a.get("start", 0), a.get("end", rank)
        return shape[slice(start, end)]

    def fold(self, node) -> None:
        """Evaluates a node whose inputs are all constants, at this model's opset."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        feeds = {i: self.const(i) for i in node.input if i}
        for o in node.output:
            if o:
                self.budget.check(self._fold_size(node, o, feeds), f"{node.op_type} {self.name_of(node)!r}")
        graph = helper.make_graph(
            [node], "fold",
            [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for n, v in feeds.items()],
            [helper.make_empty_tensor_value_info(o) for o in node.output if o])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        try:
            results = ReferenceEvaluator(model).run(None, feeds)
        except Exception as e:
            raise UnsupportedOpError(node.op_type, self.name_of(node), f"could not evaluate on constants: {e}") from e
        for name, value in zip([o for o in node.output if o], results):
            self.consts[name] = np.asarray(value)
            self.budget.take(self.consts[name].size, f"{node.op_type} {self.name_of(node)!r}")

    def _fold_size(self, node, output: str, feeds: dict) -> int:
        """Elements of a folded output, known before it is computed: from shape inference,
        or from the inputs of the ops that build a tensor from a declared shape. An op whose
        output may be larger than its inputs and whose size is unknown is not folded."""
        if output in self.shapes:
            return int(np.prod(self.shapes[output], dtype=object))
        ins = [feeds.get(i) for i in node.input]
        t = node.op_type
        if t == "ConstantOfShape":
            return int(np.prod([int(v) for v in ins[0].reshape(-1)], dtype=object))
        if t == "Expand":
            dims = np.broadcast_shapes(tuple(ins[0].shape), tuple(int(v) for v in ins[1].reshape(-1)))
            return int(np.prod(dims, dtype=object))
        if t == "Tile":
            return ins[0].size * int(np.prod([int(v) for v in ins[1].reshape(-1)], dtype=object))
        if t == "Range":
            start, limit, delta = (float(v.reshape(-1)[0]) for v in ins[:3])
            return max(0, int(np.ceil((limit - start) / delta))) if delta else 0
        if t not in _NEVER_GROW:
            raise self.unsupported(node, "folding it on constants needs its output shape, which is not known")
        return sum(v.size for v in ins if v is not None)

    # -- ops ----------------------------------------------------------------------------
    def op_Identity(self, node):
        self.alias[node.output[0]] = self.src(node.input[0])

    def op_Dropout(self, node):
        # Inference: the identity, whatever the ratio. A declared mask output is fine as long
        # as nothing reads it (it would be all true).
        mask = node.output[1] if len(node.output) > 1 else ""
        if mask and (mask in self.read or mask in {v.name for v in self.proto.graph.output}):
            raise self.unsupported(node, "the mask output is read")
        training = self.opt_const(node, 2, "training_mode")
        if training is not None and bool(training.reshape(-1)[0]):
            raise self.unsupported(node, "training_mode=1")
        self.op_Identity(node)

    def op_Cast(self, node):
        to = self.attrs(node)["to"]
        if to not in _FLOAT_TYPES:
            raise self.unsupported(node, f"cast of a run-time tensor to element type {to}")
        self.op_Identity(node)

    def lift_1d(self, node, a: dict):
        """A 1-D convolution or pooling as its 2-D form over a [N, C, 1, L] view: the input
        reshaped, the attributes given a leading axis of size 1, the output reshaped back.
        Returns (the 2-D input, the 2-D attributes, the 2-D output, shapes (in, out))."""
        x, y = node.input[0], node.output[0]
        xs, ys = self.shape(x), self.inferred(y)
        a2 = dict(a)
        for key, one in (("strides", 1), ("dilations", 1)):
            if key in a:
                a2[key] = [one] + list(a[key])
        if "pads" in a:
            a2["pads"] = [0, a["pads"][0], 0, a["pads"][1]]
        if "kernel_shape" in a:
            a2["kernel_shape"] = [1] + list(a["kernel_shape"])
        x2 = self.temp(x + "_2d", (xs[0], xs[1], 1, xs[2]))
        self.emit("RESHAPE", node, [self.tensor(x)], [x2])
        y2 = self.temp(y + "_2d", (ys[0], ys[1], 1, ys[2]))
        return x2, a2, y2, ((1, xs[2]), (1, ys[2]))

    # -- 3-D convolution and pooling as 2-D ops over depth slices -------------------------
    # [N, C, D, H, W] is viewed as N*D images [C, H, W] (depth padded first); a 2-D op runs
    # on them all, per depth tap of the kernel where the weights differ; the taps' depth
    # slices (SLICE with the depth stride) are combined (SUM, MAX) and the result is
    # turned back to [N, C', OD, OH, OW].

    def attrs_3d(self, node, a: dict):
        """(kernel, strides, dilations, pads begin, pads end) of a 3-D conv or pool node."""
        if _str(a.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID") or a.get("ceil_mode", 0):
            raise self.unsupported(node, "3-D with auto_pad SAME_* or ceil_mode; give explicit pads")
        p = list(a.get("pads", [0] * 6)) if _str(a.get("auto_pad", "NOTSET")) == "NOTSET" else [0] * 6
        return a.get("strides", [1, 1, 1]), a.get("dilations", [1, 1, 1]), p[:3], p[3:]

    def depth_planes(self, node, x: str, pad_d: tuple, value: float) -> str:
        """x [N, C, D, H, W] as [N * Dp, C, H, W], depth padded with `value`."""
        n, c, d, h, w = self.shape(x)
        cur = self.temp(x + "_4d", (n, c, d, h * w))
        self.emit("RESHAPE", node, [self.tensor(x)], [cur])
        if any(pad_d):
            padded = self.temp(x + "_depth_padded", (n, c, d + sum(pad_d), h * w))
            self.emit("PAD", node, [cur], [padded], pad2_begin=pad_d[0], pad2_end=pad_d[1], value=value)
            cur, d = padded, d + sum(pad_d)
        moved = self.temp(x + "_depth_major", (n, d, c, h * w))
        self.emit("TRANSPOSE", node, [cur], [moved], perm1=2, perm2=1)
        planes = self.temp(x + "_planes", (n * d, c, h, w))
        self.emit("RESHAPE", node, [moved], [planes])
        return planes

    def depth_tap(self, node, planes: str, k: int, dd: int, sd: int, od: int) -> str:
        """The depth slices tap k of the kernel reads, from 2-D results [N * Dp, C', OH, OW]:
        [N, OD, C' * OH * OW]."""
        n = self.inferred(node.output[0])[0]
        nd, c, oh, ow = self.shape(planes)
        rows = self.temp(f"{planes}_rows{k}", (n, nd // n, c * oh * ow))
        self.emit("RESHAPE", node, [planes], [rows])
        tap = self.temp(f"{planes}_tap{k}", (n, od, c * oh * ow))
        self.emit("SLICE", node, [rows], [tap], axis=1, begin=k * dd, end=k * dd + (od - 1) * sd + 1, step=sd)
        return tap

    def from_depth(self, node, t: str) -> None:
        """[N, OD, C' * OH * OW] back to the node's output [N, C', OD, OH, OW]."""
        y = node.output[0]
        n, c, od, oh, ow = self.inferred(y)
        split = self.temp(y + "_depth_major", (n, od, c, oh * ow))
        self.emit("RESHAPE", node, [t], [split])
        moved = self.temp(y + "_channel_major", (n, c, od, oh * ow))
        self.emit("TRANSPOSE", node, [split], [moved], perm1=2, perm2=1)
        self.emit("RESHAPE", node, [moved], [self.out(y)])

    def combine(self, node, kind: str, taps: list) -> str:
        """The taps added (SUM) or their maximum (a MAX chain)."""
        if len(taps) == 1:
            return taps[0]
        out = self.temp(node.output[0] + f"_{kind.lower()}", self.shape(taps[0]))
        if kind == "SUM":
            self.emit("SUM", node, taps, [out])
            return out
        cur = taps[0]
        for k, t in enumerate(taps[1:], 1):
            nxt = out if k == len(taps) - 1 else self.temp(f"{node.output[0]}_max{k}", self.shape(t))
            self.emit("MAX", node, [cur, t], [nxt])
            cur = nxt
        return out

    def conv_3d(self, node, a: dict, w: np.ndarray):
        s, d, p0, p1 = self.attrs_3d(node, a)
        b = self.opt_const(node, 2, "the bias")
        od, oh, ow = self.inferred(node.output[0])[2:]
        planes = self.depth_planes(node, node.input[0], (p0[0], p1[0]), 0.0)
        taps = []
        for k in range(w.shape[2]):
            inputs = [planes, self.add_const(f"{node.input[1]}_depth{k}", w[:, :, k])]
            if k == 0 and b is not None:
                inputs.append(self.tensor(node.input[2]))
            out = self.temp(f"{node.output[0]}_conv{k}", (self.shape(planes)[0], w.shape[0], oh, ow))
            self.emit("CONV2D", node, inputs, [out], stride_h=s[1], stride_w=s[2], dilation_h=d[1],
                      dilation_w=d[2], groups=a.get("group", 1), pad_top=p0[1], pad_left=p0[2],
                      pad_bottom=p1[1], pad_right=p1[2])
            taps.append(self.depth_tap(node, out, k, d[0], s[0], od))
        self.from_depth(node, self.combine(node, "SUM", taps))

    def pool_3d(self, node, a: dict, is_max: bool):
        if any(v != 1 for v in a.get("dilations", [1, 1, 1])):
            raise self.unsupported(node, f"dilations={a['dilations']}; only 1 is supported")
        s, _, p0, p1 = self.attrs_3d(node, a)
        k = a["kernel_shape"]
        depth = self.shape(node.input[0])[2]
        od, oh, ow = self.inferred(node.output[0])[2:]
        planes = self.depth_planes(node, node.input[0], (p0[0], p1[0]), float("-inf") if is_max else 0.0)
        pooled = self.temp(node.output[0] + "_pooled", (self.shape(planes)[0], self.shape(planes)[1], oh, ow))
        extra = {} if is_max else {"count_include_pad": a.get("count_include_pad", 0)}
        self.emit("MAX_POOL2D" if is_max else "AVG_POOL2D", node, [planes], [pooled], kernel_h=k[1],
                  kernel_w=k[2], stride_h=s[1], stride_w=s[2], pad_top=p0[1], pad_left=p0[2],
                  pad_bottom=p1[1], pad_right=p1[2], **extra)
        taps = [self.depth_tap(node, pooled, j, 1, s[0], od) for j in range(k[0])]
        out = self.combine(node, "MAX" if is_max else "SUM", taps)
        if not is_max:  # the mean over the depth taps inside the input (or all, with count_include_pad)
            count = np.array([k[0] if a.get("count_include_pad", 0) else
                              sum(0 <= o * s[0] + j - p0[0] < depth for j in range(k[0])) for o in range(od)])
            mean = self.temp(node.output[0] + "_mean", self.shape(out))
            self.emit("MUL", node, [out, self.add_const(node.output[0] + "_depth_count",
                                                        (1.0 / count).reshape(1, od, 1))], [mean])
            out = mean
        self.from_depth(node, out)

    def op_Conv(self, node):
        a = self.attrs(node)
        w = self.need_const(node, 1, "the weight")
        if w.ndim not in (3, 4, 5):
            raise self.unsupported(node, f"{w.ndim - 2}-D convolution; only 1-D to 3-D are supported")
        b = self.opt_const(node, 2, "the bias")
        x, y = node.input[0], node.output[0]
        if w.ndim == 5:
            self.conv_3d(node, a, w)
            return
        if w.ndim == 3:  # 1-D: a 2-D convolution with a 1 x K kernel
            x_in, a, y_out, (in_hw, out_hw) = self.lift_1d(node, a)
            weight = self.add_const(node.input[1] + "_2d", w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]))
        else:
            x_in, y_out = self.tensor(x), self.out(y)
            in_hw, out_hw = self.shape(x)[2:], self.inferred(y)[2:]
            weight = self.tensor(node.input[1])
        k = (1, w.shape[2]) if w.ndim == 3 else w.shape[2:]
        s = a.get("strides", [1, 1])
        d = a.get("dilations", [1, 1])
        pads = _pads(self, node, a, in_hw, out_hw, k, s, d)
        inputs = [x_in, weight]
        if b is not None:
            inputs.append(self.tensor(node.input[2]))
        self.emit("CONV2D", node, inputs, [y_out], stride_h=s[0], stride_w=s[1],
                  dilation_h=d[0], dilation_w=d[1], groups=a.get("group", 1), **pads)
        if w.ndim == 3:
            self.emit("RESHAPE", node, [y_out], [self.out(y)])

    def op_ConvTranspose(self, node):
        a = self.attrs(node)
        w = self.need_const(node, 1, "the weight")
        if w.ndim != 4:
            raise self.unsupported(node, f"{w.ndim - 2}-D transposed convolution; only 2-D is supported")
        if a.get("group", 1) != 1:
            raise self.unsupported(node, f"group={a['group']}; only group=1 is supported")
        if any(v != 1 for v in a.get("dilations", [1, 1])):
            raise self.unsupported(node, f"dilations={a['dilations']}; only 1 is supported")
        auto_pad = _str(a.get("auto_pad", "NOTSET"))
        if auto_pad not in ("NOTSET", "VALID") or "output_shape" in a:
            raise self.unsupported(node, "auto_pad SAME_* or output_shape; give explicit pads")
        b = self.opt_const(node, 2, "the bias")
        s = a.get("strides", [1, 1])
        p = a.get("pads", [0, 0, 0, 0]) if auto_pad == "NOTSET" else [0, 0, 0, 0]
        op_ = a.get("output_padding", [0, 0])
        # The output size is the output tensor's: out = s*(in-1) + k - pad_begin - pad_end, so
        # output_padding shows as a smaller end pad. Past the end pad, the extra rows and
        # columns hold the bias alone: zeros padded on, then the bias added.
        extra = [max(0, op_[0] - p[2]), max(0, op_[1] - p[3])]
        inputs = [self.tensor(node.input[0]), self.tensor(node.input[1])]
        if b is not None and not any(extra):
            inputs.append(self.tensor(node.input[2]))
        y = node.output[0]
        ys = self.inferred(y)
        deconv = self.out(y) if not any(extra) else self.temp(y + "_deconv", ys[:2] + (ys[2] - extra[0],
                                                                                          ys[3] - extra[1]))
        self.emit("CONV_TRANSPOSE2D", node, inputs, [deconv], stride_h=s[0], stride_w=s[1],
                  pad_top=p[0], pad_left=p[1], pad_bottom=max(0, p[2] - op_[0]), pad_right=max(0, p[3] - op_[1]))
        if any(extra):
            padded = self.out(y) if b is None else self.temp(y + "_padded", ys)
            self.emit("PAD", node, [deconv], [padded], pad2_end=extra[0], pad3_end=extra[1])
            if b is not None:
                self.emit("ADD", node, [padded, self.add_const(y + "_bias", b.reshape(1, -1, 1, 1))], [self.out(y)])

    def run_time_gemm(self, node, a: dict):
        """Gemm whose B is computed at run time: MATMUL of the (transposed) operands, then
        alpha, beta and C as elementwise ops."""
        ops = []
        for i, key in ((0, "transA"), (1, "transB")):
            name = self.tensor(node.input[i])
            if len(self.shape(name)) != 2:
                raise self.unsupported(node, "operands must be 2-D")
            if a.get(key, 0):
                s = self.shape(name)
                t = self.temp(name + "_transposed", (s[1], s[0]))
                self.emit("TRANSPOSE", node, [name], [t], perm0=1, perm1=0)
                name = t
            ops.append(name)
        y = node.output[0]
        ys = self.inferred(y)
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        c_name = node.input[2] if len(node.input) > 2 and beta != 0.0 else ""
        product = self.out(y) if alpha == 1.0 and not c_name else self.temp(y + "_product", ys)
        self.emit("MATMUL", node, ops, [product])
        if alpha != 1.0:
            scaled = self.out(y) if not c_name else self.temp(y + "_alpha_product", ys)
            self.emit("MUL", node, [product, self.add_const(y + "_alpha", np.array([alpha]))], [scaled])
            product = scaled
        if c_name:
            c = self.tensor(c_name)
            if beta != 1.0:
                c_scaled = self.temp(c_name + "_scaled", self.shape(c))
                self.emit("MUL", node, [c, self.add_const(c_name + "_beta", np.array([beta]))], [c_scaled])
                c = c_scaled
            self.emit("ADD", node, [product, c], [self.out(y)])

    def op_Gemm(self, node):
        a = self.attrs(node)
        if not self.is_const(node.input[1]):
            self.run_time_gemm(node, a)
            return
        bw = self.need_const(node, 1, "B (the weight)")
        alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
        if not (np.isfinite(alpha) and np.isfinite(beta)):
            raise ModelFormatError(f"Gemm {self.name_of(node)!r}: alpha={alpha}, beta={beta}")
        with np.errstate(all="ignore"):  # inf weights stay inf, as in the source model
            w = (bw if a.get("transB", 0) else bw.T) * alpha  # [M, K]
        x = self.tensor(node.input[0])
        if a.get("transA", 0):
            k_n = self.shape(x)
            xt = self.temp(x + "_transposed", (k_n[1], k_n[0]))
            self.emit("TRANSPOSE", node, [x], [xt], perm0=1, perm1=0)
            x = xt
        y = node.output[0]
        m = w.shape[0]
        c_name = node.input[2] if len(node.input) > 2 else ""
        inputs = [x, self.add_const(node.input[1] + "_fc", w)]
        if not c_name:
            self.emit("FULLY_CONNECTED", node, inputs, [self.out(y)])
            return
        if self.is_const(c_name):
            c = self.const(c_name).astype(np.float32) * beta
            if c.size in (1, m) and c.ndim <= 2 and (c.ndim < 2 or c.shape[0] == 1):
                inputs.append(self.add_const(c_name + "_bias", np.broadcast_to(c.reshape(-1), (m,))))
                self.emit("FULLY_CONNECTED", node, inputs, [self.out(y)])
                return
            c_in = self.add_const(c_name + "_scaled", c)
        else:
            c_in = self.tensor(c_name)
            if beta != 1.0:
                scaled = self.temp(c_name + "_scaled", self.shape(c_name))
                self.emit("MUL", node, [c_in, self.add_const(c_name + "_beta", np.array(beta))], [scaled])
                c_in = scaled
        fc = self.temp(y + "_fc", self.inferred(y))
        self.emit("FULLY_CONNECTED", node, inputs, [fc])
        self.emit("ADD", node, [fc, c_in], [self.out(y)])

    def op_MatMul(self, node):
        if not self.is_const(node.input[1]):
            if len(self.shape(node.input[0])) != 2 or len(self.shape(node.input[1])) != 2:
                raise self.unsupported(node, "a product of run-time tensors must be of 2-D operands")
            self.emit("MATMUL", node, [self.tensor(node.input[0]), self.tensor(node.input[1])],
                      [self.out(node.output[0])])
            return
        wb = self.const(node.input[1])
        if wb.ndim != 2:
            raise self.unsupported(node, f"a {wb.ndim}-D weight; only 2-D is supported")
        x, y = self.tensor(node.input[0]), node.output[0]
        xs = self.shape(x)
        if len(xs) < 2:
            raise self.unsupported(node, "a 1-D first operand")
        w = self.add_const(node.input[1] + "_fc", wb.T)
        if len(xs) == 2:
            self.emit("FULLY_CONNECTED", node, [x, w], [self.out(y)])
            return
        rows = int(np.prod(xs[:-1]))
        x2 = self.temp(x + "_2d", (rows, xs[-1]))
        y2 = self.temp(y + "_2d", (rows, wb.shape[1]))
        self.emit("RESHAPE", node, [x], [x2])
        self.emit("FULLY_CONNECTED", node, [x2, w], [y2])
        self.emit("RESHAPE", node, [y2], [self.out(y)])

    def op_BatchNormalization(self, node):
        a = self.attrs(node)
        if a.get("training_mode", 0) or any(o for o in node.output[1:]):
            raise self.unsupported(node, "training mode")
        scale, bias, mean, var = (self.need_const(node, i, w) for i, w in
                                  ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        eps = a.get("epsilon", 1e-5)
        x, y = self.tensor(node.input[0]), node.output[0]
        xs = self.shape(x)
        with np.errstate(all="ignore"):
            mul = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
            add = bias.astype(np.float64) - mean.astype(np.float64) * mul
        if not (np.all(np.isfinite(mul)) and np.all(np.isfinite(add))):
            raise ModelFormatError(f"BatchNormalization {self.name_of(node)!r}: parameters give a non-finite "
                                   "scale or shift (variance + epsilon <= 0?)")
        bshape = (1, -1) + (1,) * (len(xs) - 2)
        scaled = self.temp(y + "_bn_scaled", xs)
        self.emit("MUL", node, [x, self.add_const(y + "_bn_scale", mul.reshape(bshape))], [scaled])
        self.emit("ADD", node, [scaled, self.add_const(y + "_bn_shift", add.reshape(bshape))], [self.out(y)])

    def unary(self, type: str, node, **attrs):
        self.emit(type, node, [self.tensor(node.input[0])], [self.out(node.output[0])], **attrs)

    def op_Relu(self, node):
        self.unary("RELU", node)

    def op_Sigmoid(self, node):
        self.unary("SIGMOID", node)

    def op_Tanh(self, node):
        self.unary("TANH", node)

    def op_HardSwish(self, node):
        self.unary("HARD_SWISH", node)

    def op_Abs(self, node):
        self.unary("ABS", node)

    def op_Exp(self, node):
        self.unary("EXP", node)

    def op_Sqrt(self, node):
        self.unary("SQRT", node)

    def op_Softplus(self, node):
        self.unary("SOFTPLUS", node)

    def op_Elu(self, node):
        self.unary("ELU", node, alpha=self.attrs(node).get("alpha", 1.0))

    def op_Selu(self, node):
        a = self.attrs(node)
        self.unary("ELU", node, alpha=a.get("alpha", 1.67326319217681884765625),
                   scale=a.get("gamma", 1.05070102214813232421875))

    def op_LogSoftmax(self, node):
        rank = len(self.shape(node.input[0]))
        self.unary("LOG_SOFTMAX", node, axis=self.attrs(node).get("axis", -1) % rank)

    def op_HardSigmoid(self, node):
        a = self.attrs(node)
        self.unary("HARD_SIGMOID", node, alpha=a.get("alpha", 0.2), beta=a.get("beta", 0.5))

    def op_LeakyRelu(self, node):
        self.unary("LEAKY_RELU", node, alpha=self.attrs(node).get("alpha", 0.01))

    def op_Clip(self, node):
        lo = self.opt_const(node, 1, "min")
        hi = self.opt_const(node, 2, "max")
        lo = float("-inf") if lo is None else float(lo)
        hi = float("inf") if hi is None else float(hi)
        self.unary("CLIP", node, min=lo, max=hi)

    def op_PRelu(self, node):
        slope = self.need_const(node, 1, "the slope")
        xs = self.shape(node.input[0])
        if self.source_opset < 7 and slope.ndim == 1 and len(xs) > 2 and slope.size == xs[1] > 1:
            # before opset 7 a slope of C values is per channel (the converter keeps it 1-D)
            s_in = self.add_const(node.input[1] + "_per_channel", slope.reshape((-1,) + (1,) * (len(xs) - 2)))
        else:
            s_in = self.tensor(node.input[1])
        self.emit("PRELU", node, [self.tensor(node.input[0]), s_in], [self.out(node.output[0])])

    def binary(self, type: str, node, commutative: bool):
        a, b = node.input[0], node.input[1]
        if commutative and self.is_const(a) and not self.is_const(b):
            a, b = b, a  # the run-time tensor first, the constant second
        self.emit(type, node, [self.tensor(a), self.tensor(b)], [self.out(node.output[0])])

    def op_Add(self, node):
        self.binary("ADD", node, True)

    def op_Sum(self, node):
        ins = [i for i in node.input if i]
        y = node.output[0]
        if len(ins) == 1:
            self.op_Identity(node)
            return
        if all(self.shape(i) == self.inferred(y) for i in ins):
            self.emit("SUM", node, [self.tensor(i) for i in ins], [self.out(y)])
        else:  # broadcasting
            self.chain("ADD", node)

    def chain(self, type: str, node):
        """A variadic elementwise node (Max, Min, Sum) as a chain of binary ops, left to right."""
        ins = [i for i in node.input if i]
        y = node.output[0]
        if len(ins) == 1:
            self.op_Identity(node)
            return
        acc = self.tensor(ins[0])
        for k, i in enumerate(ins[1:], 1):
            last = k == len(ins) - 1
            shape = self.inferred(y) if last else np.broadcast_shapes(self.shape(acc), self.shape(i))
            nxt = self.out(y) if last else self.temp(f"{y}_partial{k}", shape)
            self.emit(type, node, [acc, self.tensor(i)], [nxt])
            acc = nxt

    def op_Max(self, node):
        self.chain("MAX", node)

    def op_Min(self, node):
        self.chain("MIN", node)

    def op_Pow(self, node):
        self.binary("POW", node, False)

    def op_Tile(self, node):
        """Copies along each axis: a CONCAT of the input with itself per repeated axis."""
        repeats = [int(v) for v in self.need_const(node, 1, "repeats").reshape(-1)]
        cur, shape = self.tensor(node.input[0]), list(self.shape(node.input[0]))
        axes = [ax for ax, r in enumerate(repeats) if r != 1]
        if any(r < 1 for r in repeats):
            raise self.unsupported(node, f"repeats={repeats}")
        if not axes:
            self.op_Identity(node)
            return
        for j, ax in enumerate(axes):
            shape[ax] *= repeats[ax]
            nxt = self.out(node.output[0]) if j == len(axes) - 1 else self.temp(f"{node.output[0]}_tile{ax}",
                                                                                  tuple(shape))
            self.emit("CONCAT", node, [cur] * repeats[ax], [nxt], axis=ax)
            cur = nxt

    def slices(self, node, x: str, y: str, ranges: dict):
        """SLICE ops along each axis of `ranges` (axis -> (begin, end, step), normalised),
        in axis order, the last writing `y`; the identity when nothing is cut."""
        shape = list(self.shape(x))
        cut = {ax: r for ax, r in sorted(ranges.items()) if r != (0, shape[ax], 1)}
        if not cut:
            self.alias[y] = self.src(x)
            return
        cur = self.tensor(x)
        for j, (ax, (b, e, st)) in enumerate(cut.items()):
            shape[ax] = len(range(b, e, st))
            if shape[ax] == 0:
                raise self.unsupported(node, "an empty slice")
            nxt = self.out(y, tuple(shape)) if j == len(cut) - 1 else self.temp(f"{y}_axis{ax}", tuple(shape))
            self.emit("SLICE", node, [cur], [nxt], axis=ax, begin=b, end=e, step=st)
            cur = nxt

    def op_Slice(self, node):
        xs = self.shape(node.input[0])
        starts = self.need_const(node, 1, "starts").reshape(-1)
        ends = self.need_const(node, 2, "ends").reshape(-1)
        axes = self.opt_const(node, 3, "axes")
        steps = self.opt_const(node, 4, "steps")
        axes = range(len(starts)) if axes is None else axes.reshape(-1)
        steps = [1] * len(starts) if steps is None else steps.reshape(-1)
        ranges = {}
        for ax, b, e, st in zip(axes, starts, ends, steps):
            ax = int(ax) % len(xs)
            if int(st) < 1:
                raise self.unsupported(node, f"step {int(st)}; only positive steps are supported")
            # python slice semantics clamp out-of-range starts and ends as ONNX does
            b, e, st = slice(int(max(min(b, 2**62), -2**62)), int(max(min(e, 2**62), -2**62)), int(st)).indices(xs[ax])
            ranges[ax] = (b, max(e, b), st)
        self.slices(node, node.input[0], node.output[0], ranges)

    def op_Split(self, node):
        a = self.attrs(node)
        xs = self.shape(node.input[0])
        axis = a.get("axis", 0) % len(xs)
        split = self.opt_const(node, 1, "split")
        if split is None and "split" in a:
            split = np.array(a["split"])
        outs = list(node.output)
        if split is None:  # equal parts (the last smaller with num_outputs)
            size = -(-xs[axis] // len(outs))
            split = [min(size, xs[axis] - k * size) for k in range(len(outs))]
        begin = 0
        for name, n in zip(outs, [int(v) for v in np.reshape(split, -1)]):
            if name:
                self.slices(node, node.input[0], name, {axis: (begin, begin + n, 1)})
            begin += n

    def op_InstanceNormalization(self, node):
        """Per image and channel: (x - mean) / sqrt(variance + epsilon) * scale + bias."""
        scale = self.need_const(node, 1, "scale")
        bias = self.need_const(node, 2, "B")
        eps = self.attrs(node).get("epsilon", 1e-5)
        x, y = self.tensor(node.input[0]), node.output[0]
        xs = self.shape(x)
        if len(xs) < 3:
            raise self.unsupported(node, f"{len(xs)}-D input")
        mask = sum(1 << i for i in range(2, len(xs)))
        stat = (xs[0], xs[1]) + (1,) * (len(xs) - 2)
        cshape = (1, -1) + (1,) * (len(xs) - 2)
        mean = self.temp(y + "_mean", stat)
        self.emit("MEAN", node, [x], [mean], axes_mask=mask, keepdims=1)
        centred = self.temp(y + "_centred", xs)
        self.emit("SUB", node, [x, mean], [centred])
        square = self.temp(y + "_square", xs)
        self.emit("MUL", node, [centred, centred], [square])
        var = self.temp(y + "_var", stat)
        self.emit("MEAN", node, [square], [var], axes_mask=mask, keepdims=1)
        var_eps = self.temp(y + "_var_eps", stat)
        self.emit("ADD", node, [var, self.add_const(y + "_eps", np.array([eps]))], [var_eps])
        std = self.temp(y + "_std", stat)
        self.emit("SQRT", node, [var_eps], [std])
        normed = self.temp(y + "_normed", xs)
        self.emit("DIV", node, [centred, std], [normed])
        scaled = self.temp(y + "_scaled", xs)
        self.emit("MUL", node, [normed, self.add_const(y + "_scale", scale.reshape(cshape))], [scaled])
        self.emit("ADD", node, [scaled, self.add_const(y + "_bias", bias.reshape(cshape))], [self.out(y)])

    def op_LRN(self, node):
        a = self.attrs(node)
        if len(self.shape(node.input[0])) != 4:
            raise self.unsupported(node, f"{len(self.shape(node.input[0]))}-D input; only 4-D is supported")
        self.unary("LRN", node, size=a["size"], alpha=a.get("alpha", 1e-4), beta=a.get("beta", 0.75),
                   bias=a.get("bias", 1.0))

    def op_Mul(self, node):
        self.binary("MUL", node, True)

    def op_Sub(self, node):
        self.binary("SUB", node, False)

    def op_Div(self, node):
        self.binary("DIV", node, False)

    def op_GlobalAveragePool(self, node):
        rank = len(self.shape(node.input[0]))
        mask = sum(1 << i for i in range(2, rank))
        self.unary("MEAN", node, axes_mask=mask, keepdims=1)

    def op_GlobalMaxPool(self, node):
        xs = self.shape(node.input[0])
        if len(xs) != 4:
            raise self.unsupported(node, f"{len(xs)}-D input; only 4-D is supported")
        self.unary("MAX_POOL2D", node, kernel_h=xs[2], kernel_w=xs[3])

    def reduce_mask(self, node):
        """The axes_mask of a Reduce* node, or None when it reduces nothing (the identity)."""
        a = self.attrs(node)
        rank = len(self.shape(node.input[0]))
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.need_const(node, 1, "axes").tolist()
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return None
            axes = list(range(rank))
        return sum(1 << (ax % rank) for ax in axes)

    def op_ReduceMean(self, node):
        mask = self.reduce_mask(node)
        if mask is None:
            self.op_Identity(node)
            return
        self.unary("MEAN", node, axes_mask=mask, keepdims=self.attrs(node).get("keepdims", 1))

    def op_ReduceSum(self, node):
        """The mean times the count of reduced elements."""
        mask = self.reduce_mask(node)
        if mask is None:
            self.op_Identity(node)
            return
        xs, y = self.shape(node.input[0]), node.output[0]
        count = int(np.prod([d for i, d in enumerate(xs) if mask >> i & 1]))
        mean = self.temp(y + "_mean", self.inferred(y))
        self.emit("MEAN", node, [self.tensor(node.input[0])], [mean], axes_mask=mask,
                  keepdims=self.attrs(node).get("keepdims", 1))
        self.emit("MUL", node, [mean, self.add_const(y + "_count", np.array([count]))], [self.out(y)])

    def op_Neg(self, node):
        self.emit("MUL", node, [self.tensor(node.input[0]), self.add_const(node.output[0] + "_minus_one",
                                                                            np.array([-1.0]))],
                  [self.out(node.output[0])])

    def pool(self, type: str, node, **extra):
        a = self.attrs(node)
        if len(node.output) > 1 and node.output[1]:
            raise self.unsupported(node, "the indices output is used")
        k = a["kernel_shape"]
        if len(k) not in (1, 2):
            raise self.unsupported(node, f"{len(k)}-D pooling; only 1-D and 2-D are supported")
        d = a.get("dilations", [1] * len(k))
        s = a.get("strides", [1] * len(k))
        if any(v != 1 for v in d) and (type != "MAX_POOL2D" or any(si % di for si, di in zip(s, d))):
            raise self.unsupported(node, f"dilations={d} with strides={s}; dilated pooling needs max pooling "
                                         "with strides that are multiples of the dilations")
        one_d = len(k) == 1
        if one_d:  # a 2-D pooling with a 1 x K window
            x_in, a, y_out, (in_hw, out_hw) = self.lift_1d(node, a)
            k, d = a["kernel_shape"], a.get("dilations", [1, 1])
        else:
            x_in, y_out = self.tensor(node.input[0]), self.out(node.output[0])
            in_hw, out_hw = self.shape(node.input[0])[2:], self.inferred(node.output[0])[2:]
        s = a.get("strides", [1, 1])
        pads = _pads(self, node, a, in_hw, out_hw, k, s, d)
        if a.get("ceil_mode", 0):
            # The windows that ceil mode adds read past the end: for max pooling that is extra
            # end padding (padded positions never win).
            for i, (b_key, e_key) in enumerate((("pad_top", "pad_bottom"), ("pad_left", "pad_right"))):
                need = (out_hw[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in_hw[i] - pads[b_key]
                pads[e_key] = max(pads[e_key], need)
        if any(v != 1 for v in d):
            x_in, s, pads = self.undilate(node, x_in, k, s, d, pads, out_hw)
        self.emit(type, node, [x_in], [y_out], kernel_h=k[0], kernel_w=k[1],
                  stride_h=s[0], stride_w=s[1], **pads, **extra)
        if one_d:
            self.emit("RESHAPE", node, [y_out], [self.out(node.output[0])])

    def undilate(self, node, x: str, k, s, d, pads: dict, out_hw):
        """Max pooling with dilation d and a stride s that d divides reads only every d-th
        row and column (after the padding): those, then a plain pooling with stride s / d.
        Returns the new input, strides and (zero) pads."""
        xs = self.shape(x)
        pad = {f"pad{ax}_{e}": pads[key] for ax, (b_key, e_key) in ((2, ("pad_top", "pad_bottom")),
                                                                     (3, ("pad_left", "pad_right")))
               for e, key in (("begin", b_key), ("end", e_key)) if pads[key]}
        if pad:
            padded = self.temp(x + "_padded", (xs[0], xs[1], xs[2] + pads["pad_top"] + pads["pad_bottom"],
                                               xs[3] + pads["pad_left"] + pads["pad_right"]))
            self.emit("PAD", node, [x], [padded], value=float("-inf"), **pad)
            x, xs = padded, self.shape(padded)
        for i, ax in enumerate((2, 3)):
            if d[i] == 1:
                continue
            end = (out_hw[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1
            shape = tuple(len(range(0, end, d[i])) if j == ax else v for j, v in enumerate(xs))
            taken = self.temp(f"{x}_every{d[i]}_axis{ax}", shape)
            self.emit("SLICE", node, [x], [taken], axis=ax, begin=0, end=end, step=d[i])
            x, xs = taken, shape
        return x, [si // di for si, di in zip(s, d)], {key: 0 for key in pads}

    def op_MaxPool(self, node):
        a = self.attrs(node)
        if a.get("storage_order", 0):
            raise self.unsupported(node, "storage_order=1")
        if len(a["kernel_shape"]) == 3 and not (len(node.output) > 1 and node.output[1]):
            self.pool_3d(node, a, True)
            return
        self.pool("MAX_POOL2D", node)

    def op_AveragePool(self, node):
        a = self.attrs(node)
        if a.get("ceil_mode", 0):
            raise self.unsupported(node, "ceil_mode=1")
        if len(a["kernel_shape"]) == 3:
            self.pool_3d(node, a, False)
            return
        self.pool("AVG_POOL2D", node, count_include_pad=a.get("count_include_pad", 0))

    def op_Concat(self, node):
        rank = len(self.shape(node.input[0]))
        axis = self.attrs(node)["axis"] % rank
        self.emit("CONCAT", node, [self.tensor(i) for i in node.input], [self.out(node.output[0])], axis=axis)

    def op_Pad(self, node):
        a = self.attrs(node)
        mode = _str(a.get("mode", "constant"))
        if mode not in ("constant", "reflect", "edge"):
            raise self.unsupported(node, f"mode={mode}; constant, reflect and edge padding are supported")
        xs = self.shape(node.input[0])
        if len(xs) != 4:
            raise self.unsupported(node, f"{len(xs)}-D input; only 4-D is supported")
        pads = [int(v) for v in self.need_const(node, 1, "pads").reshape(-1)]
        value = self.opt_const(node, 2, "the constant value")
        axes = self.opt_const(node, 3, "axes")
        axes = list(range(4)) if axes is None else [int(v) % 4 for v in axes.reshape(-1)]
        if len(pads) != 2 * len(axes):
            raise self.unsupported(node, f"{len(pads)} pads for {len(axes)} axes")
        if any(p < 0 for p in pads):
            raise self.unsupported(node, "negative pads (cropping)")
        attrs = {}
        for j, ax in enumerate(axes):
            attrs[f"pad{ax}_begin"] = pads[j]
            attrs[f"pad{ax}_end"] = pads[j + len(axes)]
        if mode != "constant":
            if mode == "reflect" and any(max(attrs.get(f"pad{ax}_begin", 0), attrs.get(f"pad{ax}_end", 0)) >= xs[ax]
                                         for ax in range(4)):
                raise self.unsupported(node, "reflect pads as large as the axis")
            self.unary("PAD_REFLECT", node, edge=int(mode == "edge"), **attrs)
            return
        value = 0.0 if value is None or value.size == 0 else float(value.reshape(-1)[0])
        self.unary("PAD", node, value=value, **attrs)

    def op_Resize(self, node):
        a = self.attrs(node)
        xs, ys = self.shape(node.input[0]), self.shapes.get(node.output[0])
        if len(xs) != 4 or ys is None or tuple(ys[:2]) != tuple(xs[:2]):
            raise self.unsupported(node, "only resizing H and W of a 4-D tensor is supported")
        if a.get("antialias", 0):
            raise self.unsupported(node, "antialias=1")
        mode = _str(a.get("mode", "nearest"))
        ctm = _str(a.get("coordinate_transformation_mode", "half_pixel"))
        nearest_mode = _str(a.get("nearest_mode", "round_prefer_floor"))
        if mode not in ("nearest", "linear"):
            raise self.unsupported(node, f"mode={mode}; only nearest and linear are supported")
        if ctm == "tf_crop_and_resize":
            raise self.unsupported(node, "coordinate_transformation_mode=tf_crop_and_resize")
        scales = self.opt_const(node, 2, "scales")
        if scales is not None and scales.size == 0:
            scales = None
        if scales is not None:
            full = np.ones(4)
            axes = a.get("axes", list(range(4)))
            full[[ax % 4 for ax in axes]] = scales.reshape(-1)
            scales = full
        # The IR follows TFLite's coordinate conventions: find the one that maps every output
        # pixel to exactly the same source position as this node does.
        natural = {"align_corners": (1, 0), "asymmetric": (0, 0)}.get(ctm, (0, 1))
        for align, half in [natural] + [c for c in ((0, 1), (1, 0), (0, 0)) if c != natural]:
            if all(_resize_matches(mode, ctm, nearest_mode, xs[i], ys[i],
                                   None if scales is None else scales[i], align, half) for i in (2, 3)):
                self.unary("RESIZE_BILINEAR" if mode == "linear" else "RESIZE_NEAREST", node,
                           align_corners=align, half_pixel_centers=half)
                return
        raise self.unsupported(node, f"mode={mode}, coordinate_transformation_mode={ctm}"
                               + (f", nearest_mode={nearest_mode}" if mode == "nearest" else "")
                               + f" from {tuple(xs[2:])} to {tuple(ys[2:])} matches neither align_corners "
                               "nor half_pixel_centers nor asymmetric sampling")

    def op_DepthToSpace(self, node):
        a = self.attrs(node)
        mode = _str(a.get("mode", "DCR"))
        self.unary("DEPTH_TO_SPACE", node, block=a["blocksize"],
                   mode=opset.D2S_CRD if mode == "CRD" else opset.D2S_DCR)

    def reshape(self, node, shape):
        self.emit("RESHAPE", node, [self.tensor(node.input[0])], [self.out(node.output[0], tuple(shape))])

    def op_Flatten(self, node):
        xs = self.shape(node.input[0])
        axis = self.attrs(node).get("axis", 1) % (len(xs) + 1) if xs else 0
        self.reshape(node, (int(np.prod(xs[:axis])), int(np.prod(xs[axis:]))))

    def op_Reshape(self, node):
        xs = self.shape(node.input[0])
        target = [int(v) for v in self.need_const(node, 1, "the shape").reshape(-1)]
        if not self.attrs(node).get("allowzero", 0):
            target = [xs[i] if v == 0 else v for i, v in enumerate(target)]
        if target.count(-1) == 1:
            known = int(np.prod([v for v in target if v != -1]))
            target[target.index(-1)] = int(np.prod(xs)) // known if known else 0
        if int(np.prod(target)) != int(np.prod(xs)) or any(v < 0 for v in target):
            raise ModelFormatError(f"Reshape {self.name_of(node)!r}: cannot reshape {xs} to {target}")
        self.reshape(node, target)

    def op_Squeeze(self, node):
        self.reshape(node, self.inferred(node.output[0]))

    def op_Unsqueeze(self, node):
        self.reshape(node, self.inferred(node.output[0]))

    def op_Transpose(self, node):
        rank = len(self.shape(node.input[0]))
        if rank > 6:
            raise self.unsupported(node, f"rank {rank}; at most 6 is supported")
        perm = self.attrs(node).get("perm", list(range(rank))[::-1])
        self.unary("TRANSPOSE", node, **{f"perm{i}": p for i, p in enumerate(perm)})

    def op_Softmax(self, node):
        rank = len(self.shape(node.input[0]))
        self.unary("SOFTMAX", node, axis=self.attrs(node).get("axis", -1) % rank)


# Ops never evaluated at import time even on constant inputs: their value changes from run
# to run, so they go to the op handlers (which have none for them: UnsupportedOpError).
_NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _pads(imp: _Importer, node, a: dict, in_hw, out_hw, k, s, d) -> dict:
    """The explicit pads of a conv or pool node, auto_pad resolved as ONNX defines it."""
    auto_pad = _str(a.get("auto_pad", "NOTSET"))
    if auto_pad == "NOTSET":
        p = list(a.get("pads", [0, 0, 0, 0]))
    elif auto_pad == "VALID":
        p = [0, 0, 0, 0]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        p = [0, 0, 0, 0]
        for i in range(2):
            total = max((out_hw[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in_hw[i], 0)
            small, big = total // 2, total - total // 2
            # SAME_UPPER puts the extra pixel at the end, SAME_LOWER at the beginning.
            p[i], p[i + 2] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    else:
        raise imp.unsupported(node, f"auto_pad={auto_pad}")
    if len(p) != 4:
        raise imp.unsupported(node, f"pads={p}")
    return dict(pad_top=p[0], pad_left=p[1], pad_bottom=p[2], pad_right=p[3])


# -- Resize coordinate conventions ------------------------------------------------------------

def _onnx_source(ctm: str, y: int, n_in: int, n_out: int, scale: Fraction) -> Fraction:
    """The source coordinate ONNX Resize samples for output index y (exact arithmetic)."""
    if ctm == "half_pixel":
        return (y + Fraction(1, 2)) / scale - Fraction(1, 2)
    if ctm == "pytorch_half_pixel":
        return (y + Fraction(1, 2)) / scale - Fraction(1, 2) if n_out > 1 else Fraction(0)
    if ctm == "half_pixel_symmetric":
        adjustment = n_out / (scale * n_in)
        offset = Fraction(n_in, 2) * (1 - adjustment)
        return offset + (y + Fraction(1, 2)) / scale - Fraction(1, 2)
    if ctm == "align_corners":
        return Fraction(y * (n_in - 1), n_out - 1) if n_out > 1 else Fraction(0)
    if ctm == "asymmetric":
        return y / scale
    if ctm == "tf_half_pixel_for_nn":
        return (y + Fraction(1, 2)) / scale
    raise ValueError(ctm)


def _onnx_nearest(x: Fraction, mode: str) -> int:
    f = floor(x)
    if mode == "floor":
        return f
    if mode == "ceil":
        return ceil(x)
    if x - f == Fraction(1, 2):
        return f if mode == "round_prefer_floor" else f + 1
    return round(x)


def _tflite_source(y: int, n_in: int, n_out: int, align: int, half: int) -> Fraction:
    scale = Fraction(n_in - 1, n_out - 1) if align and n_out > 1 else Fraction(n_in, n_out)
    return (y + Fraction(1, 2)) * scale - Fraction(1, 2) if half else y * scale


def _tflite_nearest(y: int, n_in: int, n_out: int, align: int, half: int) -> int:
    scale = Fraction(n_in - 1, n_out - 1) if align and n_out > 1 else Fraction(n_in, n_out)
    x = (y + (Fraction(1, 2) if half else 0)) * scale
    i = floor(x + Fraction(1, 2)) if align else floor(x)  # TFLite rounds half away from zero
    return max(0, min(i, n_in - 1))


def _resize_matches(mode, ctm, nearest_mode, n_in, n_out, scale, align, half) -> bool:
    if scale is None:
        scale = Fraction(n_out, n_in)
    else:
        scale = Fraction(float(scale)).limit_denominator(1 << 20)
        if scale != Fraction(n_out, n_in) and ctm not in ("align_corners",):
            # ONNX samples with the given scale, TFLite with the size ratio: they agree only
            # where the two are the same.
            return False
    for y in range(n_out):
        src = _onnx_source(ctm, y, n_in, n_out, scale)
        if mode == "nearest":
            if max(0, min(_onnx_nearest(src, nearest_mode), n_in - 1)) != _tflite_nearest(y, n_in, n_out, align, half):
                return False
        else:
            clamp = lambda v: min(max(v, Fraction(0)), Fraction(n_in - 1))  # noqa: E731
            if clamp(src) != clamp(_tflite_source(y, n_in, n_out, align, half)):
                return False
    return True
