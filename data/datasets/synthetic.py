"""Gaussian class mixture with a known geometry, for tests and benchmarks."""

from __future__ import annotations

import numpy as np

from ._base import DatasetError, make_dataset


def simplex_etf(n_classes: int, dim: int, seed: int = 0) -> np.ndarray:
    """Vertices of a simplex equiangular tight frame, shape (n_classes, dim), unit norm.

    The rows are the columns of sqrt(C / (C - 1)) Q (I - 11^T / C) for a random orthonormal
    Q (dim x C): equal norms, pairwise cosine -1 / (C - 1), zero mean (Papyan et al. 2020).

    Examples
    --------
    >>> v = simplex_etf(4, 10)
    >>> bool(np.allclose(v @ v.T, (4 * np.eye(4) - 1) / 3))
    True
    """
    if dim < n_classes - 1 or n_classes < 2:
        raise DatasetError(f"simplex ETF needs n_classes >= 2 and dim >= n_classes - 1; "
                           f"got n_classes={n_classes}, dim={dim}")
    rng = np.random.default_rng(seed)
    k = min(dim, n_classes)
    q, _ = np.linalg.qr(rng.standard_normal((dim, k)))
    centred = np.eye(n_classes) - 1.0 / n_classes
    if k < n_classes:
        # dim == C - 1: the centred frame has rank C - 1, so an orthonormal basis of it suffices
        u, _, _ = np.linalg.svd(centred)
        centred = u[:, :k].T @ centred
    return (np.sqrt(n_classes / (n_classes - 1)) * q @ centred).T


def make_synthetic_arrays(n_classes=10, dim=32, n_per_class=100, separation=4.0, noise=1.0,
                          seed=0, etf=True):
    """Features (N, dim) float64 and labels (N,): means ``separation`` x an ETF (or random)."""
    rng = np.random.default_rng(seed)
    if etf:
        means = separation * simplex_etf(n_classes, dim, seed)
    else:
        means = separation * rng.standard_normal((n_classes, dim)) / np.sqrt(dim)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = means[y] + noise * rng.standard_normal((len(y), dim))
    return x, y, means


def load_synthetic(root=None, n_classes: int = 10, dim: int = 32, n_per_class: int = 100,
                   separation: float = 4.0, noise: float = 1.0, seed: int = 0, etf: bool = True):
    """A train and a test split drawn from the same mixture (test with ``seed + 1``)."""
    if n_per_class < 1:
        raise DatasetError(f"synthetic: n_per_class must be >= 1, got {n_per_class}")
    xtr, ytr, means = make_synthetic_arrays(n_classes, dim, n_per_class, separation, noise,
                                            seed, etf)
    rng = np.random.default_rng(seed + 1)
    yte = np.repeat(np.arange(n_classes), max(1, n_per_class // 3))
    xte = means[yte] + noise * rng.standard_normal((len(yte), dim))
    opts = dict(n_classes=n_classes, dim=dim, n_per_class=n_per_class, separation=separation,
                noise=noise, seed=seed, etf=etf)
    return make_dataset("synthetic", {"train": (xtr, ytr), "test": (xte, yte)},
                        [f"class{i}" for i in range(n_classes)], "generated", opts,
                        box=None)  # Gaussian features: no valid range to clip to
