"""Geometry of class means and classifier rows: between-class basis and NC2 quantities.

All inputs are small (C x D) numpy arrays already reduced from the samples; float64 throughout.
Conventions (docs/metrics.md): mu_G is the sample-weighted global mean; Sigma_B = (1/C) M M^T with
M = [mu_c - mu_G] over the classes present (NC1); the simplex metrics centre on the unweighted
mean of the class means instead; std uses ddof = 1 as in Papyan et al.'s code.
"""

from __future__ import annotations

import numpy as np

EPS64 = np.finfo(np.float64).eps


def means_from_sums(sums: np.ndarray, counts: np.ndarray):
    """Class means (C, D) (NaN rows for empty classes), global mean (D,) and the present mask.

    The global mean is sample-weighted: mu_G = (1/N) sum_i h_i = sum_c n_c mu_c / N.
    """
    present = counts > 0
    n = counts.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    means[~present] = np.nan
    mu_g = sums.sum(axis=0) / n if n > 0 else np.full(sums.shape[1], np.nan)
    return means, mu_g, present


def simplex_centred(means: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Class means (C, D) minus the simplex's centroid mu_bar = (1/C') sum_c mu_c over the C'
    classes present (NaN rows stay NaN).

    The simplex metrics (NC2, ETF distance, NC3, alignment) use this centre: it does not move
    when one class has more samples, so an exact ETF reads as one for any class counts.
    """
    if not present.any():
        return np.full(means.shape, np.nan)
    return means - means[present].mean(axis=0)


def between_basis(centred: np.ndarray, tol: float | None = None):
    """Thin SVD basis of the centred means M (D x C'), keeping s_k^2 > tol * s_1^2.

    Parameters
    ----------
    centred : ndarray (C', D)
        Rows mu_c - mu_G of the classes present.
    tol : float, optional
        Relative threshold on squared singular values; default C' * eps64 (docs/metrics.md). Never a
        pseudo-inverse with a library default threshold: those give negative or tenfold-wrong
        NC1 (measured; docs/metrics.md).

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


def projection_coefs(means: np.ndarray, counts: np.ndarray, n_classes: int) -> np.ndarray:
    """Coefficients A (C, n_classes) with B^T r = A^T [mu_c . r]_c for the padded basis
    B = U S^-1 of one grouping (zero rows for absent classes, zero unused columns).

    With M = U S V^T (M the centred means of the classes present), B = U S^-1 = M V S^-2 and
    M^T r = (I - 1 w^T) [mu_c . r]_c with w = n_c / N (mu_G = sum_c w_c mu_c), so
    A = (I - w 1^T) V S^-2: projecting a sample on the between-class basis needs only its dot
    products with the class means, and no D x r basis is multiplied with the features.
    """
    present = counts > 0
    q = np.zeros((means.shape[0], n_classes))
    if present.sum() < 2:
        return q
    mu_g = (means[present] * counts[present, None]).sum(0) / counts.sum()
    m = means[present] - mu_g  # (C', D)
    u, s, _ = between_basis(m)
    # V = M^T U S^-1 for the kept directions, so V S^-2 = M^T U S^-3
    q[np.flatnonzero(present), : s.size] = (m @ u) / s**3
    w = np.where(present, counts, 0) / counts.sum()
    return q - np.outer(w, q.sum(axis=0))


def _cosines(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (v @ v.T) / np.outer(norms, norms)


def nc2(vectors: np.ndarray) -> dict:
    """NC2 quantities of a set of C vectors (rows), e.g. centred class means or classifier rows.

    Returns
    -------
    dict with
    ``equinorm`` = std_c ||v_c|| / mean_c ||v_c||;
    ``equiangular`` = std over pairs c < c' of cos(v_c, v_c');
    ``max_angle`` = mean over c != c' of |cos(v_c, v_c') + 1 / (C - 1)|;
    ``etf_distance`` = || G / ||G||_F - E / ||E||_F ||_F with G = V V^T, E = I - 11^T / C.
    (Papyan, Han, Donoho 2020, NC2; standard deviations with ddof = 1.)

    Examples
    --------
    >>> from ncprobe.data.datasets import simplex_etf
    >>> {k: round(abs(v), 12) for k, v in nc2(3.0 * simplex_etf(5, 8)).items()}
    {'equinorm': 0.0, 'equiangular': 0.0, 'max_angle': 0.0, 'etf_distance': 0.0}
    """
    v = np.asarray(vectors, dtype=np.float64)
    c = v.shape[0]
    if c < 2 or not np.isfinite(v).all():
        return dict.fromkeys(("equinorm", "equiangular", "max_angle", "etf_distance"), np.nan)
    norms = np.linalg.norm(v, axis=1)
    cos = _cosines(v)
    iu = np.triu_indices(c, 1)
    off = ~np.eye(c, dtype=bool)
    g = v @ v.T
    e = np.eye(c) - 1.0 / c
    return {
        "equinorm": float(norms.std(ddof=1) / norms.mean()),
        # one pair (C = 2) has no spread: a ddof=1 standard deviation of one value is undefined
        "equiangular": float(cos[iu].std(ddof=1)) if len(iu[0]) > 1 else np.nan,
        "max_angle": float(np.abs(cos[off] + 1.0 / (c - 1)).mean()),
        "etf_distance": float(np.linalg.norm(g / np.linalg.norm(g) - e / np.linalg.norm(e))),
    }


def nc3(weight: np.ndarray, centred: np.ndarray) -> float:
    """|| W^T / ||W||_F - M / ||M||_F ||_F for classifier rows W (C, D) and centred means (C, D)."""
    w = np.asarray(weight, np.float64)
    m = np.asarray(centred, np.float64)
    if not (np.isfinite(w).all() and np.isfinite(m).all()) or w.size == 0:
        return np.nan
    return float(np.linalg.norm(w / np.linalg.norm(w) - m / np.linalg.norm(m)))


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise angle in degrees between (C, D) arrays ``a`` and ``b`` (NaN where undefined).

    Kahan's 2 atan2(||a^ - b^||, ||a^ + b^||) on unit vectors: exact near 0 and 180 degrees,
    where arccos of a cosine loses half the digits.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        ua = a / np.linalg.norm(a, axis=1, keepdims=True)
        ub = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.degrees(2 * np.arctan2(np.linalg.norm(ua - ub, axis=1),
                                     np.linalg.norm(ua + ub, axis=1)))


def cdnv(means: np.ndarray, variances: np.ndarray) -> float:
    """Mean over class pairs of (var_c + var_c') / (2 ||mu_c - mu_c'||^2) (Galanti et al. 2022).

    ``variances`` are mean squared distances to the class mean: 0 for a class of one sample
    (docs/metrics.md), NaN only for an empty class, whose pairs are left out.
    """
    c = means.shape[0]
    if c < 2:
        return np.nan
    iu = np.triu_indices(c, 1)
    d2 = ((means[:, None, :] - means[None, :, :]) ** 2).sum(-1)[iu]
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = (variances[:, None] + variances[None, :])[iu] / (2.0 * d2)
    terms = terms[np.isfinite(terms)]
    return float(terms.mean()) if terms.size else np.nan
