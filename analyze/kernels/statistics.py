"""The statistics the analysis accumulates, each declared once: its name, the pass that
accumulates it, its dims, how chunks combine and, for a statistic outside the fused passes, its
per-chunk computation.

Everything that lists statistics derives from :data:`STATISTICS`: the shapes the passes
declare before any chunk is read (:func:`shapes`), the dims of the datasets that
:func:`~ncprobe.analyze.stats.class_stats` and :func:`~ncprobe.analyze.stats.within_stats`
return, the inputs of a :class:`~ncprobe.analyze.kernels.collapse.Block`, and the vocabulary a
metric's ``needs`` may name. Adding a statistic is one :func:`declare` with its chunk function;
pass 1 accumulates it beside the class sums and every block holds it by name (docs/metrics.md,
"Adding a metric").

Dims are names: ``grouping`` (the four groupings), ``class``, ``feature`` and ``feature2`` (the
features' own dim, twice for a D x D matrix), ``label`` and ``vertex`` (class x class).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: the dim names a statistic's shape may use
DIMS = ("grouping", "class", "feature", "feature2", "label", "vertex")
#: up to this many classes the transitions are a dense C x C matrix per block; beyond, the
#: (label, vertex) pairs that occur and their counts (``passes.SparseCounts``)
DENSE_TRANSITIONS = 1024


@dataclass(frozen=True)
class Statistic:
    """One statistic of a block.

    Parameters
    ----------
    name : its name in the pass's output, the statistics datasets and a Block.
    pass_number : 1 (class sums), 2 (against pass 1's means) or 0 (an input besides the
        passes: classifier rows, clean means).
    dims : its trailing dims (:data:`DIMS`), after the block's leading ones.
    doc : what it is, with its formula.
    chunk : ``chunk(x, groups, n_classes) -> array`` of the declared shape: the contribution
        of rows ``x`` (n, D) float64 with their ``groups`` (n, G); chunks add up. None for the
        statistics the fused passes compute themselves.
    sparse_beyond : beyond this many classes it is one mergeable object per block (sparse
        counts, combined with ``+``) rather than an array.
    block_input : whether a Block holds it (pass bookkeeping such as ``n_nonfinite`` is not).
    optional : computed only when asked for (the dense scatter of ``--dense``).
    reference : counted against the NCC centres alone, with no class means of the features:
        for a split measured against another split's centres it comes with the first read of
        the split (``passes.against_reference``), not with pass 2.
    """

    name: str
    pass_number: int
    dims: tuple
    doc: str
    chunk: Callable | None = None
    sparse_beyond: int | None = None
    block_input: bool = True
    optional: bool = False
    reference: bool = False

    def is_sparse(self, n_classes: int) -> bool:
        """Whether it is one mergeable object per block at this class count."""
        return self.sparse_beyond is not None and n_classes > self.sparse_beyond

    def shape(self, sizes: dict) -> tuple | None:
        """Its shape for ``sizes`` (dim -> length); None when it is sparse at this size."""
        return None if self.is_sparse(sizes["class"]) else tuple(sizes[d] for d in self.dims)

    @property
    def per_grouping(self) -> bool:
        return "grouping" in self.dims


#: every statistic, by name, in declaration order
STATISTICS: dict[str, Statistic] = {}


def declare(stat: Statistic) -> Statistic:
    """Add a statistic; a one-line ValueError for a name taken or an unknown dim."""
    if stat.name in STATISTICS:
        raise ValueError(f"statistic {stat.name!r} is declared already")
    unknown = [d for d in stat.dims if d not in DIMS]
    if unknown or stat.pass_number not in (0, 1, 2):
        raise ValueError(f"statistic {stat.name!r}: dims {unknown} not in {DIMS} or pass "
                         f"{stat.pass_number} not 0, 1 or 2")
    if stat.chunk is not None and stat.pass_number != 1:
        raise ValueError(f"statistic {stat.name!r}: a chunk function runs in pass 1")
    STATISTICS[stat.name] = stat
    return stat


def undeclare(name: str) -> None:
    """Remove a statistic (a test's own)."""
    STATISTICS.pop(name, None)


def of_pass(number: int, dense: bool = False, chunks=None) -> list[Statistic]:
    """The statistics pass ``number`` returns (with the optional ones when ``dense``, and of
    those with a chunk function only the names in ``chunks``, when given)."""
    return [s for s in STATISTICS.values()
            if s.pass_number == number and (dense or not s.optional)
            and (chunks is None or s.chunk is None or s.name in chunks)]


def of_reference() -> list[Statistic]:
    """The statistics counted against the NCC centres alone (``reference``)."""
    return [s for s in STATISTICS.values() if s.reference]


def shapes(number: int, sizes: dict, dense: bool = False, chunks=None) -> dict:
    """Name -> shape (None: a mergeable object) of what pass ``number`` returns."""
    return {s.name: s.shape(sizes) for s in of_pass(number, dense, chunks)}


def _class_sumsq(x, groups, n_classes):
    """(G, C) sum of ||h_i||^2 over the rows of each class, for every grouping."""
    sq = np.einsum("nd,nd->n", x, x)
    out = np.zeros((groups.shape[1], n_classes))
    for k in range(groups.shape[1]):
        ok = (groups[:, k] >= 0) & (groups[:, k] < n_classes)
        out[k] = np.bincount(groups[ok, k], weights=sq[ok], minlength=n_classes)
    return out


def _builtin():
    for name, dims, doc in (
            ("sum", ("grouping", "class", "feature"), "sum_{i in c} h_i"),
            ("count", ("grouping", "class"), "n_c, the samples of class c"),
            ("n_nonfinite", (), "NaN or inf values seen (kept out of the sums)")):
        declare(Statistic(name, 1, dims, doc, block_input=name != "n_nonfinite"))
    # Tr Sigma_W in one pass: within_c = sumsq_c - n_c ||mu_c||^2 (collapse.Grouping.within)
    declare(Statistic("sumsq", 1, ("grouping", "class"), "sum_{i in c} ||h_i||^2",
                      chunk=_class_sumsq))
    per_grouping = ("grouping", "class")
    # the last column: counted against the NCC centres alone (no class means of the features)
    for name, dims, doc, reference in (
            ("projected", per_grouping, "sum_{i in c} ||S^-1 U^T (h_i - mu_c)||^2, U S V^T "
                                        "the thin SVD of the centred means", False),
            ("projected_w", ("class",), "the same on the count-weighted between basis, true "
                                        "labels", False),
            ("own_hits", ("grouping",), "samples whose nearest own class mean is their true "
                                        "label", False),
            ("nc4_mismatch", ("grouping",), "samples whose nearest own class mean is not the "
                                            "network's prediction", False),
            ("ref_hits", ("class",), "samples of class c whose nearest reference centre is c",
             True),
            ("ref_counted", (), "samples with a nearest reference centre", True),
            ("flipped", (), "samples whose prediction is not their label", True),
            ("leapt", (), "flipped samples whose nearest reference centre is the prediction",
             True),
            ("outside", (), "samples predicted as an output that is no class of the dataset",
             True)):
        declare(Statistic(name, 2, dims, doc, reference=reference))
    declare(Statistic("transitions", 2, ("label", "vertex"),
                      "samples of true label y whose nearest reference centre is v",
                      sparse_beyond=DENSE_TRANSITIONS, reference=True))
    declare(Statistic("scatter", 2, ("feature", "feature2"),
                      "sum_i r_i r_i^T of the true-label residuals (dense covariances)",
                      block_input=False, optional=True))
    declare(Statistic("clean_centred", 0, ("class", "feature"),
                      "clean class means (true labels) centred on their centroid"))
    declare(Statistic("weight", 0, ("class", "feature"),
                      "the classifier's rows, where the layer feeds it"))


_builtin()
