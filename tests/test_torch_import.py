"""PyTorch import (through an in-memory ONNX export) and the MobileNetV2 of the model zoo.

Numerics rule: the numpy reference on the imported graph matches onnxruntime (and torch)
on the same input with max |error| <= 1e-4 * (max - min of the expected output).
"""
from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from pysparse import opset, passes, reference
from pysparse.importers.onnx import load_onnx
from pysparse.importers.torch import export_onnx, from_torch
from pysparse.zoo import mobilenet_v2, pointwise_sparsity, prune_pointwise

RTOL_RANGE = 1e-4


def assert_close(got: np.ndarray, want: np.ndarray, what: str = ""):
    assert got.shape == want.shape, what
    err = float(np.max(np.abs(got - want)))
    span = float(want.max() - want.min())
    assert err <= RTOL_RANGE * span, f"{what}: max abs error {err}, output range {span}"


def ort_run(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def mnv2():
    """MobileNetV2 1.0 at 224, random weights and calibrated BatchNorm (non-trivial stats)."""
    return mobilenet_v2(width=1.0, input_size=224, seed=0)


@pytest.fixture(scope="module")
def small_mnv2():
    return mobilenet_v2(width=0.5, input_size=128, num_classes=100, seed=4)


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32) * 2 - 1)


def test_mobilenet_v2_definition(mnv2):
    n_params = sum(p.numel() for p in mnv2.parameters())
    assert 3.4e6 < n_params < 3.6e6  # the paper's 3.4M weights, plus BatchNorm
    bns = [m for m in mnv2.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 52
    assert all(float(bn.running_var.std()) > 0 and float(bn.running_mean.abs().max()) > 0 for bn in bns)
    small = mobilenet_v2(width=0.35, input_size=64, num_classes=10, seed=1, calibrate=False)
    assert small(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    a, b = mobilenet_v2(0.35, 64, 5, seed=3), mobilenet_v2(0.35, 64, 5, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.slow
def test_mobilenet_v2_with_batchnorm_nodes_matches_onnxruntime(mnv2, image):
    # Exported without constant folding, BatchNormalization stays a node of its own, so
    # the importer's translation of it is what runs here.
    data = export_onnx(mnv2, torch.from_numpy(image), fold_constants=False)
    graph = load_onnx(data)
    types = [op.type for op in graph.ops]
    assert types.count("CONV2D") == 52 and types.count("MUL") == 52  # one per BatchNorm
    want = ort_run(data, image)
    got = reference.run(graph, {"input": image})["output"]
    assert_close(got, want, "imported vs onnxruntime")
    with torch.no_grad():
        assert_close(got, mnv2(torch.from_numpy(image)).numpy(), "vs torch")
    # The passes fold every BatchNorm and ReLU6 into its convolution.
    opt = passes.optimize(graph)
    types = [op.type for op in opt.ops]
    assert types.count("CONV2D") == 52 and "MUL" not in types and "CLIP" not in types
    assert sum(op.attrs.get("act") == opset.ACT_RELU6 for op in opt.ops) == 35
    assert_close(reference.run(opt, {"input": image})["output"], want, "optimized vs onnxruntime")


@pytest.mark.slow
def test_from_torch_mobilenet_v2(mnv2, image):
    graph = from_torch(mnv2, torch.from_numpy(image))
    assert graph.inputs == ["input"] and graph.outputs == ["output"]
    assert graph.tensors["input"].shape == (1, 3, 224, 224) and graph.tensors["output"].shape == (1, 1000)
    types = [op.type for op in graph.ops]
    # The exporter folds BatchNorm; 10 residual adds; ReLU6 is Clip(0, 6).
    assert types.count("CONV2D") == 52 and types.count("ADD") == 10 and types.count("CLIP") == 35
    assert types.count("MEAN") == 1 and types[-1] == "FULLY_CONNECTED"
    assert not mnv2.training
    got = reference.run(graph, {"input": image})["output"]
    with torch.no_grad():
        assert_close(got, mnv2(torch.from_numpy(image)).numpy(), "vs torch")


def _graph_pointwise_sparsity(graph) -> float:
    zeros = total = 0
    for op in graph.ops:
        w = graph.constant(op.inputs[1]) if op.type == "CONV2D" else None
        if w is not None and w.shape[2:] == (1, 1) and op.attr("groups") == 1:
            zeros += int((w == 0).sum())
            total += w.size
    return zeros / total


@pytest.mark.slow
@pytest.mark.parametrize("sparsity, block", [(0.8, 1), (0.7, 4)])
def test_pruned_mobilenet_v2_keeps_its_zeros(small_mnv2, sparsity, block):
    image = np.random.default_rng(1).random((1, 3, 128, 128), dtype=np.float32) * 2 - 1
    model = copy.deepcopy(small_mnv2)
    per_layer = prune_pointwise(model, sparsity, block)
    assert len(per_layer) == 34  # 16 expand (the first block has none) + 17 project + the last conv
    assert abs(pointwise_sparsity(model) - sparsity) < 0.01
    graph = from_torch(model, torch.from_numpy(image))
    # Folding BatchNorm scales whole output channels: every pruned zero stays exactly zero.
    assert _graph_pointwise_sparsity(graph) == pytest.approx(pointwise_sparsity(model), abs=1e-9)
    got = reference.run(graph, {"input": image})["output"]
    with torch.no_grad():
        assert_close(got, model(torch.from_numpy(image)).numpy(), "pruned vs torch")


def test_prune_pointwise_unstructured_and_blocks():
    model = mobilenet_v2(0.35, 64, 10, seed=2, calibrate=False)
    dense = copy.deepcopy(model)
    reached = prune_pointwise(model, 0.5)
    for name, m in model.named_modules():
        if name in reached:
            w, w0 = m.weight.detach()[:, :, 0, 0], dict(dense.named_modules())[name].weight.detach()[:, :, 0, 0]
            assert abs(reached[name] - 0.5) <= 1 / w.numel() + 1e-9
            # the survivors are the largest in magnitude
            assert w0[w == 0].abs().max() <= w0[w != 0].abs().min()
        elif isinstance(m, nn.Conv2d):  # depthwise and the first 3x3 conv are untouched
            assert torch.equal(m.weight, dict(dense.named_modules())[name].weight)

    model = mobilenet_v2(0.35, 64, 10, seed=2, calibrate=False)
    reached = prune_pointwise(model, 0.75, block=4)
    for name, m in model.named_modules():
        if name in reached:
            zero = (m.weight[:, :, 0, 0] == 0)
            cout = zero.shape[0]
            full = cout // 4 * 4
            blocks = zero[:full].reshape(-1, 4, zero.shape[1])
            assert (blocks == blocks[:, :1]).all(), name  # one input pattern per block of 4
            assert abs(reached[name] - 0.75) < 0.1
    with pytest.raises(ValueError):
        prune_pointwise(model, 1.0)


class _TorchOps(nn.Module):
    """Layers whose torch export patterns the importer must understand."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.prelu = nn.PReLU(8)
        self.dw = nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1), nn.Hardsigmoid())
        self.fc = nn.Linear(16 * 4 * 4, 6)

    def forward(self, x):
        x = self.prelu(self.bn(self.conv(x)))          # 16x16
        x = nn.functional.hardswish(self.dw(x))
        x = x * self.se(x)
        y = torch.cat([nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False),
                       nn.functional.interpolate(x, size=(32, 32), mode="nearest")], 1)  # 16 channels
        y = nn.functional.max_pool2d(y, 3, 2, 1)       # 16x16
        y = nn.functional.avg_pool2d(y, 2)             # 8x8
        z = nn.functional.pixel_shuffle(self.up(x), 2)  # 1 channel, 64x64
        y = nn.functional.leaky_relu(y, 0.1) + torch.sigmoid(nn.functional.adaptive_avg_pool2d(z, 8))
        y = nn.functional.max_pool2d(torch.tanh(y), 2)  # 4x4
        return torch.softmax(self.fc(y.view(y.size(0), -1)), dim=1)


def test_from_torch_layer_patterns():
    torch.manual_seed(0)
    model = _TorchOps()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    model.train()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    graph = from_torch(model, x)
    assert model.training  # the caller's mode is restored
    types = {op.type for op in graph.ops}
    assert {"PRELU", "HARD_SWISH", "HARD_SIGMOID", "RESIZE_BILINEAR", "RESIZE_NEAREST", "CONV_TRANSPOSE2D",
            "MAX_POOL2D", "AVG_POOL2D", "LEAKY_RELU", "SIGMOID", "TANH", "SOFTMAX", "RESHAPE",
            "FULLY_CONNECTED", "CONCAT"} <= types
    got = reference.run(graph, {"input": x.numpy()})["output"]
    model.eval()
    with torch.no_grad():
        assert_close(got, model(x).numpy(), "vs torch")


def test_from_torch_tuple_input_and_outputs():
    class TwoInTwoOut(nn.Module):
        def forward(self, a, b):
            return torch.relu(a + b), a * b

    a, b = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 1, 1)
    graph = from_torch(TwoInTwoOut(), (a, b))
    assert graph.inputs == ["input", "input_1"] and graph.outputs == ["output", "output_1"]
    out = reference.run(graph, {"input": a.numpy(), "input_1": b.numpy()})
    np.testing.assert_allclose(out["output"], torch.relu(a + b).numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["output_1"], (a * b).numpy(), rtol=1e-6)
