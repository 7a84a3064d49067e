"""Every metric of docs/metrics.md by dim name: the one analysis path, and each metric alone.

:func:`layer_metrics` is what ``nc-analyze`` computes for each layer of a store, callable on any
DataArray of features (numpy or dask, any leading dims such as checkpoint and condition):
:func:`grouping_labels` builds the four groupings, :func:`~ncprobe.analyze.stats.class_stats`
and :func:`~ncprobe.analyze.stats.within_stats` are the two passes, :func:`collapse_metrics`
runs every metric of :mod:`ncprobe.analyze.registry` on their statistics.
:func:`ncprobe.analyze.run.analyze_store` calls the same functions, computing each pass for
the whole store at once. :func:`nc1`, :func:`nc2`, :func:`nc3`, :func:`cdnv` and
:func:`fuzziness` give one metric of features and labels with the same vocabulary
(``n_classes``, ``sample_dim``, ``feature_dim``); :func:`separation_law` fits the fuzziness
across layers.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from ncprobe.data import schema

from . import registry
from .blocks import AnalysisError, is_dask, lead_dims
from .kernels import geometry, passes, statistics
from .kernels.collapse import GROUPINGS, Block
from .kernels.geometry import NC2_KEYS
from .kernels.separation import fit_geometric_decay
from .registry import REPORTED
from .stats import (
    class_means,
    class_stats,
    clean_reference,
    named_dims,
    reference_stats,
    within_stats,
)

#: the grouping dim of per-grouping results while they are computed (the inputs' grouping
#: dim has all four groupings, the results only those reported)
_REPORTED_DIM = "reported_grouping"


def grouping_labels(labels: xr.DataArray, pred: xr.DataArray | None = None,
                    target: xr.DataArray | None = None, *, shuffle_seed: int | None = 0,
                    sample_dim: str = schema.SAMPLE) -> xr.DataArray:
    """The four groupings of docs/metrics.md side by side: (..., sample, grouping).

    ``label`` (true class), ``pred`` (the network's prediction; -1 everywhere when None),
    ``target`` (the attack's target, -1 for untargeted samples or when None) and ``shuffled``
    (the labels permuted along ``sample_dim`` with ``shuffle_seed``: the no-structure
    baseline ``nc1_shuffled``; -1 everywhere, and no cost, when ``shuffle_seed`` is None).
    Leading dims of ``pred``/``target`` (checkpoint, condition) are kept; labels are
    broadcast over them.
    """
    missing = xr.full_like(labels, -1)
    if shuffle_seed is None:
        shuffled = missing
    else:
        perm = np.random.default_rng(shuffle_seed).permutation(labels.sizes[sample_dim])
        shuffled = labels.copy(data=labels.isel({sample_dim: perm}).data)
    parts = [labels, missing if pred is None else pred,
             missing if target is None else target, shuffled]
    parts = [p.astype(np.int64).drop_vars([c for c in p.coords if c != sample_dim])
             for p in parts]
    out = xr.concat(xr.broadcast(*parts), dim=schema.GROUPING, coords="minimal", join="override")
    return out.assign_coords({schema.GROUPING: list(GROUPINGS)}).transpose(
        ..., sample_dim, schema.GROUPING)


def _clean_centred(stats, clean, condition_dim):
    """Clean class means (true labels) of the same features centred on their unweighted mean,
    or NaN without a clean condition."""
    label = stats.sel({schema.GROUPING: "label"}, drop=True)
    if condition_dim in label.dims and clean in label[condition_dim].values:
        clean_label = label.sel({condition_dim: clean}, drop=True)
        feature_dim = next(d for d in clean_label["sum"].dims
                           if d not in clean_label["count"].dims)
        return xr.apply_ufunc(geometry.simplex_centred, class_means(clean_label)[0],
                              clean_label["count"] > 0,
                              input_core_dims=[[schema.CLASS, feature_dim], [schema.CLASS]],
                              output_core_dims=[[schema.CLASS, feature_dim]],
                              dask="parallelized", output_dtypes=[np.float64])
    return xr.full_like(label["sum"], np.nan)


def _classifier_rows(weight, stats, feature_dim):
    c, d = stats.sizes[schema.CLASS], stats.sizes[feature_dim]
    nan = xr.DataArray(np.full((c, d), np.nan), dims=(schema.CLASS, feature_dim))
    if weight is None:
        return nan
    if weight.sizes.get(feature_dim) != d or weight.sizes.get(schema.CLASS) != c:
        warnings.warn(f"classifier weight has sizes {dict(weight.sizes)}; the layer has "
                      f"{c} classes and {d} features (was it reduced at extraction?): nc3 and "
                      "the *_w metrics are NaN", stacklevel=3)
        return nan
    return weight.astype(np.float64)


def collapse_metrics(stats: xr.Dataset, within: xr.Dataset | None, *,
                     weight: xr.DataArray | None = None, clean: str = schema.CLEAN,
                     condition_dim: str = schema.CONDITION, feature_dim: str = schema.FEATURE,
                     only=None, warn_no_simplex: bool = True) -> xr.Dataset:
    """Every registered metric (docs/metrics.md) from the statistics of the two passes.

    Parameters
    ----------
    stats, within : Datasets (..., grouping, ...)
        :func:`~ncprobe.analyze.stats.class_stats` and
        :func:`~ncprobe.analyze.stats.within_stats` of :func:`grouping_labels` groupings;
        ``within`` may be None when the metrics ``only`` names need nothing from pass 2
        (:func:`~ncprobe.analyze.registry.passes_needed`).
    weight : DataArray (..., class, feature_dim), optional
        Classifier rows, when these features feed the final linear map (nc3, NC2 on W).
    clean : the condition whose class means the alignment angles compare with.
    only : keys of :data:`ncprobe.analyze.registry.METRICS` to compute (default: all).
    warn_no_simplex : warn when C > D + 1 (:func:`no_simplex_warning`).

    Returns
    -------
    Dataset over the leading dims of ``stats``: per-grouping metrics (grouping: label, pred,
    target), scalars, ``class_<name>`` per-class metrics (class), ``transitions`` (label,
    vertex), as the registry declares them, and ``means`` (grouping, class, feature_dim).
    Beyond :data:`~ncprobe.analyze.kernels.statistics.DENSE_TRANSITIONS` classes ``transitions``
    is an object array (...) of :class:`~ncprobe.analyze.kernels.passes.SparseCounts` (the
    pairs that occur, ``codes = label * C + vertex``, and their ``counts``).
    Lazy when the inputs are: every metric of every block is one numpy call per layer
    (:mod:`ncprobe.analyze.kernels.collapse`), never a Python loop over blocks.
    Conventions: nc1 = (1/C) Tr(Sigma_W Sigma_B^+), Sigma_B = (1/C) M M^T, mu_G
    sample-weighted (Papyan, Han, Donoho 2020); see docs/metrics.md for each metric.
    """
    if schema.GROUPING not in stats.dims or \
            [str(g) for g in stats[schema.GROUPING].values] != list(GROUPINGS):
        raise AnalysisError(f"stats must have groupings {', '.join(GROUPINGS)} in this order "
                            "along 'grouping', as grouping_labels builds them")
    unknown = sorted(set(only or ()) - set(registry.METRICS))
    if unknown:
        raise AnalysisError(f"unknown metrics {unknown}; registered: "
                            f"{', '.join(registry.METRICS)}")
    keys = list(only or registry.METRICS)
    metrics = [registry.METRICS[k] for k in keys]
    needed = [statistics.STATISTICS[n] for n in sorted(registry.needed_statistics(keys))]
    if within is None and any(s.pass_number == 2 for s in needed):
        raise AnalysisError(f"metrics {', '.join(keys)} need the second pass (within_stats); "
                            "pass its result")
    c = stats.sizes[schema.CLASS]
    if warn_no_simplex and c > stats.sizes[feature_dim] + 1:
        warnings.warn(no_simplex_warning(c, [stats.sizes[feature_dim]]), stacklevel=2)
    # beyond DENSE_TRANSITIONS classes pass 2 keeps the transitions sparse (an object array of
    # SparseCounts): they bypass the kernels and are returned as they are
    sparse = statistics.STATISTICS["transitions"].is_sparse(c)
    if sparse:
        metrics = [m for m in metrics if m.dims != (schema.LABEL, schema.VERTEX)]
    extra = {"clean_centred": lambda: _clean_centred(stats, clean, condition_dim),
             "weight": lambda: _classifier_rows(weight, stats, feature_dim)}
    inputs = [s for s in needed if s.block_input and not (sparse and s.is_sparse(c))]
    names = [s.name for s in inputs]
    args = [{1: stats, 2: within}[s.pass_number][s.name] if s.pass_number else
            extra[s.name]() for s in inputs]
    core = [list(named_dims(s, feature_dim, c)) for s in inputs]
    out_core = [[_REPORTED_DIM] if m.per_grouping else list(m.dims) for m in metrics]
    if not metrics:  # only sparse transitions asked for: nothing for the kernels
        return xr.Dataset({"transitions": within["transitions"]}).assign(
            means=class_means(stats.sel({schema.GROUPING: list(REPORTED)}))[0])
    results = xr.apply_ufunc(
        _evaluate, *args, kwargs={"names": names, "metrics": metrics, "core": core},
        input_core_dims=core, output_core_dims=out_core, dask="parallelized",
        output_dtypes=[np.float64] * len(metrics),
        dask_gufunc_kwargs={"output_sizes": {_REPORTED_DIM: len(REPORTED)}
                            if any(m.per_grouping for m in metrics) else {}})
    results = results if isinstance(results, tuple) else (results,)
    ds = xr.Dataset({m.key: r for m, r in zip(metrics, results, strict=True)})
    ds = ds.rename({_REPORTED_DIM: schema.GROUPING}) if _REPORTED_DIM in ds.dims else ds
    if sparse and "transitions" in keys:
        ds["transitions"] = within["transitions"]
    ds = ds.assign_coords({schema.GROUPING: list(REPORTED), schema.CLASS: np.arange(c)})
    if not sparse:
        ds = ds.assign_coords({schema.LABEL: np.arange(c), schema.VERTEX: np.arange(c)})
    return ds.assign(means=class_means(stats.sel({schema.GROUPING: list(REPORTED)}))[0])


def no_simplex_warning(n_classes: int, dims) -> str:
    """One line: why the simplex metrics are NaN for features of these widths."""
    more = " (or more)" if len(set(dims)) > 1 else ""
    return (f"{n_classes} classes in {min(dims)} dimensions{more}: "
            f"no simplex ETF of {n_classes} vertices fits in fewer than {n_classes - 1} "
            "dimensions, so equiangular, max_angle and etf_distance (and their _w) are NaN; "
            "uniformity and hull_margin describe the geometry instead (docs/metrics.md)")


#: blocks whose statistics exceed this many bytes together (class sums of thousands of
#: classes) have their metrics computed one block at a time: what a Block derives from its
#: class sums (means, centred means, simplex vertices, per grouping) is several times the
#: sums themselves, and is then held for one block, not for all of a layer's at once
BLOCK_BYTES = 256 * 2**20


def _evaluate(*arrays, names, metrics, core):
    """Every metric's kernel on one Block of numpy arrays (..., core); results broadcast to
    the leading shape of all inputs (an input may lack a leading dim, e.g. the weight)."""
    lead = np.broadcast_shapes(*[a.shape[: a.ndim - len(c)] for a, c in
                                 zip(arrays, core, strict=True)])
    if sum(a.nbytes for a in arrays) <= BLOCK_BYTES or int(np.prod(lead)) <= 1:
        return _unpack(_block_metrics(arrays, names, metrics, lead))
    whole = [np.broadcast_to(a, lead + a.shape[a.ndim - len(c):])
             for a, c in zip(arrays, core, strict=True)]
    parts = [_block_metrics([a[i] for a in whole], names, metrics, ())
             for i in np.ndindex(*lead)]
    return _unpack([np.stack([p[k] for p in parts]).reshape(lead + parts[0][k].shape)
                    for k in range(len(metrics))])


def _unpack(out: list):
    return out[0] if len(out) == 1 else tuple(out)  # apply_ufunc: one output, no tuple


def _block_metrics(arrays, names, metrics, lead) -> list:
    """Each metric of one Block, broadcast to ``lead``."""
    block = Block(**dict(zip(names, arrays, strict=True)))
    out = []
    for m in metrics:
        r = np.asarray(m.compute(block), dtype=np.float64)
        if m.per_grouping and m.groupings != REPORTED:  # NaN for the groupings it skips
            full = np.full(r.shape[:-1] + (len(REPORTED),), np.nan)
            full[..., [REPORTED.index(g) for g in m.groupings]] = r
            r = full
        n_core = 1 if m.per_grouping else len(m.dims)
        out.append(np.broadcast_to(r, lead + r.shape[r.ndim - n_core:]).copy())
    return out


def covariances(stats: xr.Dataset, within: xr.Dataset,
                feature_dim: str = schema.FEATURE) -> xr.Dataset:
    """Dense Sigma_W = (1/N) sum_i r_i r_i^T and Sigma_B = (1/C) M M^T (feature_dim, feature2)
    of the true-label grouping; ``within`` must come from ``within_stats(..., dense=True)``.
    D x D each: only for layers narrow enough (``dense_limit``)."""
    label = stats.sel({schema.GROUPING: "label"}, drop=True)
    present = label["count"] > 0
    centred = xr.apply_ufunc(geometry.centred_means, *class_means(label), present,
                             input_core_dims=[[schema.CLASS, feature_dim], [feature_dim],
                                              [schema.CLASS]],
                             output_core_dims=[[schema.CLASS, feature_dim]], dask="parallelized",
                             output_dtypes=[np.float64])
    sigma_b = xr.dot(centred, centred.rename({feature_dim: schema.FEATURE2}), dim=schema.CLASS)
    return xr.Dataset({"sigma_w": within["scatter"] / label["count"].sum(schema.CLASS),
                       "sigma_b": sigma_b / present.sum(schema.CLASS)})


def layer_metrics(features: xr.DataArray, labels: xr.DataArray, n_classes: int, *,
                  pred: xr.DataArray | None = None, target: xr.DataArray | None = None,
                  reference: xr.DataArray | None = None, weight: xr.DataArray | None = None,
                  shuffle_seed: int = 0, clean: str = schema.CLEAN, dense: bool = False,
                  metrics=None, condition_dim: str = schema.CONDITION,
                  sample_dim: str = schema.SAMPLE,
                  feature_dim: str = schema.FEATURE) -> xr.Dataset:
    """Every per-layer metric of docs/metrics.md for one layer's features, in one call.

    Parameters
    ----------
    features : DataArray (..., sample_dim, feature_dim)
        e.g. ``acts["test/layers/block4"]["features"]`` (checkpoint, condition, sample,
        feature), lazy or in memory; every dim but sample and feature is broadcast over.
    labels : DataArray (sample_dim,)
        True classes 0..n_classes-1.
    pred, target : DataArray (..., sample_dim), optional
        The network's predictions and the attack targets (-1: untargeted), e.g. from the
        store's ``outputs``. Without ``pred``, nc4, net_acc, leap_rate and the ``pred``
        grouping are NaN.
    reference : DataArray (..., class, feature_dim), optional
        NCC centres; default: the clean class means of these features
        (:func:`clean_reference`), which need pass 2. Centres given (``nc-analyze`` passes
        those of the train split) are counted against in the first pass
        (:func:`~ncprobe.analyze.stats.reference_stats`).
    weight : DataArray (..., class, feature_dim), optional
        Classifier rows when this layer feeds the final linear map.
    dense : also return ``sigma_w`` and ``sigma_b`` (feature, feature2).
    metrics : list of str, optional
        The registered metrics to compute (default: all). Only the statistics they need are
        computed (:func:`~ncprobe.analyze.registry.needed_statistics`): when none comes from
        the second pass, it does not run and each chunk is read once. A metric's value does not
        depend on what else is selected.

    Returns
    -------
    Dataset as :func:`collapse_metrics`. Lazy when ``features`` is: ``.compute()`` runs both
    passes (each chunk read twice); for stores larger than memory use
    :func:`ncprobe.analyze.run.analyze_store`, which runs each pass for every layer at once.

    Examples
    --------
    >>> from ncprobe.data.datasets import make_synthetic_arrays
    >>> x, y, _ = make_synthetic_arrays(n_classes=3, dim=6, n_per_class=20, noise=0.1)
    >>> h = xr.DataArray(x, dims=("sample", "feature"))
    >>> m = layer_metrics(h, xr.DataArray(y, dims="sample"), 3)
    >>> round(float(m["ncc_acc"]), 3), bool(m["nc1"].sel(grouping="label") < 0.01)
    (1.0, True)
    """
    lead_dims(features, sample_dim, feature_dim)
    groups = grouping_labels(labels, pred, target, shuffle_seed=shuffle_seed,
                             sample_dim=sample_dim)
    stats = class_stats(features, groups, n_classes, sample_dim=sample_dim,
                        feature_dim=feature_dim,
                        chunk_statistics=registry.chunk_statistics(metrics))
    # centres given are known before the features are read: the counts against them come
    # with the first pass, as for nc-analyze's splits measured against the reference split
    known = reference is not None
    counted = None
    if known and registry.counts_against_centres(metrics):
        counted = reference_stats(features, labels, reference, pred=pred,
                                  sample_dim=sample_dim, feature_dim=feature_dim)
    within = counted
    if dense or 2 in registry.passes_needed(metrics, reference_known=known):
        within = within_stats(features, groups, stats, labels=labels, pred=pred,
                              reference=None if known else clean_reference(stats, clean,
                                                                           condition_dim),
                              dense=dense, sample_dim=sample_dim, feature_dim=feature_dim)
        within = within if counted is None else within.assign(counted.data_vars)
    out = collapse_metrics(stats, within, weight=weight, clean=clean,
                           condition_dim=condition_dim, feature_dim=feature_dim, only=metrics)
    return out.merge(covariances(stats, within, feature_dim)) if dense else out


def _label_metrics(features, labels, n_classes, keys, *, weight=None, sample_dim, feature_dim):
    """Metrics ``keys`` of the true-label grouping alone: the two passes on one grouping (the
    others empty, so they cost nothing), then the registry's kernels."""
    lead_dims(features, sample_dim, feature_dim)
    groups = grouping_labels(labels, shuffle_seed=None, sample_dim=sample_dim)
    stats = class_stats(features, groups, n_classes, sample_dim=sample_dim,
                        feature_dim=feature_dim)
    within = within_stats(features, groups, stats, labels=labels, sample_dim=sample_dim,
                          feature_dim=feature_dim) if 2 in registry.passes_needed(keys) else None
    out = collapse_metrics(stats, within, weight=weight, feature_dim=feature_dim, only=keys)
    return out.drop_vars("means").sel({schema.GROUPING: "label"}, drop=True) \
        if schema.GROUPING in out.dims else out.drop_vars("means")


def nc1(features: xr.DataArray, labels: xr.DataArray, n_classes: int, *,
        sample_dim: str = schema.SAMPLE, feature_dim: str = schema.FEATURE) -> xr.DataArray:
    """NC1 = (1/C) Tr(Sigma_W Sigma_B^+) by the exact projection method (Papyan et al. 2020).

    Parameters
    ----------
    features : DataArray (..., sample_dim, feature_dim), numpy- or dask-backed.
    labels : DataArray (sample_dim,) or (..., sample_dim) of integer classes.
    n_classes : int

    Returns
    -------
    DataArray (...) over the dims of ``features`` other than sample and feature; lazy when
    ``features`` is. Every metric of a layer at once is :func:`layer_metrics`.

    Examples
    --------
    >>> from ncprobe.data.datasets import make_synthetic_arrays
    >>> x, y, _ = make_synthetic_arrays(n_classes=3, dim=5, n_per_class=50, noise=0.0)
    >>> h = xr.DataArray(x, dims=("sample", "feature")); g = xr.DataArray(y, dims="sample")
    >>> float(nc1(h, g, 3)) < 1e-20
    True
    """
    return _label_metrics(features, labels, n_classes, ["nc1"], sample_dim=sample_dim,
                          feature_dim=feature_dim)["nc1"]


def nc2(features: xr.DataArray, labels: xr.DataArray, n_classes: int, *,
        sample_dim: str = schema.SAMPLE, feature_dim: str = schema.FEATURE) -> xr.Dataset:
    """NC2 of the class means centred on their centroid: ``equinorm``, ``equiangular``,
    ``max_angle`` and ``etf_distance`` (docs/metrics.md; Papyan et al. 2020).

    Returns a Dataset (...) of the four, over the dims of ``features`` other than sample and
    feature; lazy when ``features`` is.

    Examples
    --------
    >>> from ncprobe.data.datasets import make_synthetic_arrays
    >>> x, y, _ = make_synthetic_arrays(n_classes=4, dim=8, n_per_class=30, noise=0.0)
    >>> h = xr.DataArray(x, dims=("sample", "feature")); g = xr.DataArray(y, dims="sample")
    >>> round(float(nc2(h, g, 4)["etf_distance"]), 9)
    0.0
    """
    return _label_metrics(features, labels, n_classes, list(NC2_KEYS), sample_dim=sample_dim,
                          feature_dim=feature_dim)


def nc3(features: xr.DataArray, labels: xr.DataArray, n_classes: int,
        weight: xr.DataArray, *, sample_dim: str = schema.SAMPLE,
        feature_dim: str = schema.FEATURE) -> xr.DataArray:
    """NC3 = ||W^T/||W||_F - M/||M||_F||_F between classifier rows ``weight`` (..., class,
    feature_dim) and the centred class means of ``features`` (docs/metrics.md)."""
    return _label_metrics(features, labels, n_classes, ["nc3"], weight=weight,
                          sample_dim=sample_dim, feature_dim=feature_dim)["nc3"]


def cdnv(features: xr.DataArray, labels: xr.DataArray, n_classes: int, *,
         sample_dim: str = schema.SAMPLE, feature_dim: str = schema.FEATURE) -> xr.DataArray:
    """Class-distance normalised variance, mean over class pairs of (var_c + var_c') /
    (2 ||mu_c - mu_c'||^2) (Galanti et al. 2022; docs/metrics.md)."""
    return _label_metrics(features, labels, n_classes, ["cdnv"], sample_dim=sample_dim,
                          feature_dim=feature_dim)["cdnv"]


def fuzziness(features: xr.DataArray, labels: xr.DataArray, n_classes: int, *,
              sample_dim: str = schema.SAMPLE, feature_dim: str = schema.FEATURE) -> xr.DataArray:
    """Separation fuzziness D = Tr(SS_W SS_B^+) with the count-weighted between-class scatter
    (He and Su 2023; docs/metrics.md): C x nc1 when the classes are balanced."""
    return _label_metrics(features, labels, n_classes, ["fuzziness"], sample_dim=sample_dim,
                          feature_dim=feature_dim)["fuzziness"]


def ncc_predict(features: xr.DataArray, centres: xr.DataArray, *, sample_dim: str = schema.SAMPLE,
                feature_dim: str = schema.FEATURE, class_dim: str = schema.CLASS) -> xr.DataArray:
    """Nearest-class-centre prediction for every sample: argmin_c ||h_i - mu_c||.

    Parameters
    ----------
    features : DataArray (..., sample_dim, feature_dim), numpy- or dask-backed.
    centres : DataArray (..., class_dim, feature_dim); NaN rows (empty classes) are never
        chosen. Other dims broadcast against those of ``features``.

    Returns
    -------
    DataArray (..., sample_dim) of int64 class indices; lazy when ``features`` is.

    Examples
    --------
    >>> import xarray as xr, numpy as np
    >>> h = xr.DataArray(np.array([[0.1, 0.], [0.9, 1.]]), dims=("sample", "feature"))
    >>> mu = xr.DataArray(np.array([[0., 0.], [1., 1.]]), dims=("class", "feature"))
    >>> ncc_predict(h, mu).values.tolist()
    [0, 1]
    """
    lead_dims(features, sample_dim, feature_dim)
    if is_dask(features):
        features = features.chunk({feature_dim: -1})
    out = xr.apply_ufunc(
        passes.nearest, features, centres.astype(np.float64),
        input_core_dims=[[feature_dim], [class_dim, feature_dim]], dask="parallelized",
        output_dtypes=[np.int64])
    return out.transpose(*[d for d in features.dims if d != feature_dim], ...)


def separation_law(fuzziness: xr.DataArray, layer_dim: str = schema.LAYER,
                   depth: str = schema.DEPTH) -> xr.Dataset:
    """The law of data separation (He and Su, PNAS 2023): fit log D_l = a + l log rho over
    ``layer_dim`` for every other index.

    The fuzziness D_l = Tr(SS_W SS_B^+) (:func:`fuzziness`, the ``fuzziness`` metric of every
    layer) decays geometrically with depth in well-trained networks. Fitted per (split,
    checkpoint, condition), clean and attacked, it reads the layer-wise finding through one
    number per condition: rho, the factor by which each layer separates the classes, and R^2,
    how well a geometric law describes the network at all.

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
