"""Model definitions for tests and benchmarks (plain PyTorch, random weights, seeded)."""
from .mobilenet_v2 import MobileNetV2, calibrate_batchnorm, mobilenet_v2, pointwise_sparsity, prune_pointwise

__all__ = ["MobileNetV2", "calibrate_batchnorm", "mobilenet_v2", "pointwise_sparsity", "prune_pointwise"]
