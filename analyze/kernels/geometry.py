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


def divide_or_nan(a, b):
    """a / b with NaN where b is 0 (no warnings: the caller decides what NaN means)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1), np.nan)


def means_from_sums(sums: np.ndarray, counts: np.ndarray):
    """Class means (..., C, D) (NaN rows for empty classes), the global mean (..., D) and the
    present mask (..., C).

    The global mean is sample-weighted: mu_G = (1/N) sum_i h_i = sum_c n_c mu_c / N.
    """
    present = counts > 0
    means = sums / np.maximum(counts, 1)[..., None]
    means[~present] = np.nan  # in place: one array of the size of the sums, not two
    n = counts.sum(axis=-1)
    mu_g = divide_or_nan(sums.sum(axis=-2), n[..., None])
    return means, mu_g, present


def within_from_sumsq(sumsq: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(..., C) sum_{i in c} ||h_i - mu_c||^2 = sumsq_c - ||s_c||^2 / n_c from pass 1's class
    sums s_c (..., C, D), counts n_c (..., C) and sums of squared norms (..., C).

    Both terms are float64 sums; their difference loses at most about 4 eps64 sum_{i in c}
    ||h_i||^2 absolutely (tested), a relative error of order eps64 ||mu_c||^2 / var_c
    (docs/metrics.md, "How NC1 is computed exactly").
    Rounding can leave a class whose samples all sit on its mean slightly negative: clipped
    to 0. Empty classes give 0.
    """
    own = (sums * sums).sum(axis=-1) / np.maximum(counts, 1)
    return np.maximum(np.where(counts > 0, sumsq - own, 0.0), 0.0)


def centred_means(means: np.ndarray, mu_g: np.ndarray, present: np.ndarray) -> np.ndarray:
    """M: class means (..., C, D) minus the sample-weighted global mean mu_G (..., D), NC1's
    centre; zero rows for absent classes (which then add nothing to M M^T)."""
    return np.where(present[..., None], means - mu_g[..., None, :], 0.0)


def simplex_centred(means: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Class means (..., C, D) minus the simplex's centroid mu_bar = (1/C') sum_c mu_c over the
    C' classes present (rows of absent classes stay NaN).

    The simplex metrics (NC2, ETF distance, NC3, alignment) use this centre: it does not move
    when one class has more samples, so an exact ETF reads as one for any class counts.
    """
    rows = np.where(present[..., None], means, 0.0)
    centre = divide_or_nan(rows.sum(axis=-2), present.sum(axis=-1)[..., None])
    return np.where(present[..., None], means - centre[..., None, :], np.nan)


def between_singular_values(centred: np.ndarray, present: np.ndarray):
    """Singular values of the centred means M (..., C, D) over the classes present, and the
    mask of those kept: s_k^2 > C' eps64 s_1^2 (docs/metrics.md).

    Returns ``s`` (..., K) in decreasing order, K = min(C, D), and ``keep`` (..., K). Absent
    classes enter as zero rows, which add only zero singular values.
    """
    m = np.where(present[..., None], centred, 0.0)
    finite = np.isfinite(m).all(axis=(-2, -1))
    # sets of fewer than two classes (an empty grouping) have no direction: not decomposed
    spans = finite & (present.sum(axis=-1) >= 2)
    s = np.zeros(m.shape[:-2] + (min(m.shape[-2:]),))
    s[spans] = np.linalg.svd(m[spans], compute_uv=False)
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


def between_rows(means: np.ndarray, counts: np.ndarray, weighted: bool = False) -> np.ndarray:
    """(C', D) the rows whose Gram matrix is the between-class scatter: mu_c - mu_G for the
    C' classes present (mu_G their count-weighted mean), times sqrt(n_c / N) when
    ``weighted`` (SS_B of He and Su 2023)."""
    present = counts > 0
    mu_g = (means[present] * counts[present, None]).sum(0) / counts.sum()
    rows = means[present] - mu_g
    return np.sqrt(counts[present] / counts.sum())[:, None] * rows if weighted else rows


def projection_coefs(means: np.ndarray, counts: np.ndarray, rank: int,
                     weighted: bool = False) -> np.ndarray:
    """Coefficients A (C, rank) with B^T r = A^T [mu_c . r]_c for the padded basis
    B = U S^-1 of one block (zero rows for absent classes, zero unused columns; ``rank`` at
    least min(C, D), the most directions C centred means can span).

    With M = U S V^T (M the centred means of the classes present), B = U S^-1 = M V S^-2 and
    M^T r = (I - 1 w^T) [mu_c . r]_c with w = n_c / N (mu_G = sum_c w_c mu_c), so
    A = (I - w 1^T) V S^-2: projecting a sample on the between-class basis needs only its dot
    products with the class means, and no D x r basis is multiplied with the features.

    ``weighted`` uses the rows sqrt(w_c) (mu_c - mu_G) instead, whose Gram matrix is the
    count-weighted between-class scatter SS_B of He and Su (2023): then
    A = (I - w 1^T) diag(sqrt w) V S^-2.
    """
    present = counts > 0
    q = np.zeros((means.shape[0], rank))
    if present.sum() < 2:
        return q
    w = np.where(present, counts, 0) / counts.sum()
    m = between_rows(means, counts, weighted)  # (C', D)
    scale = np.sqrt(w[present])[:, None] if weighted else 1.0
    u, s, _ = between_basis(m)
    # V = M^T U S^-1 for the kept directions, so V S^-2 = M^T U S^-3
    q[np.flatnonzero(present), : s.size] = scale * (m @ u) / s**3
    return q - np.outer(w, q.sum(axis=0))


#: class rows per block of a pairwise computation, at most: memory O(PAIR_BLOCK x C) per set
#: of vectors, never C x C
PAIR_BLOCK = 512
#: and fewer rows when there are many sets or classes: each (..., rows, C) temporary of a
#: block stays near this many values, whatever the number of classes, conditions and
#: groupings it covers
PAIR_VALUES = 2**21


def pair_blocks(v: np.ndarray, present: np.ndarray):
    """Yield ``(a, b, gram, both, upper)`` for the class rows a:b of ``v`` (..., C, D):
    ``gram`` (..., b-a, C) = v_i . v_j, ``both`` the pairs whose classes are both present,
    ``upper`` those with j > i. Blocks of :data:`PAIR_BLOCK` rows, fewer when the block's
    arrays would exceed :data:`PAIR_VALUES` values."""
    c = v.shape[-2]
    rows = max(1, min(PAIR_BLOCK, PAIR_VALUES // max(1, c * int(np.prod(v.shape[:-2])))))
    idx = np.arange(c)
    vt = np.swapaxes(v, -1, -2)
    for a in range(0, c, rows):
        b = min(a + rows, c)
        both = present[..., a:b, None] & present[..., None, :]
        yield a, b, v[..., a:b, :] @ vt, both, both & (idx[None, :] > idx[a:b, None])


def nc2(vectors: np.ndarray, present: np.ndarray | None = None, pairs: bool = True) -> dict:
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
    ``pairs`` False skips the three pairwise quantities (NaN), e.g. when no simplex can exist.
    (Papyan, Han, Donoho 2020, NC2; standard deviations with ddof = 1.) Two passes over
    blocks of class pairs (:func:`pair_blocks`): mean, then spread; O(C^2 D) time.

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
    lead = v.shape[:-2]
    valid = ok & (c >= 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        equinorm = (_masked_std(norms, present, -1)
                    / divide_or_nan(np.where(present, norms, 0).sum(-1), c))
    if not pairs:
        return {"equinorm": np.where(valid, equinorm, np.nan),
                **dict.fromkeys(NC2_KEYS[1:], np.full(lead, np.nan))}
    cos_sum, n_upper, off_sum, n_off, g2 = (np.zeros(lead) for _ in range(5))
    shift = divide_or_nan(1.0, c - 1)[..., None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        for a, b, gram, both, upper in pair_blocks(v, present):
            cos = gram / (norms[..., a:b, None] * norms[..., None, :])
            off = both & (np.arange(a, b)[:, None] != np.arange(v.shape[-2])[None, :])
            cos_sum += np.where(upper, cos, 0.0).sum(axis=(-2, -1))
            n_upper += upper.sum(axis=(-2, -1))
            off_sum += np.where(off, np.abs(cos + shift), 0.0).sum(axis=(-2, -1))
            n_off += off.sum(axis=(-2, -1))
            g2 += (np.where(both, gram, 0.0) ** 2).sum(axis=(-2, -1))
        cos_mean = divide_or_nan(cos_sum, n_upper)[..., None, None]
        g_norm = np.sqrt(g2)[..., None, None]
        e_norm = np.sqrt(np.maximum(c - 1, 1))[..., None, None]
        spread, etf = np.zeros(lead), np.zeros(lead)
        for a, b, gram, both, upper in pair_blocks(v, present):
            cos = gram / (norms[..., a:b, None] * norms[..., None, :])
            spread += np.where(upper, (cos - cos_mean) ** 2, 0.0).sum(axis=(-2, -1))
            eye = np.arange(a, b)[:, None] == np.arange(v.shape[-2])[None, :]
            e = eye - divide_or_nan(1.0, c)[..., None, None]
            etf += np.where(both, (gram / g_norm - e / e_norm) ** 2, 0.0).sum(axis=(-2, -1))
        out = {
            "equinorm": equinorm,
            "equiangular": np.sqrt(divide_or_nan(spread, np.where(n_upper > 1, n_upper - 1, 0))),
            "max_angle": divide_or_nan(off_sum, n_off),
            "etf_distance": np.sqrt(etf),
        }
    return {k: np.where(valid, x, np.nan) for k, x in out.items()}


def _masked_std(x, mask, axis):
    """Standard deviation (ddof 1) of ``x`` where ``mask``, over ``axis``; NaN for < 2."""
    k = mask.sum(axis=axis)
    mean = divide_or_nan(np.where(mask, x, 0.0).sum(axis=axis), k)
    dev = np.where(mask, x - np.expand_dims(mean, axis), 0.0)
    return np.sqrt(divide_or_nan((dev**2).sum(axis=axis), np.where(k > 1, k - 1, 0)))


def unit_rows(v: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Rows of ``v`` (..., C, D) scaled to unit length; absent or zero rows become 0."""
    norms = np.linalg.norm(np.where(present[..., None], v, 0.0), axis=-1, keepdims=True)
    return np.where(present[..., None] & (norms > 0), v / np.where(norms > 0, norms, 1), 0.0)


def uniformity(vectors: np.ndarray, present: np.ndarray) -> dict:
    """Hyperspherical uniformity of the rows (Liu et al., ICLR 2023): with u_c = v_c / ||v_c||,
    the mean and the variance over pairs c < c' of log(1 / ||u_c - u_c'||).

    (..., C, D) -> dict of (...) ``mean`` and ``var`` (ddof 0). Lower mean is more uniform; a
    simplex ETF minimises it for C <= D + 1, with variance 0. One pass over class-pair
    blocks, O(C^2 D) time, O(PAIR_BLOCK C) memory per set: each block's mean and sum of
    squared deviations, merged as they come (Chan, Golub and LeVeque 1979), as stable as two
    passes and half the Gram products.
    """
    u = unit_rows(np.asarray(vectors, np.float64), present)
    lead = u.shape[:-2]
    mean, m2, k = np.zeros(lead), np.zeros(lead), np.zeros(lead)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _, _, gram, _, upper in pair_blocks(u, present):
            e = np.where(upper, -0.5 * np.log(np.maximum(2.0 - 2.0 * gram, 0.0)), 0.0)
            kb = upper.sum(axis=(-2, -1))
            mb = divide_or_nan(e.sum(axis=(-2, -1)), kb)
            m2b = np.where(upper, (e - mb[..., None, None]) ** 2, 0.0).sum(axis=(-2, -1))
            n = k + kb
            delta, share = mb - mean, divide_or_nan(kb, n)
            mean = np.where(kb > 0, mean + delta * share, mean)
            m2 = np.where(kb > 0, m2 + m2b + delta**2 * k * share, m2)
            k = n
    return {"mean": np.where(k > 0, mean, np.nan), "var": divide_or_nan(m2, k)}


#: the convex-hull margins cost C non-negative least-squares problems of size (D + 1) x C
#: per set, about O(C^3 D): computed up to this many classes, NaN beyond
HULL_MAX_CLASSES = 256


def hull_margins(vectors: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Distance of each unit row u_c to the convex hull of the other rows present (Jiang et
    al. 2023, the one-vs-rest distance of generalised NC2): (..., C, D) -> (..., C).

    min over lambda >= 0, sum lambda = 1 of ||u_c - sum_{j != c} lambda_j u_j||, solved as a
    non-negative least-squares problem with the sum constraint as a heavily weighted row and
    the distance then measured at the normalised lambda (an upper bound on the minimum; the
    tests find it within 1e-6 of SciPy's SLSQP, and within 1e-9 of C / (C - 1), the value
    for a simplex ETF). NaN for absent classes, fewer than 2 classes and more than
    :data:`HULL_MAX_CLASSES`.
    """
    out = np.full(present.shape, np.nan)
    if present.shape[-1] > HULL_MAX_CLASSES:
        return out
    # imported only when margins are computed: scipy.optimize is a large import
    from scipy.optimize import nnls

    u = unit_rows(np.asarray(vectors, np.float64), present)
    weight = 1e6
    for i in np.ndindex(*present.shape[:-1]):
        idx = np.flatnonzero(present[i])
        if idx.size < 2:
            continue
        for c in idx:
            others = u[i][idx[idx != c]]                       # (k, D)
            a = np.vstack([others.T, np.full((1, others.shape[0]), weight)])
            b = np.concatenate([u[i][c], [weight]])
            lam, _ = nnls(a, b, maxiter=50 * others.shape[0])
            lam = lam / lam.sum() if lam.sum() > 0 else lam
            out[i + (c,)] = np.linalg.norm(u[i][c] - lam @ others)
    return out


def nc3(weight: np.ndarray, centred: np.ndarray, present: np.ndarray) -> np.ndarray:
    """|| W^T / ||W||_F - M / ||M||_F ||_F^2 over the rows ``present`` of classifier rows W
    (..., C, D) and centred means (..., C, D); NaN where either is not finite.

    Squared, as Papyan, Han and Donoho's published code and Su et al.'s compute it (their
    figures plot this number; docs/metrics.md, Conventions). It lies in [0, 4]: 0 when W is
    proportional to M, 2 when they are orthogonal.
    """
    w = np.where(present[..., None], weight, 0.0)
    m = np.where(present[..., None], centred, 0.0)
    ok = np.isfinite(w).all(axis=(-2, -1)) & np.isfinite(m).all(axis=(-2, -1)) \
        & present.any(axis=-1)
    w, m = np.where(ok[..., None, None], w, 0.0), np.where(ok[..., None, None], m, 0.0)
    nw = np.linalg.norm(w, axis=(-2, -1))[..., None, None]
    nm = np.linalg.norm(m, axis=(-2, -1))[..., None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = w / nw - m / nm
        out = (d * d).sum(axis=(-2, -1))
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
    come from Gram blocks of the means centred on their centroid (:func:`pair_blocks`),
    O(C^2 D) time and O(PAIR_BLOCK C) memory per set; centring keeps the expansion at the
    scale of the class structure.
    """
    m = np.where(present[..., None], means, 0.0)
    m = m - divide_or_nan(m.sum(axis=-2), present.sum(axis=-1)[..., None])[..., None, :]
    m = np.where(present[..., None], m, 0.0)
    sq = (m * m).sum(axis=-1)
    var = np.where(present, variances, 0.0)
    lead = m.shape[:-2]
    total, k = np.zeros(lead), np.zeros(lead)
    for a, b, gram, _, upper in pair_blocks(m, present):
        d2 = np.maximum(sq[..., a:b, None] + sq[..., None, :] - 2.0 * gram, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            terms = (var[..., a:b, None] + var[..., None, :]) / (2.0 * d2)
        use = upper & np.isfinite(terms)
        total += np.where(use, terms, 0.0).sum(axis=(-2, -1))
        k += use.sum(axis=(-2, -1))
    return divide_or_nan(total, k)
