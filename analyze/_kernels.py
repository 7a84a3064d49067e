"""Pure numpy kernels by axis: per-chunk sufficient statistics, all in float64.

Each kernel maps one chunk of samples to a flat float64 vector of *additive* statistics, so the
sum of the per-chunk vectors over all chunks is the statistic of the whole set (a tree
reduction in dask). The xarray/dask layer in :mod:`analyze.stats` works by dim name on top.

Shapes: ``h`` (n, D) features of one chunk; ``groups`` (n, G) integer group labels for G
groupings at once, where a label outside ``0 .. C-1`` (e.g. -1, "no target") excludes the sample
from that grouping.
"""

from __future__ import annotations

import numpy as np


def onehot(g: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C) float64 indicator of ``g``; rows of out-of-range labels are all zero."""
    g = np.asarray(g)
    out = np.zeros((g.shape[0], n_classes))
    ok = (g >= 0) & (g < n_classes)
    out[np.flatnonzero(ok), g[ok].astype(np.intp)] = 1.0
    return out


def pass1_size(n_groupings: int, n_classes: int, dim: int) -> int:
    return n_groupings * n_classes * (dim + 1) + 1


def pass1(h: np.ndarray, groups: np.ndarray, n_classes: int) -> np.ndarray:
    """Class sums and counts for every grouping, and the count of non-finite values.

    Returns the flat vector of ``sums`` (G, C, D), ``counts`` (G, C) and ``n_nonfinite`` (1,),
    unpacked by :func:`unpack_pass1`. One BLAS product with the stacked indicators.
    """
    x = np.asarray(h, dtype=np.float64)
    n_g = groups.shape[1]
    # indicators of every grouping side by side, plus a column of ones whose sum is finite
    # exactly when every value is (a NaN or inf propagates): the full check only when not
    oh = np.concatenate([onehot(groups[:, j], n_classes) for j in range(n_g)]
                        + [np.ones((x.shape[0], 1))], axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        sums = oh.T @ x
    bad = 0
    if not np.isfinite(sums[-1]).all():
        finite = np.isfinite(x)
        bad = x.size - np.count_nonzero(finite)
        sums = oh.T @ np.where(finite, x, 0.0)  # counted and reported; kept out of the sums
    counts = oh[:, :-1].sum(axis=0)
    return np.concatenate([sums[:-1].ravel(), counts, [bad]])


def unpack_pass1(v: np.ndarray, n_groupings: int, n_classes: int, dim: int):
    """``(sums (G, C, D), counts (G, C), n_nonfinite)`` from a :func:`pass1` vector."""
    g, c, d = n_groupings, n_classes, dim
    sums = v[: g * c * d].reshape(g, c, d)
    counts = v[g * c * d: g * c * d + g * c].reshape(g, c)
    return sums, counts, int(v[-1])


def nearest_centre(h: np.ndarray, centres: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Index of the nearest of ``centres`` (C, D) for each row of ``h`` (n, D), in float64.

    ``argmin_c ||h - mu_c||^2 = argmin_c (||mu_c||^2 - 2 h . mu_c)``; centres with
    ``valid == False`` (empty classes) are never chosen. Ties go to the lowest index, as in
    scikit-learn's NearestCentroid.
    """
    x = np.asarray(h, dtype=np.float64)
    d = (centres * centres).sum(axis=1)[None, :] - 2.0 * x @ centres.T
    d[:, ~valid] = np.inf
    return d.argmin(axis=1)


def pass2_layout(n_groupings: int, n_classes: int, dim: int, dense: bool):
    """Names and shapes of the :func:`pass2` statistics, in packing order."""
    g, c = n_groupings, n_classes
    layout = [("within", (g, c)), ("projected", (g, c)), ("conf_ref", (c, c)),
              ("conf_own", (g, c, c)), ("nc4_mismatch", (g,)), ("flipped", ()), ("leapt", ())]
    if dense:
        layout.append(("scatter", (dim, dim)))
    return layout


def pass2(h, groups, labels, pred, means, bases, ref_centres, ref_valid, own_valid, n_classes,
          dense=False, origin=None):
    """Second pass: within-class scatter, projections on the between-class basis, NCC counts.

    Parameters
    ----------
    h : (n, D) features; groups : (n, G); labels, pred : (n,) true label and network prediction.
    means : (G, C, D) class means of each grouping (pass 1).
    bases : (G, D, R) columns u_k / s_k of the thin SVD of the centred means, zero-padded.
    ref_centres : (C, D) clean class means of the reference split; ref_valid : (C,) bool.
    own_valid : (G, C) bool, classes with at least one sample in each grouping.
    dense : also accumulate the label-grouping scatter sum_i r_i r_i^T (D, D).
    origin : (D,), optional
        A point near the data (the global mean): everything is computed on h - origin, so the
        expansion ||r||^2 = ||x||^2 - 2 x.mu + ||mu||^2 cancels only at the scale of the
        class structure, not of ||h||^2.

    Returns
    -------
    Flat float64 vector in the order of :func:`pass2_layout`:
    ``within[g, c] = sum_{i: g_i = c} ||h_i - mu_c||^2``;
    ``projected[g, c] = sum_{i: g_i = c} ||B_g^T (h_i - mu_c)||^2`` (so nc1 = sum / N);
    ``conf_ref[y, v]`` counts true label y, nearest reference centre v;
    ``conf_own[g, y, v]`` the same with grouping g's own means;
    ``nc4_mismatch[g]`` counts nearest own mean != network prediction;
    ``flipped`` counts pred != label; ``leapt`` those whose nearest reference centre is pred.

    Notes
    -----
    One BLAS product of the centred chunk with every mean, reference centre and basis
    column at once replaces a pass per grouping: the chunk is read from memory twice (centre,
    multiply) whatever the number of groupings.
    """
    x = np.asarray(h, dtype=np.float64)
    c = n_classes
    n_g = groups.shape[1]
    o = np.zeros(x.shape[1]) if origin is None else np.asarray(origin, np.float64)
    xc = x - o
    m = means - o  # (G, C, D)
    ref = ref_centres - o
    r_dim = bases.shape[2]
    stacked = np.concatenate([m.reshape(n_g * c, -1), ref, bases.transpose(0, 2, 1).reshape(
        n_g * r_dim, -1)], axis=0)  # (G C + C + G R, D)
    prod = xc @ stacked.T
    dots = prod[:, : n_g * c].reshape(-1, n_g, c)              # x . mu_{g,c}
    ref_dots = prod[:, n_g * c: n_g * c + c]                    # x . ref_c
    xb = prod[:, n_g * c + c:].reshape(-1, n_g, r_dim)          # B_g^T x
    mb = np.einsum("gcd,gdr->gcr", m, bases)                    # B_g^T mu_{g,c}
    sq = np.einsum("nd,nd->n", xc, xc)
    m_sq = np.einsum("gcd,gcd->gc", m, m)
    y_oh = onehot(labels, c)
    within = np.zeros((n_g, c))
    projected = np.zeros((n_g, c))
    conf_own = np.zeros((n_g, c, c))
    mismatch = np.zeros(n_g)
    rows = np.arange(x.shape[0])
    for j in range(n_g):
        g = groups[:, j]
        ok = (g >= 0) & (g < c)
        gi = np.where(ok, g, 0)
        oh = onehot(g, c)
        r2 = sq - 2.0 * dots[rows, j, gi] + m_sq[j, gi]
        # a class whose samples all sit on its mean can round to a tiny negative sum
        within[j] = np.maximum(oh.T @ r2, 0.0)
        p = xb[:, j, :] - mb[j, gi]
        projected[j] = oh.T @ np.einsum("nr,nr->n", p, p)
        if own_valid[j].any():
            d = m_sq[j][None, :] - 2.0 * dots[:, j, :]
            d[:, ~own_valid[j]] = np.inf
            near = d.argmin(axis=1)
            conf_own[j] = y_oh.T @ onehot(near, c)
            mismatch[j] = np.count_nonzero(near != pred)
    if ref_valid.any():
        d = (ref * ref).sum(axis=1)[None, :] - 2.0 * ref_dots
        d[:, ~ref_valid] = np.inf
        near_ref = d.argmin(axis=1)
    else:
        near_ref = np.full(len(x), -1)
    conf_ref = y_oh.T @ onehot(near_ref, c)
    flipped = pred != labels
    leapt = np.count_nonzero(flipped & (near_ref == pred))
    parts = [within, projected, conf_ref, conf_own, mismatch, [np.count_nonzero(flipped)],
             [leapt]]
    if dense:
        g = groups[:, 0]
        ok = (g >= 0) & (g < c)
        r = x - means[0][np.where(ok, g, 0)]
        r[~ok] = 0.0
        parts.append(r.T @ r)
    return np.concatenate([np.ravel(p) for p in parts])


def unpack(v: np.ndarray, layout) -> dict:
    """Split a flat statistics vector into named arrays following ``layout``."""
    out, i = {}, 0
    for name, shape in layout:
        n = int(np.prod(shape)) if shape else 1
        out[name] = v[i: i + n].reshape(shape) if shape else float(v[i])
        i += n
    return out
