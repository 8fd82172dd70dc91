"""MobileNetV2 (Sandler et al. 2018) in plain PyTorch, with random seeded weights, and a
one-shot magnitude pruner for its 1x1 convolutions.

    model = mobilenet_v2(width=1.0, input_size=224, seed=0)
    prune_pointwise(model, 0.8, block=4)

Random weights with BatchNorm statistics measured on random images (calibrate_batchnorm)
give activations of realistic range through the whole depth, which is what numerics and
speed tests need; accuracy is not the point.
"""
from __future__ import annotations

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2.
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Channel count rounded to a multiple of `divisor`, never more than 10% below `v`."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu6: bool = True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if relu6:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand, ReLU6; 3x3 depthwise, ReLU6; 1x1 project, linear; + input when shapes agree."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = int(round(cin * expansion))
        layers = [] if expansion == 1 else [ConvBNReLU6(cin, hidden, 1)]
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
                   ConvBNReLU6(hidden, cout, 1, relu6=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000, input_size: int = 224, dropout: float = 0.2):
        super().__init__()
        self.input_size = input_size
        cin = make_divisible(32 * width)
        last = make_divisible(1280 * max(1.0, width))
        layers = [ConvBNReLU6(3, cin, 3, 2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
            cout = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(ConvBNReLU6(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = x.mean((2, 3))  # global average pool
        return self.classifier(x)


def mobilenet_v2(width: float = 1.0, input_size: int = 224, num_classes: int = 1000, seed: int = 0,
                 calibrate: bool = True) -> MobileNetV2:
    """A MobileNetV2 in eval mode with weights drawn from `seed` (He init for convolutions)
    and, with `calibrate`, BatchNorm statistics measured on random images."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MobileNetV2(width, num_classes, input_size)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                # Not the identity, so that folding BatchNorm is really exercised.
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.normal_(m.bias, 0.0, 0.1)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        if calibrate:
            calibrate_batchnorm(model, input_size, seed=seed)
    return model.eval()


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, input_size: int, batches: int = 2, batch_size: int = 4, seed: int = 0):
    """Sets every BatchNorm's running mean and variance to those of its input on random
    images (uniform in [-1, 1], a normalised image's range). Leaves the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    for _ in range(batches):
        model(torch.rand(batch_size, 3, input_size, input_size, generator=gen) * 2 - 1)
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def _pointwise_convs(model: nn.Module):
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1:
            yield name, m


@torch.no_grad()
def prune_pointwise(model: nn.Module, sparsity: float, block: int = 1) -> dict[str, float]:
    """Zeros the smallest-magnitude weights of every 1x1 convolution, `sparsity` of each layer.

    block=1 prunes single weights; block=B prunes (B output channels x 1 input channel)
    groups by their L2 norm, so that each run of B consecutive output channels shares one
    input-channel pattern (a trailing partial block forms its own group). Returns the
    sparsity reached per layer."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), not {sparsity}")
    if block < 1:
        raise ValueError(f"block must be >= 1, not {block}")
    reached = {}
    for name, conv in _pointwise_convs(model):
        w = conv.weight[:, :, 0, 0]  # [Cout, Cin], a view
        cout, cin = w.shape
        n_blocks = -(-cout // block)
        padded = torch.zeros(n_blocks * block, cin, dtype=w.dtype)
        padded[:cout] = w
        scores = padded.reshape(n_blocks, block, cin).pow(2).sum(1)  # [n_blocks, Cin]
        k = int(round(sparsity * scores.numel()))
        if k:
            # Ties broken by position, so the result is deterministic.
            order = torch.argsort(scores.reshape(-1), stable=True)
            keep = torch.ones(scores.numel(), dtype=torch.bool)
            keep[order[:k]] = False
            mask = keep.reshape(n_blocks, 1, cin).expand(n_blocks, block, cin).reshape(-1, cin)[:cout]
            w.mul_(mask.to(w.dtype))
        reached[name] = float((w == 0).sum()) / w.numel()
    return reached


def pointwise_sparsity(model: nn.Module) -> float:
    """The fraction of zero weights over all 1x1 convolutions."""
    zeros = total = 0
    for _, conv in _pointwise_convs(model):
        zeros += int((conv.weight == 0).sum())
        total += conv.weight.numel()
    return zeros / total if total else 0.0
