"""Collapse metrics (docs/metrics.md) from the statistics of one split, layer, checkpoint and
condition.

Inputs are the additive statistics of the two passes (:mod:`ncprobe.analyze._kernels`);
everything here is small numpy on (C, D) arrays. Conventions: Sigma_W =
(1/N) sum_i (h_i - mu_{g_i})(...)^T, Sigma_B = (1/C) M M^T with C the number of classes
present, mu_G sample-weighted.
"""

from __future__ import annotations

import numpy as np

from ncprobe.data import schema as S

from . import geometry as G

#: the groupings whose statistics :func:`block_vector` takes, in this order
GROUPING_ORDER = ("label", "pred", "target", "shuffled")
#: those reported per grouping; "shuffled" gives the nc1_shuffled baseline only
REPORTED_GROUPINGS = GROUPING_ORDER[:3]
GROUPED = S.GROUPED_METRICS
SCALARS = S.UNGROUPED_METRICS
PER_CLASS = S.PER_CLASS_VARS


def _nan_metrics():
    return dict.fromkeys(GROUPED, np.nan)


def grouping_metrics(sums, counts, within, projected, conf_own, mismatch, n_total):
    """Scalar collapse metrics of one grouping and its per-class terms.

    Parameters
    ----------
    sums : (C, D); counts, within, projected : (C,); conf_own : (C, C) [true label, nearest own
    mean]; mismatch : count of nearest own mean != network prediction; n_total : samples in the
    condition (for ncc_acc_self and nc4, which cover every sample).

    Returns
    -------
    metrics : dict of float; per_class : dict of (C,) arrays; simplex : (C, D) class means
    centred on their unweighted mean (:func:`~.geometry.simplex_centred`), NaN rows for empty
    classes.

    Notes
    -----
    nc1 = (1/C) Tr(Sigma_W Sigma_B^+) = sum(projected) / N (exact; Papyan et al. 2020; Su et
    al.'s code reports C times this). nc1_trace = Tr Sigma_W / Tr Sigma_B (Tirer et al. 2023).
    Both centre on the sample-weighted global mean (Papyan's Sigma_B); the simplex metrics
    (NC2, etf_distance, mean_norm, and NC3 and align_angle downstream) on the simplex's
    centroid, the unweighted mean of the class means: with ``pred`` or ``target`` grouping
    the counts are very unequal, and a weighted centre would report an exact ETF as far from
    one.
    """
    means, mu_g, present = G.means_from_sums(sums, counts)
    n = counts.sum()
    c_present = int(present.sum())
    simplex = G.simplex_centred(means, present)
    out = _nan_metrics()
    with np.errstate(invalid="ignore", divide="ignore"):
        # mean squared distance to the class mean: 0 for one sample, undefined when empty
        var = np.where(counts >= 1, within / counts, np.nan)
    per_class = {"mean_norm": np.linalg.norm(simplex, axis=1), "within_var": var}
    if n == 0 or c_present < 2:
        return out, per_class, simplex
    m = (means - mu_g)[present]  # NC1's M: centred on the sample-weighted global mean
    _, s, _ = G.between_basis(m)
    tr_w = within.sum() / n
    tr_b = (m**2).sum() / c_present
    out.update(
        nc1=float(projected.sum() / n),
        nc1_trace=float(tr_w / tr_b) if tr_b > 0 else np.nan,
        cdnv=G.cdnv(means[present], var[present]),
        rank_b=float(s.size),
        cond_b=float(s[-1] ** 2 / s[0] ** 2) if s.size else np.nan,
        nc4=float(mismatch / n_total) if n_total else np.nan,
        ncc_acc_self=float(np.trace(conf_own) / n_total) if n_total else np.nan,
        **G.nc2(simplex[present]),
    )
    return out, per_class, simplex


def block_vector(sums, counts, within, projected, conf_own, mismatch, conf_ref, flipped,
                 leapt, clean_centred, weight) -> np.ndarray:
    """Every metric of one block (split, layer, checkpoint, condition) as one flat vector.

    Parameters
    ----------
    sums : (4, C, D); counts, within, projected : (4, C); conf_own : (4, C, C); mismatch :
        (4,): the statistics of the groupings in :data:`GROUPING_ORDER`
        (:mod:`ncprobe.analyze.stats`).
    conf_ref : (C, C) [true label, nearest reference centre]; flipped, leapt : counts.
    clean_centred : (C, D) clean class means of the same split (true-label grouping) centred
        on their unweighted mean, for the alignment angles; all NaN without a clean condition.
    weight : (C, D) classifier rows when this layer feeds the final linear map, else all NaN.

    Returns
    -------
    (11 * 3 + 10 + 5 C + C^2,) float64, unpacked by :func:`ncprobe.analyze.metrics.unpack`:
    :data:`GROUPED` metric-major over label/pred/target, then :data:`SCALARS`, then
    :data:`PER_CLASS` (C each), then the transition counts (C, C).

    Notes
    -----
    An empty ``pred`` grouping means the network's predictions are unknown: nc4, net_acc and
    leap_rate are then NaN rather than numbers computed against a stand-in.
    """
    n_total = counts[0].sum()
    pred_known = counts[1].sum() > 0
    grouped = {k: [] for k in GROUPED}
    for j, name in enumerate(GROUPING_ORDER):
        metrics, per_class, centred = grouping_metrics(
            sums[j], counts[j], within[j], projected[j], conf_own[j], mismatch[j], n_total)
        if not pred_known:
            metrics["nc4"] = np.nan
        if name == "shuffled":
            nc1_shuffled = metrics["nc1"]
            continue
        for k in GROUPED:
            grouped[k].append(metrics[k])
        if name == "label":
            per_class_label, centred_label = per_class, centred
    label_counts = counts[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diag(conf_ref) / label_counts
        ncc_acc = np.trace(conf_ref) / conf_ref.sum() if conf_ref.sum() > 0 else np.nan
        leap = leapt / flipped if flipped > 0 and pred_known else np.nan
    align = G.angles_deg(centred_label, clean_centred)
    scalars = {
        "nc1_shuffled": nc1_shuffled,
        "ncc_acc": ncc_acc,
        "net_acc": (n_total - flipped) / n_total if n_total and pred_known else np.nan,
        "leap_rate": leap,
        "align_angle": np.nanmean(align) if np.isfinite(align).any() else np.nan,
    }
    present = label_counts > 0
    if np.isfinite(weight).all():
        w = np.asarray(weight, np.float64)[present]
        scalars.update({f"{k}_w": v for k, v in G.nc2(w).items()})
        scalars["nc3"] = G.nc3(w, centred_label[present])
    else:
        scalars.update(dict.fromkeys(("equinorm_w", "equiangular_w", "max_angle_w",
                                      "etf_distance_w", "nc3"), np.nan))
    per_class = {"count": label_counts, "mean_norm": per_class_label["mean_norm"],
                 "within_var": per_class_label["within_var"], "align_angle": align,
                 "ncc_recall": recall}
    return np.concatenate([np.ravel(grouped[k]) for k in GROUPED]
                          + [[scalars[k] for k in SCALARS]]
                          + [per_class[k] for k in PER_CLASS] + [np.ravel(conf_ref)])
