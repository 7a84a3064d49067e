"""The metrics of ncprobe, each declared once: name, what it needs, its dims, formula, kernel.

Everything that lists metrics reads this registry: :func:`ncprobe.analyze.layer_metrics`,
the metrics store and its CSV (``nc-analyze``), the figures' axis labels and the table of
docs/metrics.md (a test checks that table against :func:`markdown_table`). Adding a metric is
one kernel (a function of a :class:`~ncprobe.analyze.kernels.collapse.Grouping` or
:class:`~ncprobe.analyze.kernels.collapse.Block`, by axis) and one :func:`register` call.

Examples
--------
>>> METRICS["nc1"].dims, METRICS["nc1"].groupings
((), ('label', 'pred', 'target'))
>>> METRICS["class_align_angle"].store_group, METRICS["class_align_angle"].store_name
('per_class', 'align_angle')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ncprobe.data import schema
from ncprobe.data.errors import NcprobeError

from .kernels import collapse, statistics
from .kernels.collapse import GROUPINGS
from .kernels.geometry import NC2_KEYS

#: the groupings that per-grouping metrics report, along the ``grouping`` dim
REPORTED = GROUPINGS[:3]

_GROUPS = {(): schema.SUMMARY_GROUP, (schema.CLASS,): schema.PER_CLASS_GROUP,
           (schema.LABEL, schema.VERTEX): schema.TRANSITIONS_GROUP}
#: per-class metrics carry this prefix in a layer's Dataset (``align_angle`` is also a
#: summary scalar); the metrics store keeps them apart in ``/per_class``
PER_CLASS_PREFIX = "class_"


class MetricError(NcprobeError):
    """A metric declaration that the registry cannot take, or a kernel that reads what its
    declaration did not name: the registering user's to fix, so one line in the CLI."""


@dataclass(frozen=True)
class Metric:
    """One metric: how it is computed and where it goes.

    Parameters
    ----------
    name : the name users see (the store variable, the CSV's ``metric``).
    kernel : numpy function of a ``Grouping`` (when ``groupings`` is set) or a ``Block``,
        returning an array over the leading axes with ``dims`` appended.
    needs : the statistics the kernel reads (attributes of what it receives); it is given a
        view that refuses any other, so this list is true.
    formula, reference : the text of docs/metrics.md's table.
    dims : () a scalar per block (``/summary``), ("class",) per class (``/per_class``),
        ("label", "vertex") class x class (``/transitions``).
    groupings : the groupings it is reported for, along ``grouping`` (a tuple of
        :data:`REPORTED`), one grouping it is computed on with no grouping dim (a str, e.g.
        ``nc1_shuffled`` on ``shuffled``), or None for a metric of the block.
    label : axis label in figures (default: the name).
    stored_as : variable name in its store group (default: the name).
    integer : counts, stored as int64.
    """

    name: str
    kernel: Callable
    needs: tuple
    formula: str
    reference: str = ""
    dims: tuple = ()
    groupings: tuple | str | None = None
    label: str | None = None
    stored_as: str | None = None
    integer: bool = False

    @property
    def key(self) -> str:
        """The variable name in a layer's Dataset (``class_<name>`` per class)."""
        return PER_CLASS_PREFIX + self.name if self.dims == (schema.CLASS,) else self.name

    @property
    def store_group(self) -> str:
        return _GROUPS[self.dims]

    @property
    def store_name(self) -> str:
        return self.stored_as or self.name

    @property
    def axis_label(self) -> str:
        return self.label or self.name

    @property
    def per_grouping(self) -> bool:
        return isinstance(self.groupings, tuple)

    def compute(self, block: collapse.Block):
        """Run the kernel on ``block`` (through a view that holds it to ``needs``)."""
        if self.groupings is None:
            source = block
        elif isinstance(self.groupings, str):
            source = block.grouping(self.groupings)
        else:
            source = block.groupings(self.groupings)
        # kernels mark undefined values NaN themselves (empty classes, groupings): no warnings
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.kernel(_Needs(source, self.needs, self.name))


class _Needs:
    """Attribute access to a Block or Grouping limited to the names a metric declared."""

    __slots__ = ("_source", "_needs", "_name")

    def __init__(self, source, needs, name):
        self._source, self._needs, self._name = source, frozenset(needs), name

    def __getattr__(self, attr):
        # ``label.<name>``: the true-label grouping, held to the names declared for it
        inner = {n.split(".", 1)[1] for n in self._needs if n.startswith(f"{attr}.")}
        if inner and attr not in self._needs:
            return _Needs(getattr(self._source, attr), inner, self._name)
        if attr not in self._needs:
            raise MetricError(f"metric {self._name!r} reads {attr!r}, which its `needs` does "
                              f"not declare ({', '.join(sorted(self._needs))})")
        return getattr(self._source, attr)


#: every metric, in the order of the store and the CSV: per-grouping scalars, block scalars,
#: per-class metrics, class x class
METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric`` to :data:`METRICS`; its name must be new and its declaration sound."""
    if metric.key in METRICS:
        raise MetricError(f"a metric named {metric.key!r} is already registered")
    if metric.dims not in _GROUPS:
        raise MetricError(f"metric {metric.name!r} has dims {metric.dims}; expected one of "
                          f"{', '.join(map(str, _GROUPS))}")
    if isinstance(metric.groupings, tuple) and (metric.dims or not metric.groupings
                                                 or set(metric.groupings) - set(REPORTED)):
        raise MetricError(f"metric {metric.name!r}: per-grouping metrics are scalars over "
                          f"groupings among {REPORTED}")
    if isinstance(metric.groupings, str) and metric.groupings not in GROUPINGS:
        raise MetricError(f"metric {metric.name!r}: grouping {metric.groupings!r} is not one "
                          f"of {GROUPINGS}")
    known = (collapse.Block if metric.groupings is None else collapse.Grouping).vocabulary()
    if metric.groupings is None:  # one statistic of the true labels: label.<name>
        known = known | {f"label.{n}" for n in collapse.Grouping.vocabulary()}
    unknown = sorted(set(metric.needs) - known)
    if unknown:
        raise MetricError(f"metric {metric.name!r} needs {unknown}, which are not statistics "
                          f"of a {'block' if metric.groupings is None else 'grouping'}: "
                          f"{', '.join(sorted(known))}")
    METRICS[metric.key] = metric
    return metric


def unregister(key: str) -> None:
    """Remove a metric (e.g. one a test registered)."""
    METRICS.pop(key)


def select(names=None) -> list[str]:
    """The keys of the metrics ``names`` asks for (default: all), in registry order: a name
    matches the metric of that key or that name (``align_angle``: the summary scalar and the
    per-class one; ``class_align_angle``: the per-class one)."""
    if names is None:
        return list(METRICS)
    unknown = [n for n in names if not any(n in (m.key, m.name) for m in METRICS.values())]
    if unknown:
        names_known = sorted({m.name for m in METRICS.values()})
        raise MetricError(f"unknown metric(s) {', '.join(unknown)}; expected names of "
                          f"docs/metrics.md: {', '.join(names_known)}")
    return [k for k, m in METRICS.items() if k in names or m.name in names]


def _reaches(name: str) -> set:
    """The declared statistics that ``name`` (a need) reads, through :data:`collapse.READS`."""
    if name in statistics.STATISTICS:
        return {name}
    name = name.removeprefix("label.")
    if name not in collapse.READS:
        raise MetricError(f"{name!r} is neither a statistic nor a quantity of "
                          "ncprobe.analyze.kernels.collapse.READS")
    return set().union(*(_reaches(n) for n in collapse.READS[name]))


def needed_statistics(keys=None) -> set:
    """The statistics (:mod:`~ncprobe.analyze.kernels.statistics`) that the metrics ``keys``
    (default: all) need, through their ``needs``.

    >>> sorted(needed_statistics(["equinorm"]))
    ['count', 'sum']
    >>> sorted(needed_statistics(["nc1"]))
    ['count', 'projected', 'sum']
    """
    keys = list(METRICS) if keys is None else list(keys)
    unknown = [k for k in keys if k not in METRICS]
    if unknown:
        raise MetricError(f"unknown metric(s) {', '.join(unknown)}; registered: "
                          f"{', '.join(METRICS)}")
    return set().union(*(_reaches(n) for k in keys for n in METRICS[k].needs))


def chunk_statistics(keys=None) -> list:
    """The declared statistics with a chunk function that pass 1 accumulates for the metrics
    ``keys`` (default: all): only those some metric needs."""
    needed = needed_statistics(keys)
    return [s.name for s in statistics.of_pass(1) if s.chunk is not None and s.name in needed]


def passes_needed(keys=None, reference_known: bool = False) -> set:
    """Which passes over the samples the metrics ``keys`` need: {1} or {1, 2}.

    ``reference_known``: the features are measured against centres known before they are
    read (another split's, reduced first), so what is counted against the centres alone
    (:func:`~ncprobe.analyze.kernels.statistics.of_reference`) comes with the first pass.
    """
    table = statistics.STATISTICS
    return {1} | {1 if reference_known and table[s].reference else table[s].pass_number
                  for s in needed_statistics(keys)} - {0}


def counts_against_centres(keys=None) -> bool:
    """Whether the metrics ``keys`` need a statistic counted against the NCC centres alone
    (:func:`~ncprobe.analyze.kernels.statistics.of_reference`: ncc_acc, leap_rate, ...)."""
    needed = needed_statistics(keys)
    return any(s.name in needed for s in statistics.of_reference())


def in_group(group: str) -> list[Metric]:
    """The registered metrics stored in ``group`` (summary, per_class, transitions)."""
    return [m for m in METRICS.values() if m.store_group == group]


def markdown_table() -> str:
    """The table of docs/metrics.md, one row per metric in registry order."""
    rows = ["| metric | dims | definition | reference |", "|---|---|---|---|"]
    for m in METRICS.values():
        if m.per_grouping:
            dims = "per grouping"
        elif isinstance(m.groupings, str):
            dims = f"on `{m.groupings}`"
        else:
            dims = {(): "scalar", (schema.CLASS,): "per class",
                    (schema.LABEL, schema.VERTEX): "label x vertex"}[m.dims]
        name = f"`{m.name}`" + (" (`/per_class`)" if m.dims == (schema.CLASS,) else "")
        rows.append(f"| {name} | {dims} | {m.formula} | {m.reference} |")
    return "\n".join(rows) + "\n"


_PAPYAN = "Papyan, Han, Donoho 2020"
_G = REPORTED
_G_NEEDS = ("where_valid",)


def _builtin():
    register(Metric("nc1", collapse.nc1, ("projected", "n") + _G_NEEDS,
                    "(1/C) Tr(Sigma_W Sigma_B^+), computed as (1/N) Σ_i ‖S⁻¹Uᵀ(h_i - mu_{g_i})‖² "
                    "(below). Su et al.'s code reports C times this.", _PAPYAN, groupings=_G,
                    label="NC1 = Tr(Σ_W Σ_B⁺)/C"))
    register(Metric("nc1_trace", collapse.nc1_trace, ("within", "n", "centred", "n_present")
                    + _G_NEEDS, "Tr Sigma_W / Tr Sigma_B", "Tirer et al. 2023", groupings=_G,
                    label="Tr Σ_W / Tr Σ_B"))
    register(Metric("cdnv", collapse.cdnv, ("means", "variance", "present") + _G_NEEDS,
                    "mean over class pairs of (var_c + var_c') / (2 ‖mu_c - mu_c'‖²), var_c = "
                    "mean squared distance to mu_c (0 for one sample); pairs with an empty "
                    "class are left out", "Galanti et al. 2022", groupings=_G, label="CDNV"))
    register(Metric("rank_b", collapse.rank_b, ("singular",) + _G_NEEDS,
                    "numerical rank r of M (s_k² > C·eps64·s_1²)", groupings=_G))
    register(Metric("cond_b", collapse.cond_b, ("singular",) + _G_NEEDS, "s_r² / s_1² of M",
                    groupings=_G))
    texts = {
        "equinorm": ("std_c ‖mu_c - mu_bar‖ / mean_c ‖mu_c - mu_bar‖ (ddof 1)", "equinorm"),
        "equiangular": ("std (ddof 1) over pairs c < c' of cos(mu_c - mu_bar, mu_c' - mu_bar); "
                        "NaN for two classes", "equiangularity"),
        "max_angle": ("mean over c ≠ c' of abs(cos + 1/(C-1))", "max-angle deviation"),
        "etf_distance": ("‖G/‖G‖_F - E/‖E‖_F‖_F, G = M̄ᵀM̄ with M̄ = [mu_c - mu_bar], "
                         "E = I - 11ᵀ/C: 0 for an exact simplex ETF", "ETF distance"),
    }
    for key, (formula, label) in texts.items():
        simplex_only = key in collapse.SIMPLEX_ONLY
        register(Metric(key, collapse.nc2_part(key),
                        ("nc2", "simplex_exists") + _G_NEEDS if simplex_only else
                        ("nc2",) + _G_NEEDS,
                        formula + ("; NaN when C > D + 1 (no simplex of C vertices fits in D "
                                   "dimensions)" if simplex_only else ""),
                        f"{_PAPYAN}, NC2", groupings=_G, label=label))
    register(Metric("nc4", collapse.nc4, ("nc4_mismatch", "n_total", "pred_known") + _G_NEEDS,
                    "fraction of samples whose nearest class mean (this grouping's own means) "
                    "differs from the network's prediction", f"{_PAPYAN}, NC4", groupings=_G))
    register(Metric("ncc_acc_self", collapse.ncc_acc_self, ("own_hits", "n_total") + _G_NEEDS,
                    "accuracy (true label) of the nearest-class-centre classifier with this "
                    "grouping's own class means", groupings=_G))
    register(Metric("uniformity", collapse.uniformity, ("uniformity",) + _G_NEEDS,
                    "mean over pairs c < c' of log(1 / ‖u_c - u_c'‖), u_c = (mu_c - mu_bar) / "
                    "‖mu_c - mu_bar‖: hyperspherical uniformity, defined for any C (lower is "
                    "more uniform)", "Liu et al. 2023, hyperspherical uniformity",
                    groupings=_G, label="log-energy uniformity"))
    register(Metric("uniformity_var", collapse.uniformity_var, ("uniformity",) + _G_NEEDS,
                    "variance (ddof 0) over pairs of the same log(1 / ‖u_c - u_c'‖): 0 when "
                    "every pair is equally far apart", "Liu et al. 2023", groupings=_G))

    register(Metric("nc1_shuffled", collapse.nc1, ("projected", "n") + _G_NEEDS,
                    "`nc1` after a fixed random permutation of the labels: the value with no "
                    "class structure (about (C-1) n_c / D for D ≫ n_c)", groupings="shuffled",
                    label="NC1, shuffled labels"))
    register(Metric("ncc_acc", collapse.ncc_acc, ("ref_hits", "ref_counted"),
                    "accuracy (true label) of the nearest-class-centre classifier whose centres "
                    "are the clean class means of the reference split (train by default; each "
                    "split's own when absent)", "Su et al. 2024, layer-wise NCC",
                    label="NCC accuracy"))
    register(Metric("net_acc", collapse.net_acc, ("pred_known", "n_total", "flipped"),
                    "the network's accuracy on this condition", label="network accuracy"))
    register(Metric("pred_outside", collapse.pred_outside, ("pred_known", "n_total", "outside"),
                    "the fraction of samples the network predicts as one of its outputs that "
                    "is no class of the dataset (a model with more outputs than the dataset "
                    "has classes, docs/your-model.md): flipped, but a leap to no vertex of the "
                    "dataset's simplex; 0 when the model's outputs are the dataset's classes",
                    label="predicted outside the classes"))
    register(Metric("leap_rate", collapse.leap_rate, ("pred_known", "flipped", "leapt"),
                    "among samples the attack flipped (pred ≠ label), the fraction whose nearest "
                    "clean reference centre is the adversarial prediction",
                    "Su et al. 2024, leaps", label="leap rate"))
    register(Metric("align_angle", collapse.align_angle, ("align",),
                    "mean over classes of the angle (degrees) between mu_c - mu_bar of this "
                    "condition and of clean (true labels, same split)",
                    "Su et al. 2024, aligned simplices", label="alignment angle (degrees)"))
    for key in NC2_KEYS:
        simplex_only = key in collapse.SIMPLEX_ONLY
        register(Metric(f"{key}_w", collapse.nc2_w_part(key),
                        ("nc2_w", "w_simplex_exists") if simplex_only else ("nc2_w",),
                        f"`{key}` of the classifier rows w_c (not centred, as Papyan et al.'s "
                        "code); only for the layer that feeds the classifier",
                        f"{_PAPYAN}, NC2"))
    register(Metric("nc3", collapse.nc3, ("weight_ok", "weight", "label.simplex",
                                          "label.present"),
                    "‖Wᵀ/‖W‖_F - M̄/‖M̄‖_F‖²_F (squared, as the published code of Papyan et "
                    "al. and of Su et al.); only for the layer that feeds the classifier",
                    f"{_PAPYAN}, NC3", label="NC3"))
    register(Metric("fuzziness", collapse.fuzziness,
                    ("label.n", "label.where_valid", "projected_w"),
                    "Tr(SS_W SS_B^+), SS_W = Sigma_W, SS_B = (1/N) Σ_c n_c (mu_c - mu_G)"
                    "(mu_c - mu_G)ᵀ (count-weighted; C·`nc1` for balanced classes); the law of "
                    "data separation fits log D_l = a + l log rho over the layers",
                    "He and Su 2023, separation fuzziness", label="fuzziness D = Tr(SS_W SS_B⁺)"))
    register(Metric("hull_margin", collapse.hull_margin,
                    ("label.hull_margins", "label.where_valid"),
                    "min over classes of the distance from u_c to the convex hull of the other "
                    "u_c' (true labels; one-vs-rest distance, C/(C-1) for a simplex ETF); costs "
                    "about C³ D, so NaN beyond 256 classes", "Jiang et al. 2023, generalised NC2",
                    label="one-vs-rest hull margin"))
    register(Metric("count", collapse.class_count, ("label_counts",),
                    "samples per class (true labels)",
                    dims=(schema.CLASS,)))
    register(Metric("mean_norm", collapse.mean_norm, ("label.simplex",),
                    "‖mu_c - mu_bar‖ (true labels)",
                    dims=(schema.CLASS,)))
    register(Metric("within_var", collapse.within_var, ("label.variance",),
                    "mean squared distance to mu_c (true labels; 0 for one sample)",
                    dims=(schema.CLASS,)))
    register(Metric("align_angle", collapse.class_align_angle, ("align",),
                    "angle (degrees) between mu_c - mu_bar of this condition and of clean",
                    "Su et al. 2024, aligned simplices", dims=(schema.CLASS,)))
    register(Metric("ncc_recall", collapse.ncc_recall, ("ref_hits", "label_counts"),
                    "recall of class c under the nearest-clean-centre classifier",
                    dims=(schema.CLASS,)))
    register(Metric("hull_margin", collapse.class_hull_margin, ("label.hull_margins",),
                    "distance from u_c to the convex hull of the other classes' u_c' (true "
                    "labels; up to 256 classes)", "Jiang et al. 2023", dims=(schema.CLASS,)))
    register(Metric("transitions", collapse.transitions, ("transitions",),
                    "counts [true label, nearest clean reference centre]: the vertex-leap matrix "
                    "(`count` in `/transitions`)",
                    "Su et al. 2024", dims=(schema.LABEL, schema.VERTEX), stored_as="count",
                    integer=True))


_builtin()
