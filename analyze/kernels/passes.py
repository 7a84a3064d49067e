"""The two passes over the samples: per-chunk sufficient statistics, all in float64.

Each kernel maps one chunk of samples to a dict of named, *additive* float64 statistics, so
the sum over all chunks is the statistic of the whole set (a tree reduction in dask, see
:func:`ncprobe.analyze.blocks.reduce_blocks`). Their names, dims and shapes are declared in
:mod:`.statistics` (``pass1_shapes`` and ``pass2_shapes`` read them), which is what a lazy
reduction needs before any chunk is read.
The xarray layer in :mod:`ncprobe.analyze.stats` works by dim name on top.

Shapes: ``h`` (n, D) features of one chunk; ``groups`` (n, G) integer group labels for G
groupings at once, where a label outside ``0 .. C-1`` (e.g. -1, "no target") excludes the sample
from that grouping.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import sparse
from scipy.linalg import lapack

from . import geometry, statistics
from .nearest import CentreColumns, nearest_of_dots

#: rows converted to float64 at a time: a few MB that stay in cache and are reused, rather than
#: a fresh chunk-sized float64 copy per step (page faults cost more than the arithmetic)
ROW_BLOCK = 128


def row_blocks(h: np.ndarray, origin=None, rows: int = ROW_BLOCK):
    """Yield ``(i, j, x)``: rows i:j of ``h`` as float64, minus ``origin``, in one reused buffer.

    The buffer is overwritten by the next block: consume it before asking for the next.
    """
    n, d = h.shape
    buf = np.empty((min(rows, max(n, 1)), d))
    for i in range(0, n, rows):
        j = min(i + rows, n)
        x = buf[: j - i]
        x[...] = h[i:j]
        if origin is not None:  # converted first: a float64 - float64 loop is faster than
            np.subtract(x, origin, out=x)  # the mixed one, with the same result
        yield i, j, x


def _sizes(n_groupings, n_classes, dim) -> dict:
    return {"grouping": n_groupings, "class": n_classes, "label": n_classes,
            "vertex": n_classes, "feature": dim, "feature2": dim}


def pass1_shapes(n_groupings: int, n_classes: int, dim: int, chunks=None) -> dict:
    """Name -> shape of each :func:`pass1` statistic (:mod:`.statistics`)."""
    return statistics.shapes(1, _sizes(n_groupings, n_classes, dim), chunks=chunks)


#: values per row block of pass 1: the sparse product and the squared norms read the block
#: from cache at this size; larger blocks fall out of it, smaller ones pay the building of
#: each block's indicator more often (docs/metrics.md)
PASS1_VALUES = 2**20


def _add_class_sums(out, x, groups, n_classes) -> bool:
    """out (G, C, D) += the sums of the rows of ``x`` (n, D) by class, for each grouping;
    returns whether every value of ``x`` is finite.

    One product of ``x`` with a sparse indicator, a column per sample and a row per class
    present in each grouping (CSC: each row of ``x`` is read once and added to each of its
    classes, so each class adds its rows in sample order): O(n D G) whatever C, nothing of
    size C x D beyond the classes present (a dense indicator would cost n D G C, and numpy's
    reduceat walks axis 0 one column at a time, several times slower). A sample in no
    grouping gets a row of its own, so that every value reaches a sum: a non-finite value
    leaves its sums non-finite, so finite sums mean finite values.
    """
    n, n_g = groups.shape
    valid = (groups >= 0) & (groups < n_classes)
    rows = np.empty((n, n_g + 1), np.intp)
    parts, at = [], 0
    for k in range(n_g):
        counts = np.bincount(groups[valid[:, k], k], minlength=n_classes)
        present = np.flatnonzero(counts)
        slot = np.cumsum(counts > 0) - 1  # class -> its row among the classes present
        rows[:, k] = at + slot[np.where(valid[:, k], groups[:, k], 0)]
        parts.append((k, present, at))
        at += present.size
    alone = ~valid.any(axis=1)
    rows[:, n_g] = at
    entries = np.concatenate([valid, alone[:, None]], axis=1)
    ind = sparse.csc_matrix(
        (np.ones(np.count_nonzero(entries)), rows[entries],
         np.concatenate([[0], np.cumsum(entries.sum(axis=1))])),
        shape=(at + int(alone.any()), n))
    prod = ind @ x
    for k, present, start in parts:
        if present.size == n_classes:  # every class: no gather and scatter
            out[k] += prod[start:start + n_classes]
        else:
            out[k, present] += prod[start:start + present.size]
    return bool(np.isfinite(prod).all())


def _class_counts(groups, n_classes):
    return np.stack([np.bincount(g[(g >= 0) & (g < n_classes)], minlength=n_classes)
                     for g in groups.T]).astype(np.float64)


def pass1(h: np.ndarray, groups: np.ndarray, n_classes: int, chunks=None) -> dict:
    """Class sums and counts for every grouping, the count of non-finite values, and every
    declared statistic with a chunk function (:mod:`.statistics`), or those named in
    ``chunks``.

    Returns ``{"sum": (G, C, D), "count": (G, C), "n_nonfinite": (), ...}``
    (:func:`pass1_shapes`). Row block by row block (about :data:`PASS1_VALUES` values each):
    memory O(G C D) beyond the chunk, time O(n D G) whatever C.
    """
    n, d = h.shape
    groups = np.asarray(groups).astype(np.intp, copy=False)
    sums = np.zeros((groups.shape[1], n_classes, d))
    extra = {s.name: (s.chunk, np.zeros(s.shape(_sizes(groups.shape[1], n_classes, d))))
             for s in statistics.of_pass(1, chunks=chunks) if s.chunk is not None}
    finite = True  # the full check only when the sums say otherwise
    rows = min(1024, max(ROW_BLOCK, PASS1_VALUES // max(d, 1)))
    with np.errstate(invalid="ignore", over="ignore"):
        for i, j, x in row_blocks(h, rows=rows):
            finite &= _add_class_sums(sums, x, groups[i:j], n_classes)
            for chunk, acc in extra.values():
                acc += chunk(x, groups[i:j], n_classes)
    bad = 0
    if not finite:
        x = np.asarray(h, dtype=np.float64)
        ok = np.isfinite(x)
        bad = x.size - np.count_nonzero(ok)
        x = np.where(ok, x, 0.0)  # counted and reported; kept out of every statistic
        sums[...] = 0.0
        _add_class_sums(sums, x, groups, n_classes)
        for chunk, acc in extra.values():
            acc[...] = chunk(x, groups, n_classes)
    return {"sum": sums, "count": _class_counts(groups, n_classes),
            "n_nonfinite": np.float64(bad), **{k: acc for k, (_, acc) in extra.items()}}


class SparseCounts:
    """Counts of int64 codes ``label * C + vertex``: the transitions when C x C is too large.

    Additive like the dense statistics (``a + b`` merges), so chunks reduce the same way.
    """

    __slots__ = ("codes", "counts")

    def __init__(self, codes, counts):
        self.codes, self.counts = codes, counts

    @classmethod
    def of(cls, codes: np.ndarray) -> SparseCounts:
        u, c = np.unique(codes, return_counts=True)
        return cls(u.astype(np.int64), c.astype(np.int64))

    def __add__(self, other: SparseCounts) -> SparseCounts:
        u, inv = np.unique(np.concatenate([self.codes, other.codes]), return_inverse=True)
        counts = np.bincount(inv, weights=np.concatenate([self.counts, other.counts]))
        return SparseCounts(u.astype(np.int64), counts.astype(np.int64))

    def __eq__(self, other):
        return (isinstance(other, SparseCounts) and np.array_equal(self.codes, other.codes)
                and np.array_equal(self.counts, other.counts))

    def __repr__(self):
        return f"SparseCounts({self.codes.size} pairs, {int(self.counts.sum())} samples)"


def pass2_shapes(n_groupings: int, n_classes: int, dim: int, dense: bool) -> dict:
    """Name -> shape of each :func:`pass2` statistic (None: a :class:`SparseCounts`)."""
    return statistics.shapes(2, _sizes(n_groupings, n_classes, dim), dense)


def pass2(h, groups, labels, pred, plan: Pass2Plan) -> dict:
    """Second pass: projections on the between-class basis, NCC counts (and, with a ``dense``
    plan, the within-class scatter matrix).

    Parameters
    ----------
    h : (n, D) features; groups : (n, G); labels, pred : (n,) true label and network prediction.
    plan : :class:`Pass2Plan`, what pass 1 gives the block (:func:`pass2_plan`).

    Returns
    -------
    dict of float64 arrays (:func:`pass2_shapes`):
    ``projected[g, c] = sum_{i: g_i = c} ||B_g^T (h_i - mu_c)||^2`` (so nc1 = sum / N);
    ``projected_w[c]`` the same on the count-weighted basis of grouping 0 (fuzziness = sum / N);
    ``own_hits[g]`` samples whose nearest mean of grouping g is their true label;
    ``nc4_mismatch[g]`` samples whose nearest mean of grouping g is not the prediction;
    ``ref_hits[c]`` samples of class c whose nearest reference centre is c, ``ref_counted``
    those with a nearest reference centre at all;
    ``transitions[y, v]`` counts true label y, nearest reference centre v (a
    :class:`SparseCounts` beyond :data:`~.statistics.DENSE_TRANSITIONS` classes);
    ``flipped`` counts pred != label; ``leapt`` those whose nearest reference centre is pred;
    ``outside`` those predicted as an output that is no class of the dataset (``pred`` =
    :data:`~ncprobe.data.store.schema.OUTSIDE`: flipped, and never leapt).

    Notes
    -----
    Row block by row block, one BLAS product of the centred rows with the plan's columns (the
    class means of the groupings in use and the reference centres) gives the distances to
    every centre (ties to the lowest index as scikit-learn) and, through the coefficients,
    the projections when C <= D, all in float64; when D < C, the projections are products
    with a :class:`TriangularBasis` and the distances serve the nearest centres only: the
    product is then float32, each row's nearest centre checked against the rounding error
    bound and computed again in float64 where it does not decide (:mod:`.nearest`). Nothing
    of size n x C outlives a row block, and every sum by class is a bincount: memory
    O(rows C + G C R) beyond the chunk and the plan, time O(n C (D + R)) whatever the class
    count.
    """
    groups = np.asarray(groups).astype(np.intp, copy=False)
    labels = np.asarray(labels).astype(np.intp, copy=False)
    pred = np.asarray(pred)
    n_classes = plan.c
    sums = _Pass2Sums.zeros(groups.shape[1], n_classes, len(labels))
    shared = {g.same_as for g in plan.groupings}
    for i, k, xc in row_blocks(h, plan.origin, plan.rows):
        # when D < C the product serves nearest centres only: float32, checked
        prod = xc @ plan.stacked if plan.centres is None else plan.centres.product(xc)
        done = {}
        for grouping in plan.groupings:
            _add_grouping(sums, plan, grouping, xc, prod, groups[i:k], labels[i:k], pred[i:k],
                          slice(i, k), done,
                          grouping.index in shared or grouping.same_as is not None)
        if plan.ref is not None:
            sums.near_ref[i:k] = plan.ref_classes[_nearest(plan, xc, prod, plan.ref,
                                                           plan.ref_sq, keep=False)]
    out = sums.statistics(labels, pred, n_classes)
    if plan.scatter_means is not None:
        out["scatter"] = _label_scatter(h, groups[:, 0], plan.scatter_means, n_classes)
    return out


#: the product of a row block with the plan's columns is kept near this many bytes: row
#: blocks shrink (down to ROW_BLOCK rows) when there are tens of thousands of columns
PRODUCT_BYTES = 32 * 2**20


def _product_rows(width: int) -> int:
    """Rows per block of a product with ``width`` columns: larger blocks when it is wide
    (fewer, larger BLAS calls), smaller again when it is very wide (it stays near
    PRODUCT_BYTES)."""
    return ROW_BLOCK if width <= 512 else max(ROW_BLOCK, min(512, PRODUCT_BYTES // (8 * width)))


def plan_bytes(n_groupings: int, c: int, d: int) -> int:
    """An upper bound of the bytes of :func:`pass2_plan`'s plan: the product's columns,
    D x (G + 1) C (and their float32 copy when D < C), the bases (coefficients or triangular
    factors), at most D x (G + 1) R, and each grouping's means on its basis, C x 2R,
    R = min(C, D)."""
    r = min(c, d)
    columns = d * c * (1.5 if d < c else 1)
    return int(8 * (n_groupings + 1) * (columns + d * r + 2 * c * r))


#: output columns per product of :class:`TriangularBasis`: each skips the zeros of its rows
#: of T, so the products cost (k + 1) / 2k of B^T x for k blocks, and stay large enough for
#: BLAS to run near its peak
TRIANGLE_BLOCK = 128


@dataclass
class TriangularBasis:
    """A projection basis B (D, P) as pass 2 multiplies with it when P is close to D (so
    D < C): a triangular T (P, D) with ||T r|| = ||B^T r|| for every r. The rows of T that
    start (upper) or end (lower) early need fewer columns of x, so T x by blocks of
    :data:`TRIANGLE_BLOCK` rows costs about half of B^T x. (numpy's products rather than
    BLAS's trmm: SciPy's wrapper holds the GIL, and two tasks would take turns.)"""

    blocks: list  # per row block of T: (lo, hi) its nonzero columns, T[rows, lo:hi]^T, T m_c

    @classmethod
    def of(cls, t: np.ndarray, means: np.ndarray, lower: bool) -> TriangularBasis:
        """From T (P, D) and the class means (C, D) on the rows' origin."""
        p, d = t.shape
        blocks = []
        for a in range(0, p, TRIANGLE_BLOCK):
            rows = t[a:a + TRIANGLE_BLOCK]
            lo, hi = (0, a + len(rows)) if lower else (a, d)
            blocks.append((lo, hi, np.ascontiguousarray(rows[:, lo:hi].T), means @ rows.T))
        return cls(blocks)

    @classmethod
    def between(cls, means: np.ndarray, counts: np.ndarray, on: np.ndarray,
                weighted: bool = False) -> TriangularBasis:
        """The basis B = U S^-1 of the class means (C, D) with ``counts`` (C,) (the
        count-weighted basis when ``weighted``), T m_c of the means ``on`` the rows' origin.

        When the centred means M (C', D) (:func:`~.geometry.between_rows`) span all D
        directions, well inside the threshold s_k^2 > C' eps s_1^2 that keeps a direction
        (docs/metrics.md), B B^T = (M^T M)^-1 = R^-1 R^-T for M = Q R, so T = R^-T: a QR
        decomposition and a triangular inverse, no SVD. That holds when
        ||R||_F^2 ||R^-1||_F^2 C' eps < 1, a bound of s_1^2 / s_D^2 C' eps; otherwise T is
        the factor of the QR decomposition B^T = Q T of the SVD's basis U S^-1, with the
        directions kept only.
        """
        rows = geometry.between_rows(means, counts, weighted)
        c, d = rows.shape
        if c > d and np.isfinite(rows).all():
            r = np.linalg.qr(rows, mode="r")
            r_inv, info = lapack.dtrtri(r, lower=0)
            if info == 0 and ((r**2).sum() * (r_inv**2).sum() * c * geometry.EPS64 < 1):
                return cls.of(r_inv.T, on, lower=True)
        u, s, _ = geometry.between_basis(rows)
        return cls.of(np.linalg.qr((u / s).T, mode="r"), on, lower=False)

    def squared(self, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(n,) ||T (x_i - m_{c_i})||^2 of rows ``x`` (n, D) in classes ``classes`` (n,)."""
        out = np.zeros(len(x))
        for lo, hi, tt, gram in self.blocks:
            y = x[:, lo:hi] @ tt  # T's other columns in these rows are zero
            y -= gram[classes]
            out += np.einsum("nb,nb->n", y, y)
        return out


@dataclass
class GroupingColumns:
    """Where one grouping in use finds its distances and projections in :func:`pass2`'s
    product, and what it subtracts from them."""

    index: int  # the grouping's position along the groupings
    classes: np.ndarray  # (k,) the classes present: the only ones with columns
    dots: slice | None  # columns x . m_c of those classes (None: its distances are not needed)
    mean_sq: np.ndarray  # (k,) ||m_c||^2 of those classes
    coefs: np.ndarray | None  # (k, P) projections from the dots (C <= D); None: ``factors``
    gram: np.ndarray | None  # (C, P) m_c . b_p: the projection of class c's mean (``coefs``)
    split: int = 0  # (``coefs``) the first ``split`` projections are on B_g, the others on B_w
    factors: tuple = ()  # (D < C) TriangularBasis of B_g (and, for the labels, of B_w)
    # labels with the same count in every class present: SS_B = Sigma_B, so
    # ||B_w^T r||^2 = C' ||B_g^T r||^2 and B_w is not multiplied
    balanced_scale: float | None = None
    same_as: int | None = None  # an earlier grouping with the same class sums and counts


@dataclass
class Pass2Plan:
    """What every row block of :func:`pass2` multiplies with: worked out once per block by
    :func:`pass2_plan` and shared by all its chunks."""

    c: int
    origin: np.ndarray  # (D,): everything is computed on h - origin
    groupings: list  # GroupingColumns of each grouping in use
    stacked: np.ndarray  # (D, K) the product's columns
    centres: CentreColumns | None  # when D < C: the columns, for nearest centres only
    nearest_own: np.ndarray  # (G,) bool: the groupings whose nearest own mean is counted
    ref: slice | None  # columns of the reference centres' dots, None when found otherwise
    ref_classes: np.ndarray  # (k,) the classes of the valid reference centres
    ref_sq: np.ndarray  # (k,) their ||ref_c||^2
    ref_from_labels: bool  # the label grouping's nearest mean is the nearest centre
    rows: int
    scatter_means: np.ndarray | None  # (C, D) true-label means, for the dense scatter only


def pass2_plan(sums, counts, ref_centres, nearest_own=None, dense=False) -> Pass2Plan:
    """Pass 2's constants of one block from its pass-1 statistics, one grouping at a time.

    Parameters
    ----------
    sums : (G, C, D) class sums of each grouping (pass 1); counts : (G, C) their sample
        counts. From them: the class means, the global mean of the first grouping (the true
        labels), which every row is centred on, so that the expansion
        ||r||^2 = ||x||^2 - 2 x.mu + ||mu||^2 cancels only at the scale of the class structure,
        not of ||h||^2; the between-class bases B_g = U S^-1 of the centred means as
        projection coefficients (:func:`~.geometry.projection_coefs`:
        B_g^T r = coefs_g^T [mu_c . r]_c); and the count-weighted basis of the true labels for
        the separation fuzziness of He and Su (docs/metrics.md).
    ref_centres : (C, D) the NCC centres, e.g. clean class means of the reference split; NaN
        rows are never nearest.
    nearest_own : (G,) bool, optional
        The groupings whose nearest own mean is counted (``own_hits``, ``nc4_mismatch``);
        default all. The others (e.g. shuffled labels) then cost no distances to every mean.
    dense : also accumulate the label-grouping scatter sum_i r_i r_i^T (D, D).

    Notes
    -----
    The product has columns only for what is there: the means of the classes present in each
    grouping (a network that predicts few classes, the targets of a targeted attack), the
    valid reference centres, and, when D < C, the basis directions that the means span.
    """
    n_g, c, dim = sums.shape
    rank = min(c, dim)  # the most directions C centred means span in D dimensions
    own_valid = counts > 0

    def means(j):  # (C, D), zero rows for empty classes, and the global mean (D,)
        mean, mu_g, _ = geometry.means_from_sums(sums[j], counts[j])
        return np.nan_to_num(mean, copy=False), np.nan_to_num(mu_g)

    label, o = means(0)
    ref_valid = np.isfinite(ref_centres).all(axis=-1)
    ref_classes = np.flatnonzero(ref_valid)
    ref = ref_centres[ref_valid] - o
    used = [j for j in range(n_g) if own_valid[j].any()]
    nearest_own = np.ones(n_g, bool) if nearest_own is None else np.asarray(nearest_own)
    # a grouping with the same class sums as an earlier one (the predictions of a network
    # that classifies every sample of the block correctly, e.g. clean training data at zero
    # training error) has the same means, bases and distances: it reads that one's columns
    same_as = {}
    for at, j in enumerate(used):
        for k in used[:at]:
            if k not in same_as and (nearest_own[k] or not nearest_own[j]) \
                    and np.array_equal(counts[k], counts[j]) and np.array_equal(sums[k], sums[j]):
                same_as[j] = k
                break
    # B^T (x - mu_g) = coefs^T [m_c . (x - m_g)]_c = (m^T coefs)^T x - (m m^T coefs)[g]:
    # by the dot products with the means when C <= D (they are computed anyway; coefs^T 1
    # = 0, so the constant that the origin shift adds to every m_c . r cancels), or when
    # D < C, where the basis has nearly D directions, by a triangular factor T with
    # ||T r|| = ||B^T r|| (TriangularBasis), at about half the cost of B^T x
    direct = dim < c
    # distances to the means of a grouping: for its nearest mean, or its projections
    dotted = [j for j in used if (nearest_own[j] or not direct) and j not in same_as]
    # the reference centres are often this grouping's own means (the clean condition of
    # the reference split): then their distances are the label grouping's, computed once
    ref_is_label = (0 in dotted and np.array_equal(ref_valid, own_valid[0])
                    and np.array_equal(ref, (label - o)[ref_valid]))
    # the product's columns: distances to the dotted groupings' means, then to the
    # reference centres, filled in place one grouping at a time rather than gathered and
    # concatenated (twice the memory at many classes)
    at = np.cumsum([0] + [np.count_nonzero(own_valid[j]) for j in dotted])
    dots = {j: slice(at[i], at[i + 1]) for i, j in enumerate(dotted)}
    ref_cols = dots[0] if ref_is_label else slice(at[-1], at[-1] + ref_classes.size)
    end = at[-1] + (0 if ref_is_label else ref_classes.size)
    stacked, sq = np.empty((dim, end)), np.empty(end)
    ref_sq = (ref * ref).sum(axis=1)
    if not ref_is_label:
        stacked[:, ref_cols], sq[ref_cols] = ref.T, ref_sq
    groupings = []
    for j in used:  # one grouping's (C, D) and (C, R) at a time
        if j in same_as:
            first = next(g for g in groupings if g.index == same_as[j])
            groupings.append(replace(first, index=j, same_as=first.index))
            continue
        mean = label if j == 0 else means(j)[0]
        m = mean - o
        present = np.flatnonzero(own_valid[j])
        mean_sq = (m[present] ** 2).sum(axis=1)
        if j in dotted:
            stacked[:, dots[j]], sq[dots[j]] = m[present].T, mean_sq
        # the labels' B_w too, unless the classes are balanced (a multiple of B_g)
        balanced = j == 0 and np.all(counts[0][present] == counts[0][present[0]])
        weights = (False, True) if j == 0 and not balanced else (False,)
        if direct:
            columns = dict(coefs=None, gram=None, factors=tuple(
                TriangularBasis.between(mean, counts[j], m, w) for w in weights))
        else:
            coefs = np.concatenate([geometry.projection_coefs(mean, counts[j], rank, w)
                                    for w in weights], axis=1)
            # m m^T coefs = m B, without a C x C matrix
            columns = dict(coefs=coefs[present], gram=m @ (m.T @ coefs), split=rank)
        if balanced:
            columns["balanced_scale"] = float(present.size)
        del mean
        groupings.append(GroupingColumns(
            index=j, classes=present, dots=dots.get(j), mean_sq=mean_sq, **columns))
    return Pass2Plan(
        c=c, origin=o, groupings=groupings, stacked=stacked,
        # when D < C every column is a centre of which only the nearest is wanted
        centres=CentreColumns.of(stacked, sq) if direct else None, nearest_own=nearest_own,
        ref=None if not ref_classes.size or (ref_is_label and nearest_own[0]) else ref_cols,
        ref_classes=ref_classes, ref_sq=ref_sq,
        ref_from_labels=ref_is_label and bool(nearest_own[0]),
        rows=_product_rows(end), scatter_means=label if dense else None)


@dataclass
class _Pass2Sums:
    """The running sums of :func:`pass2` over row blocks, and each sample's nearest centre."""

    projected: np.ndarray
    projected_w: np.ndarray
    own_hits: np.ndarray
    mismatch: np.ndarray
    near_ref: np.ndarray

    @classmethod
    def zeros(cls, n_g, c, n):
        return cls(np.zeros((n_g, c)), np.zeros(c), np.zeros(n_g), np.zeros(n_g),
                   np.full(n, -1, dtype=np.intp))

    def statistics(self, labels, pred, c) -> dict:
        """The named statistics of :func:`pass2` (without the dense scatter)."""
        return {"projected": self.projected,
                "projected_w": self.projected_w, "own_hits": self.own_hits,
                "nc4_mismatch": self.mismatch,
                **reference_counts(self.near_ref, labels, pred, c)}


def reference_counts(near_ref, labels, pred, c) -> dict:
    """The statistics against the NCC centres (:func:`~.statistics.of_reference`) from each
    sample's nearest centre ``near_ref`` (n,) (-1: none), true label and prediction."""
    valid_y = (labels >= 0) & (labels < c)
    counted = valid_y & (near_ref >= 0)
    hit = counted & (near_ref == labels)
    codes = labels[counted] * c + near_ref[counted]
    flipped = pred != labels
    return {"ref_hits": np.bincount(labels[hit], minlength=c).astype(np.float64),
            "ref_counted": np.float64(np.count_nonzero(counted)),
            "transitions": (SparseCounts.of(codes)
                            if statistics.STATISTICS["transitions"].is_sparse(c)
                            else np.bincount(codes, minlength=c * c).reshape(c, c)
                            .astype(np.float64)),
            "flipped": np.float64(np.count_nonzero(flipped)),
            "leapt": np.float64(np.count_nonzero(flipped & (near_ref == pred))),
            # -1: predictions unknown; lower codes are outputs that are no class of the
            # dataset (the store's OUTSIDE, -2)
            "outside": np.float64(np.count_nonzero(pred < -1))}


@dataclass
class ReferencePlan:
    """Fixed NCC centres as :func:`against_reference` multiplies with them: worked out once
    per block by :func:`reference_plan`."""

    c: int
    origin: np.ndarray  # (D,) the mean of the valid centres: rows are centred on it
    classes: np.ndarray  # (k,) the classes of the valid centres
    centres: CentreColumns  # their centres - origin
    rows: int


def reference_plan(ref_centres) -> ReferencePlan:
    """:func:`against_reference`'s constants from the centres (C, D), NaN rows never nearest."""
    valid = np.isfinite(ref_centres).all(axis=-1)
    origin = ref_centres[valid].mean(axis=0) if valid.any() else np.zeros(ref_centres.shape[1])
    ref = ref_centres[valid] - origin
    return ReferencePlan(c=ref_centres.shape[0], origin=origin, classes=np.flatnonzero(valid),
                         centres=CentreColumns.of(np.ascontiguousarray(ref.T),
                                                  (ref * ref).sum(axis=1)),
                         rows=_product_rows(ref.shape[0]))


def against_reference(h, labels, pred, plan: ReferencePlan) -> dict:
    """The NCC statistics against fixed centres, which need no class means of ``h``: for a
    split measured against another split's centres (reduced before this split is read), they
    come with the first read of it, and only what needs its own means waits for pass 2.

    Parameters
    ----------
    h : (n, D) features; labels, pred : (n,) true label and network prediction.
    plan : :class:`ReferencePlan` of the centres (:func:`reference_plan`).

    Returns
    -------
    dict (:func:`reference_shapes`): ``ref_hits``, ``ref_counted``, ``transitions``,
    ``flipped``, ``leapt`` and ``outside``, as :func:`pass2` defines them. The nearest centre
    is argmin_c ||m_c||^2 - 2 x . m_c on rows x and centres m_c both centred on the centres'
    mean, ties to the lowest index (scikit-learn's NearestCentroid): in float32 where that
    decides it, float64 elsewhere (:class:`~.nearest.CentreColumns`).
    """
    labels = np.asarray(labels).astype(np.intp, copy=False)
    pred = np.asarray(pred)
    near = np.full(len(labels), -1, dtype=np.intp)
    if plan.classes.size:
        for i, k, xc in row_blocks(h, plan.origin, plan.rows):
            near[i:k] = plan.classes[plan.centres.nearest(xc)]
    return reference_counts(near, labels, pred, plan.c)


def reference_shapes(n_classes: int, dim: int) -> dict:
    """Name -> shape of each :func:`against_reference` statistic (None: SparseCounts)."""
    sizes = _sizes(1, n_classes, dim)
    return {s.name: s.shape(sizes) for s in statistics.of_reference()}


def _add_grouping(sums: _Pass2Sums, plan: Pass2Plan, grouping: GroupingColumns, xc, prod,
                  groups, y, p_, rows: slice, done: dict, keep_dots: bool):
    """One row block's projections and nearest own mean, for one grouping in use: ``xc`` the
    rows on the plan's origin, ``prod`` their product with the plan's columns.

    ``done`` maps a grouping computed before in this row block to its per-sample (squared
    projection, nearest own mean): a grouping with the same means (``same_as``) and the same
    classes for these rows takes them as they are. ``keep_dots``: leave the dots in ``prod``
    intact, for another grouping that reads the same columns with other classes."""
    c, j = plan.c, grouping.index
    g = groups[:, j]
    ok = (g >= 0) & (g < c)
    gi = np.where(ok, g, 0)
    same = grouping.same_as
    if same is not None and np.array_equal(g, groups[:, same]):
        w, near = done[same]
    else:
        if grouping.dots is not None:
            dots = prod[:, grouping.dots]                  # x . m_{g,c}, classes present
        if grouping.coefs is None:
            w, *w_w = (f.squared(xc, gi) for f in grouping.factors)
        else:
            pr = dots @ grouping.coefs
            pr -= grouping.gram[gi]
            s = grouping.split
            w = np.einsum("nr,nr->n", pr[:, :s], pr[:, :s])
            # columns after ``split``: B_w's, for the labels unless they are balanced
            w_w = [np.einsum("nr,nr->n", pr[:, s:], pr[:, s:])] if s < pr.shape[1] else []
        w = np.where(ok, w, 0.0)
        if j == 0:
            w_w = w * grouping.balanced_scale if grouping.balanced_scale else \
                np.where(ok, w_w[0], 0.0)
            sums.projected_w += np.bincount(gi, weights=w_w, minlength=c)
        near = None
        if plan.nearest_own[j]:
            near = grouping.classes[_nearest(plan, xc, prod, grouping.dots, grouping.mean_sq,
                                             keep_dots)]
    done[j] = (w, near)
    sums.projected[j] += np.bincount(gi, weights=w, minlength=c)
    if not plan.nearest_own[j]:
        return
    sums.own_hits[j] += np.count_nonzero(near == y)
    sums.mismatch[j] += np.count_nonzero(near != p_)
    if j == 0 and plan.ref_from_labels:  # the same distances, the same classes
        sums.near_ref[rows] = near


def _nearest(plan: Pass2Plan, xc, prod, cols: slice, sq, keep: bool) -> np.ndarray:
    """(n,) the nearest of the centres in columns ``cols`` of ``prod``, argmin of
    ||m_c||^2 - 2 x . m_c: from the float64 dots when C <= D (they are the projections' too),
    in place unless another grouping reads them (``keep``); by the plan's
    :class:`~.nearest.CentreColumns` when D < C."""
    if plan.centres is not None:
        return plan.centres.nearest(xc, prod, cols, keep)
    return nearest_of_dots(prod[:, cols], sq, keep)


def _label_scatter(h, g, means, c):
    """(D, D) sum_i r_i r_i^T of the residuals from the label grouping's class means."""
    ok = (g >= 0) & (g < c)
    r = np.asarray(h, np.float64) - means[np.where(ok, g, 0)]
    r[~ok] = 0.0
    return r.T @ r


def nearest(h: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre: h (..., D) and centres (..., C, D), broadcast against each
    other over the leading axes (a sample axis of h meets an axis of length 1 in centres).

    argmin_c ||mu_c||^2 - 2 h . mu_c in float64; NaN centres are never chosen; ties go to the
    lowest index, as scikit-learn's NearestCentroid.
    """
    valid = np.isfinite(centres).all(axis=-1)
    mu = np.where(valid[..., None], centres, 0.0)
    d = (mu * mu).sum(axis=-1) - 2.0 * np.einsum("...d,...cd->...c",
                                                 np.asarray(h, np.float64), mu)
    return np.where(valid, d, np.inf).argmin(axis=-1)
