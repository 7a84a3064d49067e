"""Forward-hook layer capture: by capture-point name, module path or glob, always cleaned up.

A capture point is a module path inside the model whose *output* is recorded, or, with the
suffix ``:input`` (:data:`INPUT`), a module whose *input* is recorded by a forward pre-hook:
that is how the layer feeding the classifier is captured, exactly what the classifier
receives, whatever the network does between its last block and its head.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

import torch
from torch import nn

from ncprobe.data.errors import NcprobeError

from ..models.base import NCModel

#: suffix of a capture path whose module's input (not output) is recorded
INPUT = ":input"


class LayerError(NcprobeError):
    """A layer name that the model does not have; the message lists the valid ones."""


def first_tensor(value):
    """The tensor a module's output stands for: itself, the first element of a tuple or list,
    the first tensor value of a mapping (Hugging Face ``ModelOutput``), else None."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value:
        return first_tensor(value[0])
    if isinstance(value, Mapping):
        for v in value.values():
            if isinstance(v, torch.Tensor):
                return v
    return None


def glob_match(path: str, pattern: str) -> bool:
    """Whether a module path matches a shell-style glob component by component: ``*`` and
    ``?`` never cross a dot, so ``'blocks.*'`` is the blocks, not their submodules."""
    parts, pats = path.split("."), pattern.split(".")
    return len(parts) == len(pats) and all(fnmatch.fnmatchcase(a, p)
                                           for a, p in zip(parts, pats, strict=True))


def _root(model: nn.Module) -> str:
    """The prefix of the user's network inside ``model`` (``net.`` in an NCModel)."""
    return "net." if isinstance(model, NCModel) else ""


def resolve_layers(model, names) -> dict:
    """Map requested names to capture paths, in the order asked.

    Each name is a capture point of the model, a module path (relative to the user's network,
    or with the ``net.`` prefix of the wrapped model) or a shell-style glob over module paths
    (``'blocks.*'``, ``'layer?'``, :func:`glob_match`); ``all`` (or ``None``) stands for every
    capture point.
    """
    points = dict(model.capture_points)
    if names is None:
        return points
    root = _root(model)
    modules = [n[len(root):] for n, _ in model.named_modules() if n.startswith(root) and
               len(n) > len(root)]
    out = {}
    for n in names:
        rel = n[len(root):] if root and n.startswith(root) else n
        if n == "all":
            out.update(points)
        elif n in points:
            out[n] = points[n]
        elif any(ch in n for ch in "*?["):
            hits = [m for m in modules if glob_match(m, rel)]
            if not hits:
                raise LayerError(f"layer glob {n!r} matches no module of the model; module "
                                 f"paths look like: {', '.join(modules[:8])}")
            out.update({m: root + m for m in hits})
        elif rel in modules:
            out[rel] = root + rel
        else:
            raise LayerError(f"layer {n!r} not in model; capture points: {', '.join(points)} "
                             "(or any module path or glob: see the list of layers with all "
                             "modules)")
    return out


def _attach(model: nn.Module, path: str, hook):
    """Register ``hook(value)`` on the output of ``path``, or on its input for ``X:input``."""
    if path.endswith(INPUT):
        module = model.get_submodule(path[: -len(INPUT)])
        return module.register_forward_pre_hook(lambda m, args: hook(args[0] if args else None))
    return model.get_submodule(path).register_forward_hook(lambda m, i, o: hook(o))


class LayerCapture:
    """Collect (reduced) outputs of named modules during a forward pass.

    A module called more than once per forward is recorded once per call, as ``name``,
    ``name.call2``, ... Outputs are reduced and copied inside the hook, so a later in-place
    operation (``ReLU(inplace=True)``) cannot change what was captured: into the tensor
    :meth:`reset` was given for that name (one copy, e.g. straight into a pinned host
    buffer; on CUDA the copy is ordered before any later in-place kernel on the stream), else
    as a clone in :attr:`outputs`. :attr:`seen` lists the names captured since the last
    reset. Hooks are removed on exit, also when the forward raises.
    """

    def __init__(self, model: nn.Module, paths: dict, reducers: dict | None = None):
        self.model = model
        self.paths = paths
        self.reducers = reducers or {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.seen: list[str] = []
        self._into: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        self._handles = []

    def _hook(self, name):
        def hook(value):
            output = first_tensor(value)
            if output is None:
                return
            k = self._calls.get(name, 0) + 1
            self._calls[name] = k
            key = name if k == 1 else f"{name}.call{k}"
            reducer = self.reducers.get(key) or self.reducers.get(name)
            t = output.detach()
            t = reducer(t) if reducer is not None else t.flatten(1)
            self.seen.append(key)
            if key in self._into:
                self._into[key].copy_(t, non_blocking=True)
            else:
                self.outputs[key] = t.clone()
        return hook

    def __enter__(self):
        for name, path in self.paths.items():
            self._handles.append(_attach(self.model, path, self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def reset(self, into: dict | None = None):
        """Forget what was captured; ``into`` maps names to tensors to copy outputs into."""
        self.outputs = {}
        self.seen = []
        self._into = into or {}
        self._calls = {}


def probe(model: nn.Module, paths: dict, example: torch.Tensor) -> dict:
    """Output shape (without batch) of every capture, in call order, from one forward pass.

    Captures that never run, or whose output holds no tensor, are absent."""
    shapes = {}

    def hook_for(name):
        calls = {"n": 0}

        def hook(value):
            output = first_tensor(value)
            if output is None:
                return
            calls["n"] += 1
            key = name if calls["n"] == 1 else f"{name}.call{calls['n']}"
            shapes[key] = tuple(output.shape[1:])
        return hook

    handles = [_attach(model, p, hook_for(n)) for n, p in paths.items()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return shapes
