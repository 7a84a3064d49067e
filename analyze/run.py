"""Analyse a whole activation store: two passes over the features, then every metric.

Pass 1 (class sums and counts for the label, pred, target and shuffled groupings) and pass 2
(within-class scatter, projections on the between-class basis, nearest-centre counts) run as
dask computations over every split, layer, checkpoint and condition. The reference split is
reduced first: the other splits count against its centres with their pass 1. A layer that
needs pass 2 and fits the memory budget (:mod:`ncprobe.analyze.memory`) is read once and kept
for both passes (a small one, one sample chunk per block, as plain numpy:
:data:`SMALL_LAYER`); the others are streamed twice, with memory at a few chunks per worker.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import xarray as xr

from ncprobe.data import schema
from ncprobe.data.params import Instance, Interval, Optional, StrList, check_params, check_values
from ncprobe.data.store import (
    NotInStoreError,
    StoreError,
    layer_dataset,
    load_variables,
    open_activations,
    verify_chunks,
)
from ncprobe.data.store import layers as store_layers
from ncprobe.data.store import splits as store_splits
from ncprobe.data.store.chunk_file import chunk_file_array

from . import registry
from .blocks import AnalysisError
from .cluster import compute_all, connect, make_bar, one_blas_thread, parse_scheduler, persist_all
from .kernels import statistics
from .kernels.collapse import GROUPINGS
from .memory import auto_budget, parse_memory, plan_reads
from .metrics import (
    collapse_metrics,
    covariances,
    grouping_labels,
    no_simplex_warning,
)
from .output import assemble, check_target, write_metrics
from .stats import class_stats, clean_reference, large_plan, reference_stats, within_stats

log = logging.getLogger("ncprobe.analyze")


@dataclass
class AnalysisOptions:
    """What to analyse and how; stored in the metrics store's root attributes. Checked when
    built: a bad value raises :class:`~ncprobe.data.params.ParameterError` naming it."""

    reference_split: str | None = "train"
    layers: list | None = None
    splits: list | None = None
    dense: bool = False
    dense_limit: int = 4096
    allow_partial: bool = False
    shuffle_seed: int = 0
    #: the metrics to compute (names of docs/metrics.md; default: all): only the statistics
    #: they need are computed, and the second pass runs only when one needs it
    metrics: list | None = None

    _constraints = {"reference_split": Optional(Instance(str, "a split name")),
                    "layers": Optional(StrList()), "splits": Optional(StrList()),
                    "dense": Instance(bool, "True or False"), "dense_limit": Interval(int, 1),
                    "allow_partial": Instance(bool, "True or False"),
                    "shuffle_seed": Interval(int, 0), "metrics": Optional(StrList())}

    def __post_init__(self):
        check_params(self, self._constraints)
        self.metrics = None if self.metrics is None else list(self.metrics)
        registry.select(self.metrics)  # a one-line error for an unknown name, before reading

    @property
    def metric_keys(self) -> list:
        return registry.select(self.metrics)


class Key(NamedTuple):
    """One array of the store that the analysis reads: a layer of a split."""

    split: str
    layer: str


class SplitInputs(NamedTuple):
    """What every layer of a split shares: true labels (sample), the network's predictions
    (checkpoint, condition, sample) and the four groupings (..., sample, grouping)."""

    labels: object
    pred: object
    groups: object


class Held(NamedTuple):
    """Pass 1's statistics of a key and its features, read once and kept for pass 2."""

    stats: object
    features: object


def _select(kind, asked, available):
    if asked is None:
        return list(available)
    for a in asked:
        if a not in available:
            raise NotInStoreError(f"{kind} {a!r} not in store; available: "
                                  f"{', '.join(available)}")
    return [a for a in available if a in asked]


def _split_inputs(store, tree, split, layer0, n_classes, seed):
    """Labels, network predictions and the (checkpoint, condition, sample, grouping) groups."""
    layer_dataset(tree, split, layer0)  # a one-line error for a bad name, before reading
    ds = load_variables(store, schema.features_path(split, layer0), [schema.LABEL])
    labels = ds[schema.LABEL].astype(np.int64).reset_coords(drop=True)
    if labels.size == 0:
        raise AnalysisError(f"split {split!r} has no samples; expected at least one per class")
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise AnalysisError(f"split {split!r}: {int(bad.sum())} labels outside 0..{n_classes - 1}"
                            f" (e.g. {int(labels[bad][0])}); expected n_classes = {n_classes}")
    outs = load_variables(store, schema.outputs_path(split), [schema.PRED, schema.TARGET])
    pred = outs[schema.PRED].reset_coords(drop=True)
    target = outs[schema.TARGET].reset_coords(drop=True)
    groups = grouping_labels(labels, pred, target, shuffle_seed=seed)
    return SplitInputs(labels, pred, groups)


def _classifier(store, tree):
    """The layer feeding the final linear map and its rows (checkpoint, class, feature)."""
    if schema.CLASSIFIER_GROUP not in tree.children:
        return None, None
    weight = load_variables(store, schema.CLASSIFIER_GROUP, [schema.WEIGHT])[schema.WEIGHT]
    return (tree[schema.CLASSIFIER_GROUP].attrs.get("layer"),
            weight.astype(np.float64).reset_coords(drop=True))


def _features(store, tree, split, layer) -> xr.DataArray:
    """One layer's lazy features, (checkpoint, condition, sample, feature): their chunk files
    read in dask's threads where the store allows it (:func:`chunk_file_array`), through
    xarray and zarr otherwise."""
    features = layer_dataset(tree, split, layer)[schema.FEATURES].reset_coords(drop=True)
    direct = chunk_file_array(store, f"{schema.features_path(split, layer)}/{schema.FEATURES}")
    if direct is None or direct.chunks != features.chunks:
        return features
    return features.copy(data=direct)


@dataclass
class _Job:
    """An activation store opened for analysis: what to read, keyed by (split, layer)."""

    store: object
    tree: object
    opts: AnalysisOptions
    n_classes: int
    splits: list
    layers: list
    ref_split: str | None
    classifier_layer: str | None
    weight: object
    inputs: dict  # split -> SplitInputs
    feats: dict  # Key -> lazy features (checkpoint, condition, sample, feature)

    @property
    def out_keys(self):
        return [key for key in self.feats if key.split in self.splits]

    def nbytes(self, key) -> int:
        return int(self.feats[key].size * self.feats[key].dtype.itemsize)


def _open_job(store, opts: AnalysisOptions) -> _Job:
    """Open the store, check its class count and choose the splits and layers to read."""
    tree = open_activations(store, allow_partial=opts.allow_partial)
    n_classes = int(tree.attrs["n_classes"])
    if n_classes < 2:
        raise AnalysisError(f"store has n_classes = {n_classes}; collapse metrics need at least "
                            "2 classes")
    splits = _select("split", opts.splits, store_splits(tree))
    layers = _select("layer", opts.layers, store_layers(tree))
    ref_split = opts.reference_split if opts.reference_split in store_splits(tree) else None
    if opts.reference_split and ref_split is None:
        log.info("reference split %r not in store: using each split's own clean means",
                 opts.reference_split)
    work_splits = splits + ([ref_split] if ref_split and ref_split not in splits else [])
    cls_layer, weight = _classifier(store, tree)
    first = layer_dataset(tree, work_splits[0], layers[0])
    if schema.CLEAN not in [str(c) for c in first[schema.CONDITION].values]:
        warnings.warn("store has no 'clean' condition: ncc_acc, leap_rate, align_angle and the "
                      "transition matrices are NaN (they are defined against clean centres)",
                      stacklevel=3)
    inputs = {s: _split_inputs(store, tree, s, layers[0], n_classes, opts.shuffle_seed)
              for s in work_splits}
    feats = {Key(s, la): _features(store, tree, s, la) for s in work_splits for la in layers}
    return _Job(store, tree, opts, n_classes, splits, layers, ref_split, cls_layer, weight,
                inputs, feats)


def analyze_store(store, out=None, options: AnalysisOptions | None = None, *, scheduler=None,
                  memory="auto", progress: bool = True, overwrite: bool = False):
    """Compute every metric of docs/metrics.md for an activation store; write it to ``out``.

    Parameters
    ----------
    store : str or Path
        An ``ncprobe-activations/1`` store.
    out : str or Path, optional
        Where to write the ``ncprobe-metrics/2`` store (and ``metrics.csv`` beside it).
    options : AnalysisOptions
    scheduler : str, optional
        See :func:`ncprobe.analyze.cluster.connect`.
    memory : 'auto', int or str
        Bytes the analysis may hold so that a layer is read once rather than twice
        (:mod:`ncprobe.analyze.memory`); the results are the same bitwise.

    Returns
    -------
    xarray.DataTree
        The metrics tree (also written when ``out`` is given).
    """
    # a misplaced argument (options passed as ``out``) must not become a folder named after it
    check_values({"out": out, "options": options},
                 {"out": Optional(Instance((str, os.PathLike), "a path")),
                  "options": Optional(Instance(AnalysisOptions, "an AnalysisOptions"))})
    opts = options or AnalysisOptions()
    if out is not None:
        check_target(out, store, asdict(opts), overwrite)
    parse_scheduler(scheduler)  # bad values fail before any reading
    budget = parse_memory(memory)
    job = _open_job(store, opts)
    with connect(scheduler) as client:
        bar = make_bar(progress)
        twice = [key for key in job.feats if _second_pass_needed(job, key)]
        plan = None
        if twice:
            source = "given"
            if budget is None:
                budget, source = auto_budget(store, client)
            plan = plan_reads({key: job.nbytes(key) for key in twice}, budget, source,
                              job.ref_split)
        stats, within = _run_passes(job, plan, bar, client)
        bar.close()
    if plan is not None:  # after the passes: a failed run says only why it failed
        log.info("%s", plan.describe())
    metrics = _collapse(job, stats, within)
    if out is not None:
        write_metrics(metrics, out, overwrite=overwrite)
    return metrics


def _foreign(job: _Job, key) -> bool:
    """Whether ``key`` is measured against another split's centres (the reference split's),
    which are reduced before it is read."""
    return job.ref_split is not None and key.split != job.ref_split


def _second_pass_needed(job: _Job, key) -> bool:
    return key in job.out_keys and (_dense(job, key) or 2 in registry.passes_needed(
        job.opts.metric_keys, reference_known=_foreign(job, key)))


def _run_passes(job: _Job, plan, bar, client):
    """Both passes for every (split, layer). First the keys measured against their own
    centres are read once for pass 1 (the streamed ones and those that need no pass 2, in
    one computation), then each batch of the plan is held in memory (read once: kept while
    its first pass runs, pass 2 from memory), then the keys measured against the reference
    split's centres, now known, are read for pass 1 and the counts against those centres at
    once, and last the streamed keys' second passes run in one computation."""
    held_keys = {key for batch in (plan.batches if plan else []) for key in batch}
    streamed = plan.streamed if plan else []
    first = [key for key in job.feats if key not in held_keys]
    stats, within = {}, {}
    stats.update(_first_pass(job, [k for k in first if not _foreign(job, k)], bar, client)[0])
    for batch in (plan.batches if plan else []):
        held = _held_first_pass(job, batch, bar, client)
        stats.update({key: h.stats for key, h in held.items()})
        within.update(_second_pass(job, batch, stats, {key: h.features for key, h in
                                                         held.items()}, {}, bar, client))
        del held  # released before the next batch is read: one batch in memory at a time
    counted = registry.counts_against_centres(job.opts.metric_keys)
    got, refs = _first_pass(job, [k for k in first if _foreign(job, k)], bar, client,
                            stats if counted else None)
    stats.update(got)
    within.update(_second_pass(job, streamed, stats, job.feats, refs, bar, client))
    within.update({key: r for key, r in refs.items() if key not in within})
    _warn_small_classes(stats)
    return stats, within


#: a held layer of at most this many bytes whose blocks are one sample chunk each is read into
#: numpy and both passes run as plain numpy calls: its kernels take less time than the dask
#: tasks around them (docs/scale-out.md, "Read once or twice")
SMALL_LAYER = 32 * 2**20


def _held(job: _Job, keys, bar, client) -> list:
    """The features of ``keys`` as a batch keeps them: the run's one choice between numpy and
    dask (everything after it is the same code for both, and
    :func:`~ncprobe.analyze.blocks.reduce_blocks` runs numpy inputs at once). Read into numpy
    when local, small and one sample chunk per block, so that the same kernel sees the same
    rows as in the dask path and results are bitwise equal; dask arrays otherwise, persisted
    with their pass 1."""
    feats = [job.feats[k] for k in keys]
    small = client is None and all(
        job.nbytes(k) <= SMALL_LAYER and len(job.feats[k].chunksizes[schema.SAMPLE]) == 1
        for k in keys)
    return _checked(compute_all, feats, bar, store=job.store) if small else feats


def _pass1(job: _Job, features, groups):
    """:func:`class_stats` of the declared pass-1 statistics that the selected metrics need,
    without what it derives (means, global means, within sums): the run holds only those of
    every block, and what needs the means derives them from the sums
    (:func:`~ncprobe.analyze.stats.class_means`), rather than holding sums and means of
    C x D each."""
    chunks = registry.chunk_statistics(job.opts.metric_keys)
    stats = class_stats(features, groups, job.n_classes, chunk_statistics=chunks)
    return stats[[s.name for s in statistics.of_pass(1, chunks=chunks)]]


def _first_pass(job: _Job, keys, bar, client, stats=None):
    """Pass 1 (:func:`class_stats`) of ``keys``, the chunks streamed: (Key -> statistics,
    Key -> counts against the reference split's centres). The latter only given ``stats``,
    the statistics of the reference split, and read with pass 1 in one computation (each
    chunk read once for both)."""
    if not keys:
        return {}, {}
    lazy = [_pass1(job, job.feats[key], job.inputs[key.split].groups) for key in keys]
    if stats is not None:
        lazy += [_against_reference(job, key, stats, job.feats[key]) for key in keys]
    done = _checked(compute_all, lazy, bar, client, store=job.store)
    got = dict(zip(keys, done[:len(keys)], strict=True))
    for key, st in got.items():
        _check_finite(st, key)
    return got, (dict(zip(keys, done[len(keys):], strict=True)) if stats is not None else {})


def _sel(a, at):
    """``a`` at the blocks ``at`` (dim -> slice) along the dims it has; all of it for None."""
    return a if at is None else a.isel({d: s for d, s in at.items() if d in a.dims})


def _centres(job: _Job, key, stats):
    """The NCC centres of ``key``: the clean class means of the reference split's same layer
    (each split's own without one); None without a clean condition."""
    return clean_reference(stats[Key(job.ref_split or key.split, key.layer)])


def _against_reference(job: _Job, key, stats, features, at=None):
    """:func:`reference_stats` of a key measured against the reference split's clean centres
    (for the blocks ``at``: dim -> slice, default all); NaN centres without a clean
    condition, so that every count is 0 and the metrics NaN."""
    inputs = job.inputs[key.split]
    centres = _centres(job, key, stats)
    if centres is None:
        centres = xr.DataArray(np.full((job.n_classes, features.sizes[schema.FEATURE]), np.nan),
                               dims=(schema.CLASS, schema.FEATURE))
    return reference_stats(features, _sel(inputs.labels, at), _sel(centres, at),
                           pred=_sel(inputs.pred, at))


def _held_first_pass(job: _Job, keys, bar, client) -> dict:
    """Pass 1 of ``keys`` with their features kept in memory for pass 2: Key -> Held, the
    chunks read once for both."""
    if not keys:
        return {}
    feats = _held(job, keys, bar, client)
    with one_blas_thread():  # numpy features are summed here: the arithmetic of a task
        lazy = [_pass1(job, f, job.inputs[k.split].groups)
                for k, f in zip(keys, feats, strict=True)]
    # the features and pass 1 together: each chunk read once for both (numpy: as they are)
    done = _checked(persist_all, feats + lazy, bar, client, store=job.store)
    stats = _checked(compute_all, done[len(keys):], bar, client, store=job.store)
    for key, st in zip(keys, stats, strict=True):
        _check_finite(st, key)
    return {k: Held(st, f) for k, st, f in zip(keys, stats, done[:len(keys)], strict=True)}


def _dense(job: _Job, key) -> bool:
    return job.opts.dense and job.feats[key].sizes[schema.FEATURE] <= job.opts.dense_limit


def _second_pass(job: _Job, keys, stats, feats, refs, bar, client) -> dict:
    """Pass 2 (:func:`within_stats`) of those ``keys`` that need it, on ``feats``, in one
    computation: against the reference split's clean class means for its own keys (each
    split's own without one); a key measured against them takes its counts from ``refs``
    (its first pass), or, held in memory, counts them here. Keys whose plans are large
    (:data:`~ncprobe.analyze.stats.PLAN_BYTES`) run one block (checkpoint, condition) at a
    time, so that one plan is held at a time."""
    keys = [key for key in keys if _second_pass_needed(job, key)]
    large = [k for k in keys if large_plan(len(GROUPINGS), job.n_classes,
                                           feats[k].sizes[schema.FEATURE])]
    small = [k for k in keys if k not in large]
    out = {}
    with one_blas_thread():  # what is computed here, not in dask's tasks, as in a task
        lazy = [_within(job, key, stats, feats[key], refs) for key in small]
    if lazy:
        done = _checked(compute_all, [part for parts in lazy for part in parts], bar, client,
                        store=job.store)
        for key, parts in zip(small, lazy, strict=True):
            out[key] = _merged(done[:len(parts)])
            done = done[len(parts):]
    for key in large:
        lead = [d for d in feats[key].dims if d not in (schema.SAMPLE, schema.FEATURE)]
        blocks = np.empty([feats[key].sizes[d] for d in lead], dtype=object)
        for i in np.ndindex(*blocks.shape):
            at = {d: slice(j, j + 1) for d, j in zip(lead, i, strict=True)}
            with one_blas_thread():
                lazy = _within(job, key, stats, feats[key].isel(at), refs, at)
            blocks[i] = _merged(_checked(compute_all, lazy, bar, client, store=job.store))
            del lazy  # the graph holds the plan: gone before the next block's plan is made
        out[key] = xr.combine_nested(blocks.tolist(), concat_dim=lead)
    return out


def _within(job: _Job, key, stats, features, refs, at=None) -> list:
    """The lazy pass 2 of one key's ``features`` (those of the blocks ``at``: dim -> slice,
    default all): [:func:`within_stats`], and for a key measured against the reference
    split's centres whose counts against them were not read with its pass 1,
    [within_stats without the centres, :func:`reference_stats`]."""
    inputs = job.inputs[key.split]
    foreign = _foreign(job, key)
    centres = None if foreign else _centres(job, key, stats)
    lazy = [within_stats(features, _sel(inputs.groups, at), _sel(stats[key], at),
                         labels=inputs.labels, pred=_sel(inputs.pred, at),
                         reference=None if centres is None else _sel(centres, at),
                         dense=_dense(job, key))]
    if foreign and key in refs:
        lazy.append(_sel(refs[key], at))
    elif foreign and registry.counts_against_centres(job.opts.metric_keys):
        lazy.append(_against_reference(job, key, stats, features, at))
    return lazy


def _merged(parts):
    """Pass 2's statistics with the counts against the reference split's centres, when they
    were counted apart, in place of its own (zero without centres)."""
    within = parts[0]
    return within.assign(parts[1].data_vars) if len(parts) > 1 else within


def _collapse(job: _Job, stats, within):
    """The metrics tree from both passes' statistics, one layer at a time."""
    narrow = sorted({int(job.feats[key].sizes[schema.FEATURE]) for key in job.out_keys
                     if job.feats[key].sizes[schema.FEATURE] + 1 < job.n_classes})
    if narrow:  # once per run, not once per layer
        warnings.warn(no_simplex_warning(job.n_classes, narrow), stacklevel=3)
    per_layer = {}
    for key in job.out_keys:
        w = job.weight if key.layer == job.classifier_layer else None
        m = collapse_metrics(stats[key], within.get(key), weight=w, warn_no_simplex=False,
                             only=job.opts.metric_keys)
        per_layer[key] = m.merge(covariances(stats[key], within[key])) if _dense(job, key) \
            else m
    tree = job.tree
    depth = {la: i for i, la in enumerate(store_layers(tree))}
    attrs = {"schema": schema.METRICS_SCHEMA, "source": str(job.store),
             "source_attrs": {k: tree.attrs.get(k) for k in ("schema", "dataset", "model",
                                                             "conditions", "created",
                                                             "class_names", "class_map")},
             "options": asdict(job.opts), "classifier_layer": job.classifier_layer,
             "conventions": "nc1 = (1/C) Tr(Sigma_W Sigma_B^+), Sigma_B = (1/C) M M^T, "
                            "mu_G sample-weighted; basis keeps s_k^2 > C eps64 s_1^2"}
    return assemble(per_layer, splits=job.splits, layers=job.layers, depth=depth, attrs=attrs)


def _checked(compute, *args, store):
    """Run a computation; when reading the store fails, name the chunks that are corrupt."""
    try:
        return compute(*args)
    except (ValueError, OSError, RuntimeError) as e:
        if isinstance(e, AnalysisError):
            raise
        bad = verify_chunks(store)
        if not bad:
            raise
        raise StoreError(f"store {str(store)!r} has unreadable chunks: {'; '.join(bad[:3])}"
                         f"{f' (and {len(bad) - 3} more)' if len(bad) > 3 else ''}; rerun "
                         "the extraction with the same settings and `repair` to rewrite them") \
            from None


def _check_finite(stats, key: Key):
    bad = stats["n_nonfinite"]
    if (bad > 0).any():
        where = bad[tuple(np.argwhere(bad.values > 0)[0])]
        raise AnalysisError(
            f"split {key.split!r}, layer {key.layer!r}, checkpoint "
            f"{int(where[schema.CHECKPOINT])}, "
            "condition "
            f"{str(where[schema.CONDITION].values)!r}: {int(where)} NaN or inf feature values; "
            "expected finite features (was the model diverged or the extraction in float16 "
            "overflowed?)")


def _warn_small_classes(stats):
    """One warning per run for empty classes and classes with a single sample."""
    empty, single = [], []
    for key, st in stats.items():
        for name in ("label", "pred"):  # target is empty for untargeted conditions
            counts = st["count"].sel({schema.GROUPING: name})
            for q in counts[schema.CONDITION].values:
                c = counts.sel({schema.CONDITION: q}).values
                if (c == 0).any():
                    where = np.flatnonzero((c == 0).any(axis=0)).tolist()
                    empty.append(f"{key.split}/{key.layer}/{q}/{name}: {where}")
                if (c == 1).any():
                    single.append(f"{key.split}/{key.layer}/{q}/{name}")
    if empty:
        warnings.warn(f"empty classes excluded from the metrics in {len(empty)} cases, e.g. "
                      f"{empty[0]}", stacklevel=4)
    if single:
        warnings.warn(f"classes with a single sample (within-class variance 0 by definition) "
                      f"in {len(single)} cases, e.g. {single[0]}", stacklevel=4)
