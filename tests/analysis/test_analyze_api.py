"""The DataArray API: closed forms, chunking invariance, laziness, bad input."""

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from ncprobe.analyze import AnalysisError, class_stats, nc1, ncc_predict, within_stats
from ncprobe.analyze.kernels.geometry import nc2
from ncprobe.data.datasets import make_synthetic_arrays, simplex_etf
from tests import reference
from tests.helpers import raise_if_computed


def da_(x, y, chunk=None):
    h = xr.DataArray(x, dims=("sample", "feature"))
    g = xr.DataArray(y, dims="sample")
    if chunk:
        h, g = h.chunk({"sample": chunk}), g.chunk({"sample": chunk})
    return h, g


def etf_fixture(c=5, d=9, a=3.0, delta=0.5, in_span=True):
    """Class means on a simplex ETF of norm a; two samples per class at mu_c +- delta u."""
    v = a * simplex_etf(c, d, seed=1)
    u = v[0] - v[1] if in_span else np.linalg.svd(v.T)[0][:, -1]
    u = u / np.linalg.norm(u)
    x = np.concatenate([v + delta * u, v - delta * u])
    y = np.concatenate([np.arange(c), np.arange(c)])
    return x, y


def test_etf_closed_form_in_span():
    c, a, delta = 5, 3.0, 0.5
    x, y = etf_fixture(c, a=a, delta=delta)
    # Sigma_W = delta^2 u u^T, Sigma_B has eigenvalue a^2 / (C - 1) on the span of the means
    expected = delta**2 * (c - 1) / (c * a**2)
    assert float(nc1(*da_(x, y), c)) == pytest.approx(expected, rel=1e-12)


def test_etf_closed_form_orthogonal_noise_is_invisible_to_nc1_not_to_trace():
    c, a, delta = 5, 3.0, 0.5
    x, y = etf_fixture(c, a=a, delta=delta, in_span=False)
    assert abs(float(nc1(*da_(x, y), c))) < 1e-25
    h, g = da_(x, y)
    st_ = class_stats(h, g, c)
    tr_w = float(st_["within"].sum()) / x.shape[0]
    assert tr_w / a**2 == pytest.approx(delta**2 / a**2, rel=1e-12)  # Tr Sigma_B = a^2


def test_noiseless_collapse():
    x, y, means = make_synthetic_arrays(6, 10, 20, noise=0.0)
    h, g = da_(x, y)
    assert abs(float(nc1(h, g, 6))) < 1e-24
    st_ = class_stats(h, g, 6)
    m = st_["mean"].values - st_["global_mean"].values
    assert nc2(m)["etf_distance"] < 1e-12
    pred = ncc_predict(h, st_["mean"])
    assert (pred.values == y).all()


@settings(max_examples=25, deadline=None)
@given(chunk=st.integers(1, 130), c=st.integers(2, 6))
def test_same_results_for_any_chunking(chunk, c):
    x, y, _ = make_synthetic_arrays(c, 7, 20, noise=1.0, seed=c)
    ref = float(nc1(*da_(x, y), c))
    got = float(nc1(*da_(x, y, chunk), c))
    assert got == pytest.approx(ref, rel=1e-10)
    mu = class_stats(*da_(x, y), c)["mean"]
    np.testing.assert_array_equal(ncc_predict(da_(x, y, chunk)[0], mu).values,
                                  ncc_predict(da_(x, y)[0], mu).values)


def test_api_matches_reference_on_dask():
    x, y, _ = make_synthetic_arrays(4, 12, 30, noise=1.5, seed=3)
    assert float(nc1(*da_(x, y, 17), 4)) == pytest.approx(reference.nc1(x, y, 4), rel=1e-8)


def test_public_functions_stay_lazy():
    x, y, _ = make_synthetic_arrays(3, 5, 10, noise=1.0)
    h, g = da_(x, y, 7)
    with raise_if_computed(0):
        s = class_stats(h, g, 3)
        w = within_stats(h, g, s)
        p = ncc_predict(h, xr.DataArray(np.zeros((3, 5)), dims=("class", "feature")))
        n = nc1(h, g, 3)
    for obj in (s["mean"], s["count"], w["projected"], p, n):
        assert isinstance(obj.data, da.Array)


def test_grouping_dimension_and_excluded_labels():
    x, y, _ = make_synthetic_arrays(3, 5, 10, noise=1.0)
    other = np.where(y == 0, -1, y)  # -1: not in this grouping
    g = xr.DataArray(np.stack([y, other], 1), dims=("sample", "grouping"),
                     coords={"grouping": ["label", "other"]})
    s = class_stats(xr.DataArray(x, dims=("sample", "feature")), g, 3)
    assert s["count"].sel(grouping="other").values.tolist() == [0, 10, 10]
    assert np.isnan(s["mean"].sel(grouping="other", **{"class": 0})).all()


@pytest.mark.parametrize("c", [3, 300])  # every class present, and most absent
def test_non_finite_values_are_counted_and_kept_out_of_the_sums(c):
    x, y, _ = make_synthetic_arrays(3, 5, 10, noise=1.0)
    def stats(h, labels):
        return class_stats(xr.DataArray(h, dims=("sample", "feature")),
                           xr.DataArray(labels, dims="sample"), c)

    clean = stats(x, y)
    bad = x.copy()
    bad[14, 1] = np.nan  # a sample of class 1
    bad[7, 2] = np.inf  # a sample of class 0 taken out of every grouping: still seen
    y = y.copy()
    y[7] = -1
    s = stats(bad, y)
    assert int(s["n_nonfinite"]) == 2
    assert np.isfinite(s["sum"].values).all()
    want = clean["sum"].values[1] - np.where(np.arange(5) == 1, x[14], 0.0)
    np.testing.assert_allclose(s["sum"].values[1], want, rtol=1e-12, atol=1e-12)
    # the sums of squared norms too: the NaN counts as zero, the rest of its row as it is
    assert np.isfinite(s["sumsq"].values).all()
    np.testing.assert_allclose(s["sumsq"].values[1], clean["sumsq"].values[1] - x[14, 1] ** 2,
                               rtol=1e-12)


def test_bad_input_errors():
    x, y, _ = make_synthetic_arrays(3, 5, 10)
    h, g = da_(x, y)
    with pytest.raises(AnalysisError, match="expected 'sample' and 'feature' among them"):
        class_stats(h.rename(feature="unit"), g, 3)
    with pytest.raises(AnalysisError, match="groups has 29 samples; features has 30"):
        class_stats(h, g[:-1], 3)
    with pytest.raises(AnalysisError, match="n_classes is required"):
        class_stats(h, g, None)
    with pytest.raises(AnalysisError, match="expected integers"):
        class_stats(h, g.astype(float), 3)


def test_exact_etf_with_unequal_counts_is_an_exact_etf():
    """The simplex metrics centre on the simplex's centroid, not the sample-weighted mean:
    one class with ten times the samples (pred grouping under attack) must not move it."""
    c = 5
    v = 3.0 * simplex_etf(c, 9, seed=2)
    counts = [50] + [5] * (c - 1)
    y = np.repeat(np.arange(c), counts)
    h, g = da_(v[y], y)
    s = class_stats(h, g, c)
    weighted = s["mean"].values - s["global_mean"].values
    assert nc2(weighted)["etf_distance"] > 0.1  # what a weighted centre reported
    from ncprobe.analyze.metrics import layer_metrics

    m = layer_metrics(h, g, c).sel(grouping="label")
    for name in ("etf_distance", "equinorm", "equiangular", "max_angle"):
        assert abs(float(m[name])) < 1e-12, name
    assert float(m["nc1"]) < 1e-20


def test_two_classes_have_no_equiangularity_spread():
    x, y, _ = make_synthetic_arrays(2, 4, 10, noise=0.3)
    from ncprobe.analyze.metrics import layer_metrics

    m = layer_metrics(*da_(x, y), 2).sel(grouping="label")
    assert np.isnan(float(m["equiangular"]))
    assert np.isfinite(float(m["equinorm"])) and np.isfinite(float(m["nc1"]))


def test_a_single_sample_class_has_variance_zero_and_counts_in_cdnv():
    x, y, _ = make_synthetic_arrays(3, 4, 6, noise=0.5, seed=4)
    x, y = x[:13], y[:13]  # class 2 keeps one sample
    from ncprobe.analyze.metrics import layer_metrics

    m = layer_metrics(*da_(x, y), 3)
    assert float(m["class_within_var"][2]) == 0.0
    assert float(m["cdnv"].sel(grouping="label")) == pytest.approx(reference.cdnv(x, y, 3),
                                                                   rel=1e-12)


def test_single_metric_functions_match_the_float64_references():
    """nc1, nc2, nc3, cdnv and fuzziness by dim name, lazy, over a checkpoint dim, with
    unequal class counts (where fuzziness and C x nc1 differ)."""
    from ncprobe.analyze import cdnv, fuzziness, nc2, nc3

    x, y, _ = make_synthetic_arrays(n_classes=4, dim=7, n_per_class=30, noise=0.5, seed=3)
    keep = (y != 2) | (np.arange(y.size) % 3 == 0)  # class 2 has a third of the samples
    x, y = x[keep], y[keep]
    stack = np.stack([x, 1.5 * x + 0.1])
    h = xr.DataArray(da.from_array(stack, chunks=(1, 17, -1)),
                     dims=("checkpoint", "sample", "feature"))
    g = xr.DataArray(y, dims="sample")
    w = np.random.default_rng(0).standard_normal((4, 7))
    weight = xr.DataArray(w, dims=("class", "feature"))
    got = {"nc1": nc1(h, g, 4), "cdnv": cdnv(h, g, 4), "fuzziness": fuzziness(h, g, 4),
           "nc3": nc3(h, g, 4, weight), **nc2(h, g, 4)}
    assert all(isinstance(v.data, da.Array) for v in got.values())
    for k in range(2):
        xs = stack[k]
        want = {"nc1": reference.nc1(xs, y, 4), "cdnv": reference.cdnv(xs, y, 4),
                "fuzziness": reference.fuzziness(xs, y, 4),
                "nc3": reference.nc3(w, xs, y, 4),
                **reference.nc2(reference.simplex_matrix(xs, y, 4).T)}
        for name, v in want.items():
            assert float(got[name].isel(checkpoint=k)) == pytest.approx(v, rel=1e-8), name
    assert float(got["fuzziness"][0]) != pytest.approx(4 * float(got["nc1"][0]), rel=1e-3)


def test_fuzziness_is_c_times_nc1_for_balanced_classes():
    from ncprobe.analyze import fuzziness

    x, y, _ = make_synthetic_arrays(n_classes=5, dim=9, n_per_class=20, noise=0.7)
    h, g = xr.DataArray(x, dims=("sample", "feature")), xr.DataArray(y, dims="sample")
    assert float(fuzziness(h, g, 5)) == pytest.approx(5 * float(nc1(h, g, 5)), rel=1e-10)
