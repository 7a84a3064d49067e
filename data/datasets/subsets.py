"""Stratified subsets of a split, by total size or per class, reproducible for a seed."""

from __future__ import annotations

import numpy as np

from ._base import DatasetError


def stratified_subset(labels: np.ndarray, limit: int | None = None,
                      max_per_class: int | None = None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a class-balanced subset.

    ``max_per_class`` keeps at most that many of each class; ``limit`` keeps about that many in
    total with class proportions preserved (largest-remainder rounding). Within a class the
    samples are taken in a seeded random order, so subsets are nested as limits grow.

    Examples
    --------
    >>> y = np.array([0, 0, 0, 0, 1, 1])
    >>> np.bincount(y[stratified_subset(y, limit=3)]).tolist()
    [2, 1]
    """
    labels = np.asarray(labels)
    n = labels.size
    for name, v in (("`limit`", limit), ("`max_per_class`", max_per_class)):
        if v is not None and v < 1:
            raise DatasetError(f"{name} must be >= 1, got {v}")
    if limit is None and max_per_class is None:
        return np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts.copy()
    if max_per_class is not None:
        quota = np.minimum(quota, max_per_class)
    if limit is not None and limit < quota.sum():
        exact = quota * limit / quota.sum()
        take = np.floor(exact).astype(int)
        order = np.argsort(-(exact - take), kind="stable")
        take[order[: limit - take.sum()]] += 1
        quota = take
    rng = np.random.default_rng(seed)
    keep = []
    for c, q in zip(classes, quota, strict=True):
        idx = np.flatnonzero(labels == c)
        keep.append(idx[rng.permutation(idx.size)[:q]])
    return np.sort(np.concatenate(keep))
