"""Checkpoints written by other code: wrappers, prefixes and the paper's key names.

Training code saves weights in many shapes: a plain state dict, one wrapped under a key
(``{"state_dict": ..., "epoch": 3}``), keys prefixed by ``module.`` (DataParallel, DDP) or
``_orig_mod.`` (torch.compile), and, for the paper's architectures, the key names of the
standard CIFAR definitions (kuangliu's pytorch-cifar, Su et al.'s code). This module turns them
into a state dict of an ncprobe model, each rule explicit.
"""

from __future__ import annotations

import re

import torch

from ncprobe.data.errors import NcprobeError

#: keys that wrap a state dict in training checkpoints, in the order they are tried
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "ema")
#: prefixes added by DataParallel / DistributedDataParallel and by torch.compile
PREFIXES = ("module.", "_orig_mod.")


class CheckpointFormatError(NcprobeError):
    """A checkpoint whose weights cannot be found or mapped; the message says what to do."""


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def unwrap(obj, source: str, key: str | None = None) -> dict:
    """The state dict inside a loaded checkpoint: ``obj`` itself, ``obj[key]``, or the one of
    :data:`WRAPPER_KEYS` it has (several: ``key`` must choose)."""
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointFormatError(f"checkpoint {source!r} has no key {key!r} "
                                        f"(`checkpoint_key`); it has: {keys}")
        obj = obj[key]
    elif not _is_state_dict(obj) and isinstance(obj, dict):
        found = [k for k in WRAPPER_KEYS if _is_state_dict(obj.get(k))]
        if len(found) > 1:
            raise CheckpointFormatError(
                f"checkpoint {source!r} holds several state dicts ({', '.join(found)}); "
                "choose one with `checkpoint_key`")
        if found:
            obj = obj[found[0]]
    if not _is_state_dict(obj):
        what = (f"a dict with keys {', '.join(map(str, list(obj)[:8]))}"
                if isinstance(obj, dict) else type(obj).__name__)
        raise CheckpointFormatError(
            f"checkpoint {source!r} holds {what}, not a state dict; expected tensors by name, "
            f"or one under {', '.join(WRAPPER_KEYS)} (`checkpoint_key` names another)")
    return strip_prefixes(obj)


def strip_prefixes(state: dict) -> dict:
    """Keys without the ``module.`` / ``_orig_mod.`` prefixes that wrappers add."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def _preactresnet18_key(key: str) -> str | None:
    """kuangliu / Su et al. PreActResNet18 -> ours: ``conv1`` is our stem, ``shortcut.0`` a
    bare conv, the final ``bn`` belongs to our penultimate head, ``linear`` is ``fc``."""
    if key.startswith("conv1."):
        return "net.stem." + key[len("conv1."):]
    m = re.fullmatch(r"(layer\d\.\d)\.shortcut\.0\.(.+)", key)
    if m:
        return f"net.{m[1]}.shortcut.{m[2]}"
    if re.fullmatch(r"layer\d\.\d\.(bn1|conv1|bn2|conv2)\..+", key):
        return "net." + key
    if key.startswith("bn."):
        return "net.penultimate." + key
    if key.startswith("linear."):
        return "net.fc." + key[len("linear."):]
    return None


def _vgg11bn_key(key: str) -> str | None:
    """Su et al.'s VGG11-BN -> ours: ``features.N`` walks configuration A without the final
    max-pool (conv, BN, ReLU per entry, one module per max-pool); ``classifier`` is ``fc``."""
    from .vgg import _CFG

    index, conv, modules = 0, 0, {}
    for v in _CFG:
        if v == "M":
            index += 1
            continue
        conv += 1
        modules[index], modules[index + 1] = f"net.conv{conv}.0", f"net.conv{conv}.1"
        index += 3  # conv, BatchNorm, ReLU
    m = re.fullmatch(r"features\.(\d+)\.(.+)", key)
    if m and int(m[1]) in modules:
        return f"{modules[int(m[1])]}.{m[2]}"
    if key.startswith("classifier."):
        return "net.fc." + key[len("classifier."):]
    return None


#: one explicit key mapping per built-in architecture whose checkpoints exist elsewhere
KEY_MAPS = {"preactresnet18": _preactresnet18_key, "vgg11bn": _vgg11bn_key}


def map_keys(state: dict, arch: str) -> dict | None:
    """``state`` renamed to ncprobe's keys for ``arch``, or None when a key does not map."""
    rename = KEY_MAPS.get(arch)
    if rename is None:
        return None
    out = {}
    for k, v in state.items():
        new = rename(k)
        if new is None:
            return None
        out[new] = v
    return out
