"""pysparse.torch_module: the torch module computes what the numpy reference computes, on
graphs using every op and on the real hand landmark models; weights go back into the IR."""
import numpy as np
import pytest
import torch

from pysparse import opset, reference
from pysparse.ir import Graph
from pysparse.torch_module import COMPILERS, GraphModule

RNG = np.random.default_rng(7)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


class Builder:
    """Appends ops to a graph, tracking the running tensor (computed by the reference)."""

    def __init__(self, shape):
        self.g = Graph()
        self.g.add_tensor("x", shape)
        self.g.inputs = ["x"]
        self.x0 = rand(*shape)
        self.vals = {"x": self.x0}
        self.cur = "x"
        self.n = 0

    def const(self, data):
        self.n += 1
        name = f"model/c.{self.n}:0"  # dots and colons: not allowed in torch parameter names
        self.g.add_constant(name, data)
        self.vals[name] = data
        return name

    def op(self, type, inputs, out_shape=None, **attrs):
        self.n += 1
        ins = [self.vals[i] if i else None for i in inputs]
        y = reference.run_op(type, ins, attrs, out_shape)
        out = f"t{self.n}"
        self.g.add_tensor(out, y.shape)
        self.g.add_op(type, inputs, [out], name=f"{type.lower()}_{self.n}", **attrs)
        self.vals[out] = y
        self.cur = out
        return out


def all_ops_graph():
    b = Builder((1, 4, 9, 10))
    c = b.op("CONV2D", ["x", b.const(rand(8, 4, 3, 3, scale=0.3)), b.const(rand(8))],
             stride_h=2, stride_w=1, pad_top=0, pad_left=1, pad_bottom=1, pad_right=1, act=opset.ACT_RELU6)
    c = b.op("CONV2D", [c, b.const(rand(8, 1, 3, 3)), ""], groups=8, dilation_h=2, pad_top=2, pad_bottom=2,
             pad_left=1, pad_right=1, act=opset.ACT_RELU_N1_TO_1)
    c = b.op("CONV2D", [c, b.const(rand(16, 8, 1, 1)), b.const(rand(16))], act=opset.ACT_RELU)
    skip = c
    c = b.op("LRN", [c], size=4, alpha=0.5, beta=0.75, bias=2.0)
    c = b.op("SUM", [c, skip, b.const(rand(*b.vals[c].shape))], act=opset.ACT_RELU)
    c = b.op("PRELU", [c, b.const(rand(1, 16, 1, 1))])
    c = b.op("HARD_SWISH", [c])
    c = b.op("ADD", [c, skip])
    c = b.op("MUL", [c, b.const(rand(1, 16, 1, 1))])
    c = b.op("SUB", [c, b.const(rand(1, 16, 1, 1))], act=opset.ACT_RELU)
    c = b.op("DIV", [c, b.const(np.full((1, 16, 1, 1), 2.0, np.float32))])
    c = b.op("LEAKY_RELU", [c], alpha=0.2)
    c = b.op("HARD_SIGMOID", [c], alpha=0.3, beta=0.4)
    c = b.op("TANH", [c])
    c = b.op("CLIP", [c], min=-0.5, max=0.7)
    c = b.op("ELU", [c], alpha=0.5, scale=1.5)
    c = b.op("SOFTPLUS", [c])
    c = b.op("SQRT", [b.op("ABS", [c])])
    c = b.op("POW", [b.op("MAX", [c, b.const(np.full((1, 16, 1, 1), 0.1, np.float32))]),
                     b.const(np.full((1,), 1.5, np.float32))])
    c = b.op("MIN", [c, b.op("EXP", [c])])
    c = b.op("CONCAT", [c, b.op("SLICE", [c], axis=3, begin=1, end=9, step=3)], axis=3)
    c = b.op("PAD_REFLECT", [c], pad2_end=2, pad2_begin=1, pad3_end=3)
    c = b.op("PAD_REFLECT", [c], pad2_begin=1, pad3_begin=2, edge=1)
    c = b.op("SIGMOID", [c])
    c = b.op("RELU", [b.op("SUB", [c, b.const(np.full((1,), 0.5, np.float32))])])
    mp = b.op("MAX_POOL2D", [c], kernel_h=3, kernel_w=2, stride_h=2, stride_w=2, pad_top=1, pad_bottom=1, pad_right=1)
    ap = b.op("AVG_POOL2D", [c], kernel_h=3, kernel_w=2, stride_h=2, stride_w=2, pad_top=1, pad_bottom=1, pad_right=1)
    ap2 = b.op("AVG_POOL2D", [c], kernel_h=3, kernel_w=2, stride_h=2, stride_w=2, pad_top=1, pad_bottom=1,
               pad_right=1, count_include_pad=1)
    c = b.op("CONCAT", [mp, ap, ap2], axis=1)
    c = b.op("PAD", [c], pad1_begin=1, pad1_end=3, pad2_begin=1, pad3_end=2, value=0.25)
    c = b.op("RESIZE_BILINEAR", [c], (1, 52, 9, 11), half_pixel_centers=1)
    c = b.op("RESIZE_BILINEAR", [c], (1, 52, 5, 7), align_corners=1)
    c = b.op("RESIZE_NEAREST", [c], (1, 52, 10, 14))
    c = b.op("RESIZE_NEAREST", [c], (1, 52, 7, 9), align_corners=1, half_pixel_centers=0)
    c = b.op("RESIZE_NEAREST", [c], (1, 52, 14, 18), half_pixel_centers=1)
    c = b.op("CONV2D", [c, b.const(rand(16, 52, 1, 1, scale=0.2)), ""])
    c = b.op("DEPTH_TO_SPACE", [c], block=2)
    c = b.op("CONV2D", [c, b.const(rand(8, 4, 1, 1, scale=0.5)), ""])
    c = b.op("DEPTH_TO_SPACE", [c], block=2, mode=opset.D2S_CRD)
    c = b.op("CONV_TRANSPOSE2D", [c, b.const(rand(2, 3, 3, 3, scale=0.5)), b.const(rand(3))],
             stride_h=2, stride_w=2, pad_top=1, pad_left=0, pad_bottom=0, pad_right=1)
    side = b.op("MEAN", [c], axes_mask=0b1100, keepdims=1)
    c = b.op("MUL", [c, side])
    c = b.op("TRANSPOSE", [c], perm0=0, perm1=2, perm2=3, perm3=1)
    c = b.op("RESHAPE", [c], (1, int(np.prod(b.vals[c].shape))))
    c = b.op("FULLY_CONNECTED", [c, b.const(rand(10, b.vals[c].shape[1], scale=0.05)), b.const(rand(10))])
    c = b.op("MATMUL", [b.op("TRANSPOSE", [c], perm0=1, perm1=0), c])  # [10, 10]
    sm = b.op("SOFTMAX", [c], axis=-1, beta=0.5)
    sm = b.op("ADD", [sm, b.op("LOG_SOFTMAX", [c], axis=-1)])
    mean = b.op("MEAN", [side], axes_mask=0b1110, keepdims=0)
    b.g.outputs = [sm, mean]
    return b


def test_every_op_has_a_torch_version():
    assert set(COMPILERS) == set(opset.BY_NAME)


def test_all_ops_graph_matches_reference():
    b = all_ops_graph()
    assert {op.type for op in b.g.ops} == set(opset.BY_NAME)
    module = GraphModule(b.g)
    want = reference.run(b.g, {"x": b.x0})
    with torch.no_grad():
        got = module(torch.from_numpy(b.x0))
        got64 = module.double()(torch.from_numpy(b.x0).double())
    for name, y, y64 in zip(b.g.outputs, got, got64):
        np.testing.assert_allclose(y.numpy(), want[name], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(y64.numpy(), want[name], rtol=1e-5, atol=1e-6)


def test_parameters_are_named_after_constants_and_written_back():
    b = all_ops_graph()
    module = GraphModule(b.g)
    consts = [n for n, t in b.g.tensors.items() if t.is_constant]
    assert sorted(module.ir_name(k) for k in module.weights) == sorted(consts)
    assert "model_c_1_0" in module.weights  # "model/c.1:0"
    name = b.g.ops[2].inputs[1]  # the 1x1 conv's weight
    w = module.parameter(name)
    with torch.no_grad():
        w.mul_(2.0)
        w[0, 0, 0, 0] = 0.0
    g2 = module.to_graph()
    np.testing.assert_array_equal(g2.tensors[name].data, w.detach().numpy())
    assert g2.tensors[name].data[0, 0, 0, 0] == 0.0
    assert b.g.tensors[name].data[0, 0, 0, 0] != 0.0  # the source graph is untouched
    np.testing.assert_allclose(reference.run(g2, {"x": b.x0})[g2.outputs[0]],
                               module(torch.from_numpy(b.x0))[0].detach().numpy(), rtol=1e-4, atol=1e-5)


def test_batches_give_the_per_image_results():
    conv = Builder((1, 3, 8, 8))
    c = conv.op("CONV2D", ["x", conv.const(rand(8, 3, 3, 3)), conv.const(rand(8))], pad_top=1, pad_left=1,
                pad_bottom=1, pad_right=1, act=opset.ACT_RELU)
    c = conv.op("MEAN", [c], axes_mask=0b1100, keepdims=0)
    c = conv.op("FULLY_CONNECTED", [c, conv.const(rand(4, 8))])
    conv.g.outputs = [c]
    module = GraphModule(conv.g)
    xs = rand(5, 3, 8, 8)
    with torch.no_grad():
        batched = module(torch.from_numpy(xs)).numpy()
    for i in range(5):
        one = reference.run(conv.g, {"x": xs[i:i + 1]})[c]
        np.testing.assert_allclose(batched[i:i + 1], one, rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_weight():
    b = all_ops_graph()
    module = GraphModule(b.g)
    out = module(torch.from_numpy(b.x0))
    (out[0].sum() * 0 + (out[0] ** 2).sum() + out[1].sum()).backward()
    missing = [module.ir_name(k) for k, p in module.weights.items() if p.grad is None]
    assert not missing


def photo_input(shape):
    """A real hand photo resized to the model's input, RGB in [0, 1], NCHW."""
    from PIL import Image
    from pysparse import assets
    img = Image.open(assets.photo_path("hand_nocurl.jpg")).convert("RGB").resize((shape[3], shape[2]))
    return (np.asarray(img, np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


@pytest.mark.parametrize("model", ["hand_landmark_lite", "hand_landmark_full"])
def test_hand_landmark_models_match_reference(model):
    from pysparse import assets
    from pysparse.importers import load_model
    g = load_model(assets.model_path(model + ".tflite"))
    module = GraphModule(g)
    shape = g.tensors[g.inputs[0]].shape
    noise = np.random.default_rng(1).random(shape).astype(np.float32)
    for x in (photo_input(shape), noise):
        want = reference.run(g, {g.inputs[0]: x})
        with torch.no_grad():
            got = module(torch.from_numpy(x))
        for name, y in zip(g.outputs, got):
            scale = max(1.0, float(np.abs(want[name]).max()))  # landmarks are pixels (0..224)
            np.testing.assert_allclose(y.numpy(), want[name], rtol=1e-4, atol=1e-4 * scale, err_msg=name)
    # untouched weights go back bit for bit
    back = module.to_graph()
    for name, t in g.tensors.items():
        if t.is_constant:
            np.testing.assert_array_equal(back.tensors[name].data, t.data)
