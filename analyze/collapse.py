"""Collapse metrics (METRICS.md) from the statistics of one split, layer, checkpoint, condition.

Inputs are the additive statistics of the two passes (:mod:`ncprobe.analyze._kernels`);
everything here is small numpy on (C, D) arrays. Conventions: Sigma_W =
(1/N) sum_i (h_i - mu_{g_i})(...)^T, Sigma_B = (1/C) M M^T with C the number of classes
present, mu_G sample-weighted.
"""

from __future__ import annotations

import numpy as np

from . import geometry as G

GROUPING_ORDER = ("label", "pred", "target", "shuffled")
REPORTED_GROUPINGS = GROUPING_ORDER[:3]


def _nan_metrics():
    return {k: np.nan for k in ("nc1", "nc1_trace", "cdnv", "rank_b", "cond_b", "equinorm",
                                "equiangular", "max_angle", "etf_distance", "nc4",
                                "ncc_acc_self")}


def grouping_metrics(sums, counts, within, projected, conf_own, mismatch, n_total):
    """Scalar collapse metrics of one grouping and its per-class terms.

    Parameters
    ----------
    sums : (C, D); counts, within, projected : (C,); conf_own : (C, C) [true label, nearest own
    mean]; mismatch : count of nearest own mean != network prediction; n_total : samples in the
    condition (for ncc_acc_self and nc4, which cover every sample).

    Returns
    -------
    metrics : dict of float; per_class : dict of (C,) arrays; centred : (C, D) with NaN rows for
    empty classes.

    Notes
    -----
    nc1 = (1/C) Tr(Sigma_W Sigma_B^+) = sum(projected) / N (exact; Papyan et al. 2020; Su et
    al.'s code reports C times this). nc1_trace = Tr Sigma_W / Tr Sigma_B (Tirer et al. 2023).
    """
    means, mu_g, present = G.means_from_sums(sums, counts)
    n = counts.sum()
    c_present = int(present.sum())
    centred = means - mu_g
    out = _nan_metrics()
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(counts >= 2, within / counts, np.nan)
    per_class = {"mean_norm": np.linalg.norm(centred, axis=1), "within_var": var}
    if n == 0 or c_present < 2:
        return out, per_class, centred
    m = centred[present]
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
        **G.nc2(m),
    )
    return out, per_class, centred


def block_metrics(p1_sums, p1_counts, p2, *, net_correct, n_total, clean_centred=None,
                  weight=None):
    """Every metric of one (split, layer, checkpoint, condition).

    Parameters
    ----------
    p1_sums : (4, C, D); p1_counts : (4, C), groupings in :data:`GROUPING_ORDER`.
    p2 : dict of pass-2 statistics (see :func:`ncprobe.analyze._kernels.pass2`).
    net_correct : number of samples the network classifies correctly in this condition.
    clean_centred : (C, D) centred clean means of the same split (true-label grouping), for
        the alignment angles; None when the split has no clean condition.
    weight : (C, D) classifier rows when this layer feeds the final linear map.

    Returns
    -------
    dict with ``grouped`` (metric -> (3,) over label/pred/target), ``scalars``, ``per_class``
    (name -> (C,)), ``transitions`` (C, C), ``means`` (3, C, D), ``empty`` (grouping ->
    list of empty classes).
    """
    grouped = {}
    per_class_label = None
    centred_label = None
    empty = {}
    means = []
    for j, name in enumerate(GROUPING_ORDER):
        metrics, per_class, centred = grouping_metrics(
            p1_sums[j], p1_counts[j], p2["within"][j], p2["projected"][j], p2["conf_own"][j],
            p2["nc4_mismatch"][j], n_total)
        if name == "shuffled":
            nc1_shuffled = metrics["nc1"]
            continue
        means.append(G.means_from_sums(p1_sums[j], p1_counts[j])[0])
        if p1_counts[j].sum() > 0 and (p1_counts[j] == 0).any():
            empty[name] = np.flatnonzero(p1_counts[j] == 0).tolist()
        for k, v in metrics.items():
            grouped.setdefault(k, []).append(v)
        if name == "label":
            per_class_label, centred_label = per_class, centred
    counts = p1_counts[0]
    conf = p2["conf_ref"]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diag(conf) / counts
        ncc_acc = np.trace(conf) / conf.sum() if conf.sum() > 0 else np.nan
        leap = p2["leapt"] / p2["flipped"] if p2["flipped"] > 0 else np.nan
    if clean_centred is not None:
        align = G.angles_deg(centred_label, clean_centred)
    else:
        align = np.full(counts.shape, np.nan)
    scalars = {
        "nc1_shuffled": nc1_shuffled,
        "ncc_acc": float(ncc_acc),
        "net_acc": float(net_correct / n_total) if n_total else np.nan,
        "leap_rate": float(leap),
        "align_angle": float(np.nanmean(align)) if np.isfinite(align).any() else np.nan,
    }
    present = counts > 0
    if weight is not None:
        w = np.asarray(weight, np.float64)[present]
        nc2w = G.nc2(w)
        scalars.update({f"{k}_w": v for k, v in nc2w.items()})
        scalars["nc3"] = G.nc3(w, centred_label[present])
    else:
        scalars.update(dict.fromkeys(("equinorm_w", "equiangular_w", "max_angle_w",
                                      "etf_distance_w", "nc3"), np.nan))
    per_class = {"count": counts, "mean_norm": per_class_label["mean_norm"],
                 "within_var": per_class_label["within_var"], "align_angle": align,
                 "ncc_recall": recall}
    return {"grouped": {k: np.array(v) for k, v in grouped.items()}, "scalars": scalars,
            "per_class": per_class, "transitions": conf, "means": np.stack(means),
            "empty": empty}
