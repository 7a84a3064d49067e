"""What every ncprobe model carries: input normalisation and named capture points."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel; the first module, so attacks work in [0, 1] pixels."""

    def __init__(self, mean, std, n_dims: int):
        super().__init__()
        shape = (1, -1) + (1,) * (n_dims - 1) if len(mean) > 1 else (1,)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x):
        return (x - self.mean) / self.std


class NCModel(nn.Module):
    """A classifier with its capture points.

    Attributes
    ----------
    capture_points : dict of str to str
        Capture-point name -> module path inside this model, in depth order.
    feature_layer : str
        The capture point whose output feeds the final linear classifier.
    classifier : str
        Module path of that final ``nn.Linear``.
    """

    def __init__(self, net: nn.Module, mean, std, input_ndim: int, capture_points: dict,
                 feature_layer: str, classifier: str):
        super().__init__()
        self.normalize = Normalize(mean, std, input_ndim)
        self.net = net
        self.capture_points = {k: f"net.{v}" for k, v in capture_points.items()}
        self.feature_layer = feature_layer
        self.classifier = f"net.{classifier}"

    def forward(self, x):
        return self.net(self.normalize(x))

    def classifier_module(self) -> nn.Linear:
        return self.get_submodule(self.classifier)
