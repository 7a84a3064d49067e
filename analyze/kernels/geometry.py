"""Geometry of class means and classifier rows: between-class basis, NC2, NC3, CDNV.

Inputs are small arrays already reduced from the samples, float64 throughout, by axis:
``(..., C, D)`` class vectors, ``(..., C)`` per-class values and ``present`` masks, for any
leading axes (groupings, checkpoints, conditions) at once. A class that is not ``present``
(no samples) is left out of every quantity. Conventions (docs/metrics.md): mu_G is the
sample-weighted global mean; Sigma_B = (1/C) M M^T with M = [mu_c - mu_G] over the classes
present (NC1); the simplex metrics centre on the unweighted mean of the class means instead;
std uses ddof = 1 as in Papyan et al.'s code.
"""

from __future__ import annotations

import numpy as np

EPS64 = np.finfo(np.float64).eps
NC2_KEYS = ("equinorm", "equiangular", "max_angle", "etf_distance")


def _divide(a, b):
    """a / b with NaN where b is 0 (no warnings: the caller decides what NaN means)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1), np.nan)


def means_from_sums(sums: np.ndarray, counts: np.ndarray):
    """Class means (..., C, D) (NaN rows for empty classes), the global mean (..., D) and the
    present mask (..., C).

    The global mean is sample-weighted: mu_G = (1/N) sum_i h_i = sum_c n_c mu_c / N.
    """
    present = counts > 0
    means = np.where(present[..., None], sums / np.maximum(counts, 1)[..., None], np.nan)
    n = counts.sum(axis=-1)
    mu_g = _divide(sums.sum(axis=-2), n[..., None])
    return means, mu_g, present


def simplex_centred(means: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Class means (..., C, D) minus the simplex's centroid mu_bar = (1/C') sum_c mu_c over the
    C' classes present (rows of absent classes stay NaN).

    The simplex metrics (NC2, ETF distance, NC3, alignment) use this centre: it does not move
    when one class has more samples, so an exact ETF reads as one for any class counts.
    """
    rows = np.where(present[..., None], means, 0.0)
    centre = _divide(rows.sum(axis=-2), present.sum(axis=-1)[..., None])
    return np.where(present[..., None], means - centre[..., None, :], np.nan)


def between_singular_values(centred: np.ndarray, present: np.ndarray):
    """Singular values of the centred means M (..., C, D) over the classes present, and the
    mask of those kept: s_k^2 > C' eps64 s_1^2 (docs/metrics.md).

    Returns ``s`` (..., K) in decreasing order, K = min(C, D), and ``keep`` (..., K). Absent
    classes enter as zero rows, which add only zero singular values.
    """
    m = np.where(present[..., None], centred, 0.0)
    finite = np.isfinite(m).all(axis=(-2, -1))
    s = np.linalg.svd(np.where(finite[..., None, None], m, 0.0), compute_uv=False)
    tol = present.sum(axis=-1) * EPS64
    keep = (s**2 > (tol * s[..., 0] ** 2)[..., None]) & (s[..., :1] > 0) & finite[..., None]
    return s, keep


def between_basis(centred: np.ndarray, tol: float | None = None):
    """Thin SVD basis of one block's centred means M (C', D), keeping s_k^2 > tol * s_1^2.

    Parameters
    ----------
    centred : ndarray (C', D)
        Rows mu_c - mu_G of the classes present.
    tol : float, optional
        Relative threshold on squared singular values; default C' * eps64 (docs/metrics.md).
        Never a pseudo-inverse with a library default threshold: those give negative or
        tenfold-wrong NC1 (measured; docs/metrics.md).

    Returns
    -------
    u : (D, r) left singular vectors; s : (r,) singular values; tol : the threshold used.
    """
    m = np.asarray(centred, dtype=np.float64).T
    tol = m.shape[1] * EPS64 if tol is None else tol
    if m.size == 0 or not np.isfinite(m).all():
        return np.zeros((m.shape[0], 0)), np.zeros(0), tol
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    keep = s**2 > tol * s[0] ** 2 if s.size and s[0] > 0 else np.zeros(s.shape, bool)
    return u[:, keep], s[keep], tol


def projection_coefs(means: np.ndarray, counts: np.ndarray, n_classes: int,
                     weighted: bool = False) -> np.ndarray:
    """Coefficients A (C, n_classes) with B^T r = A^T [mu_c . r]_c for the padded basis
    B = U S^-1 of one block (zero rows for absent classes, zero unused columns).

    With M = U S V^T (M the centred means of the classes present), B = U S^-1 = M V S^-2 and
    M^T r = (I - 1 w^T) [mu_c . r]_c with w = n_c / N (mu_G = sum_c w_c mu_c), so
    A = (I - w 1^T) V S^-2: projecting a sample on the between-class basis needs only its dot
    products with the class means, and no D x r basis is multiplied with the features.

    ``weighted`` uses the rows sqrt(w_c) (mu_c - mu_G) instead, whose Gram matrix is the
    count-weighted between-class scatter SS_B of He and Su (2023): then
    A = (I - w 1^T) diag(sqrt w) V S^-2.
    """
    present = counts > 0
    q = np.zeros((means.shape[0], n_classes))
    if present.sum() < 2:
        return q
    w = np.where(present, counts, 0) / counts.sum()
    mu_g = (means[present] * counts[present, None]).sum(0) / counts.sum()
    scale = np.sqrt(w[present])[:, None] if weighted else 1.0
    m = scale * (means[present] - mu_g)  # (C', D)
    u, s, _ = between_basis(m)
    # V = M^T U S^-1 for the kept directions, so V S^-2 = M^T U S^-3
    q[np.flatnonzero(present), : s.size] = scale * (m @ u) / s**3
    return q - np.outer(w, q.sum(axis=0))


def pair_masks(present: np.ndarray):
    """Masks (..., C, C) of the ordered pairs c != c' and of the pairs c < c', both present."""
    c = present.shape[-1]
    both = present[..., :, None] & present[..., None, :]
    return both & ~np.eye(c, dtype=bool), both & np.triu(np.ones((c, c), bool), 1)


def _masked_std(x, mask, axis):
    """Standard deviation (ddof 1) of ``x`` where ``mask``, over ``axis``; NaN for < 2."""
    k = mask.sum(axis=axis)
    mean = _divide(np.where(mask, x, 0.0).sum(axis=axis), k)
    dev = np.where(mask, x - np.expand_dims(mean, axis), 0.0)
    return np.sqrt(_divide((dev**2).sum(axis=axis), np.where(k > 1, k - 1, 0)))


def nc2(vectors: np.ndarray, present: np.ndarray | None = None) -> dict:
    """NC2 quantities of the vectors (rows) of each set, e.g. centred class means or classifier
    rows: (..., C, D) -> dict of (...) arrays.

    Returns
    -------
    dict with
    ``equinorm`` = std_c ||v_c|| / mean_c ||v_c||;
    ``equiangular`` = std over pairs c < c' of cos(v_c, v_c') (NaN for one pair);
    ``max_angle`` = mean over c != c' of |cos(v_c, v_c') + 1 / (C - 1)|;
    ``etf_distance`` = || G / ||G||_F - E / ||E||_F ||_F with G = V V^T, E = I - 11^T / C.
    Over the C rows ``present`` (default: all); NaN for fewer than 2 or non-finite rows.
    (Papyan, Han, Donoho 2020, NC2; standard deviations with ddof = 1.)

    Examples
    --------
    >>> from ncprobe.data.datasets import simplex_etf
    >>> {k: round(abs(float(v)), 12) for k, v in nc2(3.0 * simplex_etf(5, 8)).items()}
    {'equinorm': 0.0, 'equiangular': 0.0, 'max_angle': 0.0, 'etf_distance': 0.0}
    """
    v = np.asarray(vectors, dtype=np.float64)
    present = np.ones(v.shape[:-1], bool) if present is None else present
    ok = np.where(present, np.isfinite(v).all(axis=-1), True).all(axis=-1)
    v = np.where(present[..., None] & ok[..., None, None], v, 0.0)
    c = present.sum(axis=-1)
    norms = np.linalg.norm(v, axis=-1)
    gram = v @ np.swapaxes(v, -1, -2)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = gram / (norms[..., :, None] * norms[..., None, :])
    off, upper = pair_masks(present)
    eye = np.eye(present.shape[-1], dtype=bool)
    both = present[..., :, None] & present[..., None, :]
    e = np.where(both, eye - _divide(1.0, c)[..., None, None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = (gram / np.linalg.norm(gram, axis=(-2, -1))[..., None, None]
                - e / np.sqrt(np.maximum(c - 1, 1))[..., None, None])
        out = {
            "equinorm": _masked_std(norms, present, -1)
            / _divide(np.where(present, norms, 0).sum(-1), c),
            "equiangular": _masked_std(cos, upper, (-2, -1)),
            "max_angle": _divide(np.where(off, np.abs(cos + _divide(1.0, c - 1)[..., None, None]),
                                          0.0).sum(axis=(-2, -1)), off.sum(axis=(-2, -1))),
            "etf_distance": np.linalg.norm(np.where(both, diff, 0.0), axis=(-2, -1)),
        }
    valid = ok & (c >= 2)
    return {k: np.where(valid, x, np.nan) for k, x in out.items()}


def nc3(weight: np.ndarray, centred: np.ndarray, present: np.ndarray) -> np.ndarray:
    """|| W^T / ||W||_F - M / ||M||_F ||_F over the rows ``present`` of classifier rows W
    (..., C, D) and centred means (..., C, D); NaN where either is not finite."""
    w = np.where(present[..., None], weight, 0.0)
    m = np.where(present[..., None], centred, 0.0)
    ok = np.isfinite(w).all(axis=(-2, -1)) & np.isfinite(m).all(axis=(-2, -1)) \
        & present.any(axis=-1)
    w, m = np.where(ok[..., None, None], w, 0.0), np.where(ok[..., None, None], m, 0.0)
    nw = np.linalg.norm(w, axis=(-2, -1))[..., None, None]
    nm = np.linalg.norm(m, axis=(-2, -1))[..., None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.linalg.norm(w / nw - m / nm, axis=(-2, -1))
    return np.where(ok, out, np.nan)


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise angle in degrees between (..., C, D) arrays ``a`` and ``b`` (NaN where
    undefined).

    Kahan's 2 atan2(||a^ - b^||, ||a^ + b^||) on unit vectors: exact near 0 and 180 degrees,
    where arccos of a cosine loses half the digits.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        ua = a / np.linalg.norm(a, axis=-1, keepdims=True)
        ub = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(2 * np.arctan2(np.linalg.norm(ua - ub, axis=-1),
                                     np.linalg.norm(ua + ub, axis=-1)))


def cdnv(means: np.ndarray, variances: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Mean over class pairs of (var_c + var_c') / (2 ||mu_c - mu_c'||^2) (Galanti et al.
    2022): (..., C, D), (..., C) -> (...).

    ``variances`` are mean squared distances to the class mean: 0 for a class of one sample
    (docs/metrics.md). Pairs with an absent class, or at distance 0, are left out. Distances
    come from the Gram matrix of the means centred on their centroid, O(C^2 D) time and
    O(C^2) memory per block; centring keeps the expansion at the scale of the class structure.
    """
    m = np.where(present[..., None], means, 0.0)
    m = m - _divide(m.sum(axis=-2), present.sum(axis=-1)[..., None])[..., None, :]
    m = np.where(present[..., None], m, 0.0)
    sq = (m * m).sum(axis=-1)
    d2 = np.maximum(sq[..., :, None] + sq[..., None, :] - 2.0 * (m @ np.swapaxes(m, -1, -2)),
                    0.0)
    var = np.where(present, variances, 0.0)
    _, upper = pair_masks(present)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = (var[..., :, None] + var[..., None, :]) / (2.0 * d2)
    use = upper & np.isfinite(terms)
    return _divide(np.where(use, terms, 0.0).sum(axis=(-2, -1)), use.sum(axis=(-2, -1)))
