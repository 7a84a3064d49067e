"""The nearest centre from a float32 product checked against its error bound: always the
float64 computation's answer, ties to the lowest index."""

import numpy as np
import pytest

from ncprobe.analyze.kernels.nearest import MAX_RELATIVE_BOUND, U32, CentreColumns


def _float64(x, centres):
    """The plain float64 argmin of ||m_c||^2 - 2 x . m_c, one row at a time."""
    sq = np.array([m @ m for m in centres])
    return np.array([int(np.argmin(sq - 2.0 * np.array([r @ m for m in centres]))) for r in x])


def _data(seed, n=300, k=40, d=24, scale=1.0, noise=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 3
    x = centres[rng.integers(0, k, n)] + rng.standard_normal((n, d)) * noise
    return x * scale, centres * scale


@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e-42, 1e17])
@pytest.mark.parametrize("noise", [0.5, 3.0, 30.0])
def test_the_float32_distances_are_within_the_bound(scale, noise):
    """|g_c - d_c| <= E for every row and centre, g the float32 distance and d the exact one
    (float64 here, 2^29 times closer): at unit scale, near float32's subnormal range (1e-42
    rounds to a few bits) and near its largest values (distances up to about 1e37)."""
    x, centres = _data(0, scale=scale, noise=noise)
    cols = CentreColumns.of(np.ascontiguousarray(centres.T))
    g = cols.distances(x).astype(np.float64)
    assert np.isfinite(g).all()  # every entry is checked
    exact = (centres * centres).sum(axis=1) - 2.0 * x @ centres.T
    assert (np.abs(g - exact) <= cols.slack(x)[:, None]).all()
    if scale == 1.0:  # the bound is not vacuous: within a few hundred times the error
        err = np.abs(g - exact)
        assert np.median(cols.slack(x)[:, None] / np.maximum(err, 1e-300)) < 1e4


@pytest.mark.parametrize("scale", [1e30, 1e36])
def test_distances_beyond_float32_leave_every_row_to_float64(scale):
    """Squared norms past float32's largest value overflow: no row is decided in float32."""
    x, centres = _data(0, scale=scale)
    cols = CentreColumns.of(np.ascontiguousarray(centres.T))
    _, undecided = cols.screen(cols.distances(x), x)
    np.testing.assert_array_equal(undecided, np.arange(len(x)))


@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e-42, 1e30, 1e36])
def test_the_nearest_centre_is_the_float64_one(scale):
    x, centres = _data(1, scale=scale, noise=3.0)
    cols = CentreColumns.of(np.ascontiguousarray(centres.T))
    np.testing.assert_array_equal(cols.nearest(x), _float64(x, centres))


def test_well_separated_rows_are_decided_in_float32():
    x, centres = _data(2, n=500, k=200, d=64, noise=0.5)
    cols = CentreColumns.of(np.ascontiguousarray(centres.T))
    near, undecided = cols.screen(cols.distances(x), x)
    assert undecided.size == 0
    np.testing.assert_array_equal(near, _float64(x, centres))


def test_ties_and_near_ties_are_decided_in_float64():
    """Duplicated centres tie exactly (the lowest index wins, as NearestCentroid); a centre
    moved by 1e-9 of its norm is a near-tie float32 cannot resolve and float64 can; both
    rows go to float64, and every other row stays decided in float32."""
    x, centres = _data(3, n=200, k=30, d=16, noise=0.3)
    centres[7] = centres[3]  # row 3 and 7 tie: 3 wins
    rng = np.random.default_rng(3)
    centres[12] = centres[11] + 1e-9 * np.linalg.norm(centres[11]) * rng.standard_normal(16)
    x[:4] = centres[[3, 7, 11, 12]] + 1e-3 * rng.standard_normal((4, 16))
    cols = CentreColumns.of(np.ascontiguousarray(centres.T))
    near, undecided = cols.screen(cols.distances(x), x)
    want = _float64(x, centres)
    assert set(undecided) >= {0, 1, 2, 3}
    assert len(undecided) < len(x) // 4  # the others stay decided in float32
    decided = np.setdiff1d(np.arange(len(x)), undecided)
    np.testing.assert_array_equal(near[decided], want[decided])
    got = cols.nearest(x)
    np.testing.assert_array_equal(got, want)
    assert got[0] == got[1] == 3


def test_rows_that_are_not_finite_go_to_float64():
    x, centres = _data(4, n=20)
    x[3, 2] = np.nan
    x[5, 0] = np.inf
    cols = CentreColumns.of(np.ascontiguousarray(centres.T))
    _, undecided = cols.screen(cols.distances(x), x)
    assert {3, 5} <= set(undecided)
    d64 = (centres * centres).sum(axis=1) - 2.0 * x @ centres.T
    np.testing.assert_array_equal(cols.nearest(x), d64.argmin(axis=1))


def test_a_layer_too_wide_for_the_bound_is_float64_only():
    d = int(MAX_RELATIVE_BOUND / U32)  # (D + 3) u above the limit
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((3, d)).astype(np.float32).astype(np.float64)
    x = centres[[0, 2]] + 0.1
    cols = CentreColumns.of(np.ascontiguousarray(centres.T))
    assert cols.t32 is None
    assert cols.distances(x).dtype == np.float64
    np.testing.assert_array_equal(cols.nearest(x), [0, 2])


def test_the_columns_shared_by_two_choices_are_kept():
    """``keep``: a first choice among some columns leaves the product as it was for the
    next; without it the product is overwritten (the memory of a row block is reused)."""
    x, centres = _data(6, n=50, k=12)
    cols = CentreColumns.of(np.ascontiguousarray(centres.T))
    prod = cols.product(x)
    before = prod.copy()
    first = cols.nearest(x, prod, slice(0, 6), keep=True)
    np.testing.assert_array_equal(prod, before)
    np.testing.assert_array_equal(first, _float64(x, centres[:6]))
    np.testing.assert_array_equal(cols.nearest(x, prod, slice(6, 12)),
                                  _float64(x, centres[6:]))
