"""Built-in architectures and user factories (``package.module:factory``)."""

from __future__ import annotations

import importlib

from torch import nn

from ncprobe.data.errors import NcprobeError

from .base import NCModel, Normalize
from .cnn import cnn
from .mlp import mlp
from .preactresnet import preactresnet18
from .vgg import vgg11bn

ARCHS = {"mlp": mlp, "cnn": cnn, "preactresnet18": preactresnet18, "vgg11bn": vgg11bn}


class ModelError(NcprobeError):
    """An architecture or checkpoint that cannot be used; the message says why."""


def _user_model(spec, input_shape, n_classes, mean, std) -> NCModel:
    """Import ``package.module:factory`` and wrap what it returns.

    This import runs the user's code: it is the one deliberate exception to "never execute user
    strings", and only ever imports a module path that the user typed.
    """
    mod_name, _, fn_name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ModelError(f"cannot import model factory {spec!r}: {e}; expected "
                         "'package.module:callable' importable from this environment") from None
    net = factory(n_classes=n_classes)
    if isinstance(net, NCModel):
        return net
    if not isinstance(net, nn.Module):
        raise ModelError(f"factory {spec!r} returned {type(net).__name__}, expected nn.Module")
    points = getattr(net, "capture_points", None) or {
        name: name for name, _ in net.named_children()}
    linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"model from {spec!r} has no nn.Linear classifier")
    classifier = getattr(net, "classifier_path", linears[-1])
    names = list(points)
    feature = getattr(net, "feature_layer", names[-2] if len(names) > 1 else names[-1])
    return NCModel(net, mean, std, len(input_shape), points, feature, classifier)


def build_model(arch: str, input_shape, n_classes: int, mean, std) -> NCModel:
    """The model ``arch`` (a built-in name or ``package.module:factory``) with normalisation."""
    if ":" in arch:
        return _user_model(arch, input_shape, n_classes, mean, std)
    if arch not in ARCHS:
        raise ModelError(f"unknown arch {arch!r}; available: {', '.join(ARCHS)} or "
                         "package.module:factory")
    if arch == "cnn" and (len(input_shape) != 3 or input_shape[0] != 1):
        raise ModelError(f"arch 'cnn' expects 1-channel images, got input shape {input_shape}")
    if arch in ("preactresnet18", "vgg11bn") and len(input_shape) != 3:
        raise ModelError(f"arch {arch!r} expects images (C, H, W), got input shape {input_shape}")
    return ARCHS[arch](tuple(input_shape), n_classes, mean, std)


def load_state(model: nn.Module, state: dict, source: str) -> None:
    """Load a state dict strictly; a mismatch lists missing and unexpected keys in one line."""
    own = set(model.state_dict())
    got = set(state)
    missing, unexpected = sorted(own - got), sorted(got - own)
    if missing or unexpected:
        def short(keys):
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
        raise ModelError(f"checkpoint {source!r} does not fit the architecture: missing keys "
                         f"[{short(missing)}], unexpected keys [{short(unexpected)}]")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # shape mismatches: torch lists them one per line
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:3]) or str(e)
        raise ModelError(f"checkpoint {source!r} does not fit the architecture: {detail}") \
            from None


__all__ = ["ARCHS", "ModelError", "NCModel", "Normalize", "build_model", "load_state"]
