"""The law of data separation across layers, by dim name (He and Su, PNAS 2023).

The fuzziness D_l = Tr(SS_W SS_B^+) (the ``fuzziness`` metric of every layer) decays
geometrically with depth in well-trained networks: log D_l = a + l log rho. Fitted per
(split, checkpoint, condition), clean and attacked, it reads the paper's layer-wise finding
(F4) through one number per condition: rho, the factor by which each layer separates the
classes, and R^2, how well a geometric law describes the network at all.
"""

from __future__ import annotations

import xarray as xr

from ncprobe.data import schema

from .kernels.separation import fit_geometric_decay


def separation_law(fuzziness: xr.DataArray, layer_dim: str = schema.LAYER,
                   depth: str = schema.DEPTH) -> xr.Dataset:
    """Fit log D_l = a + l log rho over ``layer_dim`` for every other index.

    Parameters
    ----------
    fuzziness : DataArray (..., layer_dim)
        D_l of each layer, e.g. ``metrics["summary"]["fuzziness"].sel(grouping=...)``.
    depth : name of the coordinate on ``layer_dim`` that gives l (the layer's position in the
        network); 0, 1, ... in the order of ``layer_dim`` when absent.

    Returns
    -------
    Dataset (...) with ``rho`` (e^slope), ``a`` (intercept of the natural log), ``r2`` and
    ``n_layers`` (layers with a finite, positive D_l). NaN with fewer than three such layers
    (:data:`ncprobe.analyze.kernels.separation.MIN_LAYERS`).

    Examples
    --------
    >>> import numpy as np
    >>> d = xr.DataArray(2.0 * 0.25 ** np.arange(4), dims="layer")
    >>> round(float(separation_law(d)["rho"]), 12)
    0.25
    """
    x = fuzziness[depth].values if depth in fuzziness.coords else \
        range(fuzziness.sizes[layer_dim])
    x = xr.DataArray(list(x), dims=layer_dim)
    names = ("rho", "a", "r2", "n_layers")
    out = xr.apply_ufunc(
        lambda d, l: tuple(fit_geometric_decay(l, d)[k] for k in names),
        fuzziness.reset_coords(drop=True), x, input_core_dims=[[layer_dim], [layer_dim]],
        output_core_dims=[[]] * len(names), dask="parallelized",
        output_dtypes=[float] * len(names))
    return xr.Dataset(dict(zip(names, out, strict=True)))
