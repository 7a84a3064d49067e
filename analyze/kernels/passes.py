"""The two passes over the samples: per-chunk sufficient statistics, all in float64.

Each kernel maps one chunk of samples to a dict of named, *additive* float64 statistics, so
the sum over all chunks is the statistic of the whole set (a tree reduction in dask, see
:func:`ncprobe.analyze.blocks.reduce_blocks`). ``pass1_shapes`` and ``pass2_shapes`` declare
the name and shape of each, which is what a lazy reduction needs before any chunk is read.
The xarray layer in :mod:`ncprobe.analyze.stats` works by dim name on top.

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


#: rows converted to float64 at a time: a few MB that stay in cache and are reused, rather than
#: a fresh chunk-sized float64 copy per step (page faults cost more than the arithmetic)
ROW_BLOCK = 128


def row_blocks(h: np.ndarray, origin=None):
    """Yield ``(i, j, x)``: rows i:j of ``h`` as float64, minus ``origin``, in one reused buffer.

    The buffer is overwritten by the next block: consume it before asking for the next.
    """
    n, d = h.shape
    buf = np.empty((min(ROW_BLOCK, max(n, 1)), d))
    for i in range(0, n, ROW_BLOCK):
        j = min(i + ROW_BLOCK, n)
        x = buf[: j - i]
        if origin is None:
            x[...] = h[i:j]
        else:
            np.subtract(h[i:j], origin, out=x)
        yield i, j, x


def pass1_shapes(n_groupings: int, n_classes: int, dim: int) -> dict:
    """Name -> shape of each :func:`pass1` statistic."""
    return {"sum": (n_groupings, n_classes, dim), "count": (n_groupings, n_classes),
            "n_nonfinite": ()}


def pass1(h: np.ndarray, groups: np.ndarray, n_classes: int) -> np.ndarray:
    """Class sums and counts for every grouping, and the count of non-finite values.

    Returns ``{"sum": (G, C, D), "count": (G, C), "n_nonfinite": ()}``
    (:func:`pass1_shapes`). One BLAS product with the stacked indicators.
    """
    n_g = groups.shape[1]
    # indicators of every grouping side by side, plus a column of ones whose sum is finite
    # exactly when every value is (a NaN or inf propagates): the full check only when not
    oh = np.concatenate([onehot(groups[:, j], n_classes) for j in range(n_g)]
                        + [np.ones((h.shape[0], 1))], axis=1)
    sums = np.zeros((oh.shape[1], h.shape[1]))
    with np.errstate(invalid="ignore", over="ignore"):
        for i, j, x in row_blocks(h):
            sums += oh[i:j].T @ x
    bad = 0
    if not np.isfinite(sums[-1]).all():
        x = np.asarray(h, dtype=np.float64)
        finite = np.isfinite(x)
        bad = x.size - np.count_nonzero(finite)
        sums = oh.T @ np.where(finite, x, 0.0)  # counted and reported; kept out of the sums
    counts = oh[:, :-1].sum(axis=0)
    return {"sum": sums[:-1].reshape(n_g, n_classes, h.shape[1]),
            "count": counts.reshape(n_g, n_classes), "n_nonfinite": np.float64(bad)}


def pass2_shapes(n_groupings: int, n_classes: int, dim: int, dense: bool) -> dict:
    """Name -> shape of each :func:`pass2` statistic."""
    g, c = n_groupings, n_classes
    shapes = {"within": (g, c), "projected": (g, c), "projected_w": (c,), "conf_ref": (c, c),
              "conf_own": (g, c, c), "nc4_mismatch": (g,), "flipped": (), "leapt": ()}
    if dense:
        shapes["scatter"] = (dim, dim)
    return shapes


def pass2(h, groups, labels, pred, means, coefs, coefs_w, ref_centres, ref_valid, own_valid,
          n_classes, dense=False, origin=None):
    """Second pass: within-class scatter, projections on the between-class basis, NCC counts.

    Parameters
    ----------
    h : (n, D) features; groups : (n, G); labels, pred : (n,) true label and network prediction.
    means : (G, C, D) class means of each grouping (pass 1).
    coefs : (G, C, R) projection coefficients (:func:`~.geometry.projection_coefs`):
        B_g^T r = coefs_g^T [mu_c . r]_c, B_g = U S^-1 of the centred means.
    coefs_w : (C, R) the same for the count-weighted basis of the first grouping (the true
        labels), for the separation fuzziness of He and Su (docs/metrics.md).
    ref_centres : (C, D) clean class means of the reference split; ref_valid : (C,) bool.
    own_valid : (G, C) bool, classes with at least one sample in each grouping.
    dense : also accumulate the label-grouping scatter sum_i r_i r_i^T (D, D).
    origin : (D,), optional
        A point near the data (the global mean): everything is computed on h - origin, so the
        expansion ||r||^2 = ||x||^2 - 2 x.mu + ||mu||^2 cancels only at the scale of the
        class structure, not of ||h||^2.

    Returns
    -------
    dict of float64 arrays (:func:`pass2_shapes`):
    ``within[g, c] = sum_{i: g_i = c} ||h_i - mu_c||^2``;
    ``projected[g, c] = sum_{i: g_i = c} ||B_g^T (h_i - mu_c)||^2`` (so nc1 = sum / N);
    ``projected_w[c]`` the same on the count-weighted basis of grouping 0 (fuzziness = sum / N);
    ``conf_ref[y, v]`` counts true label y, nearest reference centre v;
    ``conf_own[g, y, v]`` the same with grouping g's own means;
    ``nc4_mismatch[g]`` counts nearest own mean != network prediction;
    ``flipped`` counts pred != label; ``leapt`` those whose nearest reference centre is pred.

    Notes
    -----
    Everything comes from one BLAS product of the centred chunk with the class means of the
    groupings in use and the reference centres: the chunk is read from memory twice (centre,
    multiply) whatever the number of groupings, and the projections need no basis product.
    """
    c = n_classes
    n, n_g = groups.shape
    o = np.zeros(h.shape[1]) if origin is None else np.asarray(origin, np.float64)
    m = means - o  # (G, C, D)
    ref = ref_centres - o
    used = [j for j in range(n_g) if own_valid[j].any()]  # e.g. no "target" when untargeted
    stacked = np.concatenate([m[used].reshape(len(used) * c, -1), ref], axis=0).T
    prod = np.empty((n, stacked.shape[1]))
    sq = np.empty(n)
    for i, j, xc in row_blocks(h, o):
        prod[i:j] = xc @ stacked
        sq[i:j] = np.einsum("nd,nd->n", xc, xc)
    ref_dots = prod[:, len(used) * c:]
    y_oh = onehot(labels, c)
    within = np.zeros((n_g, c))
    projected = np.zeros((n_g, c))
    projected_w = np.zeros(c)
    conf_own = np.zeros((n_g, c, c))
    mismatch = np.zeros(n_g)
    rows = np.arange(n)
    for slot, j in enumerate(used):
        dots = prod[:, slot * c: (slot + 1) * c]               # x . m_{g,c}
        gram = m[j] @ m[j].T                                    # m_c . m_c'
        m_sq = np.diag(gram)
        g = groups[:, j]
        ok = (g >= 0) & (g < c)
        gi = np.where(ok, g, 0)
        oh = onehot(g, c)
        r2 = sq - 2.0 * dots[rows, gi] + m_sq[gi]
        # a class whose samples all sit on its mean can round to a tiny negative sum
        within[j] = np.maximum(oh.T @ r2, 0.0)
        # B^T (x - mu_g) = coefs^T [m_c . (x - m_g)]_c: dot products with the means suffice;
        # coefs^T 1 = 0, so the constant that the origin shift adds to every m_c . r cancels
        both = np.concatenate([coefs[j], coefs_w], axis=1) if j == 0 else coefs[j]
        p = dots @ both - gram[gi] @ both
        sq_p = p * p
        projected[j] = oh.T @ sq_p[:, : coefs.shape[-1]].sum(axis=1)
        if j == 0:
            projected_w = oh.T @ sq_p[:, coefs.shape[-1]:].sum(axis=1)
        d = m_sq[None, :] - 2.0 * dots
        d[:, ~own_valid[j]] = np.inf
        near = d.argmin(axis=1)
        conf_own[j] = y_oh.T @ onehot(near, c)
        mismatch[j] = np.count_nonzero(near != pred)
    if ref_valid.any():
        d = (ref * ref).sum(axis=1)[None, :] - 2.0 * ref_dots
        d[:, ~ref_valid] = np.inf
        near_ref = d.argmin(axis=1)
    else:
        near_ref = np.full(n, -1)
    conf_ref = y_oh.T @ onehot(near_ref, c)
    flipped = pred != labels
    leapt = np.count_nonzero(flipped & (near_ref == pred))
    out = {"within": within, "projected": projected, "projected_w": projected_w,
           "conf_ref": conf_ref, "conf_own": conf_own, "nc4_mismatch": mismatch,
           "flipped": np.float64(np.count_nonzero(flipped)), "leapt": np.float64(leapt)}
    if dense:
        g = groups[:, 0]
        ok = (g >= 0) & (g < c)
        r = np.asarray(h, np.float64) - means[0][np.where(ok, g, 0)]
        r[~ok] = 0.0
        out["scatter"] = r.T @ r
    return out


def nearest(h: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre: h (..., D) and centres (..., C, D), broadcast against each
    other over the leading axes (a sample axis of h meets an axis of length 1 in centres).

    argmin_c ||mu_c||^2 - 2 h . mu_c in float64; NaN centres are never chosen; ties go to the
    lowest index, as scikit-learn's NearestCentroid.
    """
    valid = np.isfinite(centres).all(axis=-1)
    mu = np.where(valid[..., None], centres, 0.0)
    d = (mu * mu).sum(axis=-1) - 2.0 * np.einsum("...d,...cd->...c",
                                                 np.asarray(h, np.float64), mu)
    return np.where(valid, d, np.inf).argmin(axis=-1)
