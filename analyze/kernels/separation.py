"""The law of data separation (He and Su, PNAS 2023): a geometric decay across layers.

He and Su find that the separation fuzziness D_l = Tr(SS_W SS_B^+) of the l-th layer's
features decays geometrically with depth in well-trained networks, D_l ~ rho^l D_0: log D_l
is a straight line in l. :func:`fit_geometric_decay` fits that line.
"""

from __future__ import annotations

import numpy as np

from .geometry import divide_or_nan

#: fewer layers than this give no fit: two points always lie on a line (R^2 = 1)
MIN_LAYERS = 3


def fit_geometric_decay(depth: np.ndarray, fuzziness: np.ndarray) -> dict:
    """Least-squares fit of log D_l = a + l log rho over the last axis, for every leading index.

    Parameters
    ----------
    depth : (L,) the layers' positions l (increasing with depth).
    fuzziness : (..., L) D_l; layers where D_l is not finite and positive are left out.

    Returns
    -------
    dict of (...) arrays: ``rho`` = exp(slope), ``a`` (intercept, natural log), ``r2``
    (coefficient of determination of the fit in log space) and ``n_layers`` (layers used);
    NaN where fewer than :data:`MIN_LAYERS` layers are usable or they all sit at one depth.

    Examples
    --------
    >>> out = fit_geometric_decay(np.arange(5), 3.0 * 0.5 ** np.arange(5))
    >>> round(float(out["rho"]), 12), round(float(np.exp(out["a"])), 12), float(out["r2"])
    (0.5, 3.0, 1.0)
    """
    x = np.broadcast_to(np.asarray(depth, np.float64), fuzziness.shape)
    d = np.asarray(fuzziness, np.float64)
    use = np.isfinite(d) & (d > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(use, np.log(np.where(use, d, 1.0)), 0.0)
    k = use.sum(axis=-1)
    xm = divide_or_nan(np.where(use, x, 0.0).sum(axis=-1), k)
    ym = divide_or_nan(y.sum(axis=-1), k)
    dx = np.where(use, x - xm[..., None], 0.0)
    dy = np.where(use, y - ym[..., None], 0.0)
    slope = divide_or_nan((dx * dy).sum(axis=-1), (dx * dx).sum(axis=-1))
    a = ym - slope * xm
    resid = np.where(use, y - a[..., None] - slope[..., None] * x, 0.0)
    ss_tot = (dy * dy).sum(axis=-1)
    # a perfect line through equal values (ss_tot 0) is still explained exactly
    r2 = np.where(ss_tot > 0, 1.0 - divide_or_nan((resid**2).sum(axis=-1), ss_tot), 1.0)
    ok = (k >= MIN_LAYERS) & np.isfinite(slope)
    return {"rho": np.where(ok, np.exp(slope), np.nan), "a": np.where(ok, a, np.nan),
            "r2": np.where(ok, r2, np.nan), "n_layers": k.astype(np.float64)}
