"""Built-in architectures and user factories (``package.module:factory``)."""

from __future__ import annotations

import importlib
import inspect

from torch import nn

from .base import NCModel, Normalize, OutputError, select_logits
from .cnn import cnn
from .foreign import map_keys
from .mlp import mlp
from .preactresnet import preactresnet18
from .vgg import vgg11bn
from .wrap import ModelError, verify_classifier, wrap_module
from .zoo import build_zoo, is_zoo

ARCHS = {"mlp": mlp, "cnn": cnn, "preactresnet18": preactresnet18, "vgg11bn": vgg11bn}


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
    torchvision, ``n_classes``; ``num_classes`` too when it takes ``**kwargs``, as
    torchvision's and timm's do) and the user's keyword arguments."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    names = [n for n in ("num_classes", "n_classes") if n in params]
    if not names and any(p.kind is p.VAR_KEYWORD for p in params.values()):
        names = ["num_classes"]
    if names and not {"num_classes", "n_classes"} & set(kwargs):
        kwargs = {names[0]: n_classes, **kwargs}
    try:
        return factory(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's code: report it, do not crash
        raise ModelError(f"model factory {spec!r} raised {type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}") from None


def _user_model(spec, input_shape, n_classes, mean, std, kwargs=None, classifier=None,
                output_key=None, match_outputs=True) -> NCModel:
    """Build ``spec`` (a zoo source's model, or ``package.module:factory``) and wrap it.

    Importing a factory runs the user's code: it is the one deliberate exception to "never
    execute user strings", and only ever imports a module path that the user typed.
    """
    if is_zoo(spec):
        net = build_zoo(spec, n_classes, dict(kwargs or {}))
    else:
        mod_name, _, fn_name = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as e:
            raise ModelError(f"cannot import model factory {spec!r}: {e}; expected "
                             "'package.module:callable' importable from this environment") \
                from None
        net = _call_factory(spec, factory, n_classes, dict(kwargs or {}))
    if isinstance(net, NCModel):
        return net
    if not isinstance(net, nn.Module):
        raise ModelError(f"factory {spec!r} returned {type(net).__name__}, expected nn.Module")
    # the classifier is the last nn.Linear of the class count: the dataset's, a Hugging Face
    # config's own (num_labels), or any with a class map (more outputs than classes)
    width = getattr(getattr(net, "config", None), "num_labels", n_classes) \
        if spec.startswith("hf:") else n_classes
    return wrap_module(net, input_shape, mean, std, classifier, f"model from {spec!r}",
                       width if match_outputs else None, output_key)


def build_model(arch: str, input_shape, n_classes: int, mean, std,
                arch_kwargs: dict | None = None, classifier: str | None = None,
                output_key: str | None = None, match_outputs: bool = True) -> NCModel:
    """The model ``arch`` with input normalisation (mean, std) as its first module.

    ``arch`` is a built-in name, ``torchvision:NAME``, ``timm:NAME``, ``hf:FOLDER`` or
    ``package.module:factory`` (called with ``arch_kwargs``); ``classifier`` names the final
    ``nn.Linear`` of a foreign model, ``output_key`` where its logits are in its output.
    Without ``match_outputs`` (a class map: the model has more outputs than the dataset has
    classes) the classifier is the last ``nn.Linear`` of any width.
    """
    if ":" in arch:
        return _user_model(arch, input_shape, n_classes, mean, std, arch_kwargs, classifier,
                           output_key, match_outputs)
    if output_key is not None:
        raise ModelError(f"`output_key` is for foreign models; built-in {arch!r} returns "
                         "its logits")
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


def _prefixed(state: dict, prefix: str) -> dict:
    """The entries of ``state`` under ``prefix``, without it."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_state(model: nn.Module, state: dict, source: str, arch: str | None = None,
               keep_normalization: bool = False, strip_prefix: str | None = None) -> None:
    """Load a state dict strictly; a mismatch lists missing and unexpected keys in one line.

    The input normalisation (``normalize.mean``/``std``) may be absent (checkpoints of models
    that normalise outside) and is then the model's own, as it is always with
    ``keep_normalization`` (the user chose it). Besides our own keys, these fit, each tried in
    turn and taken only when every key of the model is found:

    * the bare network saved by its own code (without our ``net.`` wrapper);
    * the entries under one leading prefix, e.g. a LightningModule's attribute (``model.``),
      the others (a loss's buffers, metrics) left out; ``strip_prefix`` names the prefix;
    * for a built-in ``arch`` with a key mapping (:data:`~.foreign.KEY_MAPS`), the standard
      CIFAR definitions' names.
    """
    own = set(model.state_dict())
    norm = {k for k in own if k.startswith("normalize.")}
    state = {k: v for k, v in state.items() if not (keep_normalization and k in norm)}
    if strip_prefix is not None:
        prefix = strip_prefix if strip_prefix.endswith(".") else strip_prefix + "."
        if not any(k.startswith(prefix) for k in state):
            heads = sorted({k.split(".")[0] + "." for k in state})
            raise ModelError(f"checkpoint {source!r} has no key starting with {prefix!r} "
                             f"(`strip_prefix`); its keys start with: {', '.join(heads[:8])}")
        state = _prefixed(state, prefix)

    def fits(s):
        return set(s) <= own and own - norm <= set(s)

    def bare(s):
        return {f"net.{k}": v for k, v in s.items()}

    if not fits(state):
        weights = {k: v for k, v in state.items() if k not in norm}
        heads = [] if strip_prefix else sorted({k.split(".")[0] + "." for k in weights
                                                if "." in k})
        # a bare network may own a module named ``normalize`` too (RobustBench's
        # normalize_model): then its normalize.* keys are the network's, not ours
        candidates = [bare(state), bare(weights)]
        candidates += [bare(_prefixed(weights, h)) for h in heads]
        candidates += [map_keys(weights, arch) if arch else None]
        for candidate in candidates:
            if candidate is not None and fits(candidate):
                state = candidate
                break
    got = set(state)
    missing, unexpected = sorted(own - norm - got), sorted(got - own)
    if missing or unexpected:
        def short(keys):
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
        heads = sorted({k.split(".")[0] + "." for k in got})
        raise ModelError(f"checkpoint {source!r} does not fit the architecture: missing keys "
                         f"[{short(missing)}], unexpected keys [{short(unexpected)}]; its keys "
                         f"start with {', '.join(heads[:6])}: `strip_prefix` takes those "
                         "under one prefix, `arch` names another architecture")
    try:
        model.load_state_dict(state, strict=False)  # keys checked above; shapes by torch
    except RuntimeError as e:  # shape mismatches: torch lists them one per line
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:3]) or str(e)
        raise ModelError(f"checkpoint {source!r} does not fit the architecture: {detail}") \
            from None


__all__ = ["ARCHS", "ModelError", "NCModel", "Normalize", "OutputError", "build_model",
           "load_state", "parse_arch_kwargs", "select_logits", "verify_classifier",
           "wrap_module"]
