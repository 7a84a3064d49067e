"""The paper's four findings as checks on metrics stores (Su, Zhang, Tsilivis, Kempe 2024).

Each check reads numbers from ``/summary`` at the last checkpoint, for the layer that feeds the
classifier, and says PASS, FAIL or n/a (not computable) with the numbers; thresholds are those
of the digits demo's protocol (:data:`DEMO_THRESHOLDS`) and are arguments, not constants
hidden in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ncprobe.data import schema

from .metrics_reader import conditions_by_kind, feature_layer, training_mode, value


@dataclass
class Finding:
    key: str
    title: str
    passed: bool | None
    detail: str
    values: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


def _fmt(x):
    return "nan" if not np.isfinite(x) else f"{x:.3g}"


def _ratio(a, b) -> float:
    """a / b as a float, inf or NaN where b is 0 (a ratio shown next to its numbers)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def _check(key, title, conditions, detail, values):
    """A finding whose verdict is n/a when any of its numbers is NaN or a ratio is not finite
    (not computable, e.g. NC1 of 0 against 0), else whether every condition holds."""
    if not all(np.isfinite(v) for v in values.values()):
        missing = ", ".join(k for k, v in values.items() if not np.isfinite(v))
        return Finding(key, title, None, f"{detail} (n/a: {missing} not computable)", values)
    return Finding(key, title, bool(all(conditions)), detail, values)


#: thresholds of the digits demo's protocol (docs/paper.md); arguments of evaluate_findings
DEMO_THRESHOLDS = {"f1_ratio": 10.0, "f1_noise": 2.0, "f2_leap": 0.85, "f2_pred": 0.25,
                   "f3_ratio": 0.25, "f3_gap": 0.03, "f3_align": 0.5, "f4_margin": 0.10}


def evaluate_findings(models: dict, **thresholds) -> list[Finding]:
    """Check findings F1-F4 on metrics trees keyed by role (``standard``, ``pgd``, ``trades``;
    other keys are matched to a role through the training mode the store records).

    The checks test the paper's claims with their controls, at the layer that feeds the
    classifier and the last checkpoint (thresholds: :data:`DEMO_THRESHOLDS`, overridable):

    F1  attacked NC1 >= f1_ratio x clean, while the matched-noise control stays within
        f1_noise x clean (train split);
    F2  leap_rate >= f2_leap, and the attacked points collapse around their new vertex:
        NC1 grouped by prediction <= f2_pred x NC1 grouped by label (test split);
    F3  PGD-AT's attacked NC1 <= f3_ratio x the standard model's, |ncc_acc - net_acc| <=
        f3_gap (test), and mean align_angle (train) <= f3_align x the standard model's;
    F4  ncc_acc of the first layer >= that of the classifier's input + f4_margin (test).

    A finding whose numbers cannot be computed (NaN, or the classifier's input layer not
    extracted) is n/a with the reason, never FAIL.
    """
    th = {**DEMO_THRESHOLDS, **thresholds}
    roles = {}
    for name, tree in models.items():
        role = name if name in ("standard", "pgd", "trades") else training_mode(tree)
        roles.setdefault(role, tree)
    st, at = roles.get("standard"), roles.get("pgd")
    if st is None:
        return [Finding("F0", "findings need a normally trained model", None,
                        "no metrics store of a standard-trained model was given")]
    kinds = conditions_by_kind(st)
    atk = kinds.get("attack")
    if atk is None:
        return [Finding("F0", "findings need an untargeted attack condition", None,
                        "the standard model's store has no pgd/fgsm condition")]
    layer = feature_layer(st, fallback=False)
    if layer is None:
        return [Finding(k, t, None, "n/a: the layer feeding the classifier was not extracted "
                        "(extract every layer to check the findings)")
                for k, t in (("F1", "the simplex breaks under attack"),
                             ("F2", "attacked points leap to another vertex"),
                             ("F3", "robust networks collapse on attacked data too"),
                             ("F4", "early layers keep a reliable simplex under attack"))]

    def v(tree, metric, split, cond, lay=None, grouping="label"):
        return value(tree, metric, split=split, layer=lay or layer, condition=cond,
                     grouping=grouping)

    out = []
    clean = v(st, "nc1", "train", schema.CLEAN)
    attacked = v(st, "nc1", "train", atk)
    noise = kinds.get("noise")
    noisy = v(st, "nc1", "train", noise) if noise else np.nan
    out.append(_check(
        "F1", "the simplex breaks under attack, not under matched noise (standard model)",
        [_ratio(attacked, clean) >= th["f1_ratio"], _ratio(noisy, clean) <= th["f1_noise"]],
        f"{layer}, train: nc1 {atk} = {_fmt(attacked)} vs clean {_fmt(clean)} "
        f"(x{_fmt(_ratio(attacked, clean))}; need >= x{th['f1_ratio']:g}); {noise or 'no noise'} "
        f"= {_fmt(noisy)} (x{_fmt(_ratio(noisy, clean))}; need <= x{th['f1_noise']:g})",
        {"nc1_clean": clean, "nc1_attacked": attacked, "nc1_noise": noisy,
         "attack_ratio": _ratio(attacked, clean), "noise_ratio": _ratio(noisy, clean)}))
    leap = v(st, "leap_rate", "test", atk)
    by_pred = v(st, "nc1", "test", atk, grouping="pred")
    by_label = v(st, "nc1", "test", atk)
    out.append(_check(
        "F2", "attacked points leap to another vertex and collapse there (standard model)",
        [leap >= th["f2_leap"], _ratio(by_pred, by_label) <= th["f2_pred"]],
        f"{layer}, test, {atk}: leap_rate {_fmt(leap)} (need >= {th['f2_leap']:g}); nc1 "
        f"grouped by prediction {_fmt(by_pred)} vs by label {_fmt(by_label)} "
        f"(x{_fmt(_ratio(by_pred, by_label))}; need <= x{th['f2_pred']:g})",
        {"leap_rate": leap, "nc1_pred": by_pred, "nc1_label": by_label,
         "pred_ratio": _ratio(by_pred, by_label)}))
    at_layer = feature_layer(at, fallback=False) if at is not None else None
    if at is None or at_layer is None:
        out.append(Finding("F3", "robust networks collapse on attacked data too", None,
                           "n/a: no PGD-AT metrics store given" if at is None else
                           "n/a: the PGD-AT store lacks the layer feeding the classifier"))
    else:
        at_atk = conditions_by_kind(at).get("attack", atk)
        nc1_at = v(at, "nc1", "train", at_atk, at_layer)
        ncc = v(at, "ncc_acc", "test", at_atk, at_layer)
        net = v(at, "net_acc", "test", at_atk, at_layer)
        align_at = v(at, "align_angle", "train", at_atk, at_layer)
        align_st = v(st, "align_angle", "train", atk)
        out.append(_check(
            "F3", "robust networks collapse on attacked data too, with aligned simplices "
            "(PGD-AT)",
            [_ratio(nc1_at, attacked) <= th["f3_ratio"], abs(ncc - net) <= th["f3_gap"],
             _ratio(align_at, align_st) <= th["f3_align"]],
            f"{at_layer}, train: PGD-AT nc1 {at_atk} = {_fmt(nc1_at)} vs standard "
            f"{_fmt(attacked)} (x{_fmt(_ratio(nc1_at, attacked))}; need <= x{th['f3_ratio']:g}); "
            f"align_angle {_fmt(align_at)} vs standard {_fmt(align_st)} degrees "
            f"(x{_fmt(_ratio(align_at, align_st))}; need <= x{th['f3_align']:g}); test: ncc_acc "
            f"{_fmt(ncc)} vs net_acc {_fmt(net)} (gap {_fmt(abs(ncc - net))}; need <= "
            f"{th['f3_gap']:g})",
            {"nc1_pgd_attacked": nc1_at, "ncc_acc": ncc, "net_acc": net,
             "align_pgd": align_at, "align_standard": align_st,
             "nc1_ratio": _ratio(nc1_at, attacked), "align_ratio": _ratio(align_at, align_st)}))
    first = [str(x) for x in st[schema.SUMMARY_GROUP][schema.LAYER].values][0]
    early = v(st, "ncc_acc", "test", atk, first)
    late = v(st, "ncc_acc", "test", atk)
    out.append(_check(
        "F4", "early layers keep a reliable simplex under attack (standard model)",
        [early >= late + th["f4_margin"]],
        f"test, {atk}: ncc_acc {first} = {_fmt(early)} vs {layer} = {_fmt(late)} (need "
        f"+{th['f4_margin']:g})", {"ncc_early": early, "ncc_late": late}))
    out += _observations(roles, st, kinds, layer, atk)
    return out


def _observations(roles, st, kinds, layer, atk) -> list[Finding]:
    """Numbers without a threshold: TRADES, and where the targeted attack sends points."""
    out = []
    tr = roles.get("trades")
    tl = feature_layer(tr, fallback=False) if tr is not None else None
    if tl is not None:
        ta = conditions_by_kind(tr).get("attack", atk)
        nums = {"nc1_clean": value(tr, "nc1", split="train", layer=tl, condition=schema.CLEAN),
                "nc1_attacked": value(tr, "nc1", split="train", layer=tl, condition=ta),
                "ncc_acc": value(tr, "ncc_acc", split="test", layer=tl, condition=ta),
                "net_acc": value(tr, "net_acc", split="test", layer=tl, condition=ta)}
        out.append(Finding(
            "TRADES", "what TRADES shows (no threshold)", None,
            f"{tl}: train nc1 clean {_fmt(nums['nc1_clean'])}, {ta} "
            f"{_fmt(nums['nc1_attacked'])}; test ncc_acc {_fmt(nums['ncc_acc'])}, net_acc "
            f"{_fmt(nums['net_acc'])}", nums))
    tgt = kinds.get("targeted")
    if tgt is not None:
        nc1_t = value(st, "nc1", split="test", layer=layer, condition=tgt, grouping="target")
        net = value(st, "net_acc", split="test", layer=layer, condition=tgt)
        leap_t = value(st, "leap_rate", split="test", layer=layer, condition=tgt)
        out.append(Finding(
            "targeted", "where the targeted attack sends points (no threshold)", None,
            f"{layer}, test, {tgt}: nc1 grouped by target {_fmt(nc1_t)}, leap_rate "
            f"{_fmt(leap_t)}, net_acc {_fmt(net)}"))
    return out
