"""Collapse metrics from the statistics of the two passes, for many blocks at once.

A *block* is one (split, layer, checkpoint, condition); its statistics come in as arrays
with any leading axes ``...`` (one entry per block) and the trailing axes named below.
:class:`Grouping` holds one grouping's statistics (label, pred, target or shuffled) and the
quantities derived from them, each computed once when first asked for; :class:`Block` holds
every grouping and the statistics that do not depend on one. Each metric is a function of
one of them returning an array over the leading axes (``(...)``, ``(..., C)`` or
``(..., C, C)``); :mod:`ncprobe.analyze.registry` declares which is which.

Conventions (docs/metrics.md): Sigma_W = (1/N) sum_i (h_i - mu_{g_i})(...)^T, Sigma_B =
(1/C) M M^T with C the number of classes present and mu_G sample-weighted; the simplex
metrics centre on the unweighted mean of the class means.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from . import geometry
from .geometry import divide_or_nan
from .statistics import STATISTICS

#: the groupings of a block, in the order their statistics are stacked along one axis
GROUPINGS = ("label", "pred", "target", "shuffled")


class _Statistics:
    """Declared statistics (:mod:`.statistics`) as attributes, from a dict by name; one that
    was not computed (the metrics asked for do not need it) is an error that says so."""

    def __getattr__(self, name):
        held = self.__dict__.get("_stats", {})
        if name in held:
            return held[name]
        if name.startswith("__") or name not in STATISTICS:
            raise AttributeError(name)
        raise LookupError(f"statistic {name!r} was not computed: the selected metrics' needs "
                          "do not reach it (collapse.READS says what each quantity reads)")


class Grouping(_Statistics):
    """Statistics of one grouping (or several, stacked on the last leading axis).

    Parameters
    ----------
    stats : dict
        The per-grouping statistics of :mod:`.statistics` (``sum`` (..., C, D), ``count``,
        ``within``, ``projected`` (..., C), ``own_hits``, ``nc4_mismatch`` (...)), the
        grouping axis taken; those not computed are absent.
    n_total : (...) samples in the block (ncc_acc_self and nc4 cover every sample).
    pred_known : (...) whether the network's predictions were given.
    """

    #: what is derived from the statistics, each computed once when first asked for
    DERIVED = frozenset({"within", "n_total", "pred_known", "means", "global_mean", "present",
                         "n", "n_present", "valid", "centred", "simplex", "singular",
                         "variance", "nc2", "simplex_exists", "uniformity", "hull_margins",
                         "where_valid"})

    @classmethod
    def vocabulary(cls) -> frozenset:
        """What a metric's kernel may read (its ``needs``): the per-grouping statistics
        declared now (:mod:`.statistics`) and :data:`DERIVED`."""
        return frozenset({s.name for s in STATISTICS.values() if s.per_grouping}) | cls.DERIVED

    def __init__(self, stats: dict, n_total, pred_known):
        self._stats = stats
        self.n_total, self.pred_known = n_total, pred_known

    @cached_property
    def _means(self):
        return geometry.means_from_sums(self.sum, self.count)

    @property
    def means(self):
        """(..., C, D) class means, NaN rows for empty classes."""
        return self._means[0]

    @property
    def global_mean(self):
        """(..., D) sample-weighted global mean mu_G."""
        return self._means[1]

    @property
    def present(self):
        """(..., C) classes with at least one sample."""
        return self._means[2]

    @cached_property
    def n(self):
        """(...) samples in the grouping."""
        return self.count.sum(axis=-1)

    @cached_property
    def n_present(self):
        """(...) classes present, C'."""
        return self.present.sum(axis=-1)

    @cached_property
    def valid(self):
        """(...) blocks where collapse is defined: at least one sample, two classes."""
        return (self.n > 0) & (self.n_present >= 2)

    @cached_property
    def centred(self):
        """(..., C, D) M: class means minus mu_G (NC1's centre), zero rows for absent ones."""
        return geometry.centred_means(self.means, self.global_mean, self.present)

    @cached_property
    def simplex(self):
        """(..., C, D) class means minus their unweighted centroid (the simplex's centre)."""
        return geometry.simplex_centred(self.means, self.present)

    @cached_property
    def singular(self):
        """(s, keep): singular values of M and those kept (s_k^2 > C' eps64 s_1^2)."""
        return geometry.between_singular_values(self.centred, self.present)

    @cached_property
    def within(self):
        """(..., C) sum_{i in c} ||h_i - mu_c||^2, from pass 1
        (:func:`~.geometry.within_from_sumsq`)."""
        return geometry.within_from_sumsq(self.sumsq, self.sum, self.count)

    @cached_property
    def variance(self):
        """(..., C) mean squared distance to the class mean; NaN for empty classes."""
        return np.where(self.count >= 1, divide_or_nan(self.within, self.count), np.nan)

    @cached_property
    def nc2(self):
        """NC2 quantities of the simplex (:func:`~.geometry.nc2`)."""
        # the pairwise quantities are reported only where a simplex can exist and collapse is
        # defined: an empty grouping (untargeted attacks) costs no C^2 D pass
        pairs = bool((self.simplex_exists & self.valid).any())
        return geometry.nc2(self.simplex, self.present, pairs=pairs)

    @cached_property
    def simplex_exists(self):
        """(...) C' <= D + 1: only then can C' class means form a simplex ETF."""
        return self.n_present <= self.sum.shape[-1] + 1

    @cached_property
    def uniformity(self):
        """Hyperspherical uniformity of the simplex (:func:`~.geometry.uniformity`)."""
        return geometry.uniformity(self.simplex, self.present)

    @cached_property
    def hull_margins(self):
        """(..., C) one-vs-rest distances (:func:`~.geometry.hull_margins`)."""
        return geometry.hull_margins(self.simplex, self.present)

    def where_valid(self, x):
        return np.where(self.valid, x, np.nan)


class Block(_Statistics):
    """Every statistic of a block: the groupings of :data:`GROUPINGS` and the rest.

    Parameters
    ----------
    **stats : the statistics of :mod:`.statistics` by name, each (..., *dims): the
        per-grouping ones with the four groupings in the order of :data:`GROUPINGS`
        (``sum`` (..., 4, C, D), ``count`` (..., 4, C), ...); ``transitions`` (..., C, C)
        dense (sparse ones stay outside the kernels); ``clean_centred`` (..., C, D) NaN without
        a clean condition; ``weight`` (..., C, D) NaN unless the layer feeds the classifier.
        Only those the metrics asked for need (:data:`READS`) have to be given.
    """

    #: what is derived (a grouping's statistics come through ``label``, ``grouping`` and
    #: ``groupings``, or one by one as ``label.<name>``)
    DERIVED = frozenset({"label", "label_counts", "pred_known", "n_total", "align", "weight_ok",
                         "nc2_w", "w_simplex_exists", "grouping", "groupings"})

    @classmethod
    def vocabulary(cls) -> frozenset:
        """What a metric's kernel may read (its ``needs``): the statistics declared now that
        are not per grouping (:mod:`.statistics`) and :data:`DERIVED`."""
        return frozenset({s.name for s in STATISTICS.values()
                          if s.block_input and not s.per_grouping}) | cls.DERIVED

    def __init__(self, **stats):
        self._stats = stats
        self._cache = {}

    def grouping(self, name: str) -> Grouping:
        """The statistics of one grouping; results over the leading axes."""
        return self._select((name,), squeeze=True)

    def groupings(self, names: tuple) -> Grouping:
        """Several groupings stacked on a last leading axis; results (..., len(names))."""
        return self._select(tuple(names), squeeze=False)

    def _select(self, names, squeeze):
        key = (names, squeeze)
        if key not in self._cache:
            idx = [GROUPINGS.index(n) for n in names]
            # a view where the groupings are consecutive (the class sums are C x D each)
            at = idx[0] if squeeze else (
                slice(idx[0], idx[-1] + 1) if idx == list(range(idx[0], idx[-1] + 1)) else idx)
            take = {}
            for name, a in self._stats.items():
                stat = STATISTICS.get(name)
                if stat is not None and stat.per_grouping:
                    axis = a.ndim - len(stat.dims) + stat.dims.index("grouping")
                    take[name] = a[(slice(None),) * axis + (at,)]
            n_total = self.label_counts.sum(axis=-1)
            pred_known = self.pred_known if "outside" in self._stats else None
            if not squeeze:
                n_total = n_total[..., None]
                pred_known = None if pred_known is None else pred_known[..., None]
            self._cache[key] = Grouping(take, n_total, pred_known)
        return self._cache[key]

    @property
    def label_counts(self):
        """(..., C) samples of each class (true labels)."""
        return self.count[..., 0, :]

    @cached_property
    def label(self) -> Grouping:
        return self.grouping("label")

    @cached_property
    def pred_known(self):
        """(...) no prediction in the ``pred`` grouping nor outside the dataset's classes
        means the predictions are unknown."""
        return self.count[..., 1, :].sum(axis=-1) + self.outside > 0

    @cached_property
    def n_total(self):
        return self.label_counts.sum(axis=-1)

    @cached_property
    def align(self):
        """(..., C) angle (degrees) between each class's simplex vertex and the clean one."""
        return geometry.angles_deg(self.label.simplex, self.clean_centred)

    @cached_property
    def weight_ok(self):
        return np.isfinite(self.weight).all(axis=(-2, -1))

    @cached_property
    def nc2_w(self):
        """NC2 of the classifier rows of the classes present (not centred, as Papyan et
        al.'s code)."""
        w = np.where(self.weight_ok[..., None, None], self.weight, np.nan)
        return geometry.nc2(w, self.label.present, pairs=bool(self.w_simplex_exists.any()))

    @cached_property
    def w_simplex_exists(self):
        """(...) the classifier's C' rows fit a simplex ETF: C' <= D + 1."""
        return self.label.present.sum(axis=-1) <= self.weight.shape[-1] + 1


#: what each derived quantity of a Grouping or Block reads: statistics, other quantities, or
#: ``label.<name>`` (the true-label grouping's). The closure of a metric's ``needs`` over this
#: map is the statistics it needs (:func:`ncprobe.analyze.registry.needed_statistics`); a
#: test computes every metric from those alone.
READS = {
    "means": ("sum", "count"), "global_mean": ("sum", "count"), "present": ("sum", "count"),
    "n": ("count",), "n_present": ("present",), "valid": ("n", "n_present"),
    "centred": ("means", "global_mean", "present"), "simplex": ("means", "present"),
    "singular": ("centred", "present"), "variance": ("count", "within"),
    "within": ("sumsq", "sum", "count"),
    "nc2": ("simplex", "present", "simplex_exists", "valid"),
    "simplex_exists": ("n_present", "sum"),
    "uniformity": ("simplex", "present"), "hull_margins": ("simplex", "present"),
    "where_valid": ("valid",), "n_total": ("count",), "pred_known": ("count", "outside"),
    "label_counts": ("count",), "align": ("label.simplex", "clean_centred"),
    "weight_ok": ("weight",), "w_simplex_exists": ("label.present", "weight"),
    "nc2_w": ("weight", "weight_ok", "label.present", "w_simplex_exists"),
    # a whole grouping: every statistic of one
    "label": ("sum", "count", "sumsq", "projected", "own_hits", "nc4_mismatch", "n_total",
              "pred_known"),
}
READS["grouping"] = READS["groupings"] = READS["label"]


# metrics of one grouping: (...) arrays, NaN where the grouping is not valid

def nc1(g: Grouping):
    """(1/C) Tr(Sigma_W Sigma_B^+) = (1/N) sum_i ||S^-1 U^T (h_i - mu_{g_i})||^2."""
    return g.where_valid(divide_or_nan(g.projected.sum(axis=-1), g.n))


def nc1_trace(g: Grouping):
    tr_w = divide_or_nan(g.within.sum(axis=-1), g.n)
    tr_b = divide_or_nan((g.centred**2).sum(axis=(-2, -1)), g.n_present)
    return g.where_valid(divide_or_nan(tr_w, tr_b))


def cdnv(g: Grouping):
    return g.where_valid(geometry.cdnv(g.means, g.variance, g.present))


def rank_b(g: Grouping):
    return g.where_valid(g.singular[1].sum(axis=-1).astype(np.float64))


def cond_b(g: Grouping):
    s, keep = g.singular
    last = np.where(keep, s, np.inf).min(axis=-1)
    return g.where_valid(divide_or_nan(last**2, s[..., 0] ** 2))


#: NC2 quantities that describe a simplex ETF, meaningless when C' > D + 1
SIMPLEX_ONLY = ("equiangular", "max_angle", "etf_distance")


def nc2_part(key):
    def kernel(g: Grouping):
        if key in SIMPLEX_ONLY:
            return g.where_valid(np.where(g.simplex_exists, g.nc2[key], np.nan))
        return g.where_valid(g.nc2[key])
    kernel.__name__ = key
    kernel.__doc__ = f"NC2 {key} of the simplex-centred class means (:func:`~.geometry.nc2`)."
    return kernel


def nc4(g: Grouping):
    out = g.where_valid(divide_or_nan(g.nc4_mismatch, g.n_total))
    return np.where(g.pred_known, out, np.nan)


def ncc_acc_self(g: Grouping):
    return g.where_valid(divide_or_nan(g.own_hits, g.n_total))


def uniformity(g: Grouping):
    """Mean of log 1/||u_c - u_c'|| over pairs of unit simplex-centred means (Liu et al.)."""
    return g.where_valid(g.uniformity["mean"])


def uniformity_var(g: Grouping):
    return g.where_valid(g.uniformity["var"])





# metrics of a block: (...) arrays

def ncc_acc(b: Block):
    return divide_or_nan(b.ref_hits.sum(axis=-1), b.ref_counted)


def net_acc(b: Block):
    return np.where(b.pred_known, divide_or_nan(b.n_total - b.flipped, b.n_total), np.nan)


def pred_outside(b: Block):
    return np.where(b.pred_known, divide_or_nan(b.outside, b.n_total), np.nan)


def leap_rate(b: Block):
    return np.where(b.pred_known & (b.flipped > 0), divide_or_nan(b.leapt, b.flipped), np.nan)


def align_angle(b: Block):
    a = b.align
    finite = np.isfinite(a)
    return divide_or_nan(np.where(finite, a, 0.0).sum(axis=-1), finite.sum(axis=-1))


def nc2_w_part(key):
    def kernel(b: Block):
        if key in SIMPLEX_ONLY:
            return np.where(b.w_simplex_exists, b.nc2_w[key], np.nan)
        return b.nc2_w[key]
    kernel.__name__ = f"{key}_w"
    kernel.__doc__ = f"NC2 {key} of the classifier rows (:func:`~.geometry.nc2`)."
    return kernel


def nc3(b: Block):
    w = np.where(b.weight_ok[..., None, None], b.weight, np.nan)
    return geometry.nc3(w, b.label.simplex, b.label.present)


def fuzziness(b: Block):
    """Tr(SS_W SS_B^+) = (1/N) sum_i ||S_w^-1 U_w^T (h_i - mu_{y_i})||^2 on the count-weighted
    between basis (He and Su 2023)."""
    g = b.label
    return g.where_valid(divide_or_nan(b.projected_w.sum(axis=-1), g.n))


# per-class metrics of a block: (..., C)

def class_count(b: Block):
    return b.label_counts


def mean_norm(b: Block):
    return np.linalg.norm(b.label.simplex, axis=-1)


def within_var(b: Block):
    return b.label.variance


def class_align_angle(b: Block):
    return b.align


def ncc_recall(b: Block):
    return divide_or_nan(b.ref_hits, b.label_counts)


def hull_margin(b: Block):
    """The smallest one-vs-rest distance over the classes, true labels (Jiang et al. 2023)."""
    m = b.label.hull_margins
    finite = np.isfinite(m)
    return b.label.where_valid(np.where(finite.any(axis=-1),
                                        np.where(finite, m, np.inf).min(axis=-1), np.nan))


def class_hull_margin(b: Block):
    return b.label.hull_margins


# class x class: (..., C, C)

def transitions(b: Block):
    return b.transitions
