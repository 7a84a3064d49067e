"""The two passes written plainly: one sample and one statistic at a time, float64, slow.

:mod:`.passes` computes the same statistics fused (row blocks, one BLAS product for every
distance and projection, the projections through coefficients on the class means rather than
through a basis); these loops say what each statistic is, and the tests check the fused
kernels against them on random blocks, as scikit-learn keeps a naive reference beside its
blocked code. Same arguments and results as :func:`.passes.pass1` and :func:`.passes.pass2`,
except that pass 2 takes the between-class means' counts and builds its bases itself.
"""

from __future__ import annotations

import numpy as np


def pass1(h, groups, n_classes):
    """Per grouping k and class c: the sum of the rows, their count and the sum of their
    squared norms; and the count of non-finite values (whose rows count as zeros)."""
    h = np.asarray(h, np.float64)
    n_g, d = groups.shape[1], h.shape[1]
    out = {"sum": np.zeros((n_g, n_classes, d)), "count": np.zeros((n_g, n_classes)),
           "sumsq": np.zeros((n_g, n_classes)),
           "n_nonfinite": np.float64(h.size - np.count_nonzero(np.isfinite(h)))}
    for i, row in enumerate(np.where(np.isfinite(h), h, 0.0)):
        for k in range(n_g):
            c = groups[i, k]
            if 0 <= c < n_classes:
                out["sum"][k, c] += row
                out["count"][k, c] += 1
                out["sumsq"][k, c] += row @ row
    return out


def between_basis(means, counts, weighted=False):
    """(D, r) the basis U S^-1 of the centred class means of the classes present (rows
    mu_c - mu_G, times sqrt(n_c / N) when ``weighted``), keeping s_k^2 > C' eps64 s_1^2."""
    present = counts > 0
    if present.sum() < 2:
        return np.zeros((means.shape[1], 0))
    w = counts[present] / counts[present].sum()
    rows = means[present] - w @ means[present]
    if weighted:
        rows = np.sqrt(w)[:, None] * rows
    _, s, vt = np.linalg.svd(rows, full_matrices=False)
    keep = s**2 > present.sum() * np.finfo(np.float64).eps * s[0] ** 2
    return vt[keep].T / s[keep]


def _nearest(x, centres):
    """The nearest of the valid (finite) centres, ties to the lowest index; -1 when none."""
    d = [np.sum((x - m) ** 2) if np.isfinite(m).all() else np.inf for m in centres]
    return int(np.argmin(d)) if np.isfinite(d).any() else -1


def pass2(h, groups, labels, pred, means, counts, ref_centres, n_classes, nearest_own=None):
    """The statistics of :func:`.passes.pass2` (without the dense scatter), by their
    definitions (:mod:`.statistics`). ``means`` and ``counts`` (G, C[, D]) are pass 1's;
    ``ref_centres`` (C, D) the NCC centres, NaN rows never chosen."""
    h = np.asarray(h, np.float64)
    n_g, c_n = groups.shape[1], n_classes
    nearest_own = np.ones(n_g, bool) if nearest_own is None else nearest_own
    bases = [between_basis(means[k], counts[k]) for k in range(n_g)]
    basis_w = between_basis(means[0], counts[0], weighted=True)
    own = [np.where(counts[k][:, None] > 0, means[k], np.nan) for k in range(n_g)]
    out = {"projected": np.zeros((n_g, c_n)), "projected_w": np.zeros(c_n),
           "own_hits": np.zeros(n_g), "nc4_mismatch": np.zeros(n_g),
           "ref_hits": np.zeros(c_n), "ref_counted": 0.0, "flipped": 0.0, "leapt": 0.0,
           "outside": 0.0, "transitions": np.zeros((c_n, c_n))}
    for i, x in enumerate(h):
        for k in range(n_g):
            # the nearest own mean of every sample, in the grouping or not (ncc_acc_self and
            # nc4 cover the whole block)
            if nearest_own[k] and (counts[k] > 0).any():
                near = _nearest(x, own[k])
                out["own_hits"][k] += near == labels[i]
                out["nc4_mismatch"][k] += near != pred[i]
            c = groups[i, k]
            if not 0 <= c < c_n:
                continue
            r = x - means[k, c]
            out["projected"][k, c] += np.sum((bases[k].T @ r) ** 2)
            if k == 0:
                out["projected_w"][c] += np.sum((basis_w.T @ r) ** 2)
        near_ref = _nearest(x, ref_centres)
        if 0 <= labels[i] < c_n and near_ref >= 0:
            out["ref_counted"] += 1
            out["ref_hits"][labels[i]] += near_ref == labels[i]
            out["transitions"][labels[i], near_ref] += 1
        out["flipped"] += pred[i] != labels[i]
        out["leapt"] += pred[i] != labels[i] and near_ref == pred[i]
        out["outside"] += pred[i] < -1
    return {k: np.float64(v) if np.isscalar(v) else v for k, v in out.items()}
