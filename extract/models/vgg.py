"""VGG11 with BatchNorm and a CIFAR stem (3x3 stride-1 convolutions), as in Su et al."""

from __future__ import annotations

from torch import nn

from .base import NCModel

_CFG = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def vgg11bn(input_shape, n_classes, mean, std) -> NCModel:
    """Capture points ``conv1`` ... ``conv8`` (each conv-BN-ReLU block, with its pooling),
    ``penultimate`` (512-d for 32x32 inputs) and ``logits``."""
    net = nn.Sequential()
    c_in, i = input_shape[0], 0
    points = {}
    block = None
    for v in _CFG:
        if v == "M":
            block.append(nn.MaxPool2d(2))
            continue
        i += 1
        block = nn.Sequential(nn.Conv2d(c_in, v, 3, padding=1, bias=False), nn.BatchNorm2d(v),
                              nn.ReLU())
        net.add_module(f"conv{i}", block)
        points[f"conv{i}"] = f"conv{i}"
        c_in = v
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("penultimate", nn.Flatten())
    net.add_module("fc", nn.Linear(512, n_classes))
    points.update(penultimate="penultimate", logits="fc")
    return NCModel(net, mean, std, len(input_shape), points, "penultimate", "fc")
