"""Datasets as numpy arrays: the embedded ``digits`` default, ``synthetic`` and local files.

``load_dataset(name, root=None, **options)`` is the one entry point; every loader returns a
:class:`Dataset` with images in [0, 1], int64 labels, class names and train-split statistics.
"""

from __future__ import annotations

from functools import partial

from ._base import Dataset, DatasetError, make_dataset
from .cifar import load_cifar, write_cifar_binary
from .digits import load_digits
from .idx import load_idx
from .imagefolder import load_imagefolder
from .synthetic import load_synthetic, make_synthetic_arrays, simplex_etf

LOADERS = {
    "digits": load_digits,
    "synthetic": load_synthetic,
    "cifar10": partial(load_cifar, "cifar10"),
    "cifar100": partial(load_cifar, "cifar100"),
    "mnist": partial(load_idx, "mnist"),
    "fashion-mnist": partial(load_idx, "fashion-mnist"),
    "imagefolder": load_imagefolder,
}


def load_dataset(name: str, root=None, **options) -> Dataset:
    """Load dataset ``name`` (one of :data:`LOADERS`) from ``root`` when it needs files."""
    if name not in LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(LOADERS)}")
    return LOADERS[name](root=root, **options)


__all__ = ["Dataset", "DatasetError", "LOADERS", "load_dataset", "make_dataset",
           "make_synthetic_arrays", "simplex_etf", "write_cifar_binary"]
