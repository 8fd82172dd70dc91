"""The operator set: the single source of truth for op names, numeric codes and attributes.

Every op of the IR, the `.spnn` format, the numpy reference and the C engine is listed
here. The format stores an op as its code followed by its attributes, in the order given
here, each attribute 4 bytes (int32 or float32). `wasm/src/opset.gen.h` is generated from
this table (`python -m pysparse.opset --header`); a test keeps the two in step.

Semantics are NCHW (batch first, then channels, then spatial), whatever the source model's
layout was: importers translate.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

# Fused activations (the clamp that conv, fully connected, pooling and binary ops apply
# to their output before storing it).
ACT_NONE, ACT_RELU, ACT_RELU6, ACT_RELU_N1_TO_1 = 0, 1, 2, 3
ACTIVATION_NAMES = {ACT_NONE: "none", ACT_RELU: "relu", ACT_RELU6: "relu6", ACT_RELU_N1_TO_1: "relu_n1_to_1"}
ACTIVATION_RANGES = {
    ACT_NONE: (float("-inf"), float("inf")),
    ACT_RELU: (0.0, float("inf")),
    ACT_RELU6: (0.0, 6.0),
    ACT_RELU_N1_TO_1: (-1.0, 1.0),
}

# DEPTH_TO_SPACE modes (ONNX names). TFLite's NHWC depth-to-space is DCR.
D2S_DCR, D2S_CRD = 0, 1


@dataclass(frozen=True)
class Attr:
    name: str
    kind: str  # "i" (int32) or "f" (float32)
    default: int | float | None = None  # None: required


@dataclass(frozen=True)
class OpDef:
    code: int
    name: str
    inputs: tuple[str, ...]  # names; a trailing "?" marks an optional input
    attrs: tuple[Attr, ...]
    doc: str

    @property
    def min_inputs(self) -> int:
        return sum(1 for i in self.inputs if not i.endswith("?") and i != "*")

    @property
    def max_inputs(self) -> int:
        return -1 if self.inputs and self.inputs[-1] == "*" else len(self.inputs)


def _i(name, default=None):
    return Attr(name, "i", default)


def _f(name, default=None):
    return Attr(name, "f", default)


_PADS = (_i("pad_top", 0), _i("pad_left", 0), _i("pad_bottom", 0), _i("pad_right", 0))
_STRIDES = (_i("stride_h", 1), _i("stride_w", 1))
_ACT = _i("act", ACT_NONE)

OPS: tuple[OpDef, ...] = (
    OpDef(1, "CONV2D", ("x", "weight", "bias?"),
          _STRIDES + (_i("dilation_h", 1), _i("dilation_w", 1)) + _PADS + (_i("groups", 1), _ACT),
          "y = act(conv(x, weight) + bias); weight [Cout, Cin/groups, KH, KW]; zero padding."),
    OpDef(2, "CONV_TRANSPOSE2D", ("x", "weight", "bias?"),
          _STRIDES + _PADS + (_ACT,),
          "Transposed convolution; weight [Cin, Cout, KH, KW]; output size is the output tensor's."),
    OpDef(3, "FULLY_CONNECTED", ("x", "weight", "bias?"), (_ACT,),
          "y = act(x @ weight.T + bias); x [N, K], weight [M, K]."),
    OpDef(4, "ADD", ("a", "b"), (_ACT,), "Elementwise a + b with numpy broadcasting."),
    OpDef(5, "MUL", ("a", "b"), (_ACT,), "Elementwise a * b with numpy broadcasting."),
    OpDef(6, "SUB", ("a", "b"), (_ACT,), "Elementwise a - b with numpy broadcasting."),
    OpDef(7, "DIV", ("a", "b"), (_ACT,), "Elementwise a / b with numpy broadcasting."),
    OpDef(8, "RELU", ("x",), (), "max(x, 0)."),
    OpDef(9, "CLIP", ("x",), (_f("min"), _f("max")), "min(max(x, min), max); ReLU6 is CLIP(0, 6)."),
    OpDef(10, "SIGMOID", ("x",), (), "1 / (1 + exp(-x))."),
    OpDef(11, "TANH", ("x",), (), "tanh(x)."),
    OpDef(12, "HARD_SWISH", ("x",), (), "x * relu6(x + 3) / 6."),
    OpDef(13, "HARD_SIGMOID", ("x",), (_f("alpha", 0.2), _f("beta", 0.5)), "max(0, min(1, alpha * x + beta))."),
    OpDef(14, "LEAKY_RELU", ("x",), (_f("alpha", 0.01),), "x if x >= 0 else alpha * x."),
    OpDef(15, "PRELU", ("x", "slope"), (), "x if x >= 0 else slope * x; slope broadcasts against x."),
    OpDef(16, "MAX_POOL2D", ("x",), (_i("kernel_h"), _i("kernel_w")) + _STRIDES + _PADS + (_ACT,),
          "Max pooling; padded positions never win."),
    OpDef(17, "AVG_POOL2D", ("x",), (_i("kernel_h"), _i("kernel_w")) + _STRIDES + _PADS + (_i("count_include_pad", 0), _ACT),
          "Average pooling; with count_include_pad=0 the divisor counts only positions inside the input."),
    OpDef(18, "MEAN", ("x",), (_i("axes_mask"), _i("keepdims", 1)),
          "Mean over the axes whose bit is set in axes_mask (bit i = axis i); global average pool is axes 2 and 3."),
    OpDef(19, "CONCAT", ("x", "*"), (_i("axis"),), "Concatenation along axis."),
    OpDef(20, "PAD", ("x",), tuple(_i(f"pad{i}_{e}", 0) for i in range(4) for e in ("begin", "end")) + (_f("value", 0.0),),
          "Constant padding of a 4-D tensor; pad{axis}_begin / pad{axis}_end per axis (NCHW)."),
    OpDef(21, "RESIZE_BILINEAR", ("x",), (_i("align_corners", 0), _i("half_pixel_centers", 0)),
          "Bilinear resize of H and W to the output tensor's size (TFLite's coordinate conventions)."),
    OpDef(22, "RESIZE_NEAREST", ("x",), (_i("align_corners", 0), _i("half_pixel_centers", 0)),
          "Nearest-neighbour resize of H and W to the output tensor's size (TFLite's conventions)."),
    OpDef(23, "DEPTH_TO_SPACE", ("x",), (_i("block"), _i("mode", D2S_DCR)), "ONNX DepthToSpace (DCR or CRD)."),
    OpDef(24, "RESHAPE", ("x",), (), "Row-major reshape to the output tensor's shape."),
    OpDef(25, "TRANSPOSE", ("x",), tuple(_i(f"perm{i}", i) for i in range(6)),
          "Axis permutation; only the first ndim entries of perm are used."),
    OpDef(26, "SOFTMAX", ("x",), (_i("axis", -1), _f("beta", 1.0)), "softmax(beta * x) along axis."),
    OpDef(27, "LRN", ("x",), (_i("size"), _f("alpha", 1e-4), _f("beta", 0.75), _f("bias", 1.0)),
          "Local response normalisation across channels of a 4-D tensor (ONNX LRN): "
          "x / (bias + alpha / size * sum of x^2 over the channel window) ^ beta."),
    OpDef(28, "SUM", ("x", "*"), (_ACT,), "act(x0 + x1 + ...); every input has the output's shape."),
    OpDef(29, "ABS", ("x",), (), "|x|."),
    OpDef(30, "EXP", ("x",), (), "exp(x)."),
    OpDef(31, "SQRT", ("x",), (), "sqrt(x) (NaN below 0)."),
    OpDef(32, "ELU", ("x",), (_f("alpha", 1.0), _f("scale", 1.0)),
          "scale * (x if x > 0 else alpha * (exp(x) - 1)); SELU is ELU with its alpha and scale."),
    OpDef(33, "SOFTPLUS", ("x",), (), "log(1 + exp(x))."),
    OpDef(34, "LOG_SOFTMAX", ("x",), (_i("axis", -1),), "log(softmax(x)) along axis."),
    OpDef(35, "MAX", ("a", "b"), (_ACT,), "Elementwise maximum with numpy broadcasting (NaN wins)."),
    OpDef(36, "MIN", ("a", "b"), (_ACT,), "Elementwise minimum with numpy broadcasting (NaN wins)."),
    OpDef(37, "POW", ("a", "b"), (_ACT,), "Elementwise a ** b with numpy broadcasting."),
    OpDef(38, "SLICE", ("x",), (_i("axis"), _i("begin"), _i("end"), _i("step", 1)),
          "x[begin:end:step] along one axis; 0 <= begin < end <= dim, step >= 1."),
    OpDef(39, "PAD_REFLECT", ("x",), tuple(_i(f"pad{i}_{e}", 0) for i in range(4) for e in ("begin", "end"))
          + (_i("edge", 0),),
          "Padding of a 4-D tensor from its own values: mirrored without repeating the border "
          "(edge=0, each pad below the axis size) or the border repeated (edge=1)."),
    OpDef(40, "MATMUL", ("a", "b"), (), "a @ b for a [M, K] and b [K, N], either a run-time tensor."),
)

BY_NAME = {op.name: op for op in OPS}
BY_CODE = {op.code: op for op in OPS}


def attr_values(op_name: str, attrs: dict) -> list[int | float]:
    """The attributes of an op in table order, defaults filled in; unknown names are an error."""
    d = BY_NAME[op_name]
    known = {a.name for a in d.attrs}
    extra = set(attrs) - known
    if extra:
        raise ValueError(f"{op_name}: unknown attributes {sorted(extra)}")
    out = []
    for a in d.attrs:
        v = attrs.get(a.name, a.default)
        if v is None:
            raise ValueError(f"{op_name}: attribute {a.name!r} is required")
        out.append(int(v) if a.kind == "i" else float(v))
    return out


def c_header() -> str:
    """The C view of this table, written to wasm/src/opset.gen.h."""
    lines = [
        "/* Generated by `python -m pysparse.opset --header` from pysparse/opset.py. Do not edit. */",
        "#ifndef PYSPARSE_OPSET_GEN_H",
        "#define PYSPARSE_OPSET_GEN_H",
        "",
        f"#define SPNN_ACT_NONE {ACT_NONE}",
        f"#define SPNN_ACT_RELU {ACT_RELU}",
        f"#define SPNN_ACT_RELU6 {ACT_RELU6}",
        f"#define SPNN_ACT_RELU_N1_TO_1 {ACT_RELU_N1_TO_1}",
        f"#define SPNN_D2S_DCR {D2S_DCR}",
        f"#define SPNN_D2S_CRD {D2S_CRD}",
        "",
        "enum spnn_op_code {",
    ]
    for op in OPS:
        lines.append(f"  SPNN_OP_{op.name} = {op.code},")
    lines += ["};", ""]
    lines.append(f"#define SPNN_OP_MAX_CODE {max(op.code for op in OPS)}")
    lines.append("")
    for op in OPS:
        lines.append(f"/* {op.name}: inputs ({', '.join(op.inputs)}) */")
        lines.append(f"#define SPNN_OP_{op.name}_NUM_ATTRS {len(op.attrs)}")
        lines.append(f"#define SPNN_OP_{op.name}_MIN_INPUTS {op.min_inputs}")
        lines.append(f"#define SPNN_OP_{op.name}_MAX_INPUTS {op.max_inputs}")
        for idx, a in enumerate(op.attrs):
            lines.append(f"#define SPNN_{op.name}_{a.name.upper()} {idx} /* {'int32' if a.kind == 'i' else 'float32'} */")
        lines.append("")
    lines += ["#endif", ""]
    return "\n".join(lines)


def markdown_table() -> str:
    """The op table as it appears in docs/format.md."""
    rows = ["| code | op | inputs | attributes (in order; i = int32, f = float32) |", "|---|---|---|---|"]
    for op in OPS:
        attrs = ", ".join(f"{a.name}:{a.kind}" + ("" if a.default is None else f"={a.default}") for a in op.attrs)
        rows.append(f"| {op.code} | {op.name} | {', '.join(op.inputs)} | {attrs or '-'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    if "--header" in sys.argv:
        sys.stdout.write(c_header())
    else:
        print(markdown_table())
