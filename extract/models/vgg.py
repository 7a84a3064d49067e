"""VGG11 with BatchNorm and a CIFAR stem (3x3 stride-1 convolutions), as in Su et al.

Configuration A without its final max-pool: eight 3x3 convolutions (with bias) each followed by
BatchNorm and ReLU, max-pools after blocks 1, 2, 4 and 6, so a 32x32 input leaves a 2x2x512 map
that an average pool turns into the 512-d penultimate features (Su et al.'s released code).
"""

from __future__ import annotations

from torch import nn

from .base import NCModel

_CFG = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512]


def vgg11bn(input_shape, n_classes, mean, std) -> NCModel:
    """Capture points ``conv1`` ... ``conv8`` (each conv-BN-ReLU block, with its pooling;
    ``conv8`` is the 2x2x512 map for 32x32 inputs), ``penultimate`` (its average, 512-d) and
    ``logits``."""
    net = nn.Sequential()
    c_in, i = input_shape[0], 0
    points = {}
    block = None
    for v in _CFG:
        if v == "M":
            block.append(nn.MaxPool2d(2))
            continue
        i += 1
        block = nn.Sequential(nn.Conv2d(c_in, v, 3, padding=1), nn.BatchNorm2d(v),
                              nn.ReLU())
        net.add_module(f"conv{i}", block)
        points[f"conv{i}"] = f"conv{i}"
        c_in = v
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("penultimate", nn.Flatten())
    net.add_module("fc", nn.Linear(512, n_classes))
    points.update(penultimate="penultimate", logits="fc")
    return NCModel(net, mean, std, len(input_shape), points, "penultimate", "fc")
