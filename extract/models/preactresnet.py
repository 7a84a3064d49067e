"""PreActResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), as in Su et al."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import NCModel


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        short = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + short


class _Head(nn.Module):
    """Final BN-ReLU and global average pool: its output is the 512-d penultimate feature."""

    def __init__(self, c):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1).flatten(1)


def preactresnet18(input_shape, n_classes, mean, std) -> NCModel:
    """Capture points: ``stem``, ``layer1.0`` ... ``layer4.1`` (each block), ``penultimate``
    (512-d), ``logits``."""
    net = nn.Sequential()
    net.add_module("stem", nn.Conv2d(input_shape[0], 64, 3, 1, 1, bias=False))
    c_in = 64
    points = {"stem": "stem"}
    for i, (c, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        blocks = nn.Sequential(PreActBlock(c_in, c, stride), PreActBlock(c, c, 1))
        net.add_module(f"layer{i}", blocks)
        points.update({f"layer{i}.0": f"layer{i}.0", f"layer{i}.1": f"layer{i}.1"})
        c_in = c
    net.add_module("penultimate", _Head(512))
    net.add_module("fc", nn.Linear(512, n_classes))
    points.update(penultimate="penultimate", logits="fc")
    return NCModel(net, mean, std, len(input_shape), points, "penultimate", "fc")
