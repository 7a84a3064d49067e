"""Slow, obvious float64 implementations of every metric, written straight from docs/metrics.md.

Loops over samples and class pairs on purpose: these are the oracle the fast code is checked
against, so they should be easy to read, not fast.
"""

from __future__ import annotations

import itertools

import numpy as np


def class_means(h, g, n_classes):
    h = np.asarray(h, np.float64)
    return {c: h[g == c].mean(axis=0) for c in range(n_classes) if np.any(g == c)}


def global_mean(h, g, n_classes):
    h = np.asarray(h, np.float64)
    keep = (g >= 0) & (g < n_classes)
    return h[keep].mean(axis=0)


def centred_matrix(h, g, n_classes):
    """M (D x C'), columns mu_c - mu_G over the classes present, in class order."""
    mu = class_means(h, g, n_classes)
    mg = global_mean(h, g, n_classes)
    return np.stack([mu[c] - mg for c in sorted(mu)], axis=1)


def simplex_matrix(h, g, n_classes):
    """(D x C'), columns mu_c minus the plain average of the class means present: the centre
    of the simplex metrics (NC2, ETF distance, NC3, alignment) in docs/metrics.md."""
    mu = class_means(h, g, n_classes)
    centre = np.mean([mu[c] for c in sorted(mu)], axis=0)
    return np.stack([mu[c] - centre for c in sorted(mu)], axis=1)


def sigma_w(h, g, n_classes):
    h = np.asarray(h, np.float64)
    mu = class_means(h, g, n_classes)
    n = 0
    out = np.zeros((h.shape[1], h.shape[1]))
    for i in range(len(h)):
        if g[i] in mu:
            r = h[i] - mu[g[i]]
            out += np.outer(r, r)
            n += 1
    return out / n


def sigma_b(h, g, n_classes):
    m = centred_matrix(h, g, n_classes)
    return m @ m.T / m.shape[1]


def pinv_psd(a, rel_tol):
    """Pseudo-inverse of a symmetric PSD matrix keeping eigenvalues > rel_tol * the largest."""
    w, v = np.linalg.eigh(a)
    keep = w > rel_tol * w.max()
    return (v[:, keep] / w[keep]) @ v[:, keep].T


def nc1(h, g, n_classes, rel_tol=1e-10):
    c = len(class_means(h, g, n_classes))
    return np.trace(sigma_w(h, g, n_classes) @ pinv_psd(sigma_b(h, g, n_classes), rel_tol)) / c


def nc1_trace(h, g, n_classes):
    return np.trace(sigma_w(h, g, n_classes)) / np.trace(sigma_b(h, g, n_classes))


def cdnv(h, g, n_classes):
    h = np.asarray(h, np.float64)
    mu = class_means(h, g, n_classes)
    var = {c: np.mean([np.sum((x - mu[c]) ** 2) for x in h[g == c]]) for c in mu}
    terms = [(var[a] + var[b]) / (2 * np.sum((mu[a] - mu[b]) ** 2))
             for a, b in itertools.permutations(sorted(mu), 2)]
    return np.mean(terms)


def _cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def nc2(vectors):
    """equinorm, equiangular, max_angle, etf_distance of row vectors."""
    v = np.asarray(vectors, np.float64)
    c = len(v)
    norms = np.array([np.linalg.norm(x) for x in v])
    pairs = [_cos(v[a], v[b]) for a, b in itertools.combinations(range(c), 2)]
    ordered = [abs(_cos(v[a], v[b]) + 1 / (c - 1)) for a, b in itertools.permutations(range(c), 2)]
    gram = np.array([[v[a] @ v[b] for b in range(c)] for a in range(c)])
    e = np.eye(c) - np.ones((c, c)) / c
    return {"equinorm": np.std(norms, ddof=1) / np.mean(norms),
            "equiangular": np.std(pairs, ddof=1), "max_angle": np.mean(ordered),
            "etf_distance": np.linalg.norm(gram / np.linalg.norm(gram) - e / np.linalg.norm(e))}


def nearest_centre(h, centres):
    """Loop over samples: index of the closest centre (dict class -> mean)."""
    h = np.asarray(h, np.float64)
    classes = sorted(centres)
    return np.array([classes[int(np.argmin([np.sum((x - centres[c]) ** 2) for c in classes]))]
                     for x in h])


def nc3(weight, h, g, n_classes):
    m = simplex_matrix(h, g, n_classes)
    w = np.asarray(weight, np.float64).T
    return np.linalg.norm(w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2


def align_angles(h, h_clean, y, n_classes):
    m = simplex_matrix(h, y, n_classes)
    mc = simplex_matrix(h_clean, y, n_classes)
    return np.array([np.degrees(np.arccos(np.clip(_cos(m[:, c], mc[:, c]), -1, 1)))
                     for c in range(m.shape[1])])


def leap_rate(h, y, pred, ref_centres):
    near = nearest_centre(h, ref_centres)
    flipped = [i for i in range(len(y)) if pred[i] != y[i]]
    return np.mean([near[i] == pred[i] for i in flipped]) if flipped else np.nan


def transitions(y, near, n_classes):
    out = np.zeros((n_classes, n_classes), np.int64)
    for a, b in zip(y, near, strict=True):
        out[a, b] += 1
    return out


def fuzziness(h, g, n_classes, rel_tol=1e-10):
    """He and Su's separation fuzziness Tr(SS_W SS_B^+), SS_B weighted by the class counts."""
    h = np.asarray(h, np.float64)
    mu = class_means(h, g, n_classes)
    mg = global_mean(h, g, n_classes)
    n = sum(np.sum(g == c) for c in mu)
    ss_b = sum(np.sum(g == c) * np.outer(mu[c] - mg, mu[c] - mg) for c in mu) / n
    return np.trace(sigma_w(h, g, n_classes) @ pinv_psd(ss_b, rel_tol))


def separation_fit(depths, values):
    """(rho, a, R^2) of log D = a + l log rho by numpy's polynomial fit."""
    y = np.log(np.asarray(values, np.float64))
    slope, a = np.polyfit(np.asarray(depths, np.float64), y, 1)
    fit = a + slope * np.asarray(depths, np.float64)
    r2 = 1 - np.sum((y - fit) ** 2) / np.sum((y - y.mean()) ** 2)
    return np.exp(slope), a, r2


def _units(h, g, n_classes):
    m = simplex_matrix(h, g, n_classes).T
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def uniformity(h, g, n_classes):
    """(mean, variance) over pairs c < c' of log(1 / ||u_c - u_c'||), u the unit simplex rows."""
    u = _units(h, g, n_classes)
    e = [np.log(1 / np.linalg.norm(u[a] - u[b]))
         for a, b in itertools.combinations(range(len(u)), 2)]
    return np.mean(e), np.var(e)


def hull_margins(h, g, n_classes):
    """Distance of each unit row to the convex hull of the others, by SLSQP on the simplex."""
    from scipy.optimize import minimize

    u = _units(h, g, n_classes)
    out = []
    for c in range(len(u)):
        q = np.delete(u, c, axis=0)
        k = len(q)
        res = minimize(lambda lam, q=q, c=c: np.sum((u[c] - lam @ q) ** 2), np.full(k, 1 / k),
                       jac=lambda lam, q=q, c=c: -2 * q @ (u[c] - lam @ q),
                       bounds=[(0, 1)] * k, method="SLSQP", options={"ftol": 1e-15,
                                                                      "maxiter": 500},
                       constraints=[{"type": "eq", "fun": lambda lam: lam.sum() - 1}])
        out.append(np.sqrt(res.fun))
    return np.array(out)
