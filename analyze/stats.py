"""Class statistics by dim name, lazy in and lazy out (numpy- or dask-backed DataArrays).

Statistics first, metrics from statistics second (rhubarbwu/neural-collapse, sklearn's
``empirical_covariance``): :func:`class_stats` is pass 1 (counts, sums, means),
:func:`within_stats` is pass 2 (within-class scatter and its projection on the between-class
basis). Both are exact, additive over sample chunks, and accumulate in float64.
"""

from __future__ import annotations

import functools

import dask.array as da
import numpy as np
import xarray as xr

from ncprobe.data import schema as S

from . import _kernels as K
from .geometry import projection_coefs


class AnalysisError(ValueError):
    """Input that the analysis cannot use; the message says what was expected."""


def _is_dask(x) -> bool:
    return isinstance(getattr(x, "data", x), da.Array)


def reduce_chunks(kernel, x, per_sample=(), consts=(), size=None):
    """Sum ``kernel(x_chunk, *per_sample_chunks, *consts)`` over the sample chunks of ``x``.

    ``x`` is (n, D), numpy or dask; ``per_sample`` arrays are aligned with its rows; ``consts``
    are passed whole to every chunk. With dask this is a lazy tree reduction (one task per
    chunk, then pairwise sums): nothing per sample is materialised beyond one chunk.
    """
    if not isinstance(x, da.Array):
        return kernel(np.asarray(x), *[np.asarray(a) for a in per_sample], *consts)
    x = x.rechunk({1: -1})
    args = [x, ("s", "d")]
    for i, a in enumerate(per_sample):
        a = da.asarray(a)
        a = a.rechunk((x.chunks[0],) + tuple(-1 for _ in a.shape[1:]))
        args += [a, ("s",) + tuple(f"p{i}_{j}" for j in range(1, a.ndim))]
    for i, c in enumerate(consts):
        c = c if isinstance(c, da.Array) else da.from_array(np.asarray(c), chunks=-1)
        args += [c.rechunk(-1), tuple(f"c{i}_{j}" for j in range(c.ndim))]

    def block(*arrays):
        return kernel(*arrays)[None, :]

    out = da.blockwise(block, ("s", "z"), *args, new_axes={"z": size},
                       adjust_chunks={"s": 1}, concatenate=True, dtype=np.float64,
                       meta=np.empty((0, 0)))
    return out.sum(axis=0)


def _check_2d(features: xr.DataArray, sample_dim, feature_dim):
    if set(features.dims) != {sample_dim, feature_dim}:
        raise AnalysisError(
            f"features has dims {features.dims}; expected exactly ({sample_dim!r}, "
            f"{feature_dim!r}): select one checkpoint and condition first")
    return features.transpose(sample_dim, feature_dim)


def _groups_2d(groups: xr.DataArray, sample_dim):
    """(sample, grouping) integer array and the grouping coordinate values."""
    if groups.ndim == 1:
        return groups.data[:, None], None
    other = [d for d in groups.dims if d != sample_dim]
    if len(other) != 1:
        raise AnalysisError(f"groups has dims {groups.dims}; expected ({sample_dim!r},) or "
                            f"({sample_dim!r}, grouping)")
    g = groups.transpose(sample_dim, other[0])
    return g.data, (other[0], g[other[0]].values if other[0] in g.coords else None)


def _require_int_labels(groups, n_classes):
    if n_classes is None:
        raise AnalysisError("n_classes is required: labels may be lazy, and the class set must "
                            "be known without computing them (as flox's expected_groups)")
    if not np.issubdtype(groups.dtype, np.integer):
        raise AnalysisError(f"group labels have dtype {groups.dtype}; expected integers "
                            f"0..{n_classes - 1} (or -1 for 'not in this grouping')")


def class_stats(features: xr.DataArray, groups: xr.DataArray, n_classes: int, *,
                sample_dim: str = S.SAMPLE, feature_dim: str = S.FEATURE) -> xr.Dataset:
    """Pass 1: per-class counts, sums and means, and the global mean, in float64.

    Parameters
    ----------
    features : DataArray (sample_dim, feature_dim)
        numpy- or dask-backed; float16/32/64.
    groups : DataArray (sample_dim,) or (sample_dim, grouping)
        Integer class of each sample per grouping; values outside 0..n_classes-1 are left out.
    n_classes : int
        The class set, required because lazy labels cannot be inspected without computing.

    Returns
    -------
    Dataset with ``count`` ([grouping,] class), ``sum`` and ``mean`` ([grouping,] class,
    feature) (mean NaN for empty classes), ``global_mean`` ([grouping,] feature) =
    (1/N) sum_i h_i over the samples in the grouping, and ``n_nonfinite`` (number of NaN/inf
    values seen). Lazy when ``features`` is dask-backed.

    Examples
    --------
    >>> import xarray as xr, numpy as np
    >>> h = xr.DataArray(np.array([[0., 0.], [2., 0.], [0., 4.]]), dims=("sample", "feature"))
    >>> y = xr.DataArray(np.array([0, 0, 1]), dims="sample")
    >>> class_stats(h, y, 2)["mean"].values.tolist()
    [[1.0, 0.0], [0.0, 4.0]]
    """
    f = _check_2d(features, sample_dim, feature_dim)
    g, gdim = _groups_2d(groups, sample_dim)
    _require_int_labels(g, n_classes)
    n_g, d = g.shape[1], f.shape[1]
    vec = reduce_chunks(functools.partial(K.pass1, n_classes=n_classes), f.data, [g],
                        size=K.pass1_size(n_g, n_classes, d))
    xp = da if isinstance(vec, da.Array) else np
    gc = n_g * n_classes
    sums = vec[: gc * d].reshape(n_g, n_classes, d)
    counts = vec[gc * d: gc * d + gc].reshape(n_g, n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = xp.where(counts[..., None] > 0, sums / counts[..., None], np.nan)
        global_mean = sums.sum(axis=1) / counts.sum(axis=1)[:, None]
    dims_g = ("grouping",) if gdim is None else (gdim[0],)
    ds = xr.Dataset(
        {"count": (dims_g + (S.CLASS,), counts), "sum": (dims_g + (S.CLASS, feature_dim), sums),
         "mean": (dims_g + (S.CLASS, feature_dim), means),
         "global_mean": (dims_g + (feature_dim,), global_mean),
         "n_nonfinite": ((), vec[-1])},
        coords={S.CLASS: np.arange(n_classes)})
    if gdim is None:
        return ds.isel(grouping=0)
    return ds.assign_coords({gdim[0]: gdim[1]}) if gdim[1] is not None else ds


def _coef_block(means, counts, n_classes):
    """(G, C, C) projection coefficients of the between-class basis, one per grouping."""
    return np.stack([projection_coefs(np.nan_to_num(means[j]), counts[j], n_classes)
                     for j in range(means.shape[0])])


def between_coefficients(stats: xr.Dataset) -> xr.DataArray:
    """Coefficients (grouping, class, rank) that project on the between-class basis U S^-1
    from dot products with the class means; see :func:`ncprobe.analyze.geometry.projection_coefs`.
    Lazy when ``stats`` is."""
    st = stats if "grouping" in stats["mean"].dims else stats.expand_dims("grouping")
    means, counts = st["mean"].transpose("grouping", S.CLASS, ...), st["count"]
    c = means.sizes[S.CLASS]
    if _is_dask(means):
        data = da.map_blocks(_coef_block, means.data.rechunk(-1), counts.data.rechunk(-1),
                             n_classes=c, dtype=np.float64,
                             chunks=((means.shape[0],), (c,), (c,)))
    else:
        data = _coef_block(means.values, counts.values, c)
    return xr.DataArray(data, dims=("grouping", S.CLASS, "rank"))


def within_stats(features: xr.DataArray, groups: xr.DataArray, stats: xr.Dataset, *,
                 sample_dim: str = S.SAMPLE, feature_dim: str = S.FEATURE) -> xr.Dataset:
    """Pass 2: within-class scatter per class and its projection on the between-class basis.

    Returns
    -------
    Dataset with ``within`` ([grouping,] class) = sum_{i in c} ||h_i - mu_c||^2 and
    ``projected`` ([grouping,] class) = sum_{i in c} ||S^-1 U^T (h_i - mu_c)||^2, where
    U S V^T is the thin SVD of the centred means. Then Tr Sigma_W = sum(within) / N and
    nc1 = (1/C) Tr(Sigma_W Sigma_B^+) = sum(projected) / N exactly (METRICS.md), with no D x D
    matrix. Lazy when the inputs are.
    """
    f = _check_2d(features, sample_dim, feature_dim)
    g, gdim = _groups_2d(groups, sample_dim)
    single = gdim is None
    st = stats.expand_dims("grouping") if single else stats
    means = st["mean"].transpose(..., S.CLASS, feature_dim)
    counts = st["count"]
    n_g, c, d = means.shape
    coefs = between_coefficients(st).data
    means_data = means.data
    xp = da if _is_dask(means) else np
    own_valid = counts.data > 0
    ref = xp.where(own_valid[0][:, None], means_data[0], 0.0)
    layout = K.pass2_layout(n_g, c, d, False)
    labels = g[:, 0]
    kernel = functools.partial(_pass2_adapter, n_classes=c)
    origin = st["global_mean"].data[0]
    vec = reduce_chunks(kernel, f.data, [g, labels],
                        [means_data, coefs, ref, own_valid[0], own_valid, origin],
                        size=sum(int(np.prod(s)) if s else 1 for _, s in layout))
    n_w = n_g * c
    dims_g = ("grouping", S.CLASS)
    ds = xr.Dataset({"within": (dims_g, vec[:n_w].reshape(n_g, c)),
                     "projected": (dims_g, vec[n_w: 2 * n_w].reshape(n_g, c))},
                    coords={S.CLASS: np.arange(c)})
    return ds.isel(grouping=0) if single else ds.assign_coords(
        {"grouping": st["grouping"].values} if "grouping" in st.coords else {})


def _pass2_adapter(h, groups, labels, means, coefs, ref, ref_valid, own_valid, origin,
                   n_classes):
    # the network's prediction is unknown here: use the label so nc4/leap terms stay defined
    return K.pass2(h, groups, labels, labels, np.nan_to_num(means), coefs, ref,
                   ref_valid.astype(bool), own_valid.astype(bool), n_classes,
                   origin=np.nan_to_num(origin))


def ncc_predict(features: xr.DataArray, centres: xr.DataArray, *, sample_dim: str = S.SAMPLE,
                feature_dim: str = S.FEATURE, class_dim: str = S.CLASS) -> xr.DataArray:
    """Nearest-class-centre prediction for every sample: argmin_c ||h_i - mu_c||.

    Parameters
    ----------
    features : DataArray (sample_dim, feature_dim), numpy- or dask-backed.
    centres : DataArray (class_dim, feature_dim); NaN rows (empty classes) are never chosen.

    Returns
    -------
    DataArray (sample_dim,) of int64 class indices; lazy when ``features`` is.

    Examples
    --------
    >>> import xarray as xr, numpy as np
    >>> h = xr.DataArray(np.array([[0.1, 0.], [0.9, 1.]]), dims=("sample", "feature"))
    >>> mu = xr.DataArray(np.array([[0., 0.], [1., 1.]]), dims=("class", "feature"))
    >>> ncc_predict(h, mu).values.tolist()
    [0, 1]
    """
    f = _check_2d(features, sample_dim, feature_dim)
    mu = np.asarray(centres.transpose(class_dim, feature_dim).values, np.float64)
    valid = np.isfinite(mu).all(axis=1)
    mu = np.where(valid[:, None], mu, 0.0)
    if isinstance(f.data, da.Array):
        x = f.data.rechunk({1: -1})
        data = x.map_blocks(K.nearest_centre, mu, valid, drop_axis=1, dtype=np.int64)
    else:
        data = K.nearest_centre(f.values, mu, valid)
    return xr.DataArray(data, dims=(sample_dim,), coords={k: v for k, v in f.coords.items()
                                                          if v.dims == (sample_dim,)})


def nc1(features: xr.DataArray, labels: xr.DataArray, n_classes: int, *,
        sample_dim: str = S.SAMPLE, feature_dim: str = S.FEATURE) -> xr.DataArray:
    """NC1 = (1/C) Tr(Sigma_W Sigma_B^+) by the exact projection method (Papyan et al. 2020).

    Lazy: the result is a 0-d DataArray; ``.compute()`` it. Both passes share the feature
    chunks, so for stores larger than memory use :func:`ncprobe.analyze.run.analyze_store`,
    which runs the passes as two computations.

    Examples
    --------
    >>> from ncprobe.data.datasets import make_synthetic_arrays
    >>> x, y, _ = make_synthetic_arrays(n_classes=3, dim=5, n_per_class=50, noise=0.0)
    >>> h = xr.DataArray(x, dims=("sample", "feature")); g = xr.DataArray(y, dims="sample")
    >>> float(nc1(h, g, 3)) < 1e-20
    True
    """
    stats = class_stats(features, labels, n_classes, sample_dim=sample_dim,
                        feature_dim=feature_dim)
    w = within_stats(features, labels, stats, sample_dim=sample_dim, feature_dim=feature_dim)
    return w["projected"].sum() / stats["count"].sum()
