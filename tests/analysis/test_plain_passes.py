"""The fused passes against their plain, one-sample-at-a-time definitions on random blocks."""

import numpy as np
import pytest

from ncprobe.analyze.kernels import geometry, passes, plain, statistics


def _block(seed, n=60, d=7, c=5, n_g=3, offset=0.0, balanced=False):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % c) if balanced else rng.integers(0, c, n)
    h = (rng.standard_normal((c, d)) * 3)[labels] + rng.standard_normal((n, d)) + offset
    pred = np.where(rng.random(n) < 0.3, (labels + 1) % c, labels)
    pred[rng.random(n) < 0.1] = -2  # outputs outside the dataset's classes
    groups = np.stack([labels, pred, np.where(rng.random(n) < 0.5, rng.integers(0, c, n), -1)],
                      axis=1)[:, :n_g]
    return h.astype(np.float32), groups, labels, pred, c


@pytest.mark.parametrize("seed", range(4))
def test_pass1_equals_its_definition(seed):
    h, groups, _, _, c = _block(seed, offset=50.0)
    fused, slow = passes.pass1(h, groups, c), plain.pass1(h, groups, c)
    for k in slow:
        np.testing.assert_allclose(fused[k], slow[k], rtol=1e-12, atol=1e-9, err_msg=k)


@pytest.mark.parametrize(("seed", "d", "c", "reference", "few"),
                         [(0, 7, 5, "own", False), (1, 7, 5, "other", False),
                          (2, 3, 6, "other", False), (3, 3, 6, "own", False),
                          (4, 7, 5, "partial", False), (5, 3, 6, "partial", True),
                          (6, 7, 5, "own", True), (7, 7, 5, "balanced", False),
                          (8, 3, 6, "balanced", False)])
def test_pass2_equals_its_definition(seed, d, c, reference, few):
    """Wide (C <= D) and narrow (D < C) blocks; reference centres the label grouping's own
    means (shared distances), others, or with missing rows; with ``few``, a network that
    predicts two classes and a third grouping of one class (the product then has no columns
    for the others, nor for the basis directions their means do not span); ``balanced``
    labels, the same count in every class (the count-weighted basis then a multiple of the
    other, not multiplied)."""
    h, groups, labels, pred, c = _block(seed, d=d, c=c, balanced=reference == "balanced")
    if few:
        pred = np.where(pred > 1, 0, pred)
        groups[:, 1] = pred
        groups[:, 2] = np.where(groups[:, 2] >= 0, 3, -1)
    st = plain.pass1(h, groups, c)
    means, _, _ = geometry.means_from_sums(st["sum"], st["count"])
    rng = np.random.default_rng(seed)
    ref = {"own": means[0], "other": means[0] + rng.standard_normal(means[0].shape),
           "partial": np.where(np.arange(c)[:, None] == 1, np.nan, means[0]),
           "balanced": means[0]}[reference]
    plan = passes.pass2_plan(st["sum"], st["count"], ref)
    assert (plan.groupings[0].balanced_scale == c) == (reference == "balanced")
    fused = passes.pass2(h, groups, labels, pred, plan)
    slow = plain.pass2(h, groups, labels, pred, means, st["count"], ref, c)
    for k in slow:
        np.testing.assert_allclose(fused[k], slow[k], rtol=1e-9, atol=1e-9, err_msg=k)


@pytest.mark.parametrize(("seed", "d", "c", "centres"), [(0, 7, 5, "noisy"), (1, 3, 6, "noisy"),
                                                         (2, 7, 5, "shifted"),
                                                         (3, 7, 5, "missing")])
def test_counts_against_fixed_centres_equal_their_definition(seed, d, c, centres):
    """The counts against another split's centres, read with pass 1, equal pass 2's plain
    definition; and pass 2 without centres counts none of them. Shifted centres (class c's
    mean at c + 1, where the predictions flip to) make every flipped sample leap."""
    h, groups, labels, pred, c = _block(seed, d=d, c=c, offset=20.0)
    st = plain.pass1(h, groups, c)
    means, _, _ = geometry.means_from_sums(st["sum"], st["count"])
    ref = means[0] + np.random.default_rng(seed).standard_normal(means[0].shape)
    if centres == "shifted":
        ref = means[0][(np.arange(c) - 1) % c]
    if centres == "missing":
        ref[2] = np.nan
    fused = passes.against_reference(h, labels, pred, passes.reference_plan(ref))
    slow = plain.pass2(h, groups, labels, pred, means, st["count"], ref, c)
    assert set(fused) == {s.name for s in statistics.of_reference()}
    for k in fused:
        np.testing.assert_array_equal(fused[k], slow[k], err_msg=k)
    assert fused["ref_counted"] == len(labels)
    if centres == "shifted":
        assert fused["leapt"] == np.count_nonzero(pred == (labels + 1) % c) > 0
    without = passes.pass2(h, groups, labels, pred,
                           passes.pass2_plan(st["sum"], st["count"], np.full_like(ref, np.nan)))
    assert without["ref_counted"] == 0 and not without["transitions"].any()


@pytest.mark.parametrize(("d", "c"), [(7, 5), (3, 6)])
@pytest.mark.parametrize(("swapped", "twice"), [(False, False), (True, False), (True, True)])
def test_a_grouping_with_the_same_sums_reads_the_same_columns(d, c, swapped, twice):
    """Predictions equal to the labels (zero error) give the prediction grouping the label
    grouping's sums: the product has no columns of its own for it, and every statistic still
    equals its definition. ``swapped``: samples 0 and 1 have the same features and swap
    classes between the groupings, so the sums are equal but those rows' classes are not;
    ``twice``: a third grouping equal to the second reads the same columns after it."""
    h, groups, labels, pred, c = _block(7, d=d, c=c)
    labels[:2] = [0, 1]  # the first of their classes: swapped, the sums add the same rows
    pred = labels.copy()
    if swapped:
        h[1] = h[0]
        pred[:2] = [1, 0]
    groups = np.stack([labels, pred, pred if twice else groups[:, 2]], axis=1)
    st = plain.pass1(h, groups, c)
    means, _, _ = geometry.means_from_sums(st["sum"], st["count"])
    plan = passes.pass2_plan(st["sum"], st["count"], means[0])
    alone = passes.pass2_plan(st["sum"][[0, 2]], st["count"][[0, 2]], means[0])
    assert plan.groupings[1].same_as == 0
    assert plan.groupings[2].same_as == (0 if twice else None)
    assert plan.stacked.shape[1] == alone.stacked.shape[1]
    fused = passes.pass2(h, groups, labels, pred, plan)
    slow = plain.pass2(h, groups, labels, pred, means, st["count"], means[0], c)
    for k in slow:
        np.testing.assert_allclose(fused[k], slow[k], rtol=1e-9, atol=1e-9, err_msg=k)
    assert fused["own_hits"][1] == fused["own_hits"][0]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("means", ["full", "subspace", "ill-conditioned"])
def test_a_triangular_basis_projects_as_the_between_basis(means, weighted):
    """D < C: the triangular factor pass 2 multiplies with gives the squared projections of
    the SVD basis, by R^-T of the means' QR decomposition where they span all D directions
    well inside the SVD's threshold, and by the SVD basis's own factor (with the directions
    spanned only) where they span fewer or some are below the threshold. D = 300 makes
    three blocks of rows, each skipping its zero columns."""
    rng = np.random.default_rng(7)
    c, d = 400, 300
    m = rng.standard_normal((c, d))
    if means == "subspace":
        m = m[:, :200] @ rng.standard_normal((200, d))
    elif means == "ill-conditioned":  # singular values down to 1e-10 of the largest
        u, _, vt = np.linalg.svd(m, full_matrices=False)
        m = (u * np.logspace(0, -10, d)) @ vt
    counts = rng.integers(1, 50, c).astype(np.float64)
    counts[:5] = 0  # absent classes: no row of M, their means never read
    basis = plain.between_basis(m, counts, weighted)
    assert basis.shape[1] == {"full": d, "subspace": 200, "ill-conditioned": basis.shape[1]}[means]
    t = passes.TriangularBasis.between(m, counts, m, weighted)
    # R^-T (lower) exactly where every direction is kept and the bound holds
    assert (t.blocks[-1][0] == 0) == (means == "full")
    x = rng.standard_normal((50, d)) * 3
    classes = rng.integers(5, c, 50)
    want = (((x - m[classes]) @ basis) ** 2).sum(axis=1)
    np.testing.assert_allclose(t.squared(x, classes), want, rtol=1e-9)
