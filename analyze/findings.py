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


@dataclass(frozen=True)
class Bound:
    """One threshold of a finding: ``value op threshold`` with op ``>=`` or ``<=``.

    ``margin`` is how far inside the threshold the value is, relative to it: value /
    threshold - 1 for ``>=``, 1 - value / threshold for ``<=`` (0.15: 15 % inside; negative:
    the bound fails); NaN when the value is not computable.
    """

    name: str
    value: float
    op: str
    threshold: float

    @property
    def holds(self) -> bool:
        return bool(self.value >= self.threshold if self.op == ">=" else
                    self.value <= self.threshold)

    @property
    def margin(self) -> float:
        ratio = _ratio(self.value, self.threshold)
        return ratio - 1 if self.op == ">=" else 1 - ratio


@dataclass
class Finding:
    key: str
    title: str
    passed: bool | None
    detail: str
    values: dict = field(default_factory=dict)
    bounds: tuple = ()

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]

    @property
    def margins(self) -> dict:
        """Each bound's relative margin (see :class:`Bound`)."""
        return {b.name: b.margin for b in self.bounds}


def _fmt(x):
    return "nan" if not np.isfinite(x) else f"{x:.3g}"


def _ratio(a, b) -> float:
    """a / b as a float, inf or NaN where b is 0 (a ratio shown next to its numbers)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def _check(key, title, bounds, detail, values):
    """A finding whose verdict is n/a when any of its numbers is NaN or a ratio is not finite
    (not computable, e.g. NC1 of 0 against 0), else whether every bound holds."""
    if not all(np.isfinite(v) for v in values.values()):
        missing = ", ".join(k for k, v in values.items() if not np.isfinite(v))
        return Finding(key, title, None, f"{detail} (n/a: {missing} not computable)", values,
                       tuple(bounds))
    return Finding(key, title, all(b.holds for b in bounds), detail, values, tuple(bounds))


#: thresholds of the digits demo's protocol (docs/paper.md); arguments of evaluate_findings
DEMO_THRESHOLDS = {"f1_ratio": 10.0, "f1_noise": 2.0, "f2_leap": 0.85, "f2_pred": 0.25,
                   "f3_ratio": 0.25, "f3_gap": 0.03, "f3_align": 0.5, "f4_margin": 0.10}

TITLES = {"F1": "the simplex breaks under attack, not under matched noise (standard model)",
          "F2": "attacked points leap to another vertex and collapse there (standard model)",
          "F3": "robust networks collapse on attacked data too, with aligned simplices "
                "(PGD-AT)",
          "F4": "early layers keep a reliable simplex under attack (standard model)"}


@dataclass
class _Stores:
    """The stores by role, the standard model's conditions and its classifier's input."""

    roles: dict
    kinds: dict
    attack: str
    layer: str
    th: dict

    @property
    def standard(self):
        return self.roles["standard"]

    def v(self, tree, metric, split, cond, lay=None, grouping="label"):
        return value(tree, metric, split=split, layer=lay or self.layer, condition=cond,
                     grouping=grouping)


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
    extracted) is n/a with the reason, never FAIL. Each finding's ``bounds`` give every
    threshold with its value and margin.
    """
    stores = _stores(models, {**DEMO_THRESHOLDS, **thresholds})
    if isinstance(stores, list):
        return stores
    return [_f1(stores), _f2(stores), _f3(stores), _f4(stores),
            *_observations(stores.roles, stores.standard, stores.kinds, stores.layer,
                           stores.attack)]


def _stores(models, th):
    """The :class:`_Stores` of ``models``, or the findings that say why there are none."""
    roles = {}
    for name, tree in models.items():
        role = name if name in ("standard", "pgd", "trades") else training_mode(tree)
        roles.setdefault(role, tree)
    st = roles.get("standard")
    if st is None:
        return [Finding("F0", "findings need a normally trained model", None,
                        "no metrics store of a standard-trained model was given")]
    kinds = conditions_by_kind(st)
    if kinds.get("attack") is None:
        return [Finding("F0", "findings need an untargeted attack condition", None,
                        "the standard model's store has no pgd/fgsm condition")]
    layer = feature_layer(st, fallback=False)
    if layer is None:
        return [Finding(k, t, None, "n/a: the layer feeding the classifier was not extracted "
                        "(extract every layer to check the findings)")
                for k, t in TITLES.items()]
    return _Stores(roles, kinds, kinds["attack"], layer, th)


def _f1(s: _Stores) -> Finding:
    th, atk, noise = s.th, s.attack, s.kinds.get("noise")
    clean = s.v(s.standard, "nc1", "train", schema.CLEAN)
    attacked = s.v(s.standard, "nc1", "train", atk)
    noisy = s.v(s.standard, "nc1", "train", noise) if noise else np.nan
    bounds = [Bound("attack_ratio", _ratio(attacked, clean), ">=", th["f1_ratio"]),
              Bound("noise_ratio", _ratio(noisy, clean), "<=", th["f1_noise"])]
    return _check(
        "F1", TITLES["F1"], bounds,
        f"{s.layer}, train: nc1 {atk} = {_fmt(attacked)} vs clean {_fmt(clean)} "
        f"(x{_fmt(bounds[0].value)}; need >= x{th['f1_ratio']:g}); {noise or 'no noise'} "
        f"= {_fmt(noisy)} (x{_fmt(bounds[1].value)}; need <= x{th['f1_noise']:g})",
        {"nc1_clean": clean, "nc1_attacked": attacked, "nc1_noise": noisy,
         "attack_ratio": bounds[0].value, "noise_ratio": bounds[1].value})


def _f2(s: _Stores) -> Finding:
    th, atk = s.th, s.attack
    leap = s.v(s.standard, "leap_rate", "test", atk)
    by_pred = s.v(s.standard, "nc1", "test", atk, grouping="pred")
    by_label = s.v(s.standard, "nc1", "test", atk)
    bounds = [Bound("leap_rate", leap, ">=", th["f2_leap"]),
              Bound("pred_ratio", _ratio(by_pred, by_label), "<=", th["f2_pred"])]
    return _check(
        "F2", TITLES["F2"], bounds,
        f"{s.layer}, test, {atk}: leap_rate {_fmt(leap)} (need >= {th['f2_leap']:g}); nc1 "
        f"grouped by prediction {_fmt(by_pred)} vs by label {_fmt(by_label)} "
        f"(x{_fmt(bounds[1].value)}; need <= x{th['f2_pred']:g})",
        {"leap_rate": leap, "nc1_pred": by_pred, "nc1_label": by_label,
         "pred_ratio": bounds[1].value})


def _f3(s: _Stores) -> Finding:
    th, atk, at = s.th, s.attack, s.roles.get("pgd")
    at_layer = feature_layer(at, fallback=False) if at is not None else None
    if at is None or at_layer is None:
        return Finding("F3", "robust networks collapse on attacked data too", None,
                       "n/a: no PGD-AT metrics store given" if at is None else
                       "n/a: the PGD-AT store lacks the layer feeding the classifier")
    at_atk = conditions_by_kind(at).get("attack", atk)
    attacked = s.v(s.standard, "nc1", "train", atk)
    nc1_at = s.v(at, "nc1", "train", at_atk, at_layer)
    ncc = s.v(at, "ncc_acc", "test", at_atk, at_layer)
    net = s.v(at, "net_acc", "test", at_atk, at_layer)
    align_at = s.v(at, "align_angle", "train", at_atk, at_layer)
    align_st = s.v(s.standard, "align_angle", "train", atk)
    bounds = [Bound("nc1_ratio", _ratio(nc1_at, attacked), "<=", th["f3_ratio"]),
              Bound("ncc_gap", abs(ncc - net), "<=", th["f3_gap"]),
              Bound("align_ratio", _ratio(align_at, align_st), "<=", th["f3_align"])]
    return _check(
        "F3", TITLES["F3"], bounds,
        f"{at_layer}, train: PGD-AT nc1 {at_atk} = {_fmt(nc1_at)} vs standard "
        f"{_fmt(attacked)} (x{_fmt(bounds[0].value)}; need <= x{th['f3_ratio']:g}); "
        f"align_angle {_fmt(align_at)} vs standard {_fmt(align_st)} degrees "
        f"(x{_fmt(bounds[2].value)}; need <= x{th['f3_align']:g}); test: ncc_acc "
        f"{_fmt(ncc)} vs net_acc {_fmt(net)} (gap {_fmt(bounds[1].value)}; need <= "
        f"{th['f3_gap']:g})",
        {"nc1_pgd_attacked": nc1_at, "ncc_acc": ncc, "net_acc": net, "align_pgd": align_at,
         "align_standard": align_st, "nc1_ratio": bounds[0].value,
         "align_ratio": bounds[2].value})


def _f4(s: _Stores) -> Finding:
    th, atk = s.th, s.attack
    first = [str(x) for x in s.standard[schema.SUMMARY_GROUP][schema.LAYER].values][0]
    early = s.v(s.standard, "ncc_acc", "test", atk, first)
    late = s.v(s.standard, "ncc_acc", "test", atk)
    bounds = [Bound("ncc_gain", early - late, ">=", th["f4_margin"])]
    return _check(
        "F4", TITLES["F4"], bounds,
        f"test, {atk}: ncc_acc {first} = {_fmt(early)} vs {s.layer} = {_fmt(late)} (need "
        f"+{th['f4_margin']:g})", {"ncc_early": early, "ncc_late": late})


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
