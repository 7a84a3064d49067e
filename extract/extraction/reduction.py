"""Per-layer reductions applied on the device before features are copied to the host.

Spec strings: ``flatten`` (default), ``avgpool`` / ``maxpool`` (global spatial pooling),
``avgpool:K`` / ``maxpool:K`` (adaptive pooling to K x K, then flatten), ``cls`` / ``mean``
(token outputs (n, tokens, dim): the first (class) token, or the mean over tokens; the
default for 3-D outputs, :func:`default_reduction`), optionally followed by
``+proj:D``, a fixed random Gaussian projection to D dims (seeded by the layer name, so every
checkpoint and condition is projected identically).
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F

from ncprobe.data.errors import NcprobeError


class ReductionError(NcprobeError):
    """A reduction spec that does not apply to a layer."""


def _seed(name: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little") >> 1


def has_class_token(model) -> bool:
    """Whether the model has a class token (a parameter named ``cls_token``, as timm's and
    Hugging Face's vision transformers do)."""
    return any(n.split(".")[-1] == "cls_token" for n, _ in model.named_parameters())


def default_reduction(shape: tuple, has_class_token: bool) -> str:
    """The reduction a layer gets unless one is asked for: a token output ``(tokens, dim)``
    its class token when the model has one (a ``cls_token`` parameter), else the token mean;
    anything else is flattened. (A 1-D convolution's ``(channels, length)`` looks like tokens:
    ask for ``flatten`` or ``avgpool`` there.)"""
    if len(shape) == 2:
        return "cls" if has_class_token else "mean"
    return "flatten"


class Reducer:
    """Callable mapping a layer output (n, ...) to (n, dim) on its device."""

    def __init__(self, spec: str, shape: tuple, layer: str, seed: int = 0):
        self.spec = spec or "flatten"
        base, _, proj = self.spec.partition("+")
        self.shape = tuple(shape)
        kind, _, k = base.partition(":")
        if kind not in ("flatten", "avgpool", "maxpool", "cls", "mean"):
            raise ReductionError(f"unknown reduction {base!r} for layer {layer!r}; expected "
                                 "flatten, avgpool, maxpool, avgpool:K, maxpool:K, cls, mean "
                                 "[+proj:D]")
        if kind in ("cls", "mean") and (len(self.shape) != 2 or k):
            raise ReductionError(f"reduction {base!r} needs a token output (tokens, dim), but "
                                 f"layer {layer!r} has shape {self.shape}")
        if kind in ("avgpool", "maxpool") and len(self.shape) < 2:
            raise ReductionError(f"reduction {base!r} needs a spatial output, but layer "
                                 f"{layer!r} has shape {self.shape}; use flatten")
        self.kind = kind
        self.k = int(k) if k else None
        if self.k is not None and self.k < 1:
            raise ReductionError(f"pool size must be >= 1 in {base!r}")
        if kind == "flatten":
            dim = math.prod(self.shape)
        elif kind in ("cls", "mean"):
            dim = self.shape[1]
        else:
            dim = self.shape[0] * (self.k or 1) ** (len(self.shape) - 1)
        self.proj = None
        if proj:
            pk, _, d = proj.partition(":")
            if pk != "proj" or not d.isdigit() or int(d) < 1:
                raise ReductionError(f"bad projection {proj!r} for layer {layer!r}; expected "
                                     "proj:D with D >= 1")
            g = torch.Generator().manual_seed(_seed(layer, seed))
            # N(0, 1/D): Johnson-Lindenstrauss, distances preserved in expectation
            self.proj = torch.randn(dim, int(d), generator=g) / math.sqrt(int(d))
            dim = int(d)
        self.dim = dim

    def to(self, device):
        if self.proj is not None:
            self.proj = self.proj.to(device)
        return self

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "flatten":
            z = out.flatten(1)
        elif self.kind == "cls":
            z = out[:, 0]
        elif self.kind == "mean":
            z = out.mean(1)
        else:
            spatial = out.dim() - 2
            pool = {("avgpool", 1): F.adaptive_avg_pool1d, ("avgpool", 2): F.adaptive_avg_pool2d,
                    ("avgpool", 3): F.adaptive_avg_pool3d, ("maxpool", 1): F.adaptive_max_pool1d,
                    ("maxpool", 2): F.adaptive_max_pool2d,
                    ("maxpool", 3): F.adaptive_max_pool3d}[(self.kind, spatial)]
            z = pool(out, self.k or 1).flatten(1)
        if self.proj is not None:
            z = z.float() @ self.proj
        return z
