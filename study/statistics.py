"""The statistics of a comparison across models: rank correlation and paired sign tests.

numpy only (the tests check each against scipy.stats on the same numbers). With few models
these are weak: a rank correlation over n models has a bootstrap interval of width about
2/sqrt(n) at best, and a sign test over k pairs cannot reach p < 0.05 before k = 6.
"""

from __future__ import annotations

import math

import numpy as np

#: bootstrap resamples of the rank correlation's interval; fixed seed, so the interval is
#: the same on every run
BOOTSTRAP = 2000
SEED = 0


def ranks(x) -> np.ndarray:
    """Ranks 1..n of ``x`` along its last axis, ties given the mean of the ranks they span:
    rank = (values below) + (values equal, itself included, + 1) / 2."""
    x = np.asarray(x, np.float64)
    below = (x[..., None, :] < x[..., :, None]).sum(axis=-1)
    equal = (x[..., None, :] == x[..., :, None]).sum(axis=-1)
    return below + (equal + 1) / 2


def _pearson_of_ranks(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of (..., n) ``x`` and ``y`` (NaN for a constant row)."""
    rx, ry = ranks(x), ranks(y)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=-1) / den, np.nan)


def spearman(x, y) -> float:
    """Spearman's rho of (n,) ``x`` and ``y`` over the pairs where both are finite: the
    Pearson correlation of their ranks. NaN with fewer than three pairs or a constant side."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return math.nan
    return float(_pearson_of_ranks(x[keep], y[keep]))


def spearman_interval(x, y, level: float = 0.95, n_boot: int = BOOTSTRAP,
                      seed: int = SEED) -> tuple[float, float, float, int]:
    """(rho, low, high, n): Spearman's rho over the n finite pairs and its percentile
    bootstrap interval (models resampled with replacement; resamples whose rho is undefined,
    e.g. all one model, are left out)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    rho = spearman(x, y)
    if math.isnan(rho):
        return rho, math.nan, math.nan, n
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    # in blocks of resamples: the rank comparisons take (block, n, n)
    step = max(1, 2_000_000 // (n * n))
    boot = np.concatenate([_pearson_of_ranks(x[draws[i:i + step]], y[draws[i:i + step]])
                           for i in range(0, n_boot, step)])
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return rho, math.nan, math.nan, n
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return rho, float(low), float(high), n


def sign_test(differences) -> tuple[int, int, float]:
    """(positive, negative, p): the two-sided exact sign test of paired ``differences``
    (zeros and NaN left out): p = min(1, 2 P(X <= min(k+, k-))), X ~ Binomial(k+ + k-, 1/2)."""
    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    k = pos + neg
    if k == 0:
        return pos, neg, math.nan
    tail = sum(math.comb(k, i) for i in range(min(pos, neg) + 1)) / 2 ** k
    return pos, neg, min(1.0, 2 * tail)
