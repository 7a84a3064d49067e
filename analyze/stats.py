"""Class statistics by dim name, lazy in and lazy out (numpy- or dask-backed DataArrays).

Statistics first, metrics from statistics second (rhubarbwu/neural-collapse, sklearn's
``empirical_covariance``): :func:`class_stats` is pass 1 (counts, sums, means),
:func:`within_stats` is pass 2 (within-class scatter, its projection on the between-class
basis, nearest-centre counts). Both are exact, additive over sample chunks, accumulate in
float64, and broadcast over every dim of ``features`` other than ``sample_dim`` and
``feature_dim`` (checkpoint, condition, split, ...): one statistic per index of those dims.
:mod:`ncprobe.analyze.metrics` turns them into the metrics of docs/metrics.md.
"""

from __future__ import annotations

import functools

import numpy as np
import xarray as xr

from ncprobe.data import schema

from .blocks import (
    AnalysisError,
    broadcast_to_lead,
    lead_coords,
    lead_dims,
    reduce_blocks,
)
from .kernels import geometry, passes, statistics


def named_dims(stat: statistics.Statistic, feature_dim: str, n_classes: int) -> tuple:
    """A declared statistic's dims as the datasets name them (the features' own feature dim);
    () where it is sparse (one object per block)."""
    if stat.is_sparse(n_classes):
        return ()
    return tuple(feature_dim if d == "feature" else d for d in stat.dims)


def _statistics_dataset(parts: dict, lead, feature_dim, n_classes) -> dict:
    """Each statistic a pass returned, as a variable by dim name."""
    return {k: ((*lead, *named_dims(statistics.STATISTICS[k], feature_dim, n_classes)), v)
            for k, v in parts.items()}


def _groups(groups: xr.DataArray, features, lead, sample_dim):
    """Group labels as (*lead, sample, grouping) and the grouping coordinate (or None when
    ``groups`` has no grouping dim: one grouping, squeezed out of the results)."""
    extra = [d for d in groups.dims if d != sample_dim and d not in lead]
    if sample_dim not in groups.dims or len(extra) > 1:
        raise AnalysisError(f"groups has dims {groups.dims}; expected ({sample_dim!r},), "
                            f"optionally one grouping dim and any of {lead}")
    if groups.sizes[sample_dim] != features.sizes[sample_dim]:
        raise AnalysisError(f"groups has {groups.sizes[sample_dim]} samples; features has "
                            f"{features.sizes[sample_dim]}")
    if extra:
        coord = groups[extra[0]].values if extra[0] in groups.coords else None
        g = groups.rename({extra[0]: schema.GROUPING})
    else:
        coord, g = None, groups.expand_dims(schema.GROUPING, axis=-1)
    return broadcast_to_lead(g, features, lead, (sample_dim, schema.GROUPING)), extra != [], coord


def _require_int_labels(groups, n_classes):
    if n_classes is None:
        raise AnalysisError("n_classes is required: labels may be lazy, and the class set must "
                            "be known without computing them (as flox's expected_groups)")
    if not np.issubdtype(groups.dtype, np.integer):
        raise AnalysisError(f"group labels have dtype {groups.dtype}; expected integers "
                            f"0..{n_classes - 1} (or -1 for 'not in this grouping')")


def _finish(ds, has_grouping, coord):
    if not has_grouping:
        return ds.isel({schema.GROUPING: 0})
    return ds.assign_coords({schema.GROUPING: coord}) if coord is not None else ds


def class_means(stats: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """Class means (..., class, feature), NaN rows for empty classes, and the sample-weighted
    global mean (..., feature) from the ``sum`` and ``count`` of :func:`class_stats`: one
    numpy call per block (:func:`~ncprobe.analyze.kernels.geometry.means_from_sums`), lazy
    when they are. What the run derives wherever it needs them rather than holding both the
    sums and the means of every block (C x D each)."""
    sums, count = stats["sum"], stats["count"]
    feature_dim = next(d for d in sums.dims if d not in count.dims)
    per_class, per_feature = [schema.CLASS], [schema.CLASS, feature_dim]
    # (dask operations on these arrays, computed beside them, failed in dask 2026.8 with
    # "Missing dependency pick-..." in the graph: one numpy call per block instead)
    mean, global_mean, _ = xr.apply_ufunc(
        geometry.means_from_sums, sums, count, input_core_dims=[per_feature, per_class],
        output_core_dims=[per_feature, [feature_dim], per_class], dask="parallelized",
        output_dtypes=[np.float64, np.float64, bool])
    return mean, global_mean


def clean_reference(stats: xr.Dataset, clean: str = schema.CLEAN,
                    condition_dim: str = schema.CONDITION) -> xr.DataArray | None:
    """The NCC centres of docs/metrics.md: clean class means (true labels), the class means
    themselves for features without a condition dim, or None without a clean condition.

    ``stats`` is :func:`class_stats` of true labels (or of
    :func:`~ncprobe.analyze.metrics.grouping_labels`). Pass those of the reference split to
    :func:`~ncprobe.analyze.metrics.layer_metrics` to measure other splits against them, as
    ``nc-analyze`` does."""
    label = stats[["sum", "count"]]
    if schema.GROUPING in label.dims:
        label = label.sel({schema.GROUPING: "label"}, drop=True)
    if condition_dim in label.dims:
        if clean not in label[condition_dim].values:
            return None
        label = label.sel({condition_dim: clean}, drop=True)
    return class_means(label)[0]  # without a condition dim: the features' own class means


def class_stats(features: xr.DataArray, groups: xr.DataArray, n_classes: int, *,
                sample_dim: str = schema.SAMPLE, feature_dim: str = schema.FEATURE,
                chunk_statistics=None) -> xr.Dataset:
    """Pass 1: per-class counts, sums and means, and the global mean, in float64.

    Parameters
    ----------
    features : DataArray (..., sample_dim, feature_dim)
        numpy- or dask-backed; float16/32/64. Every other dim (checkpoint, condition, ...) is
        broadcast over: one set of statistics per index.
    groups : DataArray (sample_dim,) or (..., sample_dim, grouping)
        Integer class of each sample per grouping; values outside 0..n_classes-1 are left out.
        Its leading dims are a subset of those of ``features``.
    n_classes : int
        The class set, required because lazy labels cannot be inspected without computing.
    chunk_statistics : iterable of str, optional
        Of the declared statistics with a chunk function (``sumsq``, ...), those to accumulate
        (default: all); ``within`` comes with ``sumsq``.

    Returns
    -------
    Dataset with ``count`` (..., [grouping,] class), ``sum`` and ``mean`` (..., [grouping,]
    class, feature) (mean NaN for empty classes), ``sumsq`` (..., [grouping,] class) =
    sum_{i in c} ||h_i||^2 and ``within`` = sum_{i in c} ||h_i - mu_c||^2 from it
    (:func:`~ncprobe.analyze.kernels.geometry.within_from_sumsq`: Tr Sigma_W in one pass),
    ``global_mean`` (..., [grouping,] feature) mu_G = (1/N) sum_i h_i over the samples in the
    grouping, ``n_nonfinite`` (...) (NaN/inf values seen, kept out of the sums), and every
    other statistic declared for pass 1 (:mod:`~ncprobe.analyze.kernels.statistics`). Lazy
    when ``features`` is dask-backed.

    Examples
    --------
    >>> import xarray as xr, numpy as np
    >>> h = xr.DataArray(np.array([[0., 0.], [2., 0.], [0., 4.]]), dims=("sample", "feature"))
    >>> y = xr.DataArray(np.array([0, 0, 1]), dims="sample")
    >>> class_stats(h, y, 2)["mean"].values.tolist()
    [[1.0, 0.0], [0.0, 4.0]]
    """
    lead = lead_dims(features, sample_dim, feature_dim)
    f = features.transpose(*lead, sample_dim, feature_dim)
    g, has_grouping, coord = _groups(groups, f, lead, sample_dim)
    _require_int_labels(g, n_classes)
    n_g, d = g.shape[-1], f.shape[-1]
    parts = reduce_blocks(functools.partial(passes.pass1, n_classes=n_classes,
                                            chunks=chunk_statistics), f.data,
                          [g.data], [], passes.pass1_shapes(n_g, n_classes, d, chunk_statistics))
    ds = xr.Dataset(_statistics_dataset(parts, lead, feature_dim, n_classes),
                    coords={**lead_coords(f, lead), schema.CLASS: np.arange(n_classes)})
    ds["mean"], ds["global_mean"] = class_means(ds)
    if "sumsq" not in ds:  # not asked for
        return _finish(ds, has_grouping, coord)
    ds["within"] = xr.apply_ufunc(
        geometry.within_from_sumsq, ds["sumsq"], ds["sum"], ds["count"],
        input_core_dims=[[schema.CLASS], [schema.CLASS, feature_dim], [schema.CLASS]],
        output_core_dims=[[schema.CLASS]], dask="parallelized", output_dtypes=[np.float64])
    return _finish(ds, has_grouping, coord)


#: pass-2 plans that may exceed this many bytes (thousands of classes, wide layers) are
#: worked out from in-memory statistics at once, one block after another
#: (:func:`~ncprobe.analyze.blocks.reduce_blocks`'s ``prepare_now``); ``nc-analyze`` then
#: runs pass 2 one block at a time, so that one plan is held at a time
PLAN_BYTES = 256 * 2**20


def large_plan(n_groupings: int, n_classes: int, dim: int) -> bool:
    """Whether pass 2's plan of a block may exceed :data:`PLAN_BYTES`."""
    return passes.plan_bytes(n_groupings, n_classes, dim) > PLAN_BYTES


def _reference(reference, f, lead, feature_dim, c, d):
    """The NCC centres (..., C, D), NaN rows never chosen (all NaN without centres)."""
    if reference is None:
        return np.full(f.shape[:-2] + (c, d), np.nan)
    return broadcast_to_lead(reference.astype(np.float64), f, lead,
                             (schema.CLASS, feature_dim)).data


def _pass2_dataset(parts: dict, f, lead, c, feature_dim) -> xr.Dataset:
    """Pass 2's statistics as a Dataset by dim name."""
    return xr.Dataset(_statistics_dataset(parts, lead, feature_dim, c),
                      coords={**lead_coords(f, lead), schema.CLASS: np.arange(c),
                              schema.LABEL: np.arange(c), schema.VERTEX: np.arange(c)})


def within_stats(features: xr.DataArray, groups: xr.DataArray, stats: xr.Dataset, *,
                 labels: xr.DataArray | None = None, pred: xr.DataArray | None = None,
                 reference: xr.DataArray | None = None, dense: bool = False,
                 sample_dim: str = schema.SAMPLE, feature_dim: str = schema.FEATURE) -> xr.Dataset:
    """Pass 2: the within-class residuals' projection on the between-class basis, NCC counts.

    Parameters
    ----------
    features, groups : as for :func:`class_stats`; ``stats`` is its result for them.
    labels : DataArray (..., sample_dim), optional
        True labels, for the confusion counts (default: the first grouping of ``groups``).
    pred : DataArray (..., sample_dim), optional
        The network's prediction, for ``nc4_mismatch``, ``flipped`` and ``leapt`` (default:
        ``labels``, which makes those counts meaningless: leave them unused).
    reference : DataArray (..., class, feature_dim), optional
        Centres of the nearest-class-centre classifier (NaN rows never chosen), e.g. the
        clean class means of the train split; broadcast over the features' other dims.
    dense : bool
        Also return the scatter matrix of the first grouping (feature_dim, feature2).

    Returns
    -------
    Dataset, lazy when the inputs are, with (..., [grouping,]) prefixed to each of
    ``projected`` (class) = sum_{i in c} ||S^-1 U^T (h_i - mu_c)||^2, U S V^T the thin SVD of
    the centred means, so nc1 = (1/C) Tr(Sigma_W Sigma_B^+) = sum(projected) / N exactly
    (docs/metrics.md), with no D x D matrix (Tr Sigma_W is pass 1's: ``within`` of
    :func:`class_stats`);
    ``projected_w`` (class), true labels only: the same on the count-weighted basis, so the
    separation fuzziness Tr(SS_W SS_B^+) = sum(projected_w) / N (He and Su 2023);
    ``own_hits`` (): nearest own class mean is the true label;
    ``nc4_mismatch`` (): nearest own mean differs from ``pred``;
    and, per block only, ``ref_hits`` (class): samples whose nearest ``reference`` centre is
    their class, ``ref_counted``: samples with a nearest reference centre,
    ``transitions`` (label, vertex): true label vs nearest reference centre (beyond
    :data:`~ncprobe.analyze.kernels.statistics.DENSE_TRANSITIONS` classes an object array of
    :class:`~ncprobe.analyze.kernels.passes.SparseCounts`, one per block),
    ``flipped``: pred != label, ``leapt``: flipped with nearest reference = pred,
    ``outside``: pred is no class of the dataset.
    """
    lead = lead_dims(features, sample_dim, feature_dim)
    f = features.transpose(*lead, sample_dim, feature_dim)
    g, has_grouping, coord = _groups(groups, f, lead, sample_dim)
    _require_int_labels(g, stats.sizes[schema.CLASS])
    st = stats if has_grouping else stats.expand_dims(schema.GROUPING)
    c, d, n_g = st.sizes[schema.CLASS], f.shape[-1], g.shape[-1]
    if st.sizes[schema.GROUPING] != n_g:
        raise AnalysisError(f"stats has {st.sizes[schema.GROUPING]} groupings; groups has {n_g}: "
                            "pass the class_stats of these groups")
    y = g.isel({schema.GROUPING: 0}) if labels is None else broadcast_to_lead(labels, f, lead,
                                                                        (sample_dim,))
    p = y if pred is None else broadcast_to_lead(pred, f, lead, (sample_dim,))
    # the shuffled-label baseline reports nc1 only: no nearest-mean counts for it
    names = [str(v) for v in st[schema.GROUPING].values] if schema.GROUPING in st.coords \
        else [""] * n_g
    # the plan of a block (its constants, multiplied out) once, shared by all its chunks
    nearest_own = np.array([v != "shuffled" for v in names])
    consts = [broadcast_to_lead(st["sum"], f, lead,
                                (schema.GROUPING, schema.CLASS, feature_dim)).data,
              broadcast_to_lead(st["count"], f, lead, (schema.GROUPING, schema.CLASS)).data,
              _reference(reference, f, lead, feature_dim, c, d)]
    parts = reduce_blocks(passes.pass2, f.data, [g.data, y.data, p.data], consts,
                          passes.pass2_shapes(n_g, c, d, dense),
                          prepare=functools.partial(passes.pass2_plan, nearest_own=nearest_own,
                                                    dense=dense),
                          prepare_now=large_plan(n_g, c, d))
    ds = _pass2_dataset(parts, f, lead, c, feature_dim)
    return _finish(ds, has_grouping, coord)


def reference_stats(features: xr.DataArray, labels: xr.DataArray, reference: xr.DataArray, *,
                    pred: xr.DataArray | None = None, sample_dim: str = schema.SAMPLE,
                    feature_dim: str = schema.FEATURE) -> xr.Dataset:
    """The nearest-class-centre counts against fixed centres, which need no class means of
    ``features``: one pass, read beside :func:`class_stats`'s.

    For a split measured against another split's centres (``nc-analyze``'s reference split,
    reduced first), ``ncc_acc``, ``leap_rate`` and the transitions then need no second pass
    over it; :func:`within_stats` of the same features without ``reference`` gives the rest.

    Parameters
    ----------
    features : DataArray (..., sample_dim, feature_dim)
    labels : DataArray (..., sample_dim) true classes; pred : the network's predictions
        (default: ``labels``, which leaves flipped and leapt at 0).
    reference : DataArray (..., class, feature_dim) the centres, NaN rows never chosen.

    Returns
    -------
    Dataset (...) of ``ref_hits`` (class), ``ref_counted``, ``transitions`` (label, vertex)
    (sparse beyond :data:`~ncprobe.analyze.kernels.statistics.DENSE_TRANSITIONS` classes),
    ``flipped``, ``leapt`` and ``outside``, as :func:`within_stats` defines them.
    """
    lead = lead_dims(features, sample_dim, feature_dim)
    f = features.transpose(*lead, sample_dim, feature_dim)
    c, d = reference.sizes[schema.CLASS], f.shape[-1]
    y = broadcast_to_lead(labels, f, lead, (sample_dim,))
    p = y if pred is None else broadcast_to_lead(pred, f, lead, (sample_dim,))
    parts = reduce_blocks(passes.against_reference, f.data, [y.data, p.data],
                          [_reference(reference, f, lead, feature_dim, c, d)],
                          passes.reference_shapes(c, d), prepare=passes.reference_plan)
    return _pass2_dataset(parts, f, lead, c, feature_dim)
