"""The digits default: 4 blocks of Linear(256) + BatchNorm + ReLU, then Linear(n_classes)."""

from __future__ import annotations

import math

from torch import nn

from .base import NCModel


def mlp(input_shape, n_classes, mean, std, width: int = 256, depth: int = 4) -> NCModel:
    """MLP with capture points ``block1..block<depth>`` (post-ReLU) and ``logits``."""
    layers = [("flatten", nn.Flatten())]
    d_in = math.prod(input_shape)
    for i in range(1, depth + 1):
        layers.append((f"block{i}", nn.Sequential(nn.Linear(d_in, width), nn.BatchNorm1d(width),
                                                  nn.ReLU())))
        d_in = width
    layers.append(("fc", nn.Linear(width, n_classes)))
    net = nn.Sequential()
    for name, module in layers:
        net.add_module(name, module)
    points = {f"block{i}": f"block{i}" for i in range(1, depth + 1)}
    points["logits"] = "fc"
    return NCModel(net, mean, std, len(input_shape), points, f"block{depth}", "fc")
