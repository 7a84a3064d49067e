"""The paper's four findings as checks on metrics stores (Su, Zhang, Tsilivis, Kempe 2024).

Each check reads numbers from ``/summary`` at the last checkpoint, for the layer that feeds the
classifier, and says PASS or FAIL with the numbers; thresholds are those of the digits demo
(measured outside the project) and are arguments, not constants hidden in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from ncprobe.data import schema as S


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


def training_mode(tree: xr.DataTree) -> str | None:
    """``standard``, ``pgd`` or ``trades`` from the provenance the store carries, if any."""
    model = (tree.attrs.get("source_attrs") or {}).get("model") or {}
    return (model.get("training") or {}).get("mode")


def conditions_by_kind(tree: xr.DataTree) -> dict:
    """Names of the first untargeted attack, targeted attack and noise condition."""
    out = {}
    for c in (tree.attrs.get("source_attrs") or {}).get("conditions") or []:
        kind = c.get("attack")
        if kind in ("pgd", "fgsm"):
            out.setdefault("targeted" if c.get("targeted") else "attack", c["name"])
        elif kind == "noise":
            out.setdefault("noise", c["name"])
    return out


def feature_layer(tree: xr.DataTree) -> str:
    """The layer feeding the classifier (or the deepest layer before the logits)."""
    layer = tree.attrs.get("classifier_layer")
    layers = [str(v) for v in tree[S.SUMMARY_GROUP][S.LAYER].values]
    if layer in layers:
        return layer
    return layers[-2] if len(layers) > 1 else layers[-1]


def value(tree, metric, *, split, layer, condition, grouping="label", checkpoint=-1) -> float:
    """One scalar of ``/summary`` (the last checkpoint by default); NaN when absent."""
    s = tree[S.SUMMARY_GROUP].to_dataset()
    if split not in s[S.SPLIT].values or condition not in s[S.CONDITION].values:
        return np.nan
    v = s[metric].sel({S.SPLIT: split, S.LAYER: layer, S.CONDITION: condition}).isel(
        {S.CHECKPOINT: checkpoint})
    if S.GROUPING in v.dims:
        v = v.sel({S.GROUPING: grouping})
    return float(v)


def _fmt(x):
    return "nan" if not np.isfinite(x) else f"{x:.3g}"


def evaluate_findings(models: dict, *, f1_ratio=10.0, f2_leap=0.85, f3_ratio=0.25,
                      f3_gap=0.03, f4_margin=0.10) -> list[Finding]:
    """Check findings F1-F4 on metrics trees keyed by role (``standard``, ``pgd``, ``trades``;
    other keys are matched to a role through the training mode the store records)."""
    roles = {}
    for name, tree in models.items():
        role = name if name in ("standard", "pgd", "trades") else training_mode(tree)
        roles.setdefault(role, tree)
    out = []
    st, at = roles.get("standard"), roles.get("pgd")
    if st is None:
        return [Finding("F0", "findings need a normally trained model", None,
                        "no metrics store of a standard-trained model was given")]
    kinds = conditions_by_kind(st)
    atk = kinds.get("attack")
    layer = feature_layer(st)
    if atk is None:
        return [Finding("F0", "findings need an untargeted attack condition", None,
                        "the standard model's store has no pgd/fgsm condition")]
    clean = value(st, "nc1", split="train", layer=layer, condition=S.CLEAN)
    attacked = value(st, "nc1", split="train", layer=layer, condition=atk)
    out.append(Finding(
        "F1", "the simplex breaks under attack (standard model)",
        bool(attacked >= f1_ratio * clean),
        f"{layer}, train: nc1 {atk} = {_fmt(attacked)} vs clean {_fmt(clean)} "
        f"(x{_fmt(attacked / clean)}; need >= x{f1_ratio:g})",
        {"nc1_clean": clean, "nc1_attacked": attacked}))
    leap = value(st, "leap_rate", split="test", layer=layer, condition=atk)
    out.append(Finding(
        "F2", "attacked points leap to another vertex (standard model)", bool(leap >= f2_leap),
        f"{layer}, test: leap_rate {atk} = {_fmt(leap)} (need >= {f2_leap:g})",
        {"leap_rate": leap}))
    if at is not None:
        at_layer = feature_layer(at)
        at_atk = conditions_by_kind(at).get("attack", atk)
        nc1_at = value(at, "nc1", split="train", layer=at_layer, condition=at_atk)
        ncc = value(at, "ncc_acc", split="test", layer=at_layer, condition=at_atk)
        net = value(at, "net_acc", split="test", layer=at_layer, condition=at_atk)
        ok = bool(nc1_at <= f3_ratio * attacked and abs(ncc - net) <= f3_gap)
        out.append(Finding(
            "F3", "robust networks collapse on attacked data too (PGD-AT)", ok,
            f"{at_layer}, train: PGD-AT nc1 {at_atk} = {_fmt(nc1_at)} vs standard "
            f"{_fmt(attacked)} (x{_fmt(nc1_at / attacked)}; need <= x{f3_ratio:g}); test: "
            f"ncc_acc {_fmt(ncc)} vs net_acc {_fmt(net)} (gap {_fmt(abs(ncc - net))}; need "
            f"<= {f3_gap:g})", {"nc1_pgd_attacked": nc1_at, "ncc_acc": ncc, "net_acc": net}))
    else:
        out.append(Finding("F3", "robust networks collapse on attacked data too", None,
                           "no PGD-AT metrics store given"))
    layers = [str(v) for v in st[S.SUMMARY_GROUP][S.LAYER].values]
    first = layers[0]
    early = value(st, "ncc_acc", split="test", layer=first, condition=atk)
    late = value(st, "ncc_acc", split="test", layer=layer, condition=atk)
    out.append(Finding(
        "F4", "early layers keep a reliable simplex under attack (standard model)",
        bool(early >= late + f4_margin),
        f"test, {atk}: ncc_acc {first} = {_fmt(early)} vs {layer} = {_fmt(late)} (need "
        f"+{f4_margin:g})", {"ncc_early": early, "ncc_late": late}))
    tr = roles.get("trades")
    if tr is not None:
        tl = feature_layer(tr)
        ta = conditions_by_kind(tr).get("attack", atk)
        nums = {"nc1_clean": value(tr, "nc1", split="train", layer=tl, condition=S.CLEAN),
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
