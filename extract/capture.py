"""Forward-hook layer capture: by capture-point name or module path, always cleaned up."""

from __future__ import annotations

import torch
from torch import nn

from ncprobe.data.errors import NcprobeError


class LayerError(NcprobeError):
    """A layer name that the model does not have; the message lists the valid ones."""


def resolve_layers(model, names) -> dict:
    """Map requested names (capture points, module paths, or ``all``) to module paths."""
    points = dict(model.capture_points)
    if names is None or names == ["all"]:
        return points
    modules = dict(model.named_modules())
    out = {}
    for n in names:
        if n in points:
            out[n] = points[n]
        elif n in modules and n:
            out[n] = n
        else:
            raise LayerError(f"layer {n!r} not in model; capture points: {', '.join(points)} "
                             "(or any module path: see nc-extract --list-layers --all-modules)")
    return out


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
        def hook(module, inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
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
            module = self.model.get_submodule(path)
            self._handles.append(module.register_forward_hook(self._hook(name)))
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
    """Output shape (without batch) of every capture, in call order, from one forward pass."""
    shapes = {}

    def hook_for(name):
        calls = {"n": 0}

        def hook(module, inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            calls["n"] += 1
            key = name if calls["n"] == 1 else f"{name}.call{calls['n']}"
            shapes[key] = tuple(output.shape[1:])
        return hook

    handles = [model.get_submodule(p).register_forward_hook(hook_for(n))
               for n, p in paths.items()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return shapes
