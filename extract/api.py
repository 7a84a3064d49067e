"""The Python API for models already in memory (notebooks): the same store as ``nc-extract``.

:func:`extract_model` writes an ``ncprobe-activations/1`` store from an ``nn.Module`` and
images (numpy arrays, torch tensors, per-split dicts of them, or a ``DataLoader``), resumable
as the command's; :func:`extract_features` returns the features of a few thousand samples as
an ``xarray.Dataset`` without writing anything to disk. Both run the command's code path.
"""

from __future__ import annotations

import uuid

import numpy as np
import torch
import xarray as xr

from ncprobe.data.datasets import Dataset, make_dataset
from ncprobe.data.errors import NcprobeError
from ncprobe.data.store import fs

from .extraction import run
from .extraction.plan import ExtractConfig, plan_module


def _as_numpy(x, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise NcprobeError(f"`{what}` is a {type(x).__name__}; expected a numpy array, a torch "
                       "tensor, a dict of split -> array, or a DataLoader of (images, labels)")


def as_dataset(images, labels=None, *, class_names=None, n_classes=None, box=(0.0, 1.0),
               name: str = "in-memory") -> Dataset:
    """A :class:`~ncprobe.data.datasets.Dataset` from arrays, tensors, per-split dicts of
    them, or a ``DataLoader`` yielding ``(images, labels)`` batches (read once into memory)."""
    if isinstance(images, torch.utils.data.DataLoader):
        xs, ys = zip(*[(b[0], b[1]) for b in images], strict=True)
        images, labels = torch.cat(xs), torch.cat(ys)
    if not isinstance(images, dict):
        images, labels = {"data": images}, {"data": labels}
    if not isinstance(labels, dict) or set(labels) != set(images):
        raise NcprobeError("`labels` must have the same splits as `images` (a dict of split -> "
                           "labels, or one array beside one array of images)")
    arrays = {s: (_as_numpy(images[s], "images").astype(np.float32),
                  _as_numpy(labels[s], "labels").astype(np.int64)) for s in images}
    if class_names is None:
        top = max(int(y.max()) for _, y in arrays.values()) + 1
        class_names = [f"class{i}" for i in range(n_classes or top)]
    return make_dataset(name, arrays, class_names, "memory", box=box)


def _config(layers, attacks, settings) -> ExtractConfig:
    layers = [layers] if isinstance(layers, str) else layers
    return ExtractConfig(checkpoints=[], attacks=list(attacks), layers=layers, **settings)


def extract_model(model: torch.nn.Module, images, labels=None, out=None, *, layers=None,
                  attacks=("clean",), epoch: int = 0, class_names=None, n_classes=None,
                  box=(0.0, 1.0), name: str | None = None, overwrite: bool = False,
                  device: str = "auto", progress: bool = True, **settings) -> str:
    """Write the activation store ``out`` for a model in memory, as ``nc-extract`` would.

    Parameters
    ----------
    model : nn.Module
        In eval mode during extraction. An ncprobe model as it is; any other classifier with
        capture points at its children, its last ``nn.Linear`` (or ``classifier=``) as the
        classifier and the layer feeding it found by a forward pass.
    images, labels : arrays or tensors (N, ...) and (N,), dicts of split -> them, or a
        ``DataLoader`` of ``(images, labels)`` (then ``labels`` is None). One split is named
        ``data``. Images are in the model's input space, inside ``box`` (None: unbounded).
    layers : list of str, optional
        Capture points or module paths (default: all capture points).
    attacks : condition strings, as ``nc-extract --attack`` (default: clean only).
    epoch : the checkpoint coordinate of these weights.
    settings : more :class:`~ncprobe.extract.extraction.plan.ExtractConfig` fields (``reductions``,
        ``limit``, ``batch_size``, ``dtype``, ``normalize`` (default none), ``classifier``,
        ``seed``, ...).

    Returns
    -------
    str : ``out``. Rerunning the same call resumes; the store equals the command's for the
    same model and inputs.

    Examples
    --------
    >>> from ncprobe.extract import extract_model              # doctest: +SKIP
    >>> extract_model(net, x_test, y_test, "acts.zarr",
    ...               attacks=["clean", "pgd:norm=linf,eps=8/255,steps=10"])
    """
    if out is None:
        raise NcprobeError("`out` is required: the store to write (extract_features keeps "
                           "the features in memory instead)")
    ds = as_dataset(images, labels, class_names=class_names, n_classes=n_classes, box=box)
    cfg = _config(layers, attacks, settings)
    was = model.training
    try:
        return run(lambda dev: plan_module(model, ds, cfg, dev, epoch=epoch, name=name), out,
                   overwrite=overwrite, device=device, progress=progress,
                   command="ncprobe.extract.api.extract_model")
    finally:
        model.train(was)


def extract_features(model: torch.nn.Module, images, labels=None, *, layers=None,
                     attacks=("clean",), **kwargs) -> xr.Dataset:
    """Features of a few thousand samples in memory, nothing written to disk.

    The same computation as :func:`extract_model` (into a temporary in-memory store), as one
    ``xarray.Dataset`` of a split: a variable per layer with dims (condition, sample,
    ``feature_<layer>``), ``logits`` (condition, sample, class), ``pred``, ``target``,
    ``perturbation_norm``, and the ``label`` coordinate. With several splits, the first.
    """
    url = f"memory://ncprobe-{uuid.uuid4().hex}.zarr"
    try:
        extract_model(model, images, labels, url, layers=layers, attacks=attacks,
                      progress=False, **kwargs)
        tree = xr.open_datatree(url, engine="zarr").load()
    finally:
        fs.remove(url)
        fs.remove(fs.sibling(url, f".{fs.basename(url)}.lock"))
    split = tree.attrs["dataset"]["splits"][0]
    out = tree[f"{split}/outputs"].to_dataset().isel(checkpoint=0, drop=True)
    for layer in tree.attrs["layers"]:
        f = tree[f"{split}/layers/{layer}"]["features"].isel(checkpoint=0, drop=True)
        out[layer] = f.rename({"feature": f"feature_{layer}"})
    out.attrs = {k: tree.attrs[k] for k in ("schema", "n_classes", "class_names", "layers",
                                            "conditions", "model")}
    return out
