"""What every ncprobe model carries: input normalisation and named capture points."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ncprobe.data.errors import NcprobeError


class OutputError(NcprobeError):
    """A model output that holds no logits ncprobe can read; the message says what it was."""


class Normalize(nn.Module):
    """(x - mean) / std per channel; the first module, so attacks work in [0, 1] pixels."""

    def __init__(self, mean, std, n_dims: int):
        super().__init__()
        shape = (1, -1) + (1,) * (n_dims - 1) if len(mean) > 1 else (1,)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x):
        return (x - self.mean) / self.std


def select_logits(output, key: str | None = None, what: str = "the model"):
    """The logits in what a network's ``forward`` returned.

    A tensor is the logits; a tuple or list gives its first element (``key``: an index); a
    mapping or an object with attributes (Hugging Face ``ModelOutput``) its ``logits``
    (``key``: another name). Anything else is an :class:`OutputError` naming what came back.
    """
    if isinstance(output, torch.Tensor) and key is None:
        return output
    found = None
    if isinstance(output, (tuple, list)):
        index = 0 if key is None else int(key) if str(key).isdigit() else None
        if index is not None and index < len(output):
            found = output[index]
    elif isinstance(output, Mapping):
        found = output.get(key or "logits")
    elif output is not None:
        found = getattr(output, key or "logits", None)
    if isinstance(found, torch.Tensor):
        return found
    if isinstance(output, (tuple, list)):
        inner = ", ".join(type(v).__name__ for v in output[:4])
        kinds = f"a {type(output).__name__} of {len(output)} ({inner})"
    elif isinstance(output, Mapping):
        kinds = f"a {type(output).__name__} with keys {', '.join(map(str, list(output)[:6]))}"
    else:
        kinds = f"a {type(output).__name__}"
    raise OutputError(f"{what} returned {kinds}, and its logits are not "
                      f"{'at ' + repr(key) if key is not None else 'there'}; expected a "
                      "tensor, a tuple whose first element is the logits, or a mapping / "
                      "ModelOutput with 'logits' (`output_key` names another key or index)")


class NCModel(nn.Module):
    """A classifier with its capture points.

    Attributes
    ----------
    capture_points : dict of str to str
        Capture-point name -> module path inside this model, in depth order; a path ending in
        ``:input`` captures that module's input (the layer feeding the classifier).
    feature_layer : str
        The capture point whose output feeds the final linear classifier.
    classifier : str
        Module path of that final ``nn.Linear``.
    output_key : str or None
        Where the logits are in what ``net`` returns (:func:`select_logits`).
    """

    def __init__(self, net: nn.Module, mean, std, input_ndim: int, capture_points: dict,
                 feature_layer: str, classifier: str, output_key: str | None = None):
        super().__init__()
        self.normalize = Normalize(mean, std, input_ndim)
        self.net = net
        self.capture_points = {k: f"net.{v}" for k, v in capture_points.items()}
        self.feature_layer = feature_layer
        self.classifier = f"net.{classifier}"
        self.output_key = output_key
        #: how messages name this model
        self.what = "the model"

    def forward(self, x):
        return select_logits(self.net(self.normalize(x)), self.output_key, self.what)

    def classifier_module(self) -> nn.Linear:
        return self.get_submodule(self.classifier)
