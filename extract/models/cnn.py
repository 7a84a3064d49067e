"""A small CNN for 1-channel 28x28 (MNIST) and 8x8 (digits) inputs."""

from __future__ import annotations

from torch import nn

from .base import NCModel


def _block(c_in, c_out, pool):
    mods = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool:
        mods.append(nn.MaxPool2d(2))
    return nn.Sequential(*mods)


def cnn(input_shape, n_classes, mean, std, width: int = 32) -> NCModel:
    """conv1 (w), conv2 (2w, pool), conv3 (4w, pool), global average pool -> penultimate (4w)."""
    c = input_shape[0]
    net = nn.Sequential()
    net.add_module("conv1", _block(c, width, pool=False))
    net.add_module("conv2", _block(width, 2 * width, pool=True))
    net.add_module("conv3", _block(2 * width, 4 * width, pool=True))
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("penultimate", nn.Flatten())
    net.add_module("fc", nn.Linear(4 * width, n_classes))
    points = {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3",
              "penultimate": "penultimate", "logits": "fc"}
    return NCModel(net, mean, std, len(input_shape), points, "penultimate", "fc")
