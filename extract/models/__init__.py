"""Built-in architectures and user factories (``package.module:factory``)."""

from __future__ import annotations

import importlib
import inspect

import torch
from torch import nn

from ncprobe.data.errors import NcprobeError

from .base import NCModel, Normalize
from .cnn import cnn
from .foreign import map_keys
from .mlp import mlp
from .preactresnet import preactresnet18
from .vgg import vgg11bn

ARCHS = {"mlp": mlp, "cnn": cnn, "preactresnet18": preactresnet18, "vgg11bn": vgg11bn}


class ModelError(NcprobeError):
    """An architecture or checkpoint that cannot be used; the message says why."""


def parse_arch_kwargs(text: str | None) -> dict:
    """``"depth=18,widen=2.5,pretrained=false,act=relu"`` -> keyword arguments of literals
    (int, float, bool, else str); never evaluated as code."""
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier():
            raise ModelError(f"`arch_kwargs` item {item.strip()!r} is not key=value; expected "
                             "e.g. depth=18,widen=2.5,pretrained=false")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            low = value.lower()
            out[key] = {"true": True, "false": False}.get(low, value)
    return out


def _call_factory(spec, factory, n_classes, kwargs):
    """Call a factory with the class count under the name it takes (``num_classes`` as
    torchvision, ``n_classes``, or none) and the user's keyword arguments."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    for name in ("num_classes", "n_classes"):
        if name in params and name not in kwargs:
            kwargs = {name: n_classes, **kwargs}
            break
    try:
        return factory(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's code: report it, do not crash
        raise ModelError(f"model factory {spec!r} raised {type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}") from None


def _user_model(spec, input_shape, n_classes, mean, std, kwargs=None,
                classifier=None) -> NCModel:
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
    net = _call_factory(spec, factory, n_classes, dict(kwargs or {}))
    if isinstance(net, NCModel):
        return net
    if not isinstance(net, nn.Module):
        raise ModelError(f"factory {spec!r} returned {type(net).__name__}, expected nn.Module")
    return wrap_module(net, input_shape, mean, std, classifier, f"model from {spec!r}")


def wrap_module(net: nn.Module, input_shape, mean, std, classifier: str | None = None,
                what: str = "the model") -> NCModel:
    """Any classifier as an :class:`NCModel`: capture points are its ``capture_points``
    attribute or its children, the classifier its ``classifier_path``, ``classifier`` or last
    ``nn.Linear``, and the layer feeding it is found by a forward pass."""
    points = getattr(net, "capture_points", None) or {
        name: name for name, _ in net.named_children()}
    linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if classifier is None:
        classifier = getattr(net, "classifier_path", linears[-1] if linears else None)
    if classifier not in linears:
        raise ModelError(
            f"{what}: `classifier` {classifier!r} is not an nn.Linear of it; "
            f"its nn.Linear modules: {', '.join(linears) or 'none'}")
    feature = getattr(net, "feature_layer", None) or _classifier_input(
        net, points, classifier, input_shape, what)
    return NCModel(net, mean, std, len(input_shape), points, feature, classifier)


def _classifier_input(net, points, classifier, input_shape, what) -> str:
    """The capture point whose output is what the classifier receives, found by one forward
    pass (a hook on the classifier's input), not guessed from the order of the children."""
    outputs, received = {}, {}
    handles = [net.get_submodule(path).register_forward_hook(
        lambda m, i, o, name=name: outputs.setdefault(name, o))
        for name, path in points.items() if path != classifier]
    handles.append(net.get_submodule(classifier).register_forward_pre_hook(
        lambda m, i: received.setdefault("x", i[0])))
    was = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.rand(2, *input_shape))
    finally:
        net.train(was)
        for h in handles:
            h.remove()
    x = received.get("x")
    found = [name for name, o in outputs.items()
             if x is not None and isinstance(o, torch.Tensor) and o.shape[0] == x.shape[0]
             and o.flatten(1).shape == x.flatten(1).shape and torch.equal(o.flatten(1),
                                                                           x.flatten(1))]
    if not found:
        raise ModelError(f"{what}: no capture point outputs what the classifier "
                         f"{classifier!r} receives; name the final linear layer with "
                         "`classifier`, or give the model a feature_layer attribute")
    return found[-1]  # the deepest, in execution order


def build_model(arch: str, input_shape, n_classes: int, mean, std,
                arch_kwargs: dict | None = None, classifier: str | None = None) -> NCModel:
    """The model ``arch`` (a built-in name or ``package.module:factory``, called with
    ``arch_kwargs``) with input normalisation (mean, std) as its first module; ``classifier``
    names a factory model's final linear layer when it is not its last ``nn.Linear``."""
    if ":" in arch:
        return _user_model(arch, input_shape, n_classes, mean, std, arch_kwargs, classifier)
    if classifier is not None:
        raise ModelError(f"`classifier` is for package.module:factory models; built-in "
                         f"{arch!r} knows its own")
    if arch_kwargs:
        raise ModelError(f"`arch_kwargs` are for package.module:factory models; built-in "
                         f"{arch!r} takes none")
    if arch not in ARCHS:
        raise ModelError(f"unknown arch {arch!r}; available: {', '.join(ARCHS)} or "
                         "package.module:factory")
    if arch == "cnn" and (len(input_shape) != 3 or input_shape[0] != 1):
        raise ModelError(f"arch 'cnn' expects 1-channel images, got input shape {input_shape}")
    if arch in ("preactresnet18", "vgg11bn") and len(input_shape) != 3:
        raise ModelError(f"arch {arch!r} expects images (C, H, W), got input shape {input_shape}")
    return ARCHS[arch](tuple(input_shape), n_classes, mean, std)


def load_state(model: nn.Module, state: dict, source: str, arch: str | None = None,
               keep_normalization: bool = False) -> None:
    """Load a state dict strictly; a mismatch lists missing and unexpected keys in one line.

    The input normalisation (``normalize.mean``/``std``) may be absent (checkpoints of models
    that normalise outside) and is then the model's own, as it is always with
    ``keep_normalization`` (the user chose it). A state dict of the bare network (saved by
    the user's own code, without our ``net.`` wrapper) fits too, and for a built-in ``arch``
    with a key mapping (:data:`~.foreign.KEY_MAPS`) one with the standard CIFAR definitions'
    names is renamed to ours.
    """
    own = set(model.state_dict())
    norm = {k for k in own if k.startswith("normalize.")}
    state = {k: v for k, v in state.items()
             if not (keep_normalization and k in norm)}

    def fits(s):
        return set(s) <= own and own - norm <= set(s)

    if not fits(state):
        weights = {k: v for k, v in state.items() if k not in norm}
        # the bare network saved by its own code (our model wraps it as .net), or the
        # standard definition's names of a built-in architecture
        for candidate in ({f"net.{k}": v for k, v in weights.items()},
                          map_keys(weights, arch) if arch else None):
            if candidate is not None and fits(candidate):
                state = candidate
                break
    got = set(state)
    missing, unexpected = sorted(own - norm - got), sorted(got - own)
    if missing or unexpected:
        def short(keys):
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
        raise ModelError(f"checkpoint {source!r} does not fit the architecture: missing keys "
                         f"[{short(missing)}], unexpected keys [{short(unexpected)}]")
    try:
        model.load_state_dict(state, strict=False)  # keys checked above; shapes by torch
    except RuntimeError as e:  # shape mismatches: torch lists them one per line
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:3]) or str(e)
        raise ModelError(f"checkpoint {source!r} does not fit the architecture: {detail}") \
            from None


__all__ = ["ARCHS", "ModelError", "NCModel", "Normalize", "build_model", "load_state",
           "parse_arch_kwargs", "wrap_module"]
