"""Every metric of docs/metrics.md for one layer, by dim name: the one analysis path.

:func:`layer_metrics` is what ``nc-analyze`` computes for each layer of a store, callable on any
DataArray of features (numpy or dask, any leading dims such as checkpoint and condition):
:func:`grouping_labels` builds the four groupings, :func:`~ncprobe.analyze.stats.class_stats`
and :func:`~ncprobe.analyze.stats.within_stats` are the two passes, :func:`collapse_metrics`
turns their statistics into metrics. :func:`ncprobe.analyze.run.analyze_store` calls the same
functions, computing each pass for the whole store at once.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from ncprobe.data import schema as S

from . import collapse as C
from .stats import AnalysisError, class_stats, lead_dims, within_stats

#: per-class metrics are named ``class_<name>`` in a layer's Dataset (``align_angle`` is also
#: a summary scalar); the metrics store keeps them apart in ``/per_class``
PER_CLASS_PREFIX = "class_"


def grouping_labels(labels: xr.DataArray, pred: xr.DataArray | None = None,
                    target: xr.DataArray | None = None, *, shuffle_seed: int = 0,
                    sample_dim: str = S.SAMPLE) -> xr.DataArray:
    """The four groupings of docs/metrics.md side by side: (..., sample, grouping).

    ``label`` (true class), ``pred`` (the network's prediction; -1 everywhere when None),
    ``target`` (the attack's target, -1 for untargeted samples or when None) and ``shuffled``
    (the labels permuted along ``sample_dim`` with ``shuffle_seed``: the no-structure
    baseline ``nc1_shuffled``). Leading dims of ``pred``/``target`` (checkpoint, condition)
    are kept; labels are broadcast over them.
    """
    perm = np.random.default_rng(shuffle_seed).permutation(labels.sizes[sample_dim])
    shuffled = labels.copy(data=labels.isel({sample_dim: perm}).data)
    missing = xr.full_like(labels, -1)
    parts = [labels, missing if pred is None else pred,
             missing if target is None else target, shuffled]
    parts = [p.astype(np.int64).drop_vars([c for c in p.coords if c != sample_dim])
             for p in parts]
    out = xr.concat(xr.broadcast(*parts), dim=S.GROUPING, coords="minimal", join="override")
    return out.assign_coords({S.GROUPING: list(C.GROUPING_ORDER)}).transpose(
        ..., sample_dim, S.GROUPING)


def _clean_centred(stats, clean, condition_dim):
    """Clean class means (true labels) of the same features centred on their unweighted mean,
    or NaN without a clean condition."""
    label = stats.sel({S.GROUPING: "label"}, drop=True)
    if condition_dim in label.dims and clean in label[condition_dim].values:
        means = label["mean"].sel({condition_dim: clean}, drop=True)
        return means - means.mean(S.CLASS, skipna=True)  # the simplex's centroid
    return xr.full_like(label["mean"], np.nan)


def clean_reference(stats: xr.Dataset, clean: str = S.CLEAN,
                    condition_dim: str = S.CONDITION) -> xr.DataArray | None:
    """The NCC centres of docs/metrics.md: clean class means (true labels), the class means
    themselves for features without a condition dim, or None without a clean condition.

    ``stats`` is :func:`~ncprobe.analyze.stats.class_stats` of true labels (or of
    :func:`grouping_labels`). Pass those of the reference split to :func:`layer_metrics` to
    measure other splits against them, as ``nc-analyze`` does."""
    label = stats["mean"]
    if S.GROUPING in label.dims:
        label = label.sel({S.GROUPING: "label"}, drop=True)
    if condition_dim not in label.dims:
        return label  # features of one condition: their own class means
    if clean not in label[condition_dim].values:
        return None
    return label.sel({condition_dim: clean}, drop=True)


def _classifier_rows(weight, stats, feature_dim):
    c, d = stats.sizes[S.CLASS], stats.sizes[feature_dim]
    nan = xr.DataArray(np.full((c, d), np.nan), dims=(S.CLASS, feature_dim))
    if weight is None:
        return nan
    if weight.sizes.get(feature_dim) != d or weight.sizes.get(S.CLASS) != c:
        warnings.warn(f"classifier weight has sizes {dict(weight.sizes)}; the layer has "
                      f"{c} classes and {d} features (was it reduced at extraction?): nc3 and "
                      "the *_w metrics are NaN", stacklevel=3)
        return nan
    return weight.astype(np.float64)


def collapse_metrics(stats: xr.Dataset, within: xr.Dataset, *,
                     weight: xr.DataArray | None = None, clean: str = S.CLEAN,
                     condition_dim: str = S.CONDITION,
                     feature_dim: str = S.FEATURE) -> xr.Dataset:
    """Every metric of docs/metrics.md from the statistics of the two passes.

    Parameters
    ----------
    stats, within : Datasets (..., grouping, ...)
        :func:`~ncprobe.analyze.stats.class_stats` and
        :func:`~ncprobe.analyze.stats.within_stats` of :func:`grouping_labels` groupings.
    weight : DataArray (..., class, feature_dim), optional
        Classifier rows, when these features feed the final linear map (nc3, NC2 on W).
    clean : the condition whose class means the alignment angles compare with.

    Returns
    -------
    Dataset over the leading dims of ``stats`` with the grouped metrics (grouping: label,
    pred, target), the scalars, ``class_<name>`` per-class metrics (class), ``transitions``
    (label, vertex) and ``means`` (grouping, class, feature_dim). Lazy when the inputs are.
    Conventions: nc1 = (1/C) Tr(Sigma_W Sigma_B^+), Sigma_B = (1/C) M M^T, mu_G
    sample-weighted (Papyan, Han, Donoho 2020); see docs/metrics.md for each metric.
    """
    if S.GROUPING not in stats.dims or \
            [str(g) for g in stats[S.GROUPING].values] != list(C.GROUPING_ORDER):
        raise AnalysisError(f"stats must have groupings {', '.join(C.GROUPING_ORDER)} in this "
                            "order along 'grouping', as grouping_labels builds them")
    c = stats.sizes[S.CLASS]
    g, lv = [S.GROUPING], [S.LABEL, S.VERTEX]
    n_rep = len(C.REPORTED_GROUPINGS)
    size = len(C.GROUPED) * n_rep + len(C.SCALARS) + len(C.PER_CLASS) * c + c * c
    args = [stats["sum"], stats["count"], within["within"], within["projected"],
            within["conf_own"], within["nc4_mismatch"], within["conf_ref"], within["flipped"],
            within["leapt"], _clean_centred(stats, clean, condition_dim),
            _classifier_rows(weight, stats, feature_dim)]
    core = [[*g, S.CLASS, feature_dim], [*g, S.CLASS], [*g, S.CLASS], [*g, S.CLASS], [*g, *lv],
            g, lv, [], [], [S.CLASS, feature_dim], [S.CLASS, feature_dim]]
    packed = xr.apply_ufunc(C.block_vector, *args, input_core_dims=core,
                            output_core_dims=[["z"]], vectorize=True, dask="parallelized",
                            output_dtypes=[np.float64],
                            dask_gufunc_kwargs={"output_sizes": {"z": size}})
    return unpack(packed, c).assign(
        means=stats["mean"].sel({S.GROUPING: list(C.REPORTED_GROUPINGS)}))


def unpack(packed: xr.DataArray, n_classes: int) -> xr.Dataset:
    """The Dataset of :func:`collapse_metrics` from :func:`~.collapse.block_vector` vectors."""
    out, i = {}, 0
    n_rep = len(C.REPORTED_GROUPINGS)
    for name in C.GROUPED:
        out[name] = packed.isel(z=slice(i, i + n_rep)).rename(z=S.GROUPING)
        i += n_rep
    for name in C.SCALARS:
        out[name] = packed.isel(z=i, drop=True)
        i += 1
    for name in C.PER_CLASS:
        out[PER_CLASS_PREFIX + name] = packed.isel(z=slice(i, i + n_classes)).rename(z=S.CLASS)
        i += n_classes
    flat = packed.isel(z=slice(i, i + n_classes**2))
    lead = [d for d in packed.dims if d != "z"]
    out["transitions"] = (
        (*lead, S.LABEL, S.VERTEX),
        flat.transpose(*lead, "z").data.reshape(flat.shape[:-1] + (n_classes, n_classes)))
    ds = xr.Dataset(out)
    return ds.assign_coords({S.GROUPING: list(C.REPORTED_GROUPINGS),
                             S.CLASS: np.arange(n_classes), S.LABEL: np.arange(n_classes),
                             S.VERTEX: np.arange(n_classes)})


def covariances(stats: xr.Dataset, within: xr.Dataset,
                feature_dim: str = S.FEATURE) -> xr.Dataset:
    """Dense Sigma_W = (1/N) sum_i r_i r_i^T and Sigma_B = (1/C) M M^T (feature_dim, feature2)
    of the true-label grouping; ``within`` must come from ``within_stats(..., dense=True)``.
    D x D each: only for layers narrow enough (``dense_limit``)."""
    label = stats.sel({S.GROUPING: "label"}, drop=True)
    present = label["count"] > 0
    centred = (label["mean"] - label["global_mean"]).where(present, 0.0)
    sigma_b = xr.dot(centred, centred.rename({feature_dim: S.FEATURE2}), dim=S.CLASS)
    return xr.Dataset({"sigma_w": within["scatter"] / label["count"].sum(S.CLASS),
                       "sigma_b": sigma_b / present.sum(S.CLASS)})


def layer_metrics(features: xr.DataArray, labels: xr.DataArray, n_classes: int, *,
                  pred: xr.DataArray | None = None, target: xr.DataArray | None = None,
                  reference: xr.DataArray | None = None, weight: xr.DataArray | None = None,
                  shuffle_seed: int = 0, clean: str = S.CLEAN, dense: bool = False,
                  condition_dim: str = S.CONDITION, sample_dim: str = S.SAMPLE,
                  feature_dim: str = S.FEATURE) -> xr.Dataset:
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
        (:func:`clean_reference`). ``nc-analyze`` passes those of the train split.
    weight : DataArray (..., class, feature_dim), optional
        Classifier rows when this layer feeds the final linear map.
    dense : also return ``sigma_w`` and ``sigma_b`` (feature, feature2).

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
                        feature_dim=feature_dim)
    if reference is None:
        reference = clean_reference(stats, clean, condition_dim)
    within = within_stats(features, groups, stats, labels=labels, pred=pred,
                          reference=reference, dense=dense, sample_dim=sample_dim,
                          feature_dim=feature_dim)
    out = collapse_metrics(stats, within, weight=weight, clean=clean,
                           condition_dim=condition_dim, feature_dim=feature_dim)
    return out.merge(covariances(stats, within, feature_dim)) if dense else out
