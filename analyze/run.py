"""Analyse a whole activation store: two passes over the features, then every metric.

Pass 1 (class sums and counts for the label, pred, target and shuffled groupings) and pass 2
(within-class scatter, projections on the between-class basis, nearest-centre counts) are each
one dask computation over every split, layer, checkpoint and condition, so every feature chunk
is read exactly twice and memory stays at a few chunks per worker.
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from ncprobe.data import schema as S
from ncprobe.data.store import (
    NotInStoreError,
    StoreError,
    layer_dataset,
    open_activations,
    outputs_dataset,
    verify_chunks,
)
from ncprobe.data.store import layers as store_layers
from ncprobe.data.store import splits as store_splits

from . import _kernels as K
from .cluster import connect, parse_scheduler
from .collapse import GROUPING_ORDER, block_metrics
from .geometry import means_from_sums, projection_coefs
from .output import assemble, check_target, write_metrics
from .progress import compute_all, make_bar
from .stats import AnalysisError, reduce_chunks

log = logging.getLogger("ncprobe.analyze")


@dataclass
class AnalysisOptions:
    """What to analyse and how; stored in the metrics store's root attributes."""

    reference_split: str = "train"
    layers: list | None = None
    splits: list | None = None
    dense: bool = False
    dense_limit: int = 4096
    allow_partial: bool = False
    shuffle_seed: int = 0


def _select(kind, asked, available):
    if asked is None:
        return list(available)
    for a in asked:
        if a not in available:
            raise NotInStoreError(f"{kind} {a!r} not in store; available: "
                                  f"{', '.join(available)}")
    return [a for a in available if a in asked]


def _split_inputs(tree, split, layer0, n_classes, seed):
    """Labels, network predictions, targets and the (K, Q, N, 4) grouping labels of a split."""
    ds = layer_dataset(tree, split, layer0)
    labels = np.asarray(ds[S.LABEL].values, np.int64)
    if labels.size == 0:
        raise AnalysisError(f"split {split!r} has no samples; expected at least one per class")
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise AnalysisError(f"split {split!r}: {int(bad.sum())} labels outside 0..{n_classes - 1}"
                            f" (e.g. {int(labels[bad][0])}); expected n_classes = {n_classes}")
    outs = outputs_dataset(tree, split)
    pred = np.asarray(outs[S.PRED].values, np.int64)
    target = np.asarray(outs[S.TARGET].values, np.int64)
    shuffled = labels[np.random.default_rng(seed).permutation(labels.size)]
    k, q, n = pred.shape
    groups = np.empty((k, q, n, len(GROUPING_ORDER)), np.int64)
    groups[..., 0] = labels
    groups[..., 1] = pred
    groups[..., 2] = target
    groups[..., 3] = shuffled
    return labels, pred, groups


def _classifier(tree):
    if S.CLASSIFIER_GROUP not in tree.children:
        return None, None
    node = tree[S.CLASSIFIER_GROUP]
    return node.attrs.get("layer"), np.asarray(node[S.WEIGHT].values, np.float64)


def analyze_store(store, out=None, options: AnalysisOptions | None = None, *, scheduler=None,
                  progress: bool = True, overwrite: bool = False):
    """Compute every metric of METRICS.md for an activation store; write it to ``out``.

    Parameters
    ----------
    store : str or Path
        An ``ncprobe-activations/1`` store.
    out : str or Path, optional
        Where to write the ``ncprobe-metrics/1`` store (and ``metrics.csv`` beside it).
    options : AnalysisOptions
    scheduler : str, optional
        See :func:`ncprobe.analyze.cluster.connect`.

    Returns
    -------
    xarray.DataTree
        The metrics tree (also written when ``out`` is given).
    """
    opts = options or AnalysisOptions()
    if out is not None:
        check_target(out, store, asdict(opts), overwrite)
    parse_scheduler(scheduler)  # a bad value fails before any reading
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
    cls_layer, weight = _classifier(tree)
    first = layer_dataset(tree, work_splits[0], layers[0])
    checkpoints = [int(c) for c in first[S.CHECKPOINT].values]
    conditions = [str(c) for c in first[S.CONDITION].values]
    if S.CLEAN not in conditions:
        warnings.warn("store has no 'clean' condition: ncc_acc, leap_rate, align_angle and the "
                      "transition matrices are NaN (they are defined against clean centres)",
                      stacklevel=2)

    inputs = {s: _split_inputs(tree, s, layers[0], n_classes, opts.shuffle_seed)
              for s in work_splits}
    feats = {(s, la): layer_dataset(tree, s, la)[S.FEATURES].data for s in work_splits
             for la in layers}
    keys = [(s, la, k, q) for s in work_splits for la in layers
            for k in range(len(checkpoints)) for q in range(len(conditions))]
    n_g = len(GROUPING_ORDER)

    with connect(scheduler) as client:
        bar = make_bar(progress)
        p1 = {}
        collections = []
        for s, la, k, q in keys:
            x = feats[(s, la)][k, q]
            kernel = functools.partial(K.pass1, n_classes=n_classes)
            collections.append(reduce_chunks(kernel, x, [inputs[s][2][k, q]],
                                             size=K.pass1_size(n_g, n_classes, x.shape[1])))
        for key, v in zip(keys, _checked(compute_all, collections, bar, client, store=store),
                          strict=True):
            s, la, k, q = key
            d = feats[(s, la)].shape[-1]
            sums, counts, bad = K.unpack_pass1(v, n_g, n_classes, d)
            if bad:
                raise AnalysisError(
                    f"split {s!r}, layer {la!r}, checkpoint {checkpoints[k]}, condition "
                    f"{conditions[q]!r}: {bad} NaN or inf feature values; expected finite "
                    "features (was the model diverged or the extraction in float16 overflowed?)")
            p1[key] = (sums, counts)
        _warn_small_classes(p1, conditions)

        clean_q = conditions.index(S.CLEAN) if S.CLEAN in conditions else None

        def ref_centres(s, la, k):
            if clean_q is None:
                return np.zeros((n_classes, feats[(s, la)].shape[-1])), np.zeros(n_classes, bool)
            sums, counts = p1[(ref_split or s, la, k, clean_q)]
            means, _, present = means_from_sums(sums[0], counts[0])
            return np.nan_to_num(means), present

        out_keys = [key for key in keys if key[0] in splits]
        collections = []
        dense_flags = {}
        for s, la, k, q in out_keys:
            sums, counts = p1[(s, la, k, q)]
            d = sums.shape[-1]
            means = np.stack([means_from_sums(sums[j], counts[j])[0] for j in range(n_g)])
            coefs = np.stack([projection_coefs(means[j], counts[j], n_classes)
                              for j in range(n_g)])
            centres, valid = ref_centres(s, la, k)
            dense = opts.dense and d <= opts.dense_limit
            dense_flags[(s, la, k, q)] = dense
            kernel = functools.partial(_pass2, n_classes=n_classes, dense=dense)
            layout = K.pass2_layout(n_g, n_classes, d, dense)
            size = sum(int(np.prod(sh)) if sh else 1 for _, sh in layout)
            labels, pred, groups = inputs[s]
            origin = sums[0].sum(axis=0) / max(counts[0].sum(), 1)
            collections.append(reduce_chunks(
                kernel, feats[(s, la)][k, q], [groups[k, q], labels, pred[k, q]],
                [np.nan_to_num(means), coefs, centres, valid, counts > 0, origin], size=size))
        p2 = {}
        for key, v in zip(out_keys, _checked(compute_all, collections, bar, client,
                                             store=store), strict=True):
            d = feats[key[:2]].shape[-1]
            p2[key] = K.unpack(v, K.pass2_layout(n_g, n_classes, d, dense_flags[key]))
    bar.close()

    results = {}
    for key in out_keys:
        s, la, k, q = key
        labels, pred, _ = inputs[s]
        clean_centred = None
        if clean_q is not None:
            sums, counts = p1[(s, la, k, clean_q)]
            m, mu_g, _ = means_from_sums(sums[0], counts[0])
            clean_centred = m - mu_g
        w = weight[k] if (weight is not None and la == cls_layer) else None
        r = block_metrics(*p1[key], p2[key], net_correct=int((pred[k, q] == labels).sum()),
                          n_total=labels.size, clean_centred=clean_centred, weight=w)
        if dense_flags[key]:
            sums, counts = p1[key]
            n = counts[0].sum()
            m, mu_g, present = means_from_sums(sums[0], counts[0])
            c = m[present] - mu_g
            r["sigma_w"] = p2[key]["scatter"] / n
            r["sigma_b"] = c.T @ c / present.sum()
        results[key] = r
    depth = {la: i for i, la in enumerate(store_layers(tree))}
    attrs = {"schema": S.METRICS_SCHEMA, "source": str(store),
             "source_attrs": {k: tree.attrs.get(k) for k in ("schema", "dataset", "model",
                                                             "conditions", "created",
                                                             "class_names")},
             "options": asdict(opts), "classifier_layer": cls_layer,
             "conventions": "nc1 = (1/C) Tr(Sigma_W Sigma_B^+), Sigma_B = (1/C) M M^T, "
                            "mu_G sample-weighted; basis keeps s_k^2 > C eps64 s_1^2"}
    metrics = assemble(results, splits=splits, layers=layers, depth=depth,
                       checkpoints=checkpoints, conditions=conditions, n_classes=n_classes,
                       attrs=attrs)
    if out is not None:
        write_metrics(metrics, out, overwrite=overwrite)
    return metrics


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
                         "nc-extract with the same command and --repair to rewrite them") \
            from None


def _pass2(h, groups, labels, pred, means, coefs, centres, valid, own_valid, origin, n_classes,
           dense):
    return K.pass2(h, groups, labels, pred, means, coefs, centres, valid.astype(bool),
                   own_valid.astype(bool), n_classes, dense=dense, origin=origin)


def _warn_small_classes(p1, conditions):
    """One warning per run for empty classes and classes with a single sample."""
    empty, single = [], []
    for (s, la, _k, q), (_, counts) in p1.items():
        for j, name in enumerate(GROUPING_ORDER[:2]):  # label and pred; target is often empty
            c = counts[j]
            if (c == 0).any():
                empty.append(f"{s}/{la}/{conditions[q]}/{name}: {np.flatnonzero(c == 0).tolist()}")
            if (c == 1).any():
                single.append(f"{s}/{la}/{conditions[q]}/{name}")
    if empty:
        warnings.warn(f"empty classes excluded from the metrics in {len(empty)} cases, e.g. "
                      f"{empty[0]}", stacklevel=3)
    if single:
        warnings.warn(f"classes with a single sample (NaN within-class variance and cdnv terms) "
                      f"in {len(single)} cases, e.g. {single[0]}", stacklevel=3)
